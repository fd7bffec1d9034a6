"""The provider side of Heroku's add-on partner API v3, over HTTPS.

One server answers for every built-in service, each under its own path and
its own credentials (Basic auth with the manifest's id and password):

    POST   /{service}/resources                  provision   200 {id, config, message}
    PUT    /{service}/resources/{id}             plan change 200 {config, message}
    DELETE /{service}/resources/{id}             deprovision 204 (404: nothing by that id)
    GET    /{service}/resources/{id}             what the backend can tell (pg:info)
    POST   /{service}/resources/{id}/actions/{action}
                                                 a service's own commands (rotate-credentials,
                                                 reset); 200 {config?, message}
    GET    /{service}/resources/{id}/backups/{backup}?offset=N&length=L
                                                 bytes of a backup the GET above lists
                                                 (pg:backups:download), at most 512 KiB a call

Every call on one resource runs under that resource's lock, and the resource
file is written before the engine is touched (``resources.py``): a repeated
provision redoes the same steps with the same values and answers the same
config. Engines are fast at this (a database and a role), so provisioning is
synchronous (200), as the partner API asks: "answer within seconds".
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from slipway import errors, http1
from slipway import log as slog
from slipway.providers.resources import (
    DEPROVISIONING,
    PROVISIONED,
    Resource,
    ResourceStore,
    check_uuid,
)

log = slog.get("addons.partner")

MAX_BODY = 64 * 1024
_PATH = re.compile(
    r"^/(?P<service>[a-z][a-z0-9-]{0,40})/resources"
    r"(?:/(?P<id>[0-9a-f-]{36})"
    r"(?:/actions/(?P<action>[a-z-]{1,40})|/backups/(?P<backup>[a-z][0-9]{1,9}))?)?/?$"
)
# Bytes of a backup one call answers: under the HTTP client's 1 MB answer limit.
BACKUP_CHUNK = 512 * 1024


@dataclass(frozen=True)
class PlanSpec:
    name: str
    description: str
    limits: Mapping[str, int] = field(default_factory=dict)
    price_cents_per_month: int = 0
    default: bool = False


@dataclass
class Outcome:
    """What a backend call hands back: the config vars (if they changed) and a message."""

    config: dict[str, str] | None = None
    message: str = ""


class Backend(Protocol):
    service: str  # the manifest id and the path segment
    human_name: str
    config_vars_prefix: str
    default_attachment: str
    plans: tuple[PlanSpec, ...]

    async def provision(self, resource: Resource, options: Mapping[str, str]) -> Outcome:
        """Make the resource as ``resource`` says (idempotent); fill ``resource.data``."""
        ...

    async def change_plan(self, resource: Resource, plan: PlanSpec) -> Outcome: ...

    async def deprovision(self, resource: Resource) -> None:
        """Remove it and everything in it (idempotent: gone already is fine)."""
        ...

    async def info(self, resource: Resource) -> dict[str, Any]: ...

    async def action(self, resource: Resource, action: str, argument: str) -> Outcome:
        """A service's own command (``argument``: what it acts on, or ""); raise
        NotFound for an action it does not have."""
        ...


class BackupReader(Protocol):
    """A backend whose resources have backups to download (the built-in postgresql)."""

    async def read_backup(
        self, resource: Resource, backup: str, offset: int, length: int
    ) -> bytes: ...


def byte_range(query: str) -> tuple[int, int]:
    """``offset`` and ``length`` of a backup read, from the query string."""
    values = dict(part.partition("=")[::2] for part in query.split("&") if part)
    try:
        offset = int(values.get("offset", "0"))
        length = int(values.get("length", str(BACKUP_CHUNK)))
    except ValueError:
        raise errors.InvalidArgument("offset and length are whole numbers") from None
    if offset < 0 or not 0 < length <= BACKUP_CHUNK:
        raise errors.InvalidArgument(f"offset >= 0 and 0 < length <= {BACKUP_CHUNK}")
    return offset, length


def plan_named(backend: Backend, name: str) -> PlanSpec:
    if not name:
        return next((p for p in backend.plans if p.default), backend.plans[0])
    for plan in backend.plans:
        if plan.name == name:
            return plan
    names = ", ".join(p.name for p in backend.plans)
    raise errors.InvalidArgument(f"{backend.service} has no plan {name!r}; its plans: {names}")


class PartnerServer(http1.JsonServer):
    def __init__(
        self,
        backends: Mapping[str, Backend],
        passwords: Mapping[str, str],
        store: ResourceStore,
        listen: str,
        context: ssl.SSLContext | None,
    ) -> None:
        super().__init__(listen, context, self.handle)
        self.backends = dict(backends)
        self.passwords = dict(passwords)
        self.store = store
        self.label = "partner api"
        self._locks: dict[str, asyncio.Lock] = {}
        for backend in self.backends.values():
            # Backends with work of their own (background backups) write records too.
            bind = getattr(backend, "bind", None)
            if bind is not None:
                bind(store, self.lock)

    async def handle(self, request: http1.Request) -> http1.Answer:
        match = _PATH.match(request.path.partition("?")[0])
        backend = self.backends.get(match.group("service")) if match else None
        if match is None or backend is None:
            return 404, http1.error_body("not_found", "no such resource")
        if not self._authentic(backend.service, request):
            return 401, http1.error_body("unauthorized", "wrong credentials for this service")
        if len(request.body) > MAX_BODY:
            return 413, http1.error_body("too_large", f"the body is over {MAX_BODY} bytes")
        resource_id, action = match.group("id"), match.group("action")
        backup = match.group("backup")
        try:
            doc = _json_body(request.body)
            if resource_id is None:
                if request.method != "POST":
                    return 405, http1.error_body("method_not_allowed", "POST provisions")
                return await self._provision(backend, doc)
            check_uuid(resource_id)
            async with self.lock(resource_id):
                resource = self.store.get(backend.service, resource_id)
                if resource is None:
                    return 404, http1.error_body("not_found", f"no resource {resource_id}")
                if backup is not None and request.method == "GET":
                    return await self._read_backup(backend, resource, backup, request.path)
                if action is not None and request.method == "POST":
                    return await self._action(backend, resource, action, doc)
                if action is None and request.method == "PUT":
                    return await self._change_plan(backend, resource, doc)
                if action is None and request.method == "DELETE":
                    return await self._deprovision(backend, resource)
                if action is None and request.method == "GET":
                    info = await backend.info(resource)
                    return 200, json.dumps(
                        {"id": resource.uuid, "plan": resource.plan, **info}
                    ).encode()
            return 405, http1.error_body(
                "method_not_allowed", f"{request.method} is not served here"
            )
        except errors.SlipwayError as exc:
            if not isinstance(exc, errors.InvalidArgument | errors.NotFound):
                log.error("partner call failed", service=backend.service, error=exc.message)
            return http1.status_of(exc), http1.error_body(exc.reason, exc.message)

    async def _read_backup(
        self, backend: Backend, resource: Resource, backup: str, path: str
    ) -> tuple[int, bytes, str]:
        reader = getattr(backend, "read_backup", None)
        if reader is None:
            raise errors.NotFound(f"{backend.service} keeps no backups")
        offset, length = byte_range(path.partition("?")[2])
        data = await reader(resource, backup, offset, length)
        return 200, data, "application/octet-stream"

    def _authentic(self, service: str, request: http1.Request) -> bool:
        creds = http1.parse_basic_auth(request.headers.get("authorization", ""))
        expected = self.passwords.get(service, "")
        if creds is None or not expected:
            return False
        user_ok = hmac.compare_digest(creds[0].encode(), service.encode())
        password_ok = hmac.compare_digest(creds[1].encode(), expected.encode())
        return user_ok and password_ok

    def lock(self, resource_id: str) -> asyncio.Lock:
        return self._locks.setdefault(resource_id, asyncio.Lock())

    async def _provision(self, backend: Backend, doc: dict[str, Any]) -> tuple[int, bytes]:
        uuid = check_uuid(str(doc.get("uuid", "")))
        plan = plan_named(backend, str(doc.get("plan", "") or ""))
        options = doc.get("options") or {}
        if not isinstance(options, dict):
            raise errors.InvalidArgument("options must be an object")
        async with self.lock(uuid):
            resource = self.store.get(backend.service, uuid)
            fresh = resource is None
            if resource is None:
                resource = self.store.new(
                    backend.service, uuid, plan.name, str(doc.get("name", ""))
                )
            elif resource.state == DEPROVISIONING:
                raise errors.FailedPrecondition(f"{uuid} is being deprovisioned")
            # Written before the engine is touched: a retry redoes the same steps.
            self.store.put(resource)
            try:
                outcome = await backend.provision(
                    resource, {str(k): str(v) for k, v in options.items()}
                )
            except errors.InvalidArgument:
                if fresh:  # refused before anything was made: nothing to keep
                    self.store.delete(backend.service, uuid)
                raise
            resource.state = PROVISIONED
            self.store.put(resource)
        log.info("provisioned", service=backend.service, addon=resource.name, resource=uuid)
        return 200, json.dumps(
            {"id": uuid, "config": outcome.config or {}, "message": outcome.message}
        ).encode()

    async def _change_plan(
        self, backend: Backend, resource: Resource, doc: dict[str, Any]
    ) -> tuple[int, bytes]:
        plan = plan_named(backend, str(doc.get("plan", "")))
        outcome = await backend.change_plan(resource, plan)
        resource.plan = plan.name
        self.store.put(resource)
        log.info("plan changed", service=backend.service, resource=resource.uuid, plan=plan.name)
        return 200, _outcome_body(outcome)

    async def _deprovision(self, backend: Backend, resource: Resource) -> tuple[int, bytes]:
        resource.state = DEPROVISIONING
        self.store.put(resource)
        await backend.deprovision(resource)
        self.store.delete(backend.service, resource.uuid)
        log.info("deprovisioned", service=backend.service, resource=resource.uuid)
        return 204, b""

    async def _action(
        self, backend: Backend, resource: Resource, action: str, doc: dict[str, Any]
    ) -> tuple[int, bytes]:
        if resource.state != PROVISIONED:
            raise errors.FailedPrecondition(f"the resource is {resource.state}")
        argument = doc.get("argument", "")
        if not isinstance(argument, str) or len(argument) > 64:
            raise errors.InvalidArgument("argument must be a string of at most 64 characters")
        outcome = await backend.action(resource, action, argument)
        self.store.put(resource)
        log.info("action done", service=backend.service, resource=resource.uuid, action=action)
        return 200, _outcome_body(outcome)


def _json_body(raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise errors.InvalidArgument("the body is not JSON") from None
    if not isinstance(doc, dict):
        raise errors.InvalidArgument("the body must be a JSON object")
    return doc


def _outcome_body(outcome: Outcome) -> bytes:
    body: dict[str, Any] = {"message": outcome.message}
    if outcome.config is not None:
        body["config"] = outcome.config
    return json.dumps(body).encode()
