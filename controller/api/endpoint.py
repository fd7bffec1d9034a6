"""The boundary between gRPC and the controller's domain code.

Every unary RPC goes through :func:`unary`, every server-streaming one through
:func:`streaming`: authenticate, run, log one line
(method, app, code, duration_ms), and translate :class:`SlipwayError` into the
matching status with its message unchanged. Anything else is a bug: it is logged
with its traceback and the client gets INTERNAL with a pointer to the log.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeAlias, TypeVar

import grpc

from controller.api.auth import Tokens
from slipway import errors
from slipway import log as slog
from slipway.clock import Clock

log = slog.get("controller.api")

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Ctx: TypeAlias = grpc.aio.ServicerContext


class Servicer(Protocol):
    """What the wrappers need of the servicer whose methods they wrap."""

    tokens: Tokens
    clock: Clock


def _app_of(request: Any) -> str:
    for field in ("app", "name"):
        value = getattr(request, field, None)
        if isinstance(value, str) and value:
            return value
    return ""


def unary(
    func: Callable[[Any, Req, grpc.aio.ServicerContext, str], Awaitable[Resp]],
) -> Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]:
    @functools.wraps(func)
    async def wrapper(self: Servicer, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        started = self.clock.monotonic()
        failure: errors.SlipwayError | None = None
        try:
            actor = await self.tokens.authenticate(context)
            result = await func(self, request, context, actor)
        except errors.SlipwayError as exc:
            failure = exc
        except Exception:
            log.exception("api call failed", method=func.__name__, app=_app_of(request))
            failure = errors.SlipwayError(
                "internal error in the controller; see its log", reason="internal"
            )
            failure.code = grpc.StatusCode.INTERNAL
        duration_ms = round((self.clock.monotonic() - started) * 1000, 1)
        if failure is None:
            log.info(
                "api call",
                method=func.__name__,
                app=_app_of(request),
                code="OK",
                duration_ms=duration_ms,
            )
            return result
        log.info(
            "api call",
            method=func.__name__,
            app=_app_of(request),
            code=failure.code.name,
            error=failure.message,
            duration_ms=duration_ms,
        )
        await context.abort(failure.code, failure.message, errors.trailers(failure))
        raise AssertionError("unreachable: abort raises")

    return wrapper  # type: ignore[return-value]


def streaming(
    func: Callable[[Any, Req, Ctx, str], AsyncIterator[Resp]],
) -> Callable[[Any, Req, Ctx], AsyncIterator[Resp]]:
    """Authenticate, log and translate errors for a server-streaming RPC."""

    @functools.wraps(func)
    async def wrapper(self: Servicer, request: Req, context: Ctx) -> AsyncIterator[Resp]:
        started = self.clock.monotonic()
        code = "OK"
        app = _app_of(request)
        try:
            actor = await self.tokens.authenticate(context)
            async for item in func(self, request, context, actor):
                yield item
        except errors.SlipwayError as exc:
            code = exc.code.name
            await context.abort(exc.code, exc.message, errors.trailers(exc))
        except (GeneratorExit, asyncio.CancelledError):
            code = "CANCELLED"  # the client went away (or the server is stopping)
            raise
        except Exception:
            code = "INTERNAL"
            log.exception("api call failed", method=func.__name__, app=app)
            await context.abort(
                grpc.StatusCode.INTERNAL,
                "internal error in the controller; see its log",
                ((errors.REASON_KEY, "internal"),),
            )
        finally:
            log.info(
                "api call",
                method=func.__name__,
                app=app,
                code=code,
                duration_ms=round((self.clock.monotonic() - started) * 1000, 1),
            )

    return wrapper
