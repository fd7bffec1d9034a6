"""The log drain RPCs of PlatformService (mixed into controller.api.platform.PlatformAPI)."""

from __future__ import annotations

from typing import TypeAlias

import grpc

from controller.api.auth import Access
from controller.api.convert import timestamp
from controller.api.endpoint import unary
from controller.bus.logs import LogHub
from controller.core.access import Identity
from controller.core.drains import DrainRecord, shown_url
from controller.store.drains import Drains
from slipway import errors
from slipway.v1 import platform_pb2 as pb

Ctx: TypeAlias = grpc.aio.ServicerContext


def drain_message(record: DrainRecord) -> pb.LogDrain:
    return pb.LogDrain(
        id=record.id,
        app=record.app,
        url=shown_url(record.url),
        token=record.token,
        created_at=timestamp(record.created_at),
    )


class DrainRPCs:
    access: Access
    drains: Drains
    log_hub: LogHub | None

    def _log(self, app: str, *messages: str) -> None: ...

    @unary
    async def ListLogDrains(
        self, request: pb.ListLogDrainsRequest, context: Ctx, who: Identity
    ) -> pb.ListLogDrainsResponse:
        records = await self.drains.list(request.app)
        return pb.ListLogDrainsResponse(drains=[drain_message(r) for r in records])

    @unary
    async def AddLogDrain(
        self, request: pb.AddLogDrainRequest, context: Ctx, who: Identity
    ) -> pb.AddLogDrainResponse:
        if self.log_hub is None:
            raise errors.Unavailable("log drains need the controller's NATS connection")
        await self.drains.state.get_app(request.app)
        # From the app's newest line on: a new drain does not replay old history.
        start_after = await self.log_hub.last_seq(request.app)
        record = await self.drains.add(request.app, request.url, start_after)
        self._log(request.app, f"Add drain {shown_url(record.url)} by {who.actor}")
        return pb.AddLogDrainResponse(drain=drain_message(record))

    @unary
    async def RemoveLogDrain(
        self, request: pb.RemoveLogDrainRequest, context: Ctx, who: Identity
    ) -> pb.RemoveLogDrainResponse:
        record = await self.drains.remove(request.app, request.drain)
        self._log(request.app, f"Remove drain {shown_url(record.url)} by {who.actor}")
        return pb.RemoveLogDrainResponse(drain=drain_message(record))
