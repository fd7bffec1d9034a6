"""The pure release and scale transitions (controller/core/transitions.py), by tables."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from controller.core import transitions as t
from controller.core.models import (
    RELEASE_FAILED,
    RELEASE_PENDING,
    RELEASE_SUCCEEDED,
    AppRecord,
    FormationItem,
    ReleaseRecord,
    SlugInfo,
)
from controller.core.sizes import SizeTable
from slipway import errors

SLUG = SlugInfo(digest="ab" * 32, size_bytes=10, stack="slipway-24")
STD = "standard-1x"


def app(current: int = 2, seq: int = 2, pending: list[int] | None = None) -> AppRecord:
    return AppRecord(
        name="demo",
        id="1",
        created_at=0.0,
        release_seq=seq,
        current_release=current,
        pending_releases=list(pending or []),
    )


def release(
    version: int,
    *,
    command: str = "",
    status: str = RELEASE_SUCCEEDED,
    types: dict[str, str] | None = None,
    phase_instance: str = "",
) -> ReleaseRecord:
    return ReleaseRecord(
        app="demo",
        version=version,
        description="",
        created_at=1.0,
        config={"OLD": "1"},
        slug=SLUG,
        process_types=dict(types if types is not None else {"web": "w"}),
        status=status,
        build_id=f"b-{version}",
        release_command=command,
        phase_instance=phase_instance,
    )


# -- new releases ------------------------------------------------------------


@dataclass
class NewCase:
    name: str
    app: AppRecord
    base: ReleaseRecord | None
    formation: dict[str, FormationItem]
    want_status: str
    want_current: int
    want_pending: list[int]
    want_formation: dict[str, FormationItem] | None = field(default=None)


NEW_CASES = [
    NewCase(
        "no release command: live at once, the formation gains its types",
        app(),
        release(2, types={"web": "w", "worker": "k"}),
        {"web": FormationItem(3, STD)},
        RELEASE_SUCCEEDED,
        3,
        [],
        {"web": FormationItem(3, STD), "worker": FormationItem(0, STD)},
    ),
    NewCase(
        "a release command: pending, listed, formation untouched",
        app(),
        release(2, command="migrate"),
        {},
        RELEASE_PENDING,
        2,
        [3],
    ),
    NewCase(
        "behind another pending release: listed after it",
        app(seq=3, pending=[3]),
        release(2, command="migrate"),
        {},
        RELEASE_PENDING,
        2,
        [3, 4],
    ),
    NewCase(
        "no base (a fresh app's config change): live, no slug, no types",
        app(current=1, seq=1),
        None,
        {},
        RELEASE_SUCCEEDED,
        2,
        [],
        {},
    ),
]


@pytest.mark.parametrize("case", NEW_CASES, ids=lambda c: c.name)
def test_new_release(case: NewCase) -> None:
    before = AppRecord.decode(case.app.encode())
    out = t.new_release(
        case.app, {"A": "1"}, case.formation, case.base, description="d", actor="me", now=9.0
    )
    assert out.release.version == case.app.release_seq + 1 == out.app.release_seq
    assert out.release.status == case.want_status
    assert (out.app.current_release, out.app.pending_releases) == (
        case.want_current,
        case.want_pending,
    )
    assert out.formation == case.want_formation
    assert (out.release.config, out.config, out.release.created_at) == ({"A": "1"}, {"A": "1"}, 9.0)
    assert (out.release.created_by, out.release.description) == ("me", "d")
    if case.base is not None:
        assert out.release.slug == case.base.slug
        assert out.release.build_id == case.base.build_id
        assert out.release.release_command == case.base.release_command
    assert case.app == before, "the input record is not changed in place"


# -- settling a release phase ----------------------------------------------


@dataclass
class SettleCase:
    name: str
    app: AppRecord
    release: ReleaseRecord | None
    status: str
    want_live: bool
    want_status: str | None  # the release's status afterwards (None: gone)
    want_current: int
    want_pending: list[int] | None  # None: the app record is not written
    want_dyno_removed: str = ""


PENDING_4 = release(4, command="m", status=RELEASE_PENDING, phase_instance="i-4")

SETTLE_CASES = [
    SettleCase(
        "success: live, off the list, dyno removed",
        app(current=3, seq=4, pending=[4]),
        PENDING_4,
        RELEASE_SUCCEEDED,
        True,
        RELEASE_SUCCEEDED,
        4,
        [],
        "i-4",
    ),
    SettleCase(
        "failure: aside, the current release stays",
        app(current=3, seq=4, pending=[4]),
        PENDING_4,
        RELEASE_FAILED,
        False,
        RELEASE_FAILED,
        3,
        [],
        "i-4",
    ),
    SettleCase(
        "an older release succeeding late never replaces a newer one",
        app(current=5, seq=5, pending=[4]),
        PENDING_4,
        RELEASE_SUCCEEDED,
        False,
        RELEASE_SUCCEEDED,
        5,
        [],
        "i-4",
    ),
    SettleCase(
        "already settled: the first verdict stands, only the list is cleaned",
        app(current=3, seq=4, pending=[4]),
        release(4, status=RELEASE_FAILED),
        RELEASE_SUCCEEDED,
        False,
        RELEASE_FAILED,
        3,
        [],
    ),
    SettleCase(
        "already settled and not listed: nothing to write",
        app(current=4, seq=4),
        release(4),
        RELEASE_FAILED,
        False,
        RELEASE_SUCCEEDED,
        4,
        None,
    ),
    SettleCase(
        "the release is gone: it only leaves the list",
        app(current=3, seq=4, pending=[4]),
        None,
        RELEASE_FAILED,
        False,
        None,
        3,
        [],
    ),
]


@pytest.mark.parametrize("case", SETTLE_CASES, ids=lambda c: c.name)
def test_settle_release(case: SettleCase) -> None:
    formation = {"web": FormationItem(2, STD)}
    out = t.settle_release(case.app, 4, case.release, formation, case.status, "boom")
    assert out.live == case.want_live
    assert (out.release.status if out.release else None) == case.want_status
    if case.want_pending is None:
        assert out.app is None
    else:
        assert out.app is not None and out.app.pending_releases == case.want_pending
        assert out.app.current_release == case.want_current
    assert out.remove_dyno == case.want_dyno_removed
    assert out.release_changed == bool(case.want_dyno_removed)
    assert (out.formation is not None) == case.want_live
    if case.status == RELEASE_FAILED and out.release_changed:
        assert out.release is not None and out.release.error == "boom"


# -- scaling -------------------------------------------------------------------

SIZES = SizeTable()


@pytest.mark.parametrize(
    ("changes", "want"),
    [
        (
            [t.ScaleChange("web", 3)],
            {"web": FormationItem(3, STD), "worker": FormationItem(1, STD)},
        ),
        (
            [t.ScaleChange("worker", delta=2), t.ScaleChange("web", delta=-1)],
            {"web": FormationItem(0, STD), "worker": FormationItem(3, STD)},
        ),
        (
            [t.ScaleChange("web", size="standard-2x")],
            {"web": FormationItem(1, "standard-2x"), "worker": FormationItem(1, STD)},
        ),
        (
            [t.ScaleChange("clock", 1)],
            {
                "web": FormationItem(1, STD),
                "worker": FormationItem(1, STD),
                "clock": FormationItem(1, STD),
            },
        ),
    ],
)
def test_scale(changes: list[t.ScaleChange], want: dict[str, FormationItem]) -> None:
    formation = {"web": FormationItem(1, STD), "worker": FormationItem(1, STD)}
    assert t.scale(formation, changes, SIZES) == want
    assert formation["web"] == FormationItem(1, STD), "the input is not changed in place"


@pytest.mark.parametrize(
    ("changes", "types", "message"),
    [
        ([], {}, "nothing to scale"),
        ([t.ScaleChange("web", 1), t.ScaleChange("web", 2)], {}, "given twice"),
        ([t.ScaleChange("Web!", 1)], {}, "invalid process type"),
        ([t.ScaleChange("web", 1, size="huge")], {}, "huge"),
        ([t.ScaleChange("worker", 1)], {"web": "w"}, "no process type worker in release v2"),
        ([t.ScaleChange("release", 1)], {}, "cannot be scaled"),
        ([t.ScaleChange("web", -1)], {}, "web"),
    ],
)
def test_scale_refusals(changes: list[t.ScaleChange], types: dict[str, str], message: str) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        t.check_scale_request(changes, SIZES)
        t.check_scale(changes, types, 2)
        t.scale({}, changes, SIZES)
    assert message in str(caught.value)
