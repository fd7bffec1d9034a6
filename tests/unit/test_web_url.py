"""The URL users are shown for an app: the routers' real scheme and port."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.config import ControllerConfig
from slipway import errors
from slipway.up import UpConfig


def test_default_is_plain_http_on_the_base_domain() -> None:
    config = ControllerConfig.build({}, base_domain="apps.example.com")
    assert config.app_url("demo") == "http://demo.apps.example.com/"


def test_a_template_gives_scheme_and_port() -> None:
    config = ControllerConfig.build({}, web_url="https://{app}.apps.example.com:8443/")
    assert config.app_url("demo") == "https://demo.apps.example.com:8443/"


@pytest.mark.parametrize("bad", ["demo.example.com", "https://static.example.com/", "ftp://{app}/"])
def test_a_template_without_scheme_or_app_is_refused(bad: str) -> None:
    with pytest.raises(errors.InvalidArgument, match="web_url"):
        ControllerConfig.build({}, web_url=bad)


def test_slipway_up_shows_its_routers_port() -> None:
    assert UpConfig(Path("/tmp/x")).web_url == "http://{app}.localhost:8080/"
    on_80 = UpConfig(Path("/tmp/x"), router_listen="0.0.0.0:80")
    assert on_80.web_url == "http://{app}.localhost/"
