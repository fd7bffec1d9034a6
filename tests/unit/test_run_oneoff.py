"""One-off dynos: the pure parts (wire frames, naming, reaping, translations)."""

from __future__ import annotations

import shlex
from dataclasses import replace

import pytest

from agent import attachwire as wire
from agent import convert
from agent.model import DynoSpec
from agent.sandbox import dyno_env
from controller.api.run_api import run_request, to_agent, to_client
from controller.core.scheduler import Placement
from controller.loops.oneoff import check_command, finished_runs, next_run_number
from slipway import errors
from slipway.cli.run import command_line, exit_code
from slipway.records import StatusRecord
from slipway.v1 import node_pb2 as npb
from slipway.v1 import platform_pb2 as pb


def test_frames_survive_any_split() -> None:
    stream = (
        wire.frame(wire.STDOUT, b"hello")
        + wire.frame(wire.STDERR, b"")
        + wire.resize(40, 120)
        + wire.exit_frame(-1)
    )
    for cut in range(len(stream) + 1):
        decoder = wire.Decoder()
        frames = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
        assert [k for k, _ in frames] == [wire.STDOUT, wire.STDERR, wire.RESIZE, wire.EXIT]
        assert frames[0][1] == b"hello"
        assert wire.parse_resize(frames[2][1]) == (40, 120)
        assert wire.parse_exit(frames[3][1]) == -1
        assert decoder.pending == 0


def test_oversized_frames_are_refused() -> None:
    with pytest.raises(wire.FrameError):
        wire.frame(wire.STDIN, b"x" * (wire.MAX_PAYLOAD + 1))
    with pytest.raises(wire.FrameError):
        wire.Decoder().feed(wire.HEADER.pack(wire.STDIN, wire.MAX_PAYLOAD + 1))
    assert wire.parse_resize(wire.resize(70000, -3)[wire.HEADER.size :]) == (65535, 0)


@pytest.mark.parametrize(
    "argv",
    [
        ["bash"],
        ["echo $DYNO && ls /app"],
        ["python3", "-c", "print('hi'); import sys; sys.exit(3)"],
        ["printf", "%s\\n", "two words", "$HOME"],
    ],
)
def test_command_line(argv: list[str]) -> None:
    line = command_line(argv)
    if len(argv) == 1:
        assert line == argv[0]  # a shell command line, as typed
    else:
        assert shlex.split(line) == argv  # each word arrives as one word


def test_exit_codes() -> None:
    assert exit_code(pb.RunDynoExited(exit_status=3)) == 3
    assert exit_code(pb.RunDynoExited(exit_status=129)) == 129
    assert exit_code(pb.RunDynoExited(exit_status=-1, reason="lost")) == 255


def test_run_numbers() -> None:
    assert next_run_number(None) == 1
    assert next_run_number(b"41") == 42
    assert next_run_number(b"garbage") == 1


def test_commands_are_checked() -> None:
    assert check_command("  bash ") == "bash"
    with pytest.raises(errors.InvalidArgument):
        check_command("   ")
    with pytest.raises(errors.InvalidArgument):
        check_command("x" * 20_000)


def _placement(name: str, kind: str, instance: str) -> Placement:
    return Placement(
        app="a",
        name=name,
        type=name.split(".")[0],
        release=1,
        node="n",
        instance_id=instance,
        memory_mb=512,
        max_processes=256,
        size="standard-1x",
        created_at=0.0,
        kind=kind,
    )


def _status(instance: str, state: str) -> StatusRecord:
    return StatusRecord("a", "x", instance, "n", "run", 1, state, exit_status=0)


def test_only_finished_detached_runs_are_reaped() -> None:
    placements = [
        _placement("run.1", "oneoff", "i1"),  # down: reaped
        _placement("run.2", "oneoff", "i2"),  # up: running
        _placement("run.3", "oneoff", "i3"),  # no status yet: starting
        _placement("run.4", "attached", "i4"),  # its session ends it, not the reaper
        _placement("release.5", "oneoff", "i5"),  # the release phase's own
        _placement("web.1", "formation", "i6"),
    ]
    statuses = {
        "i1": _status("i1", "down"),
        "i2": _status("i2", "up"),
        "i4": _status("i4", "down"),
        "i5": _status("i5", "down"),
        "i6": _status("i6", "down"),
    }
    assert [p.name for p in finished_runs(placements, statuses)] == ["run.1"]


def test_placement_keeps_attach_fields_and_reads_old_records() -> None:
    p = _placement("run.1", "attached", "i1")
    p = replace(p, tty=True, rows=24, cols=80, attach_token="secret")
    assert Placement.decode(p.encode()) == p
    assert "secret" not in repr(p)
    old = b'{"app":"a","name":"web.1","type":"web","release":1,"node":"n","instance_id":"i",'
    old += b'"memory_mb":512,"max_processes":256,"size":"standard-1x","created_at":0}'
    assert Placement.decode(old).attach_token == ""


def test_assignment_round_trip_carries_the_terminal_and_token() -> None:
    spec = DynoSpec(
        app="a",
        name="run.1",
        process_type="run",
        release=2,
        command="bash",
        instance_id="i1",
        attached=True,
        tty=True,
        rows=30,
        cols=100,
        attach_token="tok",
    )
    assert convert.spec_from_pb(convert.spec_to_pb(spec)) == spec
    plain = DynoSpec(app="a", name="web.1", process_type="web", release=2, command="x")
    assert not convert.spec_to_pb(plain).HasField("attach")


def test_terminal_dynos_get_a_term_type() -> None:
    spec = DynoSpec(app="a", name="run.1", process_type="run", release=1, command="bash")
    assert "TERM" not in dyno_env(spec, port=0, path="/bin")
    tty = DynoSpec(app="a", name="run.1", process_type="run", release=1, command="bash", tty=True)
    env = dyno_env(tty, port=0, path="/bin")
    assert env["TERM"] == "xterm-256color" and env["DYNO"] == "run.1" and "PORT" not in env


def test_stream_translations() -> None:
    start = pb.RunDynoStart(
        app="a", command="bash", attach=True, tty=True, size=pb.TerminalSize(rows=5, cols=6)
    )
    req = run_request(start)
    assert (req.app, req.rows, req.cols, req.tty, req.size) == ("a", 5, 6, True, "")
    assert to_agent(pb.RunDynoRequest(stdin=b"x")) == npb.AttachInput(stdin=b"x")
    assert to_agent(pb.RunDynoRequest(stdin_eof=True)) == npb.AttachInput(stdin_eof=True)
    resize = to_agent(pb.RunDynoRequest(resize=pb.TerminalSize(rows=1, cols=2)))
    assert resize is not None and (resize.resize.rows, resize.resize.cols) == (1, 2)
    assert to_agent(pb.RunDynoRequest(start=start)) is None
    assert to_client(npb.AttachOutput(stderr=b"e")).stderr == b"e"
    exited = to_client(npb.AttachOutput(exit_status=0))
    assert exited.WhichOneof("body") == "exited" and exited.exited.exit_status == 0
