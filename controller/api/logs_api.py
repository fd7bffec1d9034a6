"""The StreamLogs RPC of PlatformService (mixed into controller.api.platform.PlatformAPI).

The RPC goes through :func:`controller.api.endpoint.streaming`: authentication,
one log line when the stream ends, and error translation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeAlias

import grpc

from controller.api.auth import Access
from controller.api.convert import timestamp
from controller.api.endpoint import streaming
from controller.bus.logs import LogFilter, LogHub, line_count
from controller.core.access import Identity
from controller.store.state import State
from slipway import errors
from slipway.logline import LogLine
from slipway.v1 import platform_pb2 as pb

Ctx: TypeAlias = grpc.aio.ServicerContext

# Keep each response well under the 8 MB message limit (lines are up to 10 KB).
_RESPONSE_BYTES = 1024 * 1024


def entry(line: LogLine) -> pb.LogEntry:
    return pb.LogEntry(
        at=timestamp(line.ts),
        source=line.source,
        process=line.process,
        message=line.message,
        seq=line.seq,
        index=line.index,
    )


def responses(lines: list[LogLine]) -> list[pb.StreamLogsResponse]:
    """Lines packed into responses of about ``_RESPONSE_BYTES`` each, in order."""
    out: list[pb.StreamLogsResponse] = []
    batch: list[pb.LogEntry] = []
    size = 0
    for line in lines:
        e = entry(line)
        batch.append(e)
        size += len(line.message) + 64
        if size >= _RESPONSE_BYTES:
            out.append(pb.StreamLogsResponse(lines=batch))
            batch, size = [], 0
    if batch:
        out.append(pb.StreamLogsResponse(lines=batch))
    return out


class LogRPCs:
    state: State
    access: Access
    log_hub: LogHub | None

    @streaming
    async def StreamLogs(
        self, request: pb.StreamLogsRequest, context: Ctx, who: Identity
    ) -> AsyncIterator[pb.StreamLogsResponse]:
        num = line_count(request.num)
        flt = LogFilter.parse(request.source, request.dyno)
        await self.state.get_app(request.app)
        if self.log_hub is None:
            raise errors.Unavailable("logs are not enabled on this controller")
        lines_read = self.log_hub.read(
            request.app,
            num,
            flt,
            tail=request.tail,
            after_seq=request.after_seq,
            after_index=request.after_index,
        )
        async for lines in lines_read:
            for response in responses(lines):
                yield response
