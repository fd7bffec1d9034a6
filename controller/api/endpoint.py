"""The boundary between gRPC and the controller's domain code.

Every unary RPC goes through :func:`unary`, every server-streaming one through
:func:`streaming`: admit the caller (controller/api/auth.py: :class:`Access`), run, log one line
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
from google.protobuf.message import Message

from controller.api.auth import Access
from controller.core.access import Identity
from slipway import errors
from slipway import log as slog
from slipway.clock import Clock

log = slog.get("controller.api")

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Ctx: TypeAlias = grpc.aio.ServicerContext


class Servicer(Protocol):
    """What the wrappers need of the servicer whose methods they wrap."""

    access: Access
    clock: Clock


def _app_of(request: Any) -> str:
    """The app a request is about: its ``app`` (or ``name``) field, or that of the
    part of a oneof that is set (an upload's metadata, a run's start)."""
    for field in ("app", "name"):
        value = getattr(request, field, None)
        if isinstance(value, str) and value:
            return value
    if isinstance(request, Message):
        for descriptor, value in request.ListFields():
            if descriptor.message_type is not None and not isinstance(value, list | tuple):
                app = getattr(value, "app", None)
                if isinstance(app, str) and app:
                    return app
    return ""


async def _first_and_rest(stream: AsyncIterator[Req]) -> tuple[Req | None, AsyncIterator[Req]]:
    """Read a client stream's first message (to learn its app) and give back the
    whole stream, that message included, for the handler."""
    messages = aiter(stream)
    first = await anext(messages, None)

    async def whole() -> AsyncIterator[Req]:
        if first is not None:
            yield first
        async for message in messages:
            yield message

    return first, whole()


async def admit(self: Servicer, method: str, request: Any, context: Ctx) -> tuple[Identity, Any]:
    """Who calls, checked against the method's rule on the request's app; and the
    request to hand on (a client stream is re-assembled after its first message)."""
    if hasattr(request, "__aiter__"):
        first, request = await _first_and_rest(request)
        app = _app_of(first)
    else:
        app = _app_of(request)
    return await self.access.admit(context, method, app), request


def unary(
    func: Callable[[Any, Req, grpc.aio.ServicerContext, Identity], Awaitable[Resp]],
) -> Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]:
    @functools.wraps(func)
    async def wrapper(self: Servicer, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        started = self.clock.monotonic()
        failure: errors.SlipwayError | None = None
        try:
            who, request = await admit(self, func.__name__, request, context)
            result = await func(self, request, context, who)
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
    func: Callable[[Any, Req, Ctx, Identity], AsyncIterator[Resp]],
) -> Callable[[Any, Req, Ctx], AsyncIterator[Resp]]:
    """Authenticate, log and translate errors for a server-streaming RPC."""

    @functools.wraps(func)
    async def wrapper(self: Servicer, request: Req, context: Ctx) -> AsyncIterator[Resp]:
        started = self.clock.monotonic()
        code = "OK"
        app = _app_of(request)
        try:
            who, request = await admit(self, func.__name__, request, context)
            async for item in func(self, request, context, who):
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
