"""Daemon config files: one TOML table whose keys are the daemon's long flag names.

``--verbose-name`` becomes the key ``verbose_name``. Precedence, lowest first:
the flag's default, the file, the environment, the command line. That is
click's own order for a command's ``default_map``, so the file is read by an
eager ``--config`` option whose callback fills ``ctx.default_map`` before any
other parameter is resolved; flags and environment variables then win on
their own, with no merging code of ours.

Some daemons have settings with no flag (the controller's dyno sizes table,
GC and timeout knobs): those are declared as ``file_only`` keys and handed to
the daemon through :func:`file_only_settings`. Any other key is an error that
names the keys and the file, so a typo never silently does nothing.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from slipway import errors

F = TypeVar("F", bound=Callable[..., Any])

_META_KEY = "slipway.conffile.file_only"
_META_PATH = "slipway.conffile.path"


def key_of(param: click.Parameter) -> str | None:
    """The file key of a parameter: its first long flag, underscored."""
    for opt in getattr(param, "opts", []):
        if opt.startswith("--"):
            return str(opt[2:].replace("-", "_"))
    return None


def read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise errors.InvalidArgument(f"cannot read config {path}: {exc}") from exc


def _normalize(param: click.Parameter, value: Any) -> Any:
    """TOML shapes -> what the flag would have received on a command line."""
    multiple = getattr(param, "multiple", False)
    if multiple:
        if isinstance(value, dict):  # key=value flags (agent --label) take a table
            return [f"{k}={v}" for k, v in value.items()]
        return [value] if isinstance(value, str) else value
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return ",".join(str(v) for v in value)  # list flags are comma-separated
    if isinstance(value, dict) and param.type is click.STRING:
        return json.dumps(value)  # JSON-valued flags (agent --timings) take a table
    return value


def split(
    ctx: click.Context,
    values: Mapping[str, Any],
    path: Path,
    *,
    file_only: Collection[str] = (),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sort a file's settings into this command's defaults and file-only settings.

    Returns ``(default_map, file_only_values)``; raises InvalidArgument naming
    the file for unknown keys and values the flag's type rejects.
    """
    params: dict[str, click.Parameter] = {}
    for p in ctx.command.params:
        key = key_of(p)
        if key is not None and key != "config" and p.name is not None:
            params[key] = p
    unknown = sorted(k for k in values if k not in params and k not in file_only)
    if unknown:
        raise errors.InvalidArgument(
            f"unknown settings in {path}: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(set(params) | set(file_only)))})"
        )
    defaults: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in values.items():
        param = params.get(key)
        if param is None:
            extra[key] = value
            continue
        value = _normalize(param, value)
        try:
            param.type_cast_value(ctx, value)
        except (click.BadParameter, TypeError, ValueError) as exc:
            message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
            raise errors.InvalidArgument(f"{path}: {key}: {message}") from exc
        assert param.name is not None
        defaults[param.name] = value
    return defaults, extra


def config_option(envvar: str, *, file_only: Collection[str] = ()) -> Callable[[F], F]:
    """``--config FILE.toml`` (env ``envvar``): the file's values become flag defaults."""

    def load(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
        if value is None or ctx.resilient_parsing:
            return
        try:
            defaults, extra = split(ctx, read(value), value, file_only=file_only)
        except errors.SlipwayError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc
        ctx.default_map = {**(ctx.default_map or {}), **defaults}
        ctx.meta[_META_KEY] = extra
        ctx.meta[_META_PATH] = value

    return click.option(
        "--config",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        envvar=envvar,
        is_eager=True,
        expose_value=False,
        callback=load,
        help=f"TOML file of settings, keys named like the long flags (env {envvar}); "
        "flags and environment variables win over it.",
    )


def file_only_settings(ctx: click.Context | None = None) -> dict[str, Any]:
    """The current command's file-only settings (empty without --config)."""
    ctx = ctx or click.get_current_context()
    return dict(ctx.meta.get(_META_KEY, {}))


def source(ctx: click.Context | None = None) -> str:
    """The config file's path for messages (``"config"`` without one)."""
    ctx = ctx or click.get_current_context()
    return str(ctx.meta.get(_META_PATH, "config"))


def check_fields(cls: type, values: Mapping[str, Any], source: object) -> dict[str, Any]:
    """Check file values against a dataclass's field types; ints are accepted as floats.

    Only the shapes TOML can produce are checked (scalars, lists, tables).
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in names:
            raise errors.InvalidArgument(f"{source}: unknown setting {key}")
        hint = hints[key]
        kind = typing.get_origin(hint) or hint
        ok = True
        if kind is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind in (bool, str, dict):
            ok = isinstance(value, kind)
        elif kind in (list, tuple):
            ok = isinstance(value, list)
            value = kind(value) if ok else value
        if not ok:
            name = getattr(kind, "__name__", str(kind))
            raise errors.InvalidArgument(
                f"{source}: {key}: expected {name}, got {type(value).__name__} {value!r}"
            )
        out[key] = value
    return out
