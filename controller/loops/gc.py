"""Garbage collection of slugs, sources and caches in the object store (leader only).

Kept: the slugs of each app's newest ``keep_releases`` releases, the sources of
the builds behind those releases, and everything an unfinished build uses.
Deleted: every other slug and source, the caches and build records of apps
that no longer exist. An object younger than ``min_age`` is kept unless it is
known to belong to a destroyed app: a slug is uploaded by its builder a moment
before the build record names it, and a source is stored a moment before its
build record is written, so a young unknown object is probably on its way to
being referenced.

``plan_gc`` is pure (unit-tested); :class:`Collector` loads its inputs and
applies the plan, periodically and when woken (after an app is destroyed).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from controller.bus.buildbus import BuildBus
from controller.core.models import ReleaseRecord
from controller.loops.leader import Leadership
from controller.store.build_records import BuildRecord, BuildStore
from controller.store.state import State
from slipway import log as slog
from slipway import objstore
from slipway.clock import Clock, SystemClock

log = slog.get("controller.gc")


@dataclass
class GcPlan:
    slugs: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    caches: list[str] = field(default_factory=list)
    builds: list[BuildRecord] = field(default_factory=list)  # records of destroyed apps

    @property
    def empty(self) -> bool:
        return not (self.slugs or self.sources or self.caches or self.builds)


def plan_gc(
    releases: Mapping[str, list[ReleaseRecord]],
    builds: Iterable[BuildRecord],
    objects: Mapping[str, Mapping[str, float]],
    now: float,
    *,
    keep_releases: int,
    min_age: float,
) -> GcPlan:
    """``releases``: app -> its releases, newest first (only apps that exist).
    ``objects``: bucket -> {object name: mtime}."""
    keep_slugs: set[str] = set()
    keep_sources: set[str] = set()
    kept_build_ids: set[str] = set()
    for app_releases in releases.values():
        for r in app_releases[: max(keep_releases, 1)]:
            if r.slug.digest:
                keep_slugs.add(r.slug.digest)
            if r.build_id:
                kept_build_ids.add(r.build_id)
    doomed_slugs: set[str] = set()
    doomed_sources: set[str] = set()
    plan = GcPlan()
    for b in builds:
        if b.app not in releases:
            plan.builds.append(b)
            doomed_sources.add(b.source_object)
            if b.slug_digest:
                doomed_slugs.add(b.slug_digest)
            continue
        if not b.finished or b.id in kept_build_ids:
            keep_sources.add(b.source_object)
            if b.slug_digest:
                keep_slugs.add(b.slug_digest)

    def collect(bucket: str, keep: set[str], doomed: set[str]) -> list[str]:
        return sorted(
            name
            for name, mtime in objects.get(bucket, {}).items()
            if name not in keep and (name in doomed or now - mtime >= min_age)
        )

    plan.slugs = collect(objstore.SLUGS, keep_slugs, doomed_slugs)
    plan.sources = collect(objstore.SOURCES, keep_sources, doomed_sources)
    plan.caches = sorted(n for n in objects.get(objstore.CACHES, {}) if n not in releases)
    return plan


class Collector:
    def __init__(
        self,
        state: State,
        store: BuildStore,
        bus: BuildBus,
        leadership: Leadership,
        *,
        keep_releases: int = 10,
        interval: float = 600.0,
        min_age: float = 3600.0,
        clock: Clock = SystemClock(),
    ) -> None:
        self.clock = clock
        self.state = state
        self.store = store
        self.bus = bus
        self.leadership = leadership
        self.keep_releases = keep_releases
        self.interval = interval
        self.min_age = min_age
        self._wake = asyncio.Event()
        self.runs = 0

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        await self.leadership.run_while_leading(
            "gc", self.collect_once, wake=self._wake, every=self.interval, ready=self.bus.connected
        )

    async def _objects(self, bucket: str) -> dict[str, float]:
        return {i.name: _mtime(i.mtime) for i in await self.bus.stores.infos(bucket)}

    async def collect_once(self) -> GcPlan:
        started = self.clock.monotonic()
        # Objects first, then references: an object stored after the listing is
        # not considered at all, and a reference made meanwhile is seen.
        objects = {b: await self._objects(b) for b in objstore.BUCKETS}
        apps = await self.state.list_apps()
        releases = {a.name: await self.state.list_releases(a.name) for a in apps}
        builds = await self.store.list()
        plan = plan_gc(
            releases,
            builds,
            objects,
            self.clock.now(),
            keep_releases=self.keep_releases,
            min_age=self.min_age,
        )
        if not self.leadership.is_leader:
            return plan
        stores = self.bus.stores
        for name in plan.slugs:
            await stores.delete(objstore.SLUGS, name)
        for name in plan.sources:
            await stores.delete(objstore.SOURCES, name)
        for name in plan.caches:
            await stores.delete(objstore.CACHES, name)
        for app in sorted({b.app for b in plan.builds}):
            await self.store.delete_app(app)
        self.runs += 1
        if not plan.empty:
            log.info(
                "gc deleted objects",
                slugs=len(plan.slugs),
                sources=len(plan.sources),
                caches=len(plan.caches),
                builds=len(plan.builds),
                duration_ms=round((self.clock.monotonic() - started) * 1000, 1),
            )
        return plan


def _mtime(value: object) -> float:
    """ObjectInfo.mtime is an RFC 3339 string; unknown means 'old enough'."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value:
        text = value.replace("Z", "+00:00")
        # Python 3.11 parses at most 6 fractional digits; NATS sends 9.
        if "." in text:
            head, _, rest = text.partition(".")
            digits = "".join(c for c in rest if c.isdigit())
            zone = rest[len(digits) :]
            text = f"{head}.{digits[:6]}{zone}"
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(text).timestamp()
    return 0.0
