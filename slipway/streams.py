"""Create JetStream streams idempotently, and keep their replica count where operators set it.

Every stream and bucket Slipway makes (LOGS, BUILDS, BUILD_EVENTS, the object
store's ``OBJ_*`` streams) goes through :func:`ensure`. Any party may call it,
in any order, so a stream may already exist with fewer copies than asked for:
an agent created a bucket with the default of 1 before a controller configured
for 3 started, or the cluster grew from one server to three. Then the replica
count is raised in place (nats-server copies the data itself). When the server
refuses (fewer servers than copies asked for), that is logged as a warning and
the stream is left working with what it has: logs and builds on fewer copies
beat no logs and no builds. (A standalone nats-server accepts any count and
keeps its one copy.)

With TLS only the controller may create or change streams (see
:mod:`slipway.natsauth`); the others call with ``create=False``, which only
checks that the stream is there and says who makes it when it is not.

Replicas are never lowered here: a component started with a smaller setting
must not undo a larger one.

A cluster that is still forming (its meta leader elected, not every server
joined yet) answers "no suitable peers for placement" to a stream with as many
copies as it will have servers a moment later. Creation waits that out, for
``PLACEMENT_WAIT`` seconds, before calling the setting wrong.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.js.api
import nats.js.errors
from nats.js import JetStreamContext

from slipway import errors, log

_log = log.get("slipway.streams")

T = TypeVar("T")
NO_SUITABLE_PEERS = 10005  # JetStream's err_code for "no suitable peers for placement"
PLACEMENT_WAIT = 30.0


async def placed(
    create: Callable[[], Awaitable[T]],
    name: str,
    replicas: int,
    *,
    wait: float = PLACEMENT_WAIT,
    retry_every: float = 0.5,
) -> T:
    """Run ``create`` (a stream or bucket creation); while the cluster cannot yet
    place ``replicas`` copies, try again, for up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    warned = False
    while True:
        try:
            return await create()
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != NO_SUITABLE_PEERS or time.monotonic() >= deadline:
                raise
            if not warned:
                warned = True
                _log.warning(
                    "waiting for enough NATS servers to place the stream",
                    stream=name,
                    replicas=replicas,
                    wait_s=wait,
                )
            await asyncio.sleep(retry_every)


def _replicas(config: nats.js.api.StreamConfig) -> int:
    return int(config.num_replicas or 1)


async def ensure(
    js: JetStreamContext,
    wanted: nats.js.api.StreamConfig,
    *,
    outdated: Callable[[nats.js.api.StreamConfig], bool] | None = None,
    create: bool = True,
) -> None:
    """Create ``wanted``; if it exists, apply it when ``outdated(existing)`` says so,
    and raise its replicas to ``wanted.num_replicas`` when it has fewer.

    ``create=False``: only check that it exists (:func:`require`)."""
    name = wanted.name
    assert name is not None
    if not create:
        await require(js, name)
        return
    try:
        info = await js.stream_info(name)
    except nats.js.errors.NotFoundError:
        try:
            await placed(lambda: js.add_stream(wanted), name, _replicas(wanted))
            return
        except nats.js.errors.BadRequestError as exc:
            try:
                info = await js.stream_info(name)  # another party created it meanwhile
            except nats.js.errors.NotFoundError:
                # Not a race: the server refused the config (e.g. 3 replicas on
                # a standalone server). Say which setting to look at.
                raise errors.Unavailable(
                    f"NATS refused to create stream {name} with "
                    f"{_replicas(wanted)} replica(s) (check nats_replicas): {exc}"
                ) from exc
    have = info.config
    if outdated is not None and outdated(have):
        # Keep the replica count the stream has; raising it is the step below.
        await js.update_stream(dataclasses.replace(wanted, num_replicas=_replicas(have)))
    await raise_replicas(js, have, _replicas(wanted))


def missing(name: str) -> errors.Unavailable:
    return errors.Unavailable(
        f"NATS stream {name} does not exist yet; the controller creates it when it "
        "connects to NATS",
        reason="stream_missing",
    )


async def require(js: JetStreamContext, name: str) -> None:
    """Check that stream ``name`` exists, for a party that may not create it."""
    try:
        await js.stream_info(name)
    except nats.js.errors.NotFoundError as exc:
        raise missing(name) from exc


async def raise_replicas(
    js: JetStreamContext, have: nats.js.api.StreamConfig, replicas: int
) -> bool:
    """Bring an existing stream to ``replicas`` copies if it has fewer; warn if NATS refuses."""
    current = _replicas(have)
    if current >= replicas:
        return True
    try:
        await js.update_stream(dataclasses.replace(have, num_replicas=replicas))
    except nats.js.errors.APIError as exc:
        _log.warning(
            "stream keeps fewer replicas than configured",
            stream=have.name,
            replicas=current,
            wanted=replicas,
            error=str(exc.description or exc),
        )
        return False
    _log.info("stream replicas raised", stream=have.name, replicas=replicas, previous=current)
    return True


async def ensure_replicas(js: JetStreamContext, stream: str, replicas: int) -> bool:
    """Raise an existing stream (e.g. an object store bucket's ``OBJ_<bucket>``) to ``replicas``."""
    if replicas <= 1:
        return True
    info = await js.stream_info(stream)
    return await raise_replicas(js, info.config, replicas)
