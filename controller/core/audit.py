"""Who did what: the audit record of a change, and what it says about the request.

Every call that changes something (its rule ``writes``, see access.py) leaves
one record once it succeeded: who (account or operator token), from where,
when, which call, on which app, and a short, secret-free summary of the
request (config var names, never their values). Records of an app are kept
per app, the rest (users, nodes, logins) as the platform's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

PLATFORM = "_platform"  # not an app name: those start with a letter


@dataclass(frozen=True)
class AuditRecord:
    time: float
    actor: str  # the account's email, or the operator token's name
    token_name: str
    source: str  # the caller's address
    action: str  # the RPC, e.g. ScaleFormation
    app: str = ""  # "" for the platform's own records
    detail: str = ""

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> AuditRecord:
        obj = json.loads(data)
        return cls(**{k: v for k, v in obj.items() if k in cls.__dataclass_fields__})


def _config(r: Any) -> str:
    parts = []
    if r.set:
        parts.append("set " + ",".join(sorted(r.set)))
    if r.unset:
        parts.append("unset " + ",".join(sorted(r.unset)))
    return " ".join(parts)


def _scale(r: Any) -> str:
    out = []
    for change in r.changes:
        amount = change.WhichOneof("amount")
        if amount == "quantity":
            text = f"{change.type}={change.quantity}"
        elif amount == "delta":
            text = f"{change.type}{change.delta:+d}"
        else:
            text = change.type
        out.append(text + (f":{change.size}" if change.size else ""))
    return " ".join(out)


def _access(r: Any) -> str:
    permissions = ",".join(getattr(r, "permissions", ()))
    return f"{r.email} {permissions}".strip()


# What a record says of each kind of request; anything not here records none.
DETAILS: dict[str, Callable[[Any], str]] = {
    "UpdateConfigVars": _config,
    "ScaleFormation": _scale,
    "RollbackRelease": lambda r: f"to v{r.version}" if r.version else "to the previous release",
    "RestartDynos": lambda r: r.target or "all dynos",
    "StopDyno": lambda r: r.dyno,
    "AddLogDrain": lambda r: "a drain",  # drain URLs may carry passwords
    "RemoveLogDrain": lambda r: "a drain",
    "CreateSchedulerJob": lambda r: f"every {r.every} {r.at} {r.command[:200]}".replace("  ", " "),
    "RemoveSchedulerJob": lambda r: r.job,
    "AddCollaborator": _access,
    "UpdateCollaborator": _access,
    "RemoveCollaborator": _access,
    "CreateUser": lambda r: r.email + (" (admin)" if r.admin else ""),
    "RemoveUser": lambda r: r.email,
    "DrainNode": lambda r: f"{'undrain' if r.undrain else 'drain'} {r.node}",
    "CreateAuthorization": lambda r: f"scope {r.scope or 'global'}",
    "RevokeAuthorization": lambda r: r.id,
    "CreateApp": lambda r: r.name + (f" (team {r.team})" if r.team else ""),
    "RunDyno": lambda r: r.command[:200],
    "SetStack": lambda r: r.stack,
    "CreateTeam": lambda r: r.team,
    "DestroyTeam": lambda r: r.team,
    "SetTeamMember": lambda r: f"{r.email} as {r.role} in {r.team}",
    "RemoveTeamMember": lambda r: f"{r.email} from {r.team}",
    "SetBuildpacks": lambda r: " ".join(getattr(r, "buildpacks", ())),
}


def detail_of(action: str, request: Any) -> str:
    describe = DETAILS.get(action)
    if describe is None or request is None:
        return ""
    try:
        return describe(request)[:500]
    except (AttributeError, TypeError, ValueError):
        return ""
