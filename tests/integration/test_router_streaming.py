"""100 MB through the real ``slipway-router`` process (uvloop), both ways, with
bounded router memory: bodies are streamed with backpressure, never buffered.

Each side first stalls for a moment (the dyno before reading the upload, the
client before reading the download): without backpressure the router would
soak up the whole body meanwhile, and its RSS would show it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from slipway import engines, pki
from tests.harness import secure
from tests.harness.wait import eventually_async
from tests.integration.test_router_harness import (
    BASE,
    read_head,
    routes,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SIZE = 100 * 1024 * 1024
CHUNK = 256 * 1024
RSS_LIMIT = 150 * 1024 * 1024
# Growth allowed over the warmed-up router's RSS. With backpressure it grows by
# a few MB; with it switched off, by about 100 MB (this test then fails).
GROWTH_LIMIT = 40 * 1024 * 1024
STALL = 1.0


async def dyno(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """POST /upload: count the body (after a stall); GET /download: send SIZE bytes."""
    try:
        while True:
            got = await read_head(reader)
            if got is None:
                return
            line, headers = got
            if line.startswith("POST"):
                await asyncio.sleep(STALL)
                left = int(headers["content-length"])
                total = 0
                while left:
                    data = await reader.read(min(left, CHUNK))
                    if not data:
                        return
                    total += len(data)
                    left -= len(data)
                body = str(total).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            elif line.startswith("GET /small"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nsmall")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                block = b"d" * CHUNK
                for _ in range(SIZE // CHUNK):
                    writer.write(b"%x\r\n%s\r\n" % (len(block), block))
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def sample_rss(pid: int, peak: list[int]) -> None:
    proc = psutil.Process(pid)
    while True:
        peak[0] = max(peak[0], proc.memory_info().rss)
        await asyncio.sleep(0.02)


async def upload_body() -> AsyncIterator[bytes]:
    block = b"u" * CHUNK
    for _ in range(SIZE // CHUNK):
        yield block


@pytest.fixture
def router_process(etcd_endpoint: str, etcd_prefix: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    port = engines.free_port()
    log = open(tmp_path / "router.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "router",
            "--listen",
            f"127.0.0.1:{port}",
            "--etcd",
            etcd_endpoint,
            "--etcd-prefix",
            etcd_prefix,
            "--base-domain",
            BASE,
            *secure.flags(pki.Role.ROUTER),
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        engines.wait_for_port("127.0.0.1", port, 15, proc)
        yield proc, port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


async def test_100mb_upload_and_download_with_bounded_memory(
    etcd_endpoint, etcd_prefix, router_process
):
    proc, port = router_process
    server = await asyncio.start_server(dyno, "127.0.0.1", 0)
    dyno_port = server.sockets[0].getsockname()[1]
    async with routes(etcd_endpoint, etcd_prefix) as r:
        await r.app("big")
        await r.dyno("big", "web.1", address=f"127.0.0.1:{dyno_port}")

    async def routed() -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"HEAD / HTTP/1.1\r\nHost: big.{BASE}\r\nConnection: close\r\n\r\n".encode())
        data = await reader.read()
        writer.close()
        return data.startswith(b"HTTP/1.1 200")

    await eventually_async(routed, timeout=15)
    baseline = psutil.Process(proc.pid).memory_info().rss
    peak = [0]
    sampler = asyncio.create_task(sample_rss(proc.pid, peak))
    try:
        # upload: 100 MB with Content-Length, written as fast as the router takes it
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"POST /upload HTTP/1.1\r\nHost: big.{BASE}\r\nContent-Length: {SIZE}\r\n\r\n".encode()
        )
        async for block in upload_body():
            writer.write(block)
            await writer.drain()
        got = await read_head(reader)
        assert got is not None and got[0].startswith("HTTP/1.1 200")
        body = await reader.readexactly(int(got[1]["content-length"]))
        assert int(body) == SIZE

        # download on the same connection: the client stalls before reading
        writer.write(f"GET /download HTTP/1.1\r\nHost: big.{BASE}\r\n\r\n".encode())
        await asyncio.sleep(STALL)
        got = await read_head(reader)
        assert got is not None and got[1]["transfer-encoding"] == "chunked"
        total = 0
        while True:
            size = int(await reader.readuntil(b"\r\n"), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            while size:
                data = await reader.read(min(size, CHUNK))
                total += len(data)
                size -= len(data)
            await reader.readexactly(2)
        assert total == SIZE
        writer.close()
        # the dyno connection went back to the pool after a paused stream, and
        # must still work: a paused pooled connection would hang this request
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET /small HTTP/1.1\r\nHost: big.{BASE}\r\n\r\n".encode())
            got = await asyncio.wait_for(read_head(reader), 5)
            assert got is not None and got[0].startswith("HTTP/1.1 200")
            assert await reader.readexactly(5) == b"small"
            writer.close()
    finally:
        sampler.cancel()
        server.close()
    mb = f"{baseline / 2**20:.0f} MB -> peak {peak[0] / 2**20:.0f} MB"
    assert 0 < peak[0] < RSS_LIMIT, f"router RSS {mb}"
    assert peak[0] - baseline < GROWTH_LIMIT, f"router RSS {mb}"
