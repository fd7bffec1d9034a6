"""The manifest an operator registers for a built-in service.

Heroku's add-on manifest (``id``, ``name``, ``api.password``,
``api.production.base_url``, ``api.config_vars_prefix``) plus what Slipway
reads besides: ``plans``, ``default_attachment``, ``api.ca_pem`` (the cluster
CA the provider's certificate is checked against) and ``slipway``:

    "slipway": {"built_in": true,
                "network": {"address": "192.0.2.2", "ports": "5433"}}

``network`` is where the service's resources listen: the controller grants the
dynos of attached apps that address and port (only ports in that range, only
at that address, whatever a config var says), and no one else reaches it.

The password is made once per service and kept (0600) beside the manifest,
so a restarted provider and the registered manifest keep agreeing.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from slipway import errors, pki
from slipway.providers.partner import Backend


def port_range(text: str) -> tuple[int, int]:
    """ "5433" or "15500-15599" -> (first, last): a manifest's network ports."""
    first, _, last = text.partition("-")
    try:
        low, high = int(first), int(last or first)
    except ValueError:
        raise errors.InvalidArgument(f"bad port range {text!r}: use 5433 or 15500-15599") from None
    if not 1 <= low <= high <= 65535:
        raise errors.InvalidArgument(f"bad port range {text!r}: use 5433 or 15500-15599")
    return low, high


def service_password(secrets_dir: Path, service: str) -> str:
    path = secrets_dir / f"{service}.password"
    if path.exists():
        return path.read_text().strip()
    password = secrets.token_hex(24)
    pki.write_private(path, (password + "\n").encode())
    return password


def manifest(
    backend: Backend,
    *,
    password: str,
    base_url: str,
    ca_pem: str,
    address: str,
    ports: str,
) -> dict[str, Any]:
    return {
        "id": backend.service,
        "name": backend.human_name,
        "description": f"{backend.human_name}, run by the platform on its add-ons hosts",
        "default_attachment": backend.default_attachment,
        "api": {
            "config_vars_prefix": backend.config_vars_prefix,
            "config_vars": [f"{backend.config_vars_prefix}_URL"],
            "password": password,
            "version": "3",
            "production": {"base_url": f"{base_url.rstrip('/')}/{backend.service}/resources"},
            "ca_pem": ca_pem,
        },
        "plans": [
            {
                "name": p.name,
                "description": p.description,
                "price_cents_per_month": p.price_cents_per_month,
                "default": p.default,
            }
            for p in backend.plans
        ],
        "slipway": {"built_in": True, "network": {"address": address, "ports": ports}},
    }


def write(path: Path, doc: dict[str, Any]) -> None:
    """0600: it holds the service's password."""
    pki.write_private(path, (json.dumps(doc, indent=2) + "\n").encode())
