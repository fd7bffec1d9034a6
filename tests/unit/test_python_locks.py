"""The python buildpack's lock-file translator (bin/locked_requirements.py):
pipenv, Poetry and uv locks become pip requirements plus pinned constraints."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = (
    Path(__file__).resolve().parents[2] / "builder/buildpacks/python/bin/locked_requirements.py"
)


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("locked_requirements", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["locked_requirements"] = module
    spec.loader.exec_module(module)
    return module


locks = _load()

PYPROJECT_POETRY = """
[tool.poetry]
name = "shop"
version = "0.1.0"
package-mode = false

[tool.poetry.dependencies]
python = "^3.11"
Flask = "^3.0"
gunicorn = "*"

[tool.poetry.group.dev.dependencies]
pytest = "*"
"""

POETRY_LOCK = """
[[package]]
name = "flask"
version = "3.0.3"

[[package]]
name = "werkzeug"
version = "3.0.4"

[[package]]
name = "gunicorn"
version = "23.0.0"

[[package]]
name = "pytest"
version = "8.3.3"

[metadata]
lock-version = "2.0"
"""


def test_a_poetry_lock_installs_main_dependencies_with_every_locked_pin(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT_POETRY)
    (tmp_path / "poetry.lock").write_text(POETRY_LOCK)
    tool, requirements, constraints = locks.translate(tmp_path)
    assert tool == "poetry"
    assert requirements == ["Flask", "gunicorn"]  # no python, no dev group
    assert "werkzeug==3.0.4" in constraints and "flask==3.0.3" in constraints


def test_a_uv_lock_skips_the_project_itself(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "api"\nversion = "1"\n'
        'dependencies = ["fastapi>=0.110", "uvicorn[standard]"]\n'
    )
    index = 'source = { registry = "https://pypi.org/simple" }'
    (tmp_path / "uv.lock").write_text(
        'version = 1\n[[package]]\nname = "api"\nversion = "1"\nsource = { virtual = "." }\n'
        f'[[package]]\nname = "fastapi"\nversion = "0.115.0"\n{index}\n'
        f'[[package]]\nname = "uvicorn"\nversion = "0.30.6"\n{index}\n'
    )
    tool, requirements, constraints = locks.translate(tmp_path)
    assert tool == "uv"
    assert requirements == ["fastapi", "uvicorn"]
    assert constraints == ["fastapi==0.115.0", "uvicorn==0.30.6"]


def test_a_pipfile_lock_pins_its_default_section_only(tmp_path: Path) -> None:
    lock = {
        "_meta": {},
        "default": {
            "requests": {"version": "==2.32.3", "hashes": []},
            "colorama": {"version": "==0.4.6", "markers": "sys_platform == 'win32'"},
        },
        "develop": {"pytest": {"version": "==8.3.3"}},
    }
    (tmp_path / "Pipfile.lock").write_text(json.dumps(lock))
    tool, requirements, constraints = locks.translate(tmp_path)
    assert tool == "pipenv"
    assert requirements == ["colorama==0.4.6; sys_platform == 'win32'", "requests==2.32.3"]
    assert constraints == []


def test_lock_files_that_cannot_be_used_say_why(tmp_path: Path) -> None:
    (tmp_path / "Pipfile.lock").write_text(json.dumps({"default": {"mylib": {"git": "https://x"}}}))
    with pytest.raises(locks.LockError, match="mylib comes from git"):
        locks.translate(tmp_path)
    (tmp_path / "Pipfile.lock").unlink()
    (tmp_path / "poetry.lock").write_text(POETRY_LOCK)
    with pytest.raises(locks.LockError, match=r"needs the pyproject\.toml"):
        locks.translate(tmp_path)
    (tmp_path / "Pipfile.lock").write_text("{not json")
    with pytest.raises(locks.LockError, match="not a pipenv lock file"):
        locks.translate(tmp_path)


def test_the_script_writes_both_files_and_exits_3_without_a_lock(tmp_path: Path) -> None:
    app, out = tmp_path / "app", tmp_path / "out"
    app.mkdir()
    assert locks.main(["x", str(app), str(out)]) == locks.NO_LOCK
    (app / "pyproject.toml").write_text(PYPROJECT_POETRY)
    (app / "poetry.lock").write_text(POETRY_LOCK)
    assert locks.main(["x", str(app), str(out)]) == 0
    assert (out / "requirements.txt").read_text() == "Flask\ngunicorn\n"
    assert "gunicorn==23.0.0\n" in (out / "constraints.txt").read_text()
