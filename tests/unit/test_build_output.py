"""The pure parts of following a build's output: where the release dyno's lines go
among the notes, and how they are framed (controller/api/build_output.py)."""

from __future__ import annotations

from dataclasses import replace

from controller.api.build_output import INDENT, Notes, ReleaseLines, running_note_end
from controller.bus.logs import Gap, LogFilter, LogReader, OpenLog, TailBuffer
from controller.core.models import RELEASE_FAILED, RELEASE_PENDING, ReleaseRecord, SlugInfo
from controller.loops.release_phase import build_view
from controller.store.build_records import PENDING, SUCCEEDED, BuildRecord
from slipway.logline import LogLine


def build(**kw: object) -> BuildRecord:
    return BuildRecord(  # type: ignore[arg-type]
        id="b-1", app="app", status=SUCCEEDED, release=3, release_phase=PENDING, **kw
    )


def release(**kw: object) -> ReleaseRecord:
    return ReleaseRecord(  # type: ignore[arg-type]
        app="app",
        version=3,
        description="Deploy",
        created_at=1.0,
        config={},
        slug=SlugInfo(digest="d" * 64),
        process_types={},
        release_command="./migrate",
        **{"status": RELEASE_PENDING, **kw},
    )


def app(process: str, message: str, ts: float = 1.0) -> LogLine:
    return LogLine("app", "app", process, message, ts)


def heroku(process: str, message: str, ts: float = 1.0) -> LogLine:
    return LogLine("app", "heroku", process, message, ts)


def texts(pairs: list[tuple[float, str]]) -> list[str]:
    return [text for _, text in pairs]


def test_the_dyno_lines_go_right_after_the_note_release_phase_writes() -> None:
    """The cut is found in the notes release_phase.build_view really writes."""
    running = build_view(build(), release(phase_instance="i1"), 2)
    assert running is not None
    failed = build_view(running, release(phase_instance="i1", status=RELEASE_FAILED, error="x"), 2)
    assert failed is not None and len(failed.notes) == 2
    assert running_note_end(failed.notes) == 1
    # Failed without ever running a dyno (no node had room): nothing to cut at.
    never = build_view(build(), release(status=RELEASE_FAILED, error="no room"), 2)
    assert never is not None and running_note_end(never.notes) is None


def test_notes_go_out_once_and_in_order_up_to_the_cut() -> None:
    notes = Notes()
    record = build(notes=["-----> Running release command: ./migrate", " !     failed"])
    assert [n.text for n in notes.take(record, 1)] == [record.notes[0]]
    assert notes.take(record, 1) == []
    assert [n.text for n in notes.take(record)] == [record.notes[1]]
    assert notes.take(replace(record, notes=[*record.notes])) == []


def test_release_lines_show_its_output_indented_and_only_its_errors() -> None:
    shown = ReleaseLines("release.3")
    out = shown.feed(
        [
            heroku("release.3", "Starting process with command `./migrate`", 1.0),
            heroku("release.3", "State changed from starting to up", 1.1),
            app("release.3", "migrating 1 of 2", 1.2),
            app("web.1", "a web line", 1.3),
            heroku("router", "at=info path=/", 1.4),
            app("release.30", "another release's line", 1.5),
            app("release.3", "ERROR: relation exists", 1.6),
        ]
    )
    assert out == [(1.2, f"{INDENT}migrating 1 of 2"), (1.6, f"{INDENT}ERROR: relation exists")]
    assert not shown.ended
    out = shown.feed(
        [
            heroku("release.3", "Error R14 (Memory quota exceeded)"),
            heroku("release.3", "Process exited with status 1"),
            heroku("release.3", "State changed from up to down"),
        ]
    )
    assert texts(out) == [" !     Error R14 (Memory quota exceeded)"]
    assert shown.ended
    assert shown.closing(replay=False) == [] and shown.closing(replay=True) == []


def test_a_launch_error_ends_the_dyno_and_is_shown() -> None:
    shown = ReleaseLines("release.3")
    out = shown.feed(
        [
            heroku("release.3", "Starting process with command `./migrate`"),
            heroku("release.3", "Error launching process: slug missing"),
        ]
    )
    assert texts(out) == [" !     Error launching process: slug missing"]
    assert shown.ended


def test_missing_lines_are_said_in_one_line() -> None:
    gone = ReleaseLines("release.3")
    assert gone.feed([app("web.1", "only other dynos are left")]) == []
    (replayed,) = gone.closing(replay=True)
    assert "release.3" in replayed and "no longer in the app's log" in replayed
    (live,) = gone.closing(replay=False)
    assert "no output of release.3" in live

    partial = ReleaseLines("release.3")
    out = texts(partial.feed([app("release.3", "last words"), app("release.3", "more")]))
    assert out == [
        f"{INDENT}(earlier lines of release.3 have left the log)",
        f"{INDENT}last words",
        f"{INDENT}more",
    ]
    assert partial.closing(replay=True) == []


def test_a_gap_of_a_slow_reader_is_shown_where_it_was() -> None:
    shown = ReleaseLines("release.3")
    gap = Gap(7, seq=40).line("app", 1.0)
    out = texts(shown.feed([app("release.3", "a"), gap, app("release.3", "b")]))
    assert out[1:] == [f"{INDENT}a", " !     7 lines dropped (reader too slow)", f"{INDENT}b"]


async def test_open_log_live_returns_nothing_after_its_timeout_then_lines() -> None:
    buffer = TailBuffer(1)
    reader = LogReader(10, LogFilter(dyno="release.3"), last_seq=0, tail=buffer)
    opened = OpenLog("app", reader, sub=None, buffer=buffer)
    assert await opened.live(10, timeout=0.01) == []
    reader.on_message(1, [app("release.3", "one")])
    reader.on_message(2, [app("release.3", "dropped")])
    live = await opened.live(10, timeout=0.01)
    assert [(x.process, x.message) for x in live] == [
        ("release.3", "one"),
        ("logs", "1 lines dropped (reader too slow)"),
    ]
    assert await OpenLog("app", reader, sub=None, buffer=None).live(10) == []
