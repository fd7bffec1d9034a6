"""Input rules for names, config vars, process types and scale requests.

Pure functions: each raises :class:`slipway.errors.InvalidArgument` with a
sentence that tells the user what to change.
"""

from __future__ import annotations

import re

from slipway import errors

APP_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{2,29}$")
CONFIG_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PROCESS_TYPE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,29}$")
CONFIG_MAX_BYTES = 32 * 1024
MAX_QUANTITY = 100
# Plain addresses only: the email is part of etcd keys, so no "/" or spaces.
EMAIL_RE = re.compile(r"^[a-z0-9._%+-]{1,64}@[a-z0-9-]{1,63}(\.[a-z0-9-]{1,63})*$")


def _name(kind: str, name: str) -> str:
    """App and team names share one form: app names become host names."""
    if not APP_NAME_RE.match(name):
        raise errors.InvalidArgument(
            f"invalid {kind} name {name!r}: use 3 to 30 characters, a lowercase letter first, "
            "then lowercase letters, digits and dashes",
            reason=f"invalid_{kind}_name",
        )
    return name


def app_name(name: str) -> str:
    return _name("app", name)


def team_name(name: str) -> str:
    return _name("team", name)


def email(value: str) -> str:
    """The account's email, lowercased; InvalidArgument when it is not one."""
    address = value.strip().lower()
    if len(address) > 254 or not EMAIL_RE.match(address):
        raise errors.InvalidArgument(
            f"invalid email {value!r}: use an address like ada@example.com",
            reason="invalid_email",
        )
    return address


def config_key(key: str) -> str:
    if not CONFIG_KEY_RE.match(key):
        raise errors.InvalidArgument(
            f"invalid config var name {key!r}: use letters, digits and underscores, "
            "not starting with a digit",
            reason="invalid_config_key",
        )
    return key


def config_size(config: dict[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) for k, v in config.items())


def config_vars(config: dict[str, str]) -> dict[str, str]:
    for key in config:
        config_key(key)
    size = config_size(config)
    if size > CONFIG_MAX_BYTES:
        raise errors.InvalidArgument(
            f"config vars would take {size} bytes; the limit is {CONFIG_MAX_BYTES} bytes "
            "(32 KB) per app for all keys and values together",
            reason="config_too_large",
        )
    return config


def process_type(name: str) -> str:
    if not PROCESS_TYPE_RE.match(name):
        raise errors.InvalidArgument(
            f"invalid process type {name!r}: use lowercase letters, digits, '-' and '_', "
            "a letter first, at most 30 characters",
            reason="invalid_process_type",
        )
    return name


def quantity(type_name: str, value: int) -> int:
    if value < 0:
        raise errors.InvalidArgument(
            f"cannot scale {type_name} below 0 (asked for {value})", reason="invalid_quantity"
        )
    if value > MAX_QUANTITY:
        raise errors.InvalidArgument(
            f"cannot scale {type_name} to {value}: at most {MAX_QUANTITY} dynos per process type",
            reason="invalid_quantity",
        )
    return value


NODE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")

# A host a certificate names: a DNS name or an IPv4/IPv6 address, nothing else.
HOST_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.:-]{0,251}[A-Za-z0-9])?$")


def host(value: str) -> str:
    if not HOST_RE.match(value) or ".." in value:
        raise errors.InvalidArgument(
            f"invalid host {value!r}: give a DNS name or an IP address", reason="invalid_host"
        )
    return value
