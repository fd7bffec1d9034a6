"""The shim's attached mode on plain processes (no runc): pipes, a pty, holding the
output for a late client, and the hangup file (the agent stopping the dyno) ending
that wait."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from agent import attachwire as wire
from tests.harness.wait import eventually

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def start_shim(tmp: Path, command: list[str], *extra: str) -> None:
    argv = [sys.executable, "-m", "agent.shim", "--log", "out.log", "--status", "status.json"]
    argv += ["--pid-file", "shim.pid", "--attach", "attach.sock", *extra, "--", *command]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(argv, cwd=tmp, env=env, check=True, timeout=30)  # returns once forked


def attach(tmp: Path) -> socket.socket:
    def connect() -> socket.socket | None:
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(str(tmp / "attach.sock"))
        except OSError:
            s.close()
            return None
        return s

    sock = eventually(connect, timeout=20)
    assert sock is not None
    sock.settimeout(20)
    return sock


def frames_until_exit(sock: socket.socket) -> list[tuple[int, bytes]]:
    decoder, got = wire.Decoder(), list[tuple[int, bytes]]()
    while True:
        data = sock.recv(65536)
        if not data:
            return got
        got += decoder.feed(data)


def status(tmp: Path) -> int:
    path = tmp / "status.json"
    text = eventually(lambda: path.read_text() if path.exists() else "")
    return int(json.loads(text)["exit_status"])


def test_pipes_keep_stdout_and_stderr_apart(tmp_path: Path) -> None:
    start_shim(tmp_path, ["sh", "-c", "cat; echo oops >&2; exit 3"])
    sock = attach(tmp_path)
    sock.sendall(wire.frame(wire.STDIN, b"in\n") + wire.frame(wire.STDIN_EOF))
    got = frames_until_exit(sock)
    out = b"".join(p for k, p in got if k == wire.STDOUT)
    err = b"".join(p for k, p in got if k == wire.STDERR)
    assert (out, err) == (b"in\n", b"oops\n")
    assert got[-1] == (wire.EXIT, wire.exit_frame(3)[wire.HEADER.size :])
    assert status(tmp_path) == 3


def test_output_waits_for_a_late_client(tmp_path: Path) -> None:
    # The command is long gone when the client arrives: nothing is lost.
    start_shim(tmp_path, ["sh", "-c", "echo early; exit 4"], "--linger", "30")
    eventually(lambda: (tmp_path / "attach.sock").exists())
    assert not (tmp_path / "status.json").exists()
    got = frames_until_exit(attach(tmp_path))
    assert got == [(wire.STDOUT, b"early\n"), (wire.EXIT, wire.exit_frame(4)[wire.HEADER.size :])]
    assert status(tmp_path) == 4


def test_hangup_file_ends_the_wait_for_a_client(tmp_path: Path) -> None:
    start_shim(tmp_path, ["true"], "--linger", "600")
    eventually(lambda: (tmp_path / "attach.sock").exists())
    (tmp_path / "hangup").touch()  # the agent stops the dyno: nobody will attach
    assert status(tmp_path) == 0


def test_terminal_size_and_resize(tmp_path: Path) -> None:
    script = "tty; stty size; read line; stty size; exit 6"
    start_shim(tmp_path, ["sh", "-c", script], "--tty", "--rows", "20", "--cols", "70")
    sock = attach(tmp_path)
    decoder, seen = wire.Decoder(), b""
    while b"20 70" not in seen:
        seen += b"".join(p for _, p in decoder.feed(sock.recv(65536)))
    sock.sendall(wire.resize(33, 99) + wire.frame(wire.STDIN, b"go\r"))
    rest = frames_until_exit(sock)
    seen += b"".join(p for k, p in decoder.feed(b"") + rest if k == wire.STDOUT)
    assert seen.startswith(b"/dev/pts/") and b"33 99" in seen
    assert rest[-1][0] == wire.EXIT and status(tmp_path) == 6
