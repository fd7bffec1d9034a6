"""Stream creation waits out a NATS cluster that cannot place its copies *yet*."""

from __future__ import annotations

import nats.js.errors
import pytest

from slipway import streams


def no_peers() -> nats.js.errors.BadRequestError:
    return nats.js.errors.BadRequestError(
        code=400, err_code=streams.NO_SUITABLE_PEERS, description="no suitable peers for placement"
    )


class Creator:
    """Fails with the given errors, in order, then returns "created"."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "created"


async def test_retries_while_the_cluster_is_still_forming() -> None:
    create = Creator(no_peers(), no_peers())
    assert await streams.placed(create, "BUILDS", 3, retry_every=0.01) == "created"
    assert create.calls == 3


async def test_gives_up_after_the_wait_with_the_servers_answer() -> None:
    create = Creator(*(no_peers() for _ in range(100)))
    with pytest.raises(nats.js.errors.BadRequestError) as raised:
        await streams.placed(create, "BUILDS", 3, wait=0.05, retry_every=0.01)
    assert raised.value.err_code == streams.NO_SUITABLE_PEERS
    assert 2 <= create.calls < 100


async def test_other_refusals_are_not_retried() -> None:
    bad_config = nats.js.errors.BadRequestError(
        code=400, err_code=10052, description="replicas > 1 not supported in non-clustered mode"
    )
    create = Creator(bad_config)
    with pytest.raises(nats.js.errors.BadRequestError):
        await streams.placed(create, "LOGS", 3, retry_every=0.01)
    assert create.calls == 1
