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
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, TypeVar

import grpc
from google.protobuf.message import Message

from controller.api.auth import Access, peer_address
from controller.core import access, audit
from controller.core.access import Identity
from controller.core.audit import AuditRecord
from controller.store.audit import AuditTrail
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
    audit: AuditTrail | None
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


def _team_of(request: Any) -> str:
    """The team a request is about: its ``team`` field ("" when none)."""
    value = getattr(request, "team", None)
    return value if isinstance(value, str) else ""


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


@dataclass(frozen=True)
class Admitted:
    who: Identity
    request: Any  # what the handler gets (a client stream re-assembled)
    app: str
    head: Any  # the message that says what the call is about (a stream's first)


async def admit(self: Servicer, method: str, request: Any, context: Ctx) -> Admitted:
    """Who calls, checked against the method's rule on the request's app."""
    head = request
    if hasattr(request, "__aiter__"):
        head, request = await _first_and_rest(request)
    app = _app_of(head)
    who = await self.access.admit(context, method, app, _team_of(head))
    return Admitted(who, request, app, head)


async def record_change(self: Servicer, method: str, admitted: Admitted, context: Ctx) -> None:
    """One audit record for a call that changed something and succeeded."""
    if self.audit is None or not access.rule_of(method).writes:
        return
    who = admitted.who
    actor = who.actor
    if method == "Login":
        actor = str(getattr(admitted.head, "email", "")).strip().lower()
    record = AuditRecord(
        time=self.clock.now(),
        actor=actor,
        token_name=who.token_name,
        source=peer_address(context),
        action=method,
        app=admitted.app if access.rule_of(method).needs is not None else "",
        detail=audit.detail_of(method, admitted.head),
    )
    try:
        await self.audit.append(record, platform=method == "DestroyApp")
    except errors.SlipwayError as exc:
        # The change itself is done; say loudly that its record is missing.
        log.error("audit record lost", method=method, app=record.app, error=exc.message)


def unary(
    func: Callable[[Any, Req, grpc.aio.ServicerContext, Identity], Awaitable[Resp]],
) -> Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]:
    @functools.wraps(func)
    async def wrapper(self: Servicer, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        started = self.clock.monotonic()
        failure: errors.SlipwayError | None = None
        app = _app_of(request)
        try:
            admitted = await admit(self, func.__name__, request, context)
            app = admitted.app
            request = admitted.request
            result = await func(self, request, context, admitted.who)
            await record_change(self, func.__name__, admitted, context)
        except errors.SlipwayError as exc:
            failure = exc
        except Exception:
            log.exception("api call failed", method=func.__name__, app=app)
            failure = errors.SlipwayError(
                "internal error in the controller; see its log", reason="internal"
            )
            failure.code = grpc.StatusCode.INTERNAL
        duration_ms = round((self.clock.monotonic() - started) * 1000, 1)
        if failure is None:
            log.info(
                "api call",
                method=func.__name__,
                app=app,
                code="OK",
                duration_ms=duration_ms,
            )
            return result
        log.info(
            "api call",
            method=func.__name__,
            app=app,
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
            admitted = await admit(self, func.__name__, request, context)
            async for item in func(self, admitted.request, context, admitted.who):
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
