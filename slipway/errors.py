"""One error hierarchy for the whole platform, translated at the boundaries.

    SlipwayError                 base; carries a stable ``reason`` and a gRPC status code
    ├── InvalidArgument          INVALID_ARGUMENT: bad name, key, size, malformed request
    ├── NotFound                 NOT_FOUND: unknown app, release, dyno, build
    ├── AlreadyExists            ALREADY_EXISTS: duplicate app name
    ├── FailedPrecondition       FAILED_PRECONDITION: valid request, wrong state
    ├── Conflict                 ABORTED: optimistic write lost too many races
    ├── Unauthenticated          UNAUTHENTICATED: missing or wrong token
    ├── PermissionDenied         PERMISSION_DENIED
    ├── ResourceExhausted        RESOURCE_EXHAUSTED: over a size or count limit
    └── Unavailable              UNAVAILABLE: a store or peer is unreachable

Daemons raise these; the gRPC layer turns them into statuses with the message
unchanged and the reason in the trailing metadata (``slipway-reason``); the API
client turns statuses back into the same classes with the same reason, so the
CLI prints the server's sentence (with ``--json``: message, reason and code as
JSON) and never a traceback.
"""

from __future__ import annotations

import grpc


class SlipwayError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    reason: str = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason

    def __str__(self) -> str:
        return self.message


class InvalidArgument(SlipwayError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "invalid_argument"


class NotFound(SlipwayError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "not_found"


class AlreadyExists(SlipwayError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "already_exists"


class FailedPrecondition(SlipwayError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "failed_precondition"


class Conflict(SlipwayError):
    code = grpc.StatusCode.ABORTED
    reason = "conflict"


class Unauthenticated(SlipwayError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "unauthenticated"


class PermissionDenied(SlipwayError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "permission_denied"


class ResourceExhausted(SlipwayError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "resource_exhausted"


class Unavailable(SlipwayError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "unavailable"


_BY_CODE: dict[grpc.StatusCode, type[SlipwayError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        Conflict,
        Unauthenticated,
        PermissionDenied,
        ResourceExhausted,
        Unavailable,
    )
}


# The trailing-metadata key that carries an error's reason from server to client.
REASON_KEY = "slipway-reason"


def trailers(exc: SlipwayError) -> tuple[tuple[str, str], ...]:
    """The trailing metadata a server sends with ``exc``'s status."""
    return ((REASON_KEY, exc.reason),)


def from_rpc(exc: grpc.RpcError) -> SlipwayError:
    """:func:`from_status` for a failed call, with the reason its server sent."""
    metadata = getattr(exc, "trailing_metadata", lambda: ())() or ()
    reason = next((str(v) for k, v in metadata if k == REASON_KEY), "")
    return from_status(exc.code(), exc.details(), reason)  # type: ignore[attr-defined]


def from_status(code: grpc.StatusCode, details: str | None, reason: str = "") -> SlipwayError:
    """The client-side twin of the server's translation (``reason``: the server's)."""
    cls = _BY_CODE.get(code, SlipwayError)
    message = details or code.name.lower().replace("_", " ")
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        message = "the controller did not answer in time"
        cls = Unavailable
    elif code is grpc.StatusCode.UNAVAILABLE and not details:
        message = "cannot reach the controller"
    error = cls(message, reason=reason or None)
    if cls is SlipwayError:
        error.code = code
    return error
