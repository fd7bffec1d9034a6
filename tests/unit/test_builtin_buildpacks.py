"""The built-in buildpacks' bin/detect and bin/release, run as the builder runs
them (bash, a build dir) on small apps: who claims what, and the default
process types each offers. Their bin/compile runs in the integration and e2e
tests, on the stack image."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from builder import buildpacks as bp


def run(pack: str, script: str, app: Path) -> subprocess.CompletedProcess[str]:
    path = bp.BUILTIN_DIR / pack / "bin" / script
    return subprocess.run([str(path), str(app)], capture_output=True, text=True, timeout=30)


def detects(app: Path) -> list[str]:
    return [p for p in bp.BUILTIN_ORDER if run(p, "detect", app).returncode == 0]


@pytest.mark.parametrize(
    ("files", "claimed"),
    [
        (["requirements.txt"], ["python"]),
        (["Pipfile.lock"], ["python"]),
        (["poetry.lock", "pyproject.toml"], ["python"]),
        (["uv.lock", "pyproject.toml"], ["python"]),
        (["package.json"], ["nodejs"]),
        (["go.mod"], ["go"]),
        (["pom.xml"], ["java"]),
        (["Procfile"], ["procfile"]),
        (["README"], []),
    ],
)
def test_each_buildpack_claims_its_own_files(
    tmp_path: Path, files: list[str], claimed: list[str]
) -> None:
    for name in files:
        (tmp_path / name).write_text("{}\n" if name == "package.json" else "")
    assert detects(tmp_path) == claimed


def test_go_offers_the_modules_binary_as_web(tmp_path: Path) -> None:
    (tmp_path / "go.mod").write_text("module github.com/acme/shop-api\n\ngo 1.22\n")
    assert "default_process_types: {}" in run("go", "release", tmp_path).stdout
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "shop-api").write_text("#!/bin/sh\n")
    (tmp_path / "bin" / "shop-api").chmod(0o755)
    assert "  web: shop-api" in run("go", "release", tmp_path).stdout


def test_java_offers_its_one_jar_as_web(tmp_path: Path) -> None:
    (tmp_path / "target").mkdir()
    assert "default_process_types: {}" in run("java", "release", tmp_path).stdout
    (tmp_path / "target" / "web.jar").write_bytes(b"")
    (tmp_path / "target" / "web-sources.jar").write_bytes(b"")
    assert "  web: java $JAVA_OPTS -jar target/web.jar" in run("java", "release", tmp_path).stdout
    (tmp_path / "target" / "other.jar").write_bytes(b"")
    assert "default_process_types: {}" in run("java", "release", tmp_path).stdout


def test_nodejs_offers_npm_start_and_python_its_app_py(tmp_path: Path) -> None:
    assert "  web: npm start" in run("nodejs", "release", tmp_path).stdout
    assert "default_process_types: {}" in run("python", "release", tmp_path).stdout
    (tmp_path / "app.py").write_text("")
    assert "  web: python app.py" in run("python", "release", tmp_path).stdout
