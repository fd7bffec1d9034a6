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


def raise_if_cancelling() -> None:
    """Re-raise a cancellation that a library call swallowed.

    nats-py waits with ``asyncio.wait_for`` inside ``fetch`` and ``next_msg``;
    on Python 3.11 a cancellation that lands as a message (or the fetch's
    timeout) arrives is lost, and a pull loop around it then runs on after its
    daemon, or a test fixture, asked it to stop. The task still counts the
    request, so a loop calls this after each such call.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
