"""Where the CLI finds the controller and its token.

Order: flags (--api, --token), then environment (SLIPWAY_API, SLIPWAY_TOKEN),
then the file ``slipway login`` writes (~/.config/slipway/config.json, or
$SLIPWAY_CONFIG).
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


def write_file(api: str, token: str) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"api": api, "token": token}, fh, indent=2)
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
    return Settings(api=api, token=token)
