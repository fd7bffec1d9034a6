"""The garbage collector's pure plan: what is kept, what goes."""

from __future__ import annotations

from controller.core.models import ReleaseRecord, SlugInfo
from controller.loops.gc import _mtime, plan_gc
from controller.store.build_records import FAILED, RUNNING, SUCCEEDED, BuildRecord
from slipway import objstore

NOW = 10_000.0
OLD = NOW - 7200


def release(app: str, version: int, digest: str, build_id: str = "") -> ReleaseRecord:
    return ReleaseRecord(
        app=app,
        version=version,
        description="",
        created_at=0.0,
        config={},
        slug=SlugInfo(digest=digest),
        process_types={},
        build_id=build_id,
    )


def build(app: str, build_id: str, status: str, digest: str = "", release: int = 0) -> BuildRecord:
    return BuildRecord(
        id=build_id,
        app=app,
        status=status,
        slug={"digest": digest} if digest else {},
        release=release,
    )


def test_keeps_newest_releases_and_unfinished_builds() -> None:
    releases = {
        "app": [release("app", 3, "s3", "b3"), release("app", 2, "s2", "b2"), release("app", 1, "")]
    }
    builds = [
        build("app", "b3", SUCCEEDED, "s3", 3),
        build("app", "b2", SUCCEEDED, "s2", 2),
        build("app", "b4", RUNNING),
        build("app", "b5", FAILED),
        build("app", "b6", SUCCEEDED, "s6"),  # built, release not yet created
    ]
    objects = {
        objstore.SLUGS: {"s3": OLD, "s2": OLD, "s6": OLD, "orphan": OLD, "young": NOW - 5},
        objstore.SOURCES: {"b3": OLD, "b2": OLD, "b4": OLD, "b5": OLD, "b6": OLD},
        objstore.CACHES: {"app": OLD},
    }
    plan = plan_gc(releases, builds, objects, NOW, keep_releases=1, min_age=3600)
    assert plan.slugs == ["orphan", "s2"]
    assert plan.sources == ["b2", "b5"]
    assert plan.caches == [] and plan.builds == []

    keep_two = plan_gc(releases, builds, objects, NOW, keep_releases=2, min_age=3600)
    assert keep_two.slugs == ["orphan"] and keep_two.sources == ["b5"]


def test_destroyed_app_objects_go_even_when_young() -> None:
    builds = [build("gone", "b1", SUCCEEDED, "s1", 2), build("live", "b2", SUCCEEDED, "s2", 2)]
    releases = {"live": [release("live", 2, "s2", "b2")]}
    objects = {
        objstore.SLUGS: {"s1": NOW, "s2": NOW, "shared-young": NOW},
        objstore.SOURCES: {"b1": NOW, "b2": NOW},
        objstore.CACHES: {"gone": NOW, "live": NOW},
    }
    plan = plan_gc(releases, builds, objects, NOW, keep_releases=10, min_age=3600)
    assert plan.slugs == ["s1"] and plan.sources == ["b1"] and plan.caches == ["gone"]
    assert [b.id for b in plan.builds] == ["b1"]


def test_a_slug_shared_by_a_live_release_is_kept() -> None:
    # A rollback on another app, or two apps built from the same source: one slug.
    builds = [build("gone", "b1", SUCCEEDED, "same", 2)]
    releases = {"live": [release("live", 2, "same")]}
    plan = plan_gc(
        releases, builds, {objstore.SLUGS: {"same": OLD}}, NOW, keep_releases=1, min_age=0
    )
    assert plan.slugs == []


def test_mtime_parsing() -> None:
    assert _mtime("1970-01-01T00:00:10.123456789Z") == 10.123456
    assert _mtime("") == 0.0 and _mtime(None) == 0.0 and _mtime(5) == 5.0
