"""The StreamLogs RPC of PlatformService (mixed into controller.api.PlatformAPI).

A server-streaming call cannot go through :func:`controller.endpoint.unary`, so
:func:`streaming` does the same three things around an async generator:
authenticate, log one line when the stream ends (method, app, code,
duration_ms), and translate :mod:`slipway.errors` into a status.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeAlias, TypeVar

import grpc

from controller.auth import Tokens
from controller.convert import timestamp
from controller.logs import LogFilter, LogHub, line_count
from controller.state import State
from slipway import errors
from slipway import log as slog
from slipway.logline import LogLine
from slipway.v1 import platform_pb2 as pb

log = slog.get("controller.api")
Ctx: TypeAlias = grpc.aio.ServicerContext
Req = TypeVar("Req")
Resp = TypeVar("Resp")

# Keep each response well under the 8 MB message limit (lines are up to 10 KB).
_RESPONSE_BYTES = 1024 * 1024


def streaming(
    func: Callable[[Any, Req, Ctx, str], AsyncIterator[Resp]],
) -> Callable[[Any, Req, Ctx], AsyncIterator[Resp]]:
    """Authenticate, log and translate errors for a server-streaming RPC."""

    @functools.wraps(func)
    async def wrapper(self: Any, request: Req, context: Ctx) -> AsyncIterator[Resp]:
        started = time.monotonic()
        code = "OK"
        app = str(getattr(request, "app", ""))
        try:
            actor = await self.tokens.authenticate(context)
            async for item in func(self, request, context, actor):
                yield item
        except errors.SlipwayError as exc:
            code = exc.code.name
            await context.abort(exc.code, exc.message)
        except (GeneratorExit, asyncio.CancelledError):
            code = "CANCELLED"  # the client went away (or the server is stopping)
            raise
        except Exception:
            code = "INTERNAL"
            log.exception("api call failed", method=func.__name__, app=app)
            await context.abort(
                grpc.StatusCode.INTERNAL, "internal error in the controller; see its log"
            )
        finally:
            log.info(
                "api call",
                method=func.__name__,
                app=app,
                code=code,
                duration_ms=round((time.monotonic() - started) * 1000, 1),
            )

    return wrapper


def entry(line: LogLine) -> pb.LogEntry:
    return pb.LogEntry(
        at=timestamp(line.ts), source=line.source, process=line.process, message=line.message
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
    tokens: Tokens
    log_hub: LogHub | None

    @streaming
    async def StreamLogs(
        self, request: pb.StreamLogsRequest, context: Ctx, actor: str
    ) -> AsyncIterator[pb.StreamLogsResponse]:
        num = line_count(request.num)
        flt = LogFilter.parse(request.source, request.dyno)
        await self.state.get_app(request.app)
        if self.log_hub is None:
            raise errors.Unavailable("logs are not enabled on this controller")
        async for lines in self.log_hub.read(request.app, num, flt, tail=request.tail):
            for response in responses(lines):
                yield response
