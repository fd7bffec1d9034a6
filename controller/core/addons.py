"""Add-ons: the records, the provider manifest, names, config var mapping, and the pure
state machine the leader drives (controller/loops/addons.py applies it).

An *add-on service* is a registered provider (its manifest: the base URL of its
partner API v3 resources, the shared password, its plans). An *add-on* is one
resource of a service on a plan, owned by one app (the billing app). An
*attachment* makes an add-on's config vars part of an app's config under a
name: the provider's ``MYADDON_URL`` attached as ``DATABASE`` is ``DATABASE_URL``.

States of an add-on and who moves them:

    provisioning    the API made it; the leader POSTs the provision request until
                    the provider answers 200 (config in the answer) or 202 (config
                    delivered later through the callback API); 5xx and network
                    errors are retried with backoff, a 4xx is final
    provisioned     the config is known; attachments get it, each by a release;
                    a plan change is PUT to the provider while ``plan`` differs
                    from ``applied_plan``
    deprovisioning  asked by addons:destroy or because its app is gone; the
                    attachments go first (each a release), then DELETE, retried
                    until the provider says it is gone (2xx, 404, 410)
    failed          the provider refused (its message kept) or stopped answering;
                    ``addons:retry`` sends it back to provisioning

Every provider request carries the add-on's uuid, so a request sent twice (a
leader dying between sending and recording) makes one resource, not two.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import secrets
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from controller.core import validation
from slipway import errors
from slipway.providers.manifest import port_range

PROVISIONING = "provisioning"
PROVISIONED = "provisioned"
DEPROVISIONING = "deprovisioning"
FAILED = "failed"
STATES = (PROVISIONING, PROVISIONED, DEPROVISIONING, FAILED)

SERVICE_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{1,29}$")
PLAN_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,29}$")
ADDON_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{2,62}$")
ATTACHMENT_NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,49}$")
OPTION_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# The partner server's own path rule for actions (slipway/providers/partner.py).
ACTION_NAME_RE = re.compile(r"^[a-z][a-z-]{0,39}$")
ACTION_ARGUMENT_RE = re.compile(r"^[A-Za-z0-9_.:-]{0,64}$")
MAX_OPTIONS = 32
MAX_OPTION_BYTES = 4096
MAX_CONFIG_VARS = 32

# Provision attempts (5xx or unreachable) before the add-on is marked failed.
MAX_PROVISION_ATTEMPTS = 8
# How long a provider that answered 202 has to deliver the config.
ASYNC_DEADLINE_SECONDS = 12 * 3600.0
RETRY_INITIAL_SECONDS = 1.0
RETRY_MAX_SECONDS = 300.0

_COLORS = (
    "AMBER",
    "BLACK",
    "BLUE",
    "BRONZE",
    "COBALT",
    "CRIMSON",
    "CYAN",
    "GOLD",
    "GRAY",
    "GREEN",
    "IVORY",
    "JADE",
    "MAROON",
    "NAVY",
    "OLIVE",
    "ONYX",
    "ORANGE",
    "PINK",
    "PURPLE",
    "RED",
    "ROSE",
    "SILVER",
    "TEAL",
    "WHITE",
    "YELLOW",
)
_NAME_WORDS = (
    "curved",
    "rugged",
    "silent",
    "shallow",
    "fluffy",
    "angular",
    "tranquil",
    "cubic",
    "dimensional",
    "polished",
    "spherical",
    "vertical",
    "clear",
    "solid",
    "concentric",
    "symmetrical",
)


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def _decode(cls: Any, data: bytes) -> Any:
    obj = json.loads(data)
    return cls(**{k: v for k, v in obj.items() if k in cls.__dataclass_fields__})


@dataclass
class Plan:
    name: str
    description: str = ""
    price_cents_per_month: int = 0
    default: bool = False


@dataclass
class ServiceRecord:
    """A registered provider, from its manifest (``slipway-controller addons:register``)."""

    name: str  # the manifest's id: `addons:create NAME`
    human_name: str
    base_url: str  # partner API v3 resources: POST {base_url}, PUT/DELETE {base_url}/{id}
    password: str  # Basic auth (id:password) on our requests and on its callbacks
    config_vars_prefix: str
    config_vars: list[str]
    plans: list[Plan]
    default_attachment: str = ""  # the first attachment's name ("" : the prefix)
    description: str = ""
    ca_pem: str = ""  # extra CA the provider's certificate is checked against
    registered_at: float = 0.0
    built_in: bool = False
    # Where the service's resources listen ("slipway.network" in the manifest): the
    # dynos of attached apps are let through to this address and port range only.
    network_address: str = ""
    network_ports: str = ""  # "5433" or "15500-15599"

    def encode(self) -> bytes:
        return _dumps(asdict(self))

    @classmethod
    def decode(cls, data: bytes) -> ServiceRecord:
        record: ServiceRecord = _decode(cls, data)
        record.plans = [Plan(**p) if isinstance(p, dict) else p for p in record.plans]
        return record

    def plan(self, name: str) -> Plan:
        if not name:
            for p in self.plans:
                if p.default:
                    return p
            return self.plans[0]
        for p in self.plans:
            if p.name == name:
                return p
        names = ", ".join(p.name for p in self.plans)
        raise errors.NotFound(
            f"no plan {name!r} for {self.name}; its plans: {names} "
            f"(slipway addons:plans {self.name})",
            reason="plan_not_found",
        )


@dataclass
class AddonRecord:
    id: str  # uuid: the provider's idempotency key
    name: str  # postgresql-curved-12345
    service: str
    plan: str  # the plan asked for
    app: str  # the owning (billing) app
    state: str
    created_at: float
    created_by: str = ""
    options: dict[str, str] = field(default_factory=dict)
    provider_id: str = ""  # the provider's id of the resource (its answer's `id`)
    config: dict[str, str] = field(default_factory=dict)  # as the provider names them
    applied_plan: str = ""  # the plan the provider has confirmed
    message: str = ""  # the provider's last message
    error: str = ""  # why the last request failed (kept until one succeeds)
    attempts: int = 0  # failed requests in a row
    next_attempt_at: float = 0.0
    accepted_at: float = 0.0  # when the provider answered 202 (0: not waiting)
    provisioned_at: float = 0.0
    config_version: int = 0  # bumped whenever ``config`` changes

    def encode(self) -> bytes:
        return _dumps(asdict(self))

    @classmethod
    def decode(cls, data: bytes) -> AddonRecord:
        record: AddonRecord = _decode(cls, data)
        return record

    @property
    def ref(self) -> str:
        return f"@ref:{self.name}"


@dataclass
class AttachmentRecord:
    app: str
    name: str  # DATABASE
    addon_id: str
    addon_name: str
    created_at: float
    created_by: str = ""
    # The config vars this attachment put in the app's config and a digest of their
    # values; the leader makes a release when the add-on's config moves on.
    config_vars: list[str] = field(default_factory=list)
    applied_digest: str = ""  # "" : never released (the next release is its Attach)
    applied_plan: str = ""

    def encode(self) -> bytes:
        return _dumps(asdict(self))

    @classmethod
    def decode(cls, data: bytes) -> AttachmentRecord:
        record: AttachmentRecord = _decode(cls, data)
        return record


# -- input ---------------------------------------------------------------------


def _matching(pattern: re.Pattern[str], value: str, what: str, rule: str, reason: str) -> str:
    if not pattern.match(value):
        raise errors.InvalidArgument(f"invalid {what} {value!r}: {rule}", reason=reason)
    return value


def service_name(name: str) -> str:
    return _matching(
        SERVICE_NAME_RE,
        name,
        "add-on service name",
        "use 2 to 30 characters, a lowercase letter first, then lowercase letters, "
        "digits and dashes",
        "invalid_service_name",
    )


def action_name(name: str) -> str:
    return _matching(
        ACTION_NAME_RE,
        name,
        "add-on action",
        "lowercase letters and dashes, at most 40 (for example rotate-credentials)",
        "invalid_action",
    )


def action_argument(value: str) -> str:
    return _matching(
        ACTION_ARGUMENT_RE,
        value,
        "add-on action argument",
        "at most 64 letters, digits and _ . : - (for example a backup id such as b001)",
        "invalid_action_argument",
    )


def addon_name(name: str) -> str:
    return _matching(
        ADDON_NAME_RE,
        name,
        "add-on name",
        "use 3 to 63 characters, a lowercase letter first, then lowercase letters, "
        "digits and dashes",
        "invalid_addon_name",
    )


def attachment_name(name: str) -> str:
    return _matching(
        ATTACHMENT_NAME_RE,
        name,
        "attachment name",
        "use uppercase letters, digits and underscores, a letter first (for example "
        "DATABASE or CACHE); its config vars are NAME_URL and so on",
        "invalid_attachment_name",
    )


def parse_service_plan(value: str) -> tuple[str, str]:
    """``postgresql`` or ``postgresql:standard`` -> (service, plan or "")."""
    service, _, plan = value.strip().partition(":")
    service_name(service)
    if plan and not PLAN_NAME_RE.match(plan):
        raise errors.InvalidArgument(
            f"invalid plan name {plan!r}: lowercase letters, digits and dashes",
            reason="invalid_plan_name",
        )
    return service, plan


def options(values: Mapping[str, str]) -> dict[str, str]:
    """Provider options (``-- --size=10``), bounded in number and size."""
    if len(values) > MAX_OPTIONS:
        raise errors.InvalidArgument(f"at most {MAX_OPTIONS} add-on options")
    size = 0
    for key, value in values.items():
        if not OPTION_KEY_RE.match(key):
            raise errors.InvalidArgument(
                f"invalid add-on option {key!r}: letters, digits, '_', '.' and '-'",
                reason="invalid_option",
            )
        size += len(key) + len(value.encode())
    if size > MAX_OPTION_BYTES:
        raise errors.InvalidArgument(f"add-on options exceed {MAX_OPTION_BYTES} bytes")
    return dict(values)


def parse_manifest(text: str, *, now: float) -> ServiceRecord:
    """A provider manifest (Heroku's add-on manifest, plus ``plans``) -> its record."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise errors.InvalidArgument(f"the manifest is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise errors.InvalidArgument("the manifest must be a JSON object")
    name = service_name(str(doc.get("id", "")))
    api = doc.get("api")
    if not isinstance(api, dict):
        raise errors.InvalidArgument("the manifest has no 'api' object")
    password = str(api.get("password", ""))
    if len(password) < 16:
        raise errors.InvalidArgument(
            "the manifest's api.password must be at least 16 characters: it is the secret "
            "both sides authenticate with"
        )
    env = api.get("production") or {}
    base_url = str(env.get("base_url", "") if isinstance(env, dict) else "")
    _check_base_url(base_url)
    prefix = str(api.get("config_vars_prefix") or name.upper().replace("-", "_"))
    validation.config_key(prefix)
    config_vars = [str(v) for v in api.get("config_vars") or [f"{prefix}_URL"]]
    for var in config_vars:
        validation.config_key(var)
    plans = _plans(doc.get("plans"))
    default_attachment = str(doc.get("default_attachment") or prefix)
    attachment_name(default_attachment)
    return ServiceRecord(
        name=name,
        human_name=str(doc.get("name") or name),
        base_url=base_url.rstrip("/"),
        password=password,
        config_vars_prefix=prefix,
        config_vars=config_vars,
        plans=plans,
        default_attachment=default_attachment,
        description=str(doc.get("description", "")),
        ca_pem=str(api.get("ca_pem", "")),
        registered_at=now,
        **_slipway_fields(doc.get("slipway")),
    )


def _slipway_fields(raw: object) -> dict[str, Any]:
    """The manifest's ``slipway`` object: built-in services and their network."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise errors.InvalidArgument("the manifest's 'slipway' must be an object")
    network = raw.get("network") or {}
    if not isinstance(network, dict):
        raise errors.InvalidArgument("the manifest's slipway.network must be an object")
    address = str(network.get("address", ""))
    ports = str(network.get("ports", ""))
    if address or ports:
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            raise errors.InvalidArgument(
                f"slipway.network.address {address!r} must be an IPv4 address"
            ) from None
        port_range(ports)
    return {
        "built_in": bool(raw.get("built_in")),
        "network_address": address,
        "network_ports": ports,
    }


def _check_base_url(url: str) -> None:
    """https, or plain http to a provider on this host only: the password travels in
    every request."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise errors.InvalidArgument(
            f"the manifest's api.production.base_url {url!r} is not an https URL"
        )
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise errors.InvalidArgument(
            f"the manifest's api.production.base_url {url!r} is plain http to another "
            "host: the provider's password would cross the network in the clear; use https"
        )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _plans(raw: object) -> list[Plan]:
    if raw is None:
        return [Plan("test", "the provider's only plan", default=True)]
    if not isinstance(raw, list) or not raw:
        raise errors.InvalidArgument("the manifest's 'plans' must be a non-empty list")
    plans = []
    for item in raw:
        if not isinstance(item, dict) or not PLAN_NAME_RE.match(str(item.get("name", ""))):
            raise errors.InvalidArgument(f"bad plan in the manifest: {item!r}")
        plans.append(
            Plan(
                name=str(item["name"]),
                description=str(item.get("description", "")),
                price_cents_per_month=int(item.get("price_cents_per_month", 0)),
                default=bool(item.get("default", False)),
            )
        )
    if len({p.name for p in plans}) != len(plans):
        raise errors.InvalidArgument("the manifest names a plan twice")
    return plans


