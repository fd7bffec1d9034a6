"""Release bookkeeping against a real etcd: which releases wait for their release
phase, and how settling one moves (or does not move) the app's current release."""

from __future__ import annotations

import pytest

from controller.bus.buildbus import BuildBus
from controller.core.models import RELEASE_FAILED, RELEASE_PENDING, RELEASE_SUCCEEDED, SlugInfo
from controller.core.sizes import SizeTable
from controller.loops.release_phase import ReleasePhase
from controller.store.build_records import FAILED, PENDING, SUCCEEDED, BuildRecord, BuildStore
from controller.store.state import State
from slipway.keys import Keys
from tests.harness import secure

pytestmark = pytest.mark.integration

SLUG = SlugInfo(digest="ab" * 32, size_bytes=10, stack="slipway-24")


async def test_config_change_and_rollback_wait_for_the_release_command(
    etcd_endpoint: str, etcd_prefix: str
) -> None:
    async with secure.root_etcd([etcd_endpoint]) as etcd:
        state = State(etcd, Keys(etcd_prefix), SizeTable())
        await state.create_app("phased")
        v2 = await state.create_release(
            "phased", SLUG, {"web": "w"}, "Deploy", "t", release_command="migrate"
        )
        app = await state.get_app("phased")
        assert (v2.status, app.current_release, app.pending_releases) == (RELEASE_PENDING, 1, [2])
        assert (await state.get_formation("phased"))[0] == {}, "no dynos before the phase"

        settled, live = await state.set_release_status("phased", 2, RELEASE_SUCCEEDED)
        assert live and settled is not None and settled.status == RELEASE_SUCCEEDED
        app = await state.get_app("phased")
        assert (app.current_release, app.pending_releases) == (2, [])
        assert (await state.get_formation("phased"))[0]["web"].quantity == 1

        _, v3 = await state.update_config("phased", {"MIGRATE_OK": "0"}, [], "t")
        assert (v3.status, v3.release_command, v3.slug) == (RELEASE_PENDING, "migrate", SLUG)
        assert (await state.get_app("phased")).current_release == 2
        settled, live = await state.set_release_status(
            "phased", 3, RELEASE_FAILED, error="release command exited with status 1"
        )
        assert not live and settled is not None and settled.error.endswith("status 1")
        app = await state.get_app("phased")
        assert (app.current_release, app.pending_releases) == (2, [])
        # Settling again changes nothing: the first verdict stands.
        settled, live = await state.set_release_status("phased", 3, RELEASE_SUCCEEDED)
        assert not live and settled is not None and settled.status == RELEASE_FAILED

        v4 = await state.rollback("phased", 2, "t")
        assert (v4.status, v4.release_command, v4.config) == (RELEASE_PENDING, "migrate", {})
        assert (await state.get_app("phased")).pending_releases == [4]


async def test_an_older_release_finishing_late_never_replaces_a_newer_one(
    etcd_endpoint: str, etcd_prefix: str
) -> None:
    async with secure.root_etcd([etcd_endpoint]) as etcd:
        keys = Keys(etcd_prefix)
        state = State(etcd, keys, SizeTable())
        await state.create_app("racing")
        for _ in range(2):
            await state.create_release("racing", SLUG, {"web": "w"}, "", "t", release_command="m")
        assert (await state.get_app("racing")).pending_releases == [2, 3]
        # v3 wins first; v2's phase dyno is removed with its verdict.
        await etcd.put(keys.dyno("racing", "i-2"), b"{}")
        release2 = await state.get_release("racing", 2)
        release2.phase_instance = "i-2"
        await etcd.put(keys.release("racing", 2), release2.encode())

        assert (await state.set_release_status("racing", 3, RELEASE_SUCCEEDED))[1]
        settled, live = await state.set_release_status("racing", 2, RELEASE_SUCCEEDED)
        assert not live and settled is not None and settled.status == RELEASE_SUCCEEDED
        app = await state.get_app("racing")
        assert (app.current_release, app.pending_releases) == (3, [])
        assert await etcd.get(keys.dyno("racing", "i-2")) is None


async def test_a_settled_release_phase_is_mirrored_onto_its_build_record(
    etcd_endpoint: str, etcd_prefix: str
) -> None:
    async with secure.root_etcd([etcd_endpoint]) as etcd:
        keys = Keys(etcd_prefix)
        state = State(etcd, keys, SizeTable())
        store = BuildStore(etcd, keys)
        phase = ReleasePhase(state, store, BuildBus(["nats://127.0.0.1:1"]), SizeTable())
        await state.create_app("mirror")
        await state.create_release(
            "mirror", SLUG, {"web": "w"}, "", "t", build_id="b-1", release_command="m"
        )
        build = BuildRecord(
            id="b-1",
            app="mirror",
            status=SUCCEEDED,
            release=2,
            release_command="m",
            release_phase=PENDING,
        )
        await store.create(build)

        await state.set_release_status("mirror", 2, RELEASE_FAILED, error="boom")
        await phase.sync_build(await store.get("mirror", "b-1"))
        mirrored = await store.get("mirror", "b-1")
        assert mirrored.finished and mirrored.release_phase == FAILED
        assert mirrored.error == "Release v2 failed: boom"
        assert mirrored.notes == [" !     Release v2 failed: boom; dynos stay on v1"]
