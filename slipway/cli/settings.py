"""Where the CLI finds the controller, its token and the cluster CA.

Order: flags (--api, --token), then environment (SLIPWAY_API, SLIPWAY_TOKEN,
SLIPWAY_CA_FILE), then the file ``slipway login`` writes
(~/.config/slipway/config.json, or $SLIPWAY_CONFIG) with the keys ``api``,
``token`` and ``ca_file``.

With a CA file the CLI speaks TLS and checks the controller's certificate
against it; without one, plaintext (a controller started without credentials).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from slipway import errors

DEFAULT_API = "127.0.0.1:7070"


def config_path() -> Path:
    explicit = os.environ.get("SLIPWAY_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "slipway" / "config.json"


@dataclass
class Settings:
    api: str
    token: str
    ca_file: Path | None = None


def read_file() -> dict[str, str]:
    path = config_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise errors.InvalidArgument(
            f"cannot read {path}: {exc}; run `slipway login` again"
        ) from exc
    return {k: str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def write_file(api: str, token: str, *, ca_file: Path | None = None) -> Path:
    """Save the login; ``ca_file`` is stored as an absolute path (none: plaintext)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    data = {"api": api, "token": token}
    if ca_file is not None:
        data["ca_file"] = str(ca_file.resolve())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    tmp.replace(path)
    return path


def resolve(api_flag: str | None, token_flag: str | None) -> Settings:
    stored = read_file()
    api = api_flag or os.environ.get("SLIPWAY_API") or stored.get("api") or DEFAULT_API
    token = token_flag or os.environ.get("SLIPWAY_TOKEN") or stored.get("token") or ""
    if not token:
        raise errors.Unauthenticated(
            "not logged in: run `slipway login --api HOST:PORT --token TOKEN` or set SLIPWAY_TOKEN"
        )
    return Settings(api=api, token=token, ca_file=resolve_ca_file(stored))


def resolve_ca_file(stored: dict[str, str] | None = None) -> Path | None:
    """SLIPWAY_CA_FILE, else the saved ``ca_file``; None: plaintext."""
    stored = read_file() if stored is None else stored
    value = os.environ.get("SLIPWAY_CA_FILE") or stored.get("ca_file") or ""
    return Path(value) if value else None