# -- names and config vars ------------------------------------------------------


def generate_name(service: str) -> str:
    return f"{service}-{secrets.choice(_NAME_WORDS)}-{secrets.randbelow(90000) + 10000}"


def new_id() -> str:
    return str(uuid.uuid4())


def default_attachment_name(service: ServiceRecord, taken: Iterable[str]) -> str:
    """The service's default name (DATABASE) when free on the app, else PREFIX_COLOR."""
    used = set(taken)
    first = service.default_attachment or service.config_vars_prefix
    if first not in used:
        return first
    for color in _COLORS:
        candidate = f"{service.config_vars_prefix}_{color}"
        if candidate not in used:
            return candidate
    for n in range(2, 1000):
        candidate = f"{service.config_vars_prefix}_{n}"
        if candidate not in used:
            return candidate
    raise errors.ResourceExhausted("the app has too many attachments of this service")


def attached_vars(prefix: str, config: Mapping[str, str], name: str) -> dict[str, str]:
    """The provider's config as the app sees it under attachment ``name``:
    ``MYADDON_URL`` with prefix MYADDON attached as DATABASE is ``DATABASE_URL``."""
    out = {}
    for key, value in sorted(config.items()):
        suffix = key[len(prefix) + 1 :] if key.startswith(prefix + "_") else key
        if key == prefix:
            suffix = "URL"
        out[f"{name}_{suffix}"] = value
    return out


