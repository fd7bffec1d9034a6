"""What a built-in provider has provisioned: one JSON file per add-on.

The partner API delivers every request at least once, and the provider may die
between creating an engine's object and answering. So a resource is written
*before* the engine is touched (with the password it will get), the engine
steps are idempotent, and a repeated provision finds the file and redoes the
steps with the same values: the same role, the same password, one database.

Files hold passwords: the directory is 0700 and every file 0600.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from slipway import errors, pki

PROVISIONING = "provisioning"
PROVISIONED = "provisioned"
DEPROVISIONING = "deprovisioning"

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def check_uuid(value: str) -> str:
    if not _UUID.match(value):
        raise errors.InvalidArgument(f"{value!r} is not an add-on uuid")
    return value


@dataclass
class Resource:
    uuid: str
    service: str
    plan: str
    name: str = ""  # the add-on's name on the platform, for the operator's eyes
    state: str = PROVISIONING
    created_at: float = 0.0
    # The backend's own values (role, password, port, ...).
    data: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Resource:
        doc = json.loads(raw)
        return cls(**{k: v for k, v in doc.items() if k in cls.__dataclass_fields__})


class ResourceStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)

    def _path(self, service: str, uuid: str) -> Path:
        return self.root / service / f"{check_uuid(uuid)}.json"

    def get(self, service: str, uuid: str) -> Resource | None:
        try:
            return Resource.decode(self._path(service, uuid).read_bytes())
        except FileNotFoundError:
            return None

    def new(self, service: str, uuid: str, plan: str, name: str) -> Resource:
        return Resource(uuid=uuid, service=service, plan=plan, name=name, created_at=time.time())

    def put(self, resource: Resource) -> None:
        path = self._path(resource.service, resource.uuid)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        pki.write_private(path, resource.encode())

    def delete(self, service: str, uuid: str) -> None:
        self._path(service, uuid).unlink(missing_ok=True)

    def all(self, service: str) -> list[Resource]:
        out = []
        for path in sorted((self.root / service).glob("*.json")):
            try:
                out.append(Resource.decode(path.read_bytes()))
            except (ValueError, TypeError):
                continue  # a torn write of an older version: never written by put
        return out
