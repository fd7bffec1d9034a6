"""Garbage collection of slugs, sources and caches by a real controller (leader).

Its own nats-server, because the collector deletes every object no release of
*its* installation references. Releases are made through the API from slugs
the test puts in the object store; the collector keeps only the newest release
(gc_keep_releases = 1) and runs every half second.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from slipway import objstore
from slipway.v1 import types_pb2
from tests.harness import secure
from tests.harness.wait import eventually
from tests.integration.test_deploy_builds import start_controller

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gc_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = secure.nats_engine(tmp_path_factory.mktemp("gc-nats"))
    server.start()
    yield f"nats://{server.host}:{server.port}"
    server.stop()


async def _put(nats_url: str, tmp: Path, bucket: str, name: str) -> None:
    nc = await secure.nats_connect([nats_url])
    try:
        stores = objstore.ObjectStores(nc.jetstream())
        path = tmp / f"{bucket}-{name[:12]}"
        path.write_bytes(f"{bucket}/{name}".encode())
        await stores.put_file(bucket, name, path)
    finally:
        await nc.close()


async def _names(nats_url: str, bucket: str) -> set[str]:
    nc = await secure.nats_connect([nats_url])
    try:
        return set(await objstore.ObjectStores(nc.jetstream()).names(bucket))
    finally:
        await nc.close()


def names(nats_url: str, bucket: str) -> set[str]:
    return asyncio.run(_names(nats_url, bucket))


def test_gc_deletes_unreferenced_slugs_and_a_destroyed_apps_objects(
    etcd_endpoint: str, etcd_prefix: str, gc_nats: str, tmp_path: Path
) -> None:
    ctl = start_controller(
        etcd_endpoint,
        etcd_prefix,
        gc_nats,
        tmp_path / "controller",
        gc_keep_releases=1,
        gc_interval_seconds=0.5,
        gc_min_age_seconds=0.0,
    )
    try:
        old, new, orphan = (hashlib.sha256(n.encode()).hexdigest() for n in ("a", "b", "c"))
        client = ctl.client()
        client.create_app("gcapp")
        # References before objects: with min_age 0 a collection that ran between
        # an upload and the release naming it would rightly delete the slug.
        for digest in (old, new):
            client.create_release(
                "gcapp", types_pb2.SlugRef(digest=digest, size_bytes=10), {"web": "true"}
            )
        for digest in (old, new, orphan):
            asyncio.run(_put(gc_nats, tmp_path, objstore.SLUGS, digest))
        asyncio.run(_put(gc_nats, tmp_path, objstore.CACHES, "gcapp"))
        asyncio.run(_put(gc_nats, tmp_path, objstore.CACHES, "gone-app"))

        def collected() -> bool:
            slugs = names(gc_nats, objstore.SLUGS)
            caches = names(gc_nats, objstore.CACHES)
            return slugs == {new} and caches == {"gcapp"}

        eventually(collected, timeout=20, interval=0.3)

        ctl.cli("apps:destroy", "-a", "gcapp", "--confirm", "gcapp", check=True)

        def app_objects_gone() -> bool:
            return not names(gc_nats, objstore.SLUGS) and not names(gc_nats, objstore.CACHES)

        eventually(app_objects_gone, timeout=20, interval=0.3)
    finally:
        ctl.stop()
