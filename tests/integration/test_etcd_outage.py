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
from tests.harness import secure
from tests.harness.wait import eventually_async

pytestmark = pytest.mark.integration


async def test_read_waits_for_etcd_to_come_back_and_write_does_not(tmp_path: Path) -> None:
    server = secure.etcd_engine(tmp_path / "etcd")
    server.start()
    again = engines.Engine(server.name, server.argv, server.data_dir, server.host, server.port)
    try:
        async with secure.root_etcd([f"{server.host}:{server.port}"]) as etcd:
            await etcd.put(b"/outage/k", b"v")
            server.kill()

            read = asyncio.create_task(etcd.get(b"/outage/k"))  # issued while nothing listens
            # etcd comes back only once the read has met the outage: its first
            # try failed and it is waiting to repeat it (not done, no error yet).
            await eventually_async(lambda: asyncio.sleep(0, etcd.read_retries >= 1), timeout=10)
            assert not read.done()
            await asyncio.to_thread(again.start)
            kv = await read
            assert kv is not None and kv.value == b"v"

            again.kill()
            with pytest.raises(errors.Unavailable):
                await etcd.put(b"/outage/k", b"w")
    finally:
        again.stop()
        server.stop()
