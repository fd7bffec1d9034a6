"""One-off dynos through the real CLI, controller, agent and runc: `slipway run`
attached over pipes and a pty, `run:detached`, hang-ups and ps.

One cluster (controller + agent node-a) and one deployed app serve the module.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shlex
import struct
import subprocess
import termios
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.harness.cluster import LocalCluster
from tests.harness.oneoff import (
    cli_env,
    deploy,
    kill_quietly,
    popen_cli,
    run_cli,
    runs,
    slipway_argv,
    start_cluster,
)
from tests.harness.wait import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

APP = "oneoff"


@pytest.fixture(scope="module")
def cluster(
    etcd_endpoint: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    prefix = f"/slipway-test-{uuid.uuid4().hex[:10]}"
    local = start_cluster(tmp_path_factory.mktemp("run"), etcd_endpoint, prefix, nats_url)
    try:
        local.add_agent("node-a")
        deploy(local, APP)
        yield local
    finally:
        local.close()


def containers(cluster: LocalCluster) -> list[str]:
    return [c for c in cluster.agents["node-a"].containers() if ".run." in c]


def test_exit_code_and_output_come_back(cluster: LocalCluster) -> None:
    code = "print('hi'); import sys; sys.exit(3)"
    done = run_cli(cluster, "run", "-a", APP, "python3", "-c", code)
    assert done.returncode == 3, done.stderr
    assert done.stdout == b"hi\n"
    assert b"up, run." in done.stderr  # "Running `...` on oneoff... up, run.N"
    # A one-off dyno is a change: the app's audit trail has it, with its command.
    trail = cluster.controller.cli("audit", "-a", APP, "--json", check=True).stdout
    runs = [e for e in map(json.loads, trail.splitlines()) if e["action"] == "RunDyno"]
    assert runs and runs[-1]["detail"] == f"python3 -c {shlex.quote(code)}"


def test_a_dyno_runs_on_the_run_image_with_nothing_of_the_hosts_system(
    cluster: LocalCluster,
) -> None:
    done = run_cli(cluster, "run", "-a", APP, "cat /proc/self/mountinfo; java -version")
    assert done.returncode == 0, done.stderr
    mounts = {}
    for line in done.stdout.decode().splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[0].isdigit():
            mounts[fields[4]] = fields[3]
    assert "slipway-24-run-" in mounts["/"], mounts["/"]
    # Of the host's system, at most copies of the operator's own CAs.
    system = {p for p in mounts if p.split("/")[1] in {"usr", "bin", "lib", "sbin"}}
    assert system <= {"/usr/local/share/ca-certificates"}, sorted(mounts)
    assert b'openjdk version "17' in done.stderr  # the run image's Java runtime


def test_stdin_piped_through_and_stderr_separate(cluster: LocalCluster) -> None:
    done = run_cli(cluster, "run", "-a", APP, "cat", stdin=b"hello\nworld\n")
    assert (done.returncode, done.stdout) == (0, b"hello\nworld\n"), done.stderr

    script = "import sys; print('to-out'); print('to-err', file=sys.stderr); sys.exit(7)"
    done = run_cli(cluster, "run", "-a", APP, "python3", "-c", script)
    assert done.returncode == 7, done.stderr
    assert done.stdout == b"to-out\n"
    banner, _, rest = done.stderr.partition(b"\n")  # "Running `...` on oneoff... up, run.N"
    assert banner.startswith(b"Running") and rest == b"to-err\n"


def test_config_vars_dyno_name_and_profile_d(cluster: LocalCluster) -> None:
    done = run_cli(cluster, "run", "-a", APP, 'echo "$DYNO $GREETING $PROFILE_D"')
    assert done.returncode == 0, done.stderr
    dyno, greeting, profile = done.stdout.decode().split()
    assert dyno.startswith("run.") and greeting == "hello-oneoff"
    assert profile == f"sourced-{dyno}"
    first = int(dyno.split(".")[1])
    again = run_cli(cluster, "run", "-a", APP, "echo $DYNO").stdout.decode().strip()
    assert int(again.split(".")[1]) > first, "run.N increases"


def test_large_output_arrives_whole(cluster: LocalCluster) -> None:
    # 8 MB through pipes, shim, agent, controller and CLI: backpressure, not loss.
    script = "import sys; [sys.stdout.write('x' * 1023 + '\\n') for _ in range(8192)]"
    done = run_cli(cluster, "run", "-a", APP, "python3", "-c", script)
    assert done.returncode == 0, done.stderr[-500:]
    assert len(done.stdout) == 8192 * 1024


def test_client_disconnect_ends_the_dyno(cluster: LocalCluster) -> None:
    proc = popen_cli(cluster, "run", "-a", APP, "sleep 600")
    try:
        # The previous test's dyno may still be listed for a moment as it goes.
        running = eventually(
            lambda: [
                d for d in runs(cluster, APP) if d["state"] == "up" and d["command"] == "sleep 600"
            ],
            timeout=60,
        )
        assert running[0]["type"] == "run"
        name = str(running[0]["name"])
        eventually(lambda: containers(cluster), timeout=30)
        proc.kill()  # the client vanishes without a word
        proc.wait(10)
        eventually(lambda: not runs(cluster, APP), timeout=60)
        eventually(lambda: not containers(cluster), timeout=60)
    finally:
        kill_quietly(proc)

    def hung_up() -> bool:
        out = cluster.controller.cli("logs", "-a", APP, "--dyno", name).stdout
        # The hang-up, and the command dying of it (128 + SIGHUP).
        return "Stopping all processes with SIGHUP" in out and "exited with status 129" in out

    eventually(hung_up, timeout=30, interval=0.5)


def test_ps_stop_ends_an_attached_dyno(cluster: LocalCluster) -> None:
    proc = popen_cli(cluster, "run", "-a", APP, "sleep 600")
    try:
        running = eventually(
            lambda: [d for d in runs(cluster, APP) if d["state"] == "up"], timeout=60
        )
        name = str(running[0]["name"])
        cluster.controller.cli("ps:stop", "-a", APP, name, check=True)
        assert proc.wait(60) == 129  # the command died of the hang-up: 128 + SIGHUP
        eventually(lambda: not runs(cluster, APP), timeout=60)
        eventually(lambda: not containers(cluster), timeout=60)
    finally:
        kill_quietly(proc)


def test_detached_runs_in_the_background_and_goes_away(cluster: LocalCluster) -> None:
    done = run_cli(cluster, "run:detached", "-a", APP, "echo detached-says-hi; sleep 2; exit 4")
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    name = out.split("up, ")[1].split()[0]
    assert name.startswith("run.")
    assert f"slipway logs -a {APP} --dyno {name}" in out
    eventually(lambda: [d for d in runs(cluster, APP) if d["name"] == name], timeout=30)

    def logged() -> bool:
        logs = cluster.controller.cli("logs", "-a", APP, "--dyno", name)
        return "detached-says-hi" in logs.stdout

    eventually(logged, timeout=60, interval=0.5)
    eventually(lambda: not [d for d in runs(cluster, APP) if d["name"] == name], timeout=60)
    eventually(lambda: not containers(cluster), timeout=60)


# ----- a real terminal ---------------------------------------------------------


class Terminal:
    """The CLI on a pty of our own: what a user at a terminal would see."""

    def __init__(self, cluster: LocalCluster, rows: int, cols: int, *args: str) -> None:
        self.master, slave = os.openpty()
        self.resize(rows, cols)
        # setsid --ctty: the pty is the CLI's controlling terminal, set by the
        # exec wrapper rather than by Python code after fork.
        self.proc = subprocess.Popen(
            ["setsid", "--ctty", *slipway_argv(*args)],
            env={**cli_env(cluster), "TERM": "xterm"},
            stdin=slave,
            stdout=slave,
            stderr=slave,
        )
        os.close(slave)
        self.seen = b""

    def resize(self, rows: int, cols: int) -> None:
        # The kernel sends SIGWINCH to the CLI (the terminal's foreground group).
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def read_until(self, check: Callable[[bytes], bool], timeout: float = 30) -> bytes:
        deadline = time.monotonic() + timeout
        while not check(self.seen):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"terminal never showed it; got {self.seen[-2000:]!r}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:
                    data = b""
                if not data:
                    raise AssertionError(f"terminal closed; got {self.seen[-2000:]!r}")
                self.seen += data
        return self.seen

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        os.close(self.master)


def test_pty_session_with_bash(cluster: LocalCluster) -> None:
    term = Terminal(cluster, 24, 80, "run", "-a", APP, "bash")
    try:
        term.read_until(lambda s: b"$ " in s)
        term.send("tty; stty size; echo mark-$((6*7))\r")
        seen = term.read_until(lambda s: b"mark-42" in s.split(b"echo mark-")[-1])
        assert b"/dev/pts/" in seen and b"24 80" in seen
        mark = len(term.seen)

        term.resize(31, 101)  # SIGWINCH -> resize message -> the dyno's terminal

        def resized(s: bytes) -> bool:
            if b"31 101" in s[mark:]:
                return True
            term.send("stty size\r")
            time.sleep(0.2)
            return False

        term.read_until(resized)

        term.send("python3 -q\r")
        term.read_until(lambda s: b">>> " in s[mark:])
        term.send("import sys; print('isatty', sys.stdin.isatty(), 6 * 7)\r")
        term.read_until(lambda s: b"isatty True 42" in s)
        term.send("exit()\r")
        term.send("exit 5\r")
        assert term.proc.wait(60) == 5
    finally:
        term.close()
    # The terminal is left as it was found: cooked again (ICANON, ECHO).
    eventually(lambda: not runs(cluster, APP), timeout=60)
