"""The per-dyno shim: keeps `runc run` and its exit status independent of the agent.

    python -m agent.shim --log OUT --status STATUS --pid-file SHIM_PID -- runc ... run ...
    python -m agent.shim ... --attach SOCK [--tty --rows R --cols C] [--linger S]
                         [--hangup-file F] -- runc ...

It forks once (the parent returns at once, so the agent does not own it),
starts a new session, runs the foreground ``runc run`` with stdout and stderr
appended to ``OUT`` (the container inherits them: runc's pass-through stdio),
waits, and writes ``{"exit_status": N, "finished_at": T}`` to ``STATUS``
atomically. An agent killed with -9 leaves shim, runc and the container
running; the next agent re-opens ``OUT`` at its saved offset and waits for
``STATUS``. Why not ``runc run --detach``: the container's exit status would
go to whoever reaps it (pid 1), and the agent could not report
``Process exited with status 137``.

With ``--attach`` (an attached one-off dyno, ``slipway run``) the dyno's stdio
is not ``OUT`` but a terminal or pipes relayed over the Unix socket ``SOCK``
(see agent/shim_attach.py); ``STATUS`` is written the same way.

Only the standard library is imported: this runs once per dyno start.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time


def _write_atomic(path: str, data: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agent.shim")
    parser.add_argument("--log", required=True)
    parser.add_argument("--status", required=True)
    parser.add_argument("--pid-file", required=True)
    parser.add_argument("--attach", help="Unix socket for an attached dyno's stdio")
    parser.add_argument("--tty", action="store_true")
    parser.add_argument("--rows", type=int, default=0)
    parser.add_argument("--cols", type=int, default=0)
    parser.add_argument("--linger", type=float, default=60.0)
    parser.add_argument("--hangup-file", default="hangup", help="exists: stop lingering")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    opts = parser.parse_args(argv)
    command = [c for c in opts.command if c != "--"] if opts.command[:1] == ["--"] else opts.command
    if not command:
        parser.error("no command")

    if os.fork() > 0:
        return 0  # the agent's child returns at once; the grandchild lives on
    os.setsid()
    shield_from_signals()
    _write_atomic(opts.pid_file, str(os.getpid()))
    if opts.attach:
        exit_status = _run_attached(command, opts)
        _write_atomic(
            opts.status, json.dumps({"exit_status": exit_status, "finished_at": time.time()})
        )
        return 0

    out = os.open(opts.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        proc = subprocess.Popen(
            command,
            stdin=devnull,
            stdout=out,
            stderr=out,
            close_fds=True,
        )
        status = proc.wait()
    except OSError as exc:
        os.write(out, f"shim: cannot run runc: {exc}\n".encode())
        status = 127
    finally:
        os.close(devnull)
    os.close(out)
    # subprocess reports a signal death as -N; shells and Heroku say 128+N.
    exit_status = 128 - status if status < 0 else status
    _write_atomic(opts.status, json.dumps({"exit_status": exit_status, "finished_at": time.time()}))
    return 0


def _run_attached(command: list[str], opts: argparse.Namespace) -> int:
    from agent import shim_attach

    try:
        return shim_attach.run(
            command,
            opts.attach,
            tty=opts.tty,
            rows=opts.rows,
            cols=opts.cols,
            linger=opts.linger,
            hangup_path=opts.hangup_file,
        )
    except OSError as exc:
        with open(opts.log, "a") as fh:
            fh.write(f"shim: cannot run attached: {exc}\n")
        return 127


def _ignore(signum: int, frame: object) -> None:
    """A handler that does nothing (see shield_from_signals)."""


def shield_from_signals() -> None:
    """The agent's terminal or process group must not stop the shim.

    A handler that does nothing, not SIG_IGN: exec resets handled signals to
    their defaults but keeps ignored ones, so runc (which forwards signals to
    the container) starts with the defaults and no code has to run between
    fork and exec to restore them.
    """
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGQUIT):
        signal.signal(sig, _ignore)


if __name__ == "__main__":
    sys.exit(main())
