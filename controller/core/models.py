"""Desired-state records as stored in etcd (JSON), kept apart from protobuf.

Protobuf types stay at the API edge (controller/api/platform.py); everything inside the
controller speaks these dataclasses.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

RELEASE_PENDING = "pending"
RELEASE_SUCCEEDED = "succeeded"
RELEASE_FAILED = "failed"


def initial_status(release_command: str) -> str:
    """A release with a release command waits for it; any other is live at once."""
    return RELEASE_PENDING if release_command else RELEASE_SUCCEEDED


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


@dataclass
class AppRecord:
    name: str
    id: str
    created_at: float
    # Highest release version handed out; versions are contiguous per app.
    release_seq: int = 0
    # Version dynos should run (0 before any release).
    current_release: int = 0
    buildpacks: list[str] = field(default_factory=list)
    # The stack the next build runs on (Heroku's build_stack), set by stack:set;
    # "" for the platform's default (what the builders build on).
    build_stack: str = ""
    maintenance: bool = False
    balance: str = "random"
    # Releases whose release phase has not settled yet (oldest first): the
    # leader's release-phase sweep reads this instead of every release.
    pending_releases: list[int] = field(default_factory=list)
    # The account that owns the app (all permissions); "" for an app made with
    # an operator's token or before accounts existed: admins only.
    owner: str = ""
    # The team that owns the app instead of one account ("" for none); its
    # members hold permissions by role (controller/core/access.py).
    team: str = ""
    # Config vars that attachments own (var -> attachment name): config:set and
    # config:unset refuse them, in the same transaction that would change them.
    addon_vars: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        return _dumps(asdict(self))

    @classmethod
    def decode(cls, data: bytes) -> AppRecord:
        obj = json.loads(data)
        return cls(**{k: v for k, v in obj.items() if k in cls.__dataclass_fields__})


@dataclass
class SlugInfo:
    digest: str = ""
    size_bytes: int = 0
    stack: str = ""
    source_version: str = ""


@dataclass
class ReleaseRecord:
    app: str
    version: int
    description: str
    created_at: float
    config: dict[str, str]
    slug: SlugInfo
    process_types: dict[str, str]
    status: str = RELEASE_SUCCEEDED
    created_by: str = ""
    # The build that produced the slug, when there was one.
    build_id: str = ""
    # The Procfile's ``release:`` command of the slug ("" when none). A release
    # with one starts ``pending`` and goes live only once it exits 0.
    release_command: str = ""
    # The release phase: the one-off placement (``release.N``) running the
    # command, when it started, and why it failed.
    phase_instance: str = ""
    phase_started_at: float = 0.0
    error: str = ""

    def encode(self) -> bytes:
        return _dumps(asdict(self))

    @classmethod
    def decode(cls, data: bytes) -> ReleaseRecord:
        obj = json.loads(data)
        obj["slug"] = SlugInfo(**obj.get("slug") or {})
        return cls(**{k: v for k, v in obj.items() if k in cls.__dataclass_fields__})


@dataclass
class FormationItem:
    quantity: int
    size: str


def encode_formation(formation: dict[str, FormationItem]) -> bytes:
    return _dumps({t: asdict(item) for t, item in sorted(formation.items())})


def decode_formation(data: bytes | None) -> dict[str, FormationItem]:
    if not data:
        return {}
    return {t: FormationItem(**item) for t, item in json.loads(data).items()}


def encode_config(config: dict[str, str]) -> bytes:
    return _dumps(dict(config))


def decode_config(data: bytes | None) -> dict[str, str]:
    return dict(json.loads(data)) if data else {}


@dataclass
class TokenRecord:
    name: str
    created_at: float
    # A node's token (from `slipway-agent join`): opens NodeService for this
    # node only, and nothing else. Empty: an operator's API token.
    node: str = ""
    # A person's token (from `slipway login` or `authorizations:create`): the
    # account it acts for. Empty with no node: an operator's token (admin).
    user: str = ""
    scope: str = "global"  # controller.core.access.TokenScope
    expires_at: float = 0.0  # 0: never
    description: str = ""
    id: str = ""  # how its owner names it (authorizations:revoke ID)

    def encode(self) -> bytes:
        return _dumps(asdict(self))

    @classmethod
    def decode(cls, data: bytes) -> TokenRecord:
        obj = json.loads(data)
        return cls(**{k: v for k, v in obj.items() if k in cls.__dataclass_fields__})


@dataclass
class JoinTokenRecord:
    """A one-time join token's record; the token itself is never stored."""

    node: str
    created_at: float
    expires_at: float

    def encode(self) -> bytes:
        return _dumps(asdict(self))

    @classmethod
    def decode(cls, data: bytes) -> JoinTokenRecord:
        obj = json.loads(data)
        return cls(**{k: v for k, v in obj.items() if k in cls.__dataclass_fields__})


@dataclass
class UserRecord:
    """A person's account; the password only as a digest (controller/core/passwords.py)."""

    email: str
    created_at: float
    admin: bool = False
    password: str = ""  # "" : no password (log in with a token an admin made)

    def encode(self) -> bytes:
        return _dumps(asdict(self))

    @classmethod
    def decode(cls, data: bytes) -> UserRecord:
        obj = json.loads(data)
        return cls(**{k: v for k, v in obj.items() if k in cls.__dataclass_fields__})


@dataclass
class CollaboratorRecord:
    """A person's permissions on an app they do not own."""

    email: str
    permissions: list[str]
    created_at: float
    added_by: str = ""

    def encode(self) -> bytes:
        return _dumps(asdict(self))

    @classmethod
    def decode(cls, data: bytes) -> CollaboratorRecord:
        obj = json.loads(data)
        return cls(**{k: v for k, v in obj.items() if k in cls.__dataclass_fields__})


@dataclass
class TeamRecord:
    name: str
    created_at: float
    created_by: str = ""

    def encode(self) -> bytes:
        return _dumps(asdict(self))

    @classmethod
    def decode(cls, data: bytes) -> TeamRecord:
        obj = json.loads(data)
        return cls(**{k: v for k, v in obj.items() if k in cls.__dataclass_fields__})


@dataclass
class MemberRecord:
    """A person's role in a team."""

    email: str
    role: str
    added_at: float
    added_by: str = ""

    def encode(self) -> bytes:
        return _dumps(asdict(self))

    @classmethod
    def decode(cls, data: bytes) -> MemberRecord:
        obj = json.loads(data)
        return cls(**{k: v for k, v in obj.items() if k in cls.__dataclass_fields__})
