"""A read that meets a short etcd outage waits it out; a write fails at once.

Found by the multi-host fault test: killing the etcd leader made
``slipway deploy`` fail with "etcdserver: leader changed", because the
controller's read of the build record was not repeated. Here the outage is a
real etcd killed with SIGKILL and started again on the same port and data.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from slipway import engines, errors
from slipway.etcd import Etcd

pytestmark = pytest.mark.integration


async def test_read_waits_for_etcd_to_come_back_and_write_does_not(tmp_path: Path) -> None:
    server = engines.etcd(tmp_path / "etcd")
    server.start()
    again = engines.Engine(server.name, server.argv, server.data_dir, server.host, server.port)
    try:
        async with Etcd([f"{server.host}:{server.port}"]) as etcd:
            await etcd.put(b"/outage/k", b"v")
            server.kill()

            async def come_back() -> None:
                await asyncio.sleep(0.5)
                await asyncio.to_thread(again.start)

            back = asyncio.create_task(come_back())
            kv = await etcd.get(b"/outage/k")  # issued while nothing listens
            await back
            assert kv is not None and kv.value == b"v"

            again.kill()
            with pytest.raises(errors.Unavailable):
                await etcd.put(b"/outage/k", b"w")
    finally:
        again.stop()
        server.stop()
