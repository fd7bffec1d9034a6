"""How `slipway-agent --credentials DIR` finds its node name and token."""

from __future__ import annotations

import socket
from pathlib import Path

import click
import pytest

from agent.__main__ import _identity
from agent.join import NODE_TOKEN_FILE
from slipway import pki
from tests.harness.pki import ClusterPKI


@pytest.fixture
def node_bundle(tmp_path: Path) -> pki.Bundle:
    bundle = ClusterPKI(tmp_path / "pki").bundle(pki.Role.NODE, "w1")
    (bundle.path / NODE_TOKEN_FILE).write_text("slw_node\n")
    return bundle


def test_name_and_token_come_from_the_bundle(node_bundle: pki.Bundle) -> None:
    assert _identity(None, "", node_bundle) == ("w1", "slw_node")


def test_flags_win_but_must_match_the_certificate(node_bundle: pki.Bundle) -> None:
    assert _identity("w1", "slw_flag", node_bundle) == ("w1", "slw_flag")
    with pytest.raises(click.BadParameter, match="node 'w1'"):
        _identity("w2", "", node_bundle)


def test_without_credentials_as_before() -> None:
    assert _identity(None, "t", None) == (socket.gethostname(), "t")
    assert _identity("n", "", None) == ("n", "")
