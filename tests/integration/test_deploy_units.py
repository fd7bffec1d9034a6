"""`systemd-analyze verify` on deploy/systemd/*.service.

The units name the install path /opt/slipway/.venv; here they are checked
against this checkout's console scripts, so verify also proves every
ExecStart binary exists.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
BIN = Path(sys.executable).parent


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)
def test_units_verify_cleanly(tmp_path: Path) -> None:
    names = sorted(p.name for p in UNITS.glob("*.service"))
    assert {f"slipway-{d}.service" for d in ("controller", "agent", "router", "builder")} <= set(
        names
    )
    for name in names:
        text = (UNITS / name).read_text().replace("/opt/slipway/.venv/bin/", f"{BIN}/")
        (tmp_path / name).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / n) for n in names)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Warnings (unknown keys, bad values) go to stderr without failing the exit code.
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