def digest_vars(values: Mapping[str, str]) -> str:
    return hashlib.sha256(_dumps(dict(values))).hexdigest()[:32]


def provider_config(items: object) -> dict[str, str]:
    """A provider's config, as a JSON object or Heroku's list of {name, value}."""
    if isinstance(items, dict):
        pairs = [(str(k), v) for k, v in items.items()]
    elif isinstance(items, list):
        pairs = []
        for item in items:
            if not isinstance(item, dict) or "name" not in item:
                raise errors.InvalidArgument("config items are {name, value} objects")
            pairs.append((str(item["name"]), item.get("value")))
    else:
        raise errors.InvalidArgument("config must be an object or a list of {name, value}")
    if len(pairs) > MAX_CONFIG_VARS:
        raise errors.InvalidArgument(f"a provider may set at most {MAX_CONFIG_VARS} config vars")
    out = {}
    for key, value in pairs:
        validation.config_key(key)
        if not isinstance(value, str):
            raise errors.InvalidArgument(f"config var {key} must be a string")
        out[key] = value
    return out


# -- the state machine ------------------------------------------------------------


class Call(StrEnum):
    PROVISION = "provision"
    CHANGE_PLAN = "change_plan"
    DEPROVISION = "deprovision"


class Outcome(StrEnum):
    DONE = "done"  # 2xx with the work done (config in the answer, if any)
    ACCEPTED = "accepted"  # 202: the config comes later through the callback
    RETRY = "retry"  # 5xx, unreachable, timed out, gibberish: try again later
    REFUSED = "refused"  # 4xx: the provider will not do it


