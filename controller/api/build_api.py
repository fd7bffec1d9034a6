"""The build RPCs of PlatformService (mixed into controller.api.platform.PlatformAPI).

Unary and client-streaming calls go through :func:`controller.api.endpoint.unary`,
the server-streaming StreamBuildOutput through :func:`controller.api.endpoint.streaming`:
both authenticate, log one line and translate :mod:`slipway.errors`. StreamBuildOutput
also shows what the release phase's ``release.N`` dyno printed, read from the app's
log (controller/api/build_output.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc

from controller.api import convert
from controller.api.build_output import Line, follow
from controller.api.builds import Builds, UploadMeta
from controller.api.convert import timestamp
from controller.api.endpoint import streaming, unary
from controller.bus.buildbus import BuildBus
from controller.bus.logs import LogHub
from controller.core.access import Identity
from controller.loops.gc import Collector
from controller.store.build_records import BuildRecord, BuildStore
from slipway import errors, stackimage
from slipway import log as slog
from slipway.v1 import platform_pb2 as pb

log = slog.get("controller.api")
Ctx: TypeAlias = grpc.aio.ServicerContext

_STATUS = {
    "pending": pb.BUILD_STATUS_PENDING,
    "running": pb.BUILD_STATUS_RUNNING,
    "succeeded": pb.BUILD_STATUS_SUCCEEDED,
    "failed": pb.BUILD_STATUS_FAILED,
}
_ACTIONS = {
    pb.BUILDPACKS_ACTION_UNSPECIFIED: "list",
    pb.BUILDPACKS_ACTION_SET: "set",
    pb.BUILDPACKS_ACTION_ADD: "add",
    pb.BUILDPACKS_ACTION_CLEAR: "clear",
    pb.BUILDPACKS_ACTION_REMOVE: "remove",
}


@dataclass
class BuildServices:
    builds: Builds
    store: BuildStore
    bus: BuildBus
    collector: Collector


def build_message(r: BuildRecord) -> pb.Build:
    msg = pb.Build(
        id=r.id,
        app=r.app,
        status=_STATUS.get(r.status, pb.BUILD_STATUS_UNSPECIFIED),
        source_digest=r.source_digest,
        source_version=r.source_version,
        buildpacks=r.buildpacks,
        attempts=r.attempts,
        release=r.release,
        error=r.error,
        slug_digest=r.slug_digest,
        slug_size_bytes=int(r.slug.get("size") or 0),
        builder=r.builder,
        release_phase=r.release_phase,
        process_types=r.process_types,
        source_size_bytes=r.source_size,
    )
    for name, value in (
        ("created_at", r.created_at),
        ("started_at", r.started_at),
        ("finished_at", r.finished_at),
    ):
        if value:
            getattr(msg, name).CopyFrom(timestamp(value))
    return msg


class BuildRPCs:
    build_services: BuildServices | None
    # The app's log, for the release dyno's output in StreamBuildOutput (None: notes only).
    log_hub: LogHub | None
    # Where users reach an app (the controller config's app_url).
    app_url: Callable[[str], str]

    @property
    def _builds(self) -> BuildServices:
        if self.build_services is None:
            raise errors.Unavailable("builds are not enabled on this controller")
        return self.build_services

    @unary
    async def UploadSource(
        self, request: AsyncIterator[pb.UploadSourceRequest], context: Ctx, who: Identity
    ) -> pb.UploadSourceResponse:
        services = self._builds
        messages = aiter(request)
        try:
            first = await anext(messages)
        except StopAsyncIteration:
            raise errors.InvalidArgument("empty upload: send the metadata first") from None
        if first.WhichOneof("part") != "metadata":
            raise errors.InvalidArgument("the first upload message must carry the metadata")
        m = first.metadata
        meta = UploadMeta(m.app, m.size, m.sha256, m.source_version)

        async def chunks() -> AsyncIterator[bytes]:
            async for msg in messages:
                if msg.WhichOneof("part") != "chunk":
                    raise errors.InvalidArgument("metadata may only come first")
                yield msg.chunk

        record = await services.builds.upload(meta, chunks(), who.actor)
        return pb.UploadSourceResponse(build=build_message(record))

    @unary
    async def ListBuilds(
        self, request: pb.ListBuildsRequest, context: Ctx, who: Identity
    ) -> pb.ListBuildsResponse:
        services = self._builds
        await services.builds.state.get_app(request.app)
        records = await services.store.list(request.app)
        if request.limit > 0:
            records = records[: request.limit]
        return pb.ListBuildsResponse(builds=[build_message(r) for r in records])

    @unary
    async def GetBuild(
        self, request: pb.GetBuildRequest, context: Ctx, who: Identity
    ) -> pb.GetBuildResponse:
        services = self._builds
        await services.builds.state.get_app(request.app)
        return pb.GetBuildResponse(build=build_message(await _find(services, request)))

    @streaming
    async def StreamBuildOutput(
        self, request: pb.StreamBuildOutputRequest, context: Ctx, who: Identity
    ) -> AsyncIterator[pb.StreamBuildOutputResponse]:
        services = self._builds
        await services.builds.state.get_app(request.app)
        record = await _find(services, request)
        lines = follow(services.store, services.bus, record.app, record.id, self.log_hub)
        async for item in lines:
            if isinstance(item, Line):
                yield pb.StreamBuildOutputResponse(
                    line=pb.BuildOutputLine(
                        line=item.text, attempt=item.attempt, at=timestamp(item.ts)
                    )
                )
            else:
                yield pb.StreamBuildOutputResponse(build=build_message(item))

    @unary
    async def SetBuildpacks(
        self, request: pb.SetBuildpacksRequest, context: Ctx, who: Identity
    ) -> pb.SetBuildpacksResponse:
        action = _ACTIONS.get(request.action)
        if action is None:
            raise errors.InvalidArgument(f"unknown buildpacks action {request.action}")
        packs = await self._builds.builds.set_buildpacks(
            request.app, action, list(request.buildpacks), request.index
        )
        return pb.SetBuildpacksResponse(buildpacks=packs)

    @unary
    async def SetStack(
        self, request: pb.SetStackRequest, context: Ctx, who: Identity
    ) -> pb.SetStackResponse:
        record = await self._builds.builds.set_stack(request.app, request.stack)
        return pb.SetStackResponse(
            app=convert.app(record, self.app_url(record.name)), available=stackimage.stack_names()
        )

    @unary
    async def PurgeBuildCache(
        self, request: pb.PurgeBuildCacheRequest, context: Ctx, who: Identity
    ) -> pb.PurgeBuildCacheResponse:
        purged = await self._builds.builds.purge_cache(request.app, request.confirm)
        return pb.PurgeBuildCacheResponse(purged=purged)

    def app_destroyed(self, app: str) -> None:
        """Its slugs, sources, cache and build records go at the next collection: now."""
        if self.build_services is not None:
            self.build_services.collector.wake()


async def _find(services: BuildServices, request: Any) -> BuildRecord:
    build_id = request.id
    if not build_id:
        builds = await services.store.list(request.app)
        if not builds:
            raise errors.NotFound(f"{request.app!r} has no builds yet", reason="build_not_found")
        return builds[0]  # no id: the latest build, like `heroku builds:output`
    return await services.store.get(request.app, build_id)
