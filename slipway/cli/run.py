"""run and run:detached: one-off dynos.

`slipway run` holds one RunDyno stream (see controller/api/run_api.py):

    stdin reader thread ──▶ bounded queue ──▶ request iterator ──▶ controller ──▶ dyno
    SIGWINCH handler   ──▶ (resize)                                              │
    main thread ◀── stdout / stderr / exited ◀────────────────────────────────────┘

With a terminal on both stdin and stdout the dyno gets a pseudo-terminal of
the same size and the local terminal goes raw (keys, ^C and ^D reach the dyno
as bytes; restored on every way out). Without one (pipes, files, scripts) the
dyno gets plain pipes: stdout and stderr stay apart and the end of stdin
reaches the dyno as EOF. The command's exit status becomes ours; 255 means
the session was lost before the command's status came back.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shlex
import signal
import sys
import termios
import threading
import tty
from collections.abc import Iterator
from types import FrameType
from typing import Any

import click
import grpc

from slipway import errors
from slipway.cli.base import app_option, cli, with_client
from slipway.client import Client
from slipway.v1 import platform_pb2 as pb

LOST = 255  # like ssh: the remote status is unknown
QUEUE_SIZE = 64
READ_SIZE = 32 * 1024

_RUN_CONTEXT = {"ignore_unknown_options": True, "allow_interspersed_args": False}


def command_line(argv: tuple[str, ...] | list[str]) -> str:
    """One argument is a shell command line as is; several are quoted word by word,
    so `slipway run python3 -c "print('hi')"` runs exactly what was typed."""
    if len(argv) == 1:
        return argv[0]
    return shlex.join(argv)


def terminal_size() -> pb.TerminalSize:
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
    except OSError:
        return pb.TerminalSize()
    return pb.TerminalSize(rows=size.lines, cols=size.columns)


def exit_code(exited: pb.RunDynoExited) -> int:
    status = exited.exit_status
    return status if 0 <= status <= 255 else LOST


class AttachedRun:
    """One attached session: the request queue, the raw terminal, the output."""

    def __init__(self, client: Client, start: pb.RunDynoStart) -> None:
        self.client = client
        self.start = start
        self.inbox: queue.Queue[pb.RunDynoRequest | None] = queue.Queue(QUEUE_SIZE)
        self.stdin_fd = sys.stdin.fileno()
        self.saved_tty: list[Any] | None = None
        self.call: Any = None

    def requests(self) -> Iterator[pb.RunDynoRequest]:
        yield pb.RunDynoRequest(start=self.start)
        while True:
            item = self.inbox.get()
            if item is None:
                return
            yield item

    def _read_stdin(self) -> None:
        """Runs in a daemon thread; blocks on a full queue (backpressure to stdin)."""
        while True:
            try:
                data = os.read(self.stdin_fd, READ_SIZE)
            except OSError:
                data = b""
            if not data:
                self.inbox.put(pb.RunDynoRequest(stdin_eof=True))
                return
            self.inbox.put(pb.RunDynoRequest(stdin=data))

    def _on_winch(self, _sig: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(queue.Full):
            self.inbox.put_nowait(pb.RunDynoRequest(resize=terminal_size()))

    def _raw(self) -> None:
        if self.start.tty and self.saved_tty is None:
            self.saved_tty = termios.tcgetattr(self.stdin_fd)
            tty.setraw(self.stdin_fd)

    def _restore(self) -> None:
        if self.saved_tty is not None:
            termios.tcsetattr(self.stdin_fd, termios.TCSADRAIN, self.saved_tty)
            self.saved_tty = None

    def run(self) -> int:
        previous = signal.getsignal(signal.SIGWINCH)
        stop_previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            self.call = self.client.run_dyno(self.requests())
            return self._relay()
        except KeyboardInterrupt:
            return 130
        except grpc.RpcError as exc:
            self._restore()
            raise errors.from_rpc(exc) from exc
        finally:
            self._restore()
            signal.signal(signal.SIGWINCH, previous)
            signal.signal(signal.SIGTERM, stop_previous)
            if self.call is not None:
                self.call.cancel()  # hang up: the dyno gets SIGHUP if still running

    def _relay(self) -> int:
        out, err = sys.stdout.buffer, sys.stderr.buffer
        for response in self.call:
            kind = response.WhichOneof("body")
            if kind == "stdout":
                out.write(response.stdout)
                out.flush()
            elif kind == "stderr":
                err.write(response.stderr)
                err.flush()
            elif kind == "started":
                s = response.started
                click.echo(
                    f"Running `{self.start.command}` on {self.start.app}... up, {s.dyno}",
                    err=True,
                )
                self._raw()
                if self.start.tty:
                    signal.signal(signal.SIGWINCH, self._on_winch)
                threading.Thread(target=self._read_stdin, name="stdin", daemon=True).start()
            elif kind == "exited":
                self._restore()
                if response.exited.exit_status < 0:
                    reason = response.exited.reason or "lost"
                    click.echo(f"slipway: the dyno's exit status is unknown ({reason})", err=True)
                return exit_code(response.exited)
        self._restore()
        click.echo("slipway: the session ended without an exit status", err=True)
        return LOST


def _raise_interrupt(_sig: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@cli.command("run", context_settings=_RUN_CONTEXT)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@app_option
@click.option(
    "-s",
    "--size",
    default="",
    metavar="SIZE",
    help="Dyno size, e.g. standard-2x (default standard-1x).",
)
@click.option("--no-tty", is_flag=True, help="Plain pipes even when this is a terminal.")
@with_client
def run(client: Client, command: tuple[str, ...], app: str, size: str, no_tty: bool) -> None:
    """Run COMMAND in a one-off dyno attached to this terminal.

    The dyno (run.N) runs the app's current release with its config vars,
    after .profile.d. Options go before COMMAND. One argument is a shell
    command line; several are passed word for word:

    \b
      slipway run -a myapp bash
      slipway run -a myapp python3 -c "print('hi')"
      slipway run -a myapp "python3 manage.py migrate && echo done"
      echo hi | slipway run -a myapp cat

    With a terminal, the dyno gets one too (window size included); otherwise
    stdin, stdout and stderr are pipes. The exit status is the command's (255:
    the session was lost). The dyno ends when the command exits, when this
    command ends (the dyno gets SIGHUP) or after an hour with no input or
    output.
    """
    use_tty = not no_tty and sys.stdin.isatty() and sys.stdout.isatty()
    start = pb.RunDynoStart(
        app=app,
        command=command_line(command),
        attach=True,
        tty=use_tty,
        size=terminal_size() if use_tty else None,
        dyno_size=size,
    )
    code = AttachedRun(client, start).run()
    sys.stdout.flush()
    raise SystemExit(code)


@cli.command("run:detached", context_settings=_RUN_CONTEXT)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@app_option
@click.option(
    "-s",
    "--size",
    default="",
    metavar="SIZE",
    help="Dyno size, e.g. standard-2x (default standard-1x).",
)
@with_client
def run_detached(client: Client, command: tuple[str, ...], app: str, size: str) -> None:
    """Run COMMAND in a one-off dyno in the background; its output goes to the logs.

    \b
      slipway run:detached -a myapp python3 manage.py rebuild_index
      slipway logs -a myapp --dyno run.1

    The dyno is never restarted; `slipway ps` shows it while it runs and
    `slipway ps:stop run.N` ends it.
    """
    start = pb.RunDynoStart(app=app, command=command_line(command), attach=False, dyno_size=size)
    call = client.run_dyno(iter([pb.RunDynoRequest(start=start)]), timeout=client.timeout)
    try:
        for response in call:
            if response.WhichOneof("body") == "started":
                dyno = response.started.dyno
                click.echo(f"Running `{start.command}` on {app}... up, {dyno}")
                click.echo(f"Run `slipway logs -a {app} --dyno {dyno}` to view the output.")
                return
    except grpc.RpcError as exc:
        raise errors.from_rpc(exc) from exc
    finally:
        call.cancel()
    raise errors.Unavailable("the controller did not start the dyno")