@dataclass(frozen=True)
class Answer:
    outcome: Outcome
    provider_id: str = ""
    config: dict[str, str] | None = None
    message: str = ""


def retry_delay(attempts: int) -> float:
    return min(RETRY_MAX_SECONDS, RETRY_INITIAL_SECONDS * (2 ** max(0, attempts - 1)))


def due_call(addon: AddonRecord, now: float, attached: int) -> Call | None:
    """The provider request the add-on needs now (None: nothing, or not yet)."""
    if now < addon.next_attempt_at:
        return None
    if addon.state == PROVISIONING and not addon.accepted_at:
        return Call.PROVISION
    if addon.state == PROVISIONED and addon.plan != addon.applied_plan:
        return Call.CHANGE_PLAN
    if addon.state == DEPROVISIONING and attached == 0:
        return Call.DEPROVISION
    return None


def async_expired(addon: AddonRecord, now: float, deadline: float) -> bool:
    return (
        addon.state == PROVISIONING and addon.accepted_at > 0 and now - addon.accepted_at > deadline
    )


def after_answer(addon: AddonRecord, call: Call, answer: Answer, now: float) -> AddonRecord | None:
    """The add-on once the provider answered ``call`` (None: deprovisioned, delete it)."""
    if answer.outcome is Outcome.RETRY:
        attempts = addon.attempts + 1
        if call is Call.PROVISION and attempts >= MAX_PROVISION_ATTEMPTS:
            return replace(
                addon,
                state=FAILED,
                attempts=attempts,
                error=f"the provider did not answer after {attempts} attempts: {answer.message}",
            )
        return replace(
            addon,
            attempts=attempts,
            error=answer.message,
            next_attempt_at=now + retry_delay(attempts),
        )
    if answer.outcome is Outcome.REFUSED:
        if call is Call.CHANGE_PLAN:
            # The resource stays as it was on its old plan.
            return replace(
                addon,
                plan=addon.applied_plan,
                attempts=0,
                next_attempt_at=0.0,
                error=f"the provider refused the plan change: {answer.message}",
            )
        if call is Call.DEPROVISION:
            return replace(
                addon,
                attempts=addon.attempts + 1,
                error=f"the provider refused to deprovision: {answer.message}",
                next_attempt_at=now + retry_delay(addon.attempts + 1),
            )
        return replace(addon, state=FAILED, attempts=0, error=answer.message)
    if call is Call.DEPROVISION:
        return None
    fresh = replace(
        addon,
        attempts=0,
        next_attempt_at=0.0,
        error="",
        message=answer.message or addon.message,
        provider_id=answer.provider_id or addon.provider_id,
    )
    if call is Call.CHANGE_PLAN:
        fresh.applied_plan = addon.plan
        if answer.config:
            fresh = with_config(fresh, {**addon.config, **answer.config})
        return fresh
    if answer.outcome is Outcome.ACCEPTED:
        fresh.accepted_at = now
        return fresh
    return provisioned(fresh, answer.config or {}, now)


