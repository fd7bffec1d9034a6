"""Object store calls ride out a JetStream leader election (slipway/objstore.py)."""

from __future__ import annotations

import asyncio

import nats.errors
import pytest

from slipway.objstore import retrying


def test_a_timeout_is_tried_again_until_the_store_answers() -> None:
    calls = []

    async def op() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise nats.errors.TimeoutError
        return "stored"

    got = asyncio.run(retrying(op, "put slugs/x", retry_for=5, first_delay=0.01))
    assert got == "stored" and len(calls) == 3


def test_it_gives_up_after_its_time_with_the_last_error() -> None:
    async def op() -> None:
        raise nats.errors.TimeoutError

    with pytest.raises(nats.errors.TimeoutError):
        asyncio.run(retrying(op, "get sources/b-1", retry_for=0.05, first_delay=0.01))


def test_other_errors_are_not_retried() -> None:
    calls = []

    async def op() -> None:
        calls.append(1)
        raise ValueError("broken")

    with pytest.raises(ValueError):
        asyncio.run(retrying(op, "get", retry_for=5, first_delay=0.01))
    assert len(calls) == 1
