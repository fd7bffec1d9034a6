"""Small asyncio helpers shared by the daemons."""

from __future__ import annotations

import asyncio


async def wait_set(event: asyncio.Event, timeout: float) -> None:
    """Wait for ``event``; raise TimeoutError after ``timeout`` seconds.

    The same contract as ``asyncio.wait_for(event.wait(), timeout)``, built on
    ``asyncio.timeout`` instead: on Python 3.11 ``wait_for`` can swallow a
    cancellation that arrives just as the event is set, and a loop around it
    then never stops (seen as an agent supervisor that would not shut down).
    """
    async with asyncio.timeout(timeout):
        await event.wait()