def provisioned(addon: AddonRecord, config: Mapping[str, str], now: float) -> AddonRecord:
    fresh = with_config(addon, {**addon.config, **config})
    return replace(
        fresh,
        state=PROVISIONED,
        applied_plan=addon.plan,
        accepted_at=0.0,
        provisioned_at=now,
        attempts=0,
        error="",
        next_attempt_at=0.0,
    )


def with_config(addon: AddonRecord, config: Mapping[str, str]) -> AddonRecord:
    if dict(config) == addon.config:
        return addon
    return replace(addon, config=dict(config), config_version=addon.config_version + 1)


def retried(addon: AddonRecord) -> AddonRecord:
    if addon.state != FAILED:
        raise errors.FailedPrecondition(
            f"add-on {addon.name} is {addon.state}; only a failed add-on can be retried",
            reason="addon_not_failed",
        )
    return replace(
        addon,
        state=PROVISIONING,
        attempts=0,
        next_attempt_at=0.0,
        accepted_at=0.0,
        error="",
    )


def deprovision(addon: AddonRecord) -> AddonRecord:
    return replace(addon, state=DEPROVISIONING, attempts=0, next_attempt_at=0.0, error="")


# -- the leader's plan ---------------------------------------------------------------


@dataclass
class AddonWork:
    """What one pass of the leader's add-on loop does (see :func:`plan_work`)."""

    orphaned: list[str] = field(default_factory=list)  # add-on ids whose app is gone
    expired: list[str] = field(default_factory=list)  # 202 answered, config never came
    detach: list[tuple[str, str]] = field(default_factory=list)  # (app, attachment)
    sync: list[tuple[str, str]] = field(default_factory=list)  # (app, attachment)
    calls: list[tuple[str, Call]] = field(default_factory=list)  # (add-on id, request)

    @property
    def empty(self) -> bool:
        return not (self.orphaned or self.expired or self.detach or self.sync or self.calls)


