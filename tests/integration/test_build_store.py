"""BuildStore against a real etcd: finding a build by id, with and without its app."""

from __future__ import annotations

import pytest

from controller.store.build_records import BuildRecord, BuildStore
from slipway.keys import Keys
from tests.harness import secure

pytestmark = pytest.mark.integration


async def test_find_reads_directly_with_the_app_and_searches_without(
    etcd_endpoint: str, etcd_prefix: str
) -> None:
    async with secure.root_etcd([etcd_endpoint]) as etcd:
        store = BuildStore(etcd, Keys(etcd_prefix))
        for app, build_id in (("alpha", "b-1"), ("beta", "b-2")):
            await store.create(BuildRecord(id=build_id, app=app, created_at=1.0))

        direct = await store.find("b-2", "beta")
        assert direct is not None and (direct.app, direct.id) == ("beta", "b-2")
        # A status from an older builder carries no app: the id alone still finds it.
        searched = await store.find("b-2")
        assert searched is not None and searched.app == "beta"
        # The wrong app, or an unknown id, is simply not found.
        assert await store.find("b-2", "alpha") is None
        assert await store.find("b-9") is None
