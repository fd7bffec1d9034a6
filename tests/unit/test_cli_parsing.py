from __future__ import annotations

import click
import pytest

from slipway.cli.config_vars import parse_assignments
from slipway.cli.ps import parse_scale
from slipway.cli.releases import parse_version


def test_parse_scale_forms() -> None:
    web = parse_scale("web=3")
    assert (web.type, web.WhichOneof("amount"), web.quantity, web.size) == (
        "web",
        "quantity",
        3,
        "",
    )
    plus = parse_scale("web+2")
    assert (plus.WhichOneof("amount"), plus.delta) == ("delta", 2)
    minus = parse_scale("worker-1")
    assert (minus.type, minus.delta) == ("worker", -1)
    sized = parse_scale("worker=1:Standard-2X")
    assert (sized.quantity, sized.size) == (1, "standard-2x")
    resize = parse_scale("web=standard-2x")
    assert (resize.WhichOneof("amount"), resize.size) == (None, "standard-2x")
    zero = parse_scale("web=0")
    assert zero.HasField("quantity") and zero.quantity == 0


@pytest.mark.parametrize("bad", ["web", "=3", "web=", "web+x", "Web=1", "web=1:"])
def test_parse_scale_rejects(bad: str) -> None:
    if bad == "web=1:":
        assert parse_scale(bad).size == ""
        return
    with pytest.raises(click.BadParameter):
        parse_scale(bad)


def test_parse_assignments_keeps_equals_in_values() -> None:
    assert parse_assignments(("A=1", "URL=x://y?a=b", "E=")) == {
        "A": "1",
        "URL": "x://y?a=b",
        "E": "",
    }
    with pytest.raises(click.BadParameter):
        parse_assignments(("NOPE",))


def test_parse_version() -> None:
    assert parse_version("v12") == 12
    assert parse_version("3") == 3
    for bad in ("v0", "vx", "-1", ""):
        with pytest.raises(click.BadParameter):
            parse_version(bad)