def plan_work(
    addons: Iterable[AddonRecord],
    attachments: Iterable[AttachmentRecord],
    apps: set[str],
    prefixes: Mapping[str, str],
    now: float,
    *,
    async_deadline: float = ASYNC_DEADLINE_SECONDS,
) -> AddonWork:
    """``prefixes``: service -> its config var prefix (services not registered are absent)."""
    work = AddonWork()
    by_id = {a.id: a for a in addons}
    attached: dict[str, int] = {}
    for att in attachments:
        addon = by_id.get(att.addon_id)
        if addon is not None:
            # The provider hears of a deprovision only once no app holds its vars.
            attached[addon.id] = attached.get(addon.id, 0) + 1
        if addon is None or addon.state == DEPROVISIONING or att.app not in apps:
            work.detach.append((att.app, att.name))
            continue
        if addon.state != PROVISIONED or addon.service not in prefixes:
            continue
        wanted = attached_vars(prefixes[addon.service], addon.config, att.name)
        if digest_vars(wanted) != att.applied_digest or addon.applied_plan != att.applied_plan:
            work.sync.append((att.app, att.name))
    for addon in by_id.values():
        if addon.app not in apps and addon.state != DEPROVISIONING:
            work.orphaned.append(addon.id)
            continue
        if async_expired(addon, now, async_deadline):
            work.expired.append(addon.id)
            continue
        if addon.service not in prefixes:
            continue
        call = due_call(addon, now, attached.get(addon.id, 0))
        if call is not None:
            work.calls.append((addon.id, call))
    return work


def next_due(addons: Iterable[AddonRecord], now: float) -> float | None:
    """Seconds until the earliest retry is due (None: none is waiting)."""
    waits = [a.next_attempt_at - now for a in addons if a.next_attempt_at > now]
    return min(waits) if waits else None


# -- network grants ---------------------------------------------------------------


@dataclass(frozen=True, order=True)
class NetworkGrant:
    """The dynos of ``app`` may open TCP connections to address:port."""

    app: str
    address: str
    port: int


def _url_endpoints(values: Iterable[str]) -> set[tuple[str, int]]:
    out = set()
    for value in values:
        parts = urlsplit(value)
        try:
            if parts.hostname and parts.port:
                out.add((parts.hostname, parts.port))
        except ValueError:
            continue  # a config value that only looks like a URL
    return out


def network_grants(
    services: Iterable[ServiceRecord],
    addons: Iterable[AddonRecord],
    attachments: Iterable[AttachmentRecord],
) -> dict[str, list[NetworkGrant]]:
    """Pure: per app, where its dynos may connect for their add-ons.

    Only built-in services with a declared network grant anything, and only
    endpoints inside that declaration (its address, its port range), whatever
    a config var names: a provider cannot open the firewall to an address the
    operator did not register. Only provisioned add-ons grant.
    """
    declared = {
        s.name: (s.network_address, port_range(s.network_ports))
        for s in services
        if s.built_in and s.network_address and s.network_ports
    }
    by_id = {a.id: a for a in addons if a.state == PROVISIONED}
    grants: dict[str, set[NetworkGrant]] = {}
    for attachment in attachments:
        addon = by_id.get(attachment.addon_id)
        if addon is None or addon.service not in declared:
            continue
        address, (low, high) = declared[addon.service]
        for host, port in _url_endpoints(addon.config.values()):
            if host == address and low <= port <= high:
                grants.setdefault(attachment.app, set()).add(
                    NetworkGrant(attachment.app, host, port)
                )
    return {app: sorted(found) for app, found in sorted(grants.items())}
