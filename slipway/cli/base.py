"""The click group, shared options, and error translation for every command."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import click

from slipway import errors
from slipway.cli import settings
from slipway.client import Client

# ctx.meta key (shared by a command's context and its group's): --json was given.
JSON_META = "slipway.json"


class SlipwayGroup(click.Group):
    """Turns Slipway errors into one clean line on stderr and exit status 1; with
    ``--json``, into one JSON object on stderr: ``{"error": {message, reason, code}}``."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except errors.SlipwayError as exc:
            if ctx.meta.get(JSON_META):
                error = {"message": exc.message, "reason": exc.reason, "code": exc.code.name}
                click.echo(json.dumps({"error": error}), err=True)
                ctx.exit(1)
            raise click.ClickException(str(exc)) from exc

    def list_commands(self, ctx: click.Context) -> list[str]:
        # Keep `apps`, `apps:create`, ... together, the way `heroku help` reads.
        return sorted(self.commands)


class State:
    def __init__(self, api: str | None, token: str | None) -> None:
        self.api_flag = api
        self.token_flag = token
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            resolved = settings.resolve(self.api_flag, self.token_flag)
            self._client = Client(resolved.api, resolved.token, ca_file=resolved.ca_file)
        return self._client


@click.group(cls=SlipwayGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--api", metavar="HOST:PORT[,...]", help="Controller address(es). Env: SLIPWAY_API.")
@click.option("--token", metavar="TOKEN", help="API token. Env: SLIPWAY_TOKEN.")
@click.version_option(package_name="slipway")
@click.pass_context
def cli(ctx: click.Context, api: str | None, token: str | None) -> None:
    """Slipway: deploy, run and scale apps on your own hosts, the Heroku way.

    Log in once with `slipway login --api HOST:PORT --email EMAIL` (or
    `--token TOKEN`); app commands take -a APP (or SLIPWAY_APP). Listings
    accept --json.
    """
    ctx.obj = State(api, token)


def app_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-a",
        "--app",
        "app",
        required=True,
        envvar="SLIPWAY_APP",
        metavar="APP",
        help="The app to act on. Env: SLIPWAY_APP.",
    )(func)


def _remember_json(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    ctx.meta[JSON_META] = value
    return value


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        callback=_remember_json,
        help="Print JSON for scripts (errors too, on stderr).",
    )(func)


def with_client(func: Callable[..., Any]) -> Callable[..., Any]:
    """Pass the API client as the first argument."""

    @functools.wraps(func)
    @click.pass_obj
    def wrapper(state: State, *args: Any, **kwargs: Any) -> Any:
        return func(state.client, *args, **kwargs)

    return wrapper
