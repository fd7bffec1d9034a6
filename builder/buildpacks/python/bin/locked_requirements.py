"""Turn a Python lock file into what pip installs: requirements and constraints.

    python3 locked_requirements.py APP_DIR OUT_DIR

Looks for, in this order, Pipfile.lock (pipenv), poetry.lock (Poetry) and
uv.lock (uv), and writes OUT_DIR/requirements.txt (the app's own main
dependencies) and OUT_DIR/constraints.txt (every package of the lock pinned to
its locked version), so that `pip install -r requirements.txt -c
constraints.txt` installs the locked tree without dev dependencies and without
pipenv, Poetry or uv on the stack. Prints the tool's name; exits 3 when there
is no lock file, 2 (with a message) when the lock file cannot be used.

Runs on the stack's python3 (3.11: tomllib is there); standard library only.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

NO_LOCK = 3
BAD_LOCK = 2


class LockError(Exception):
    pass


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _name_of(requirement: str) -> str:
    found = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not found:
        raise LockError(f"cannot read the requirement {requirement!r}")
    return found.group(1)


def pipenv(app: Path) -> tuple[list[str], list[str]]:
    """Pipfile.lock's "default" section: exact pins, markers kept; dev packages left out."""
    try:
        lock = json.loads((app / "Pipfile.lock").read_text())
        packages: dict[str, Any] = lock["default"]
    except (ValueError, KeyError, TypeError) as exc:
        raise LockError(f"Pipfile.lock is not a pipenv lock file: {exc}") from None
    requirements = []
    for name, spec in sorted(packages.items()):
        if not isinstance(spec, dict):
            raise LockError(f"Pipfile.lock: {name} has no entry")
        if "version" not in spec:
            kind = next((k for k in ("git", "path", "file") if k in spec), "no version")
            raise LockError(
                f"Pipfile.lock: {name} comes from {kind}; only packages from an index "
                "can be installed from the lock (use requirements.txt for the rest)"
            )
        line = f"{name}{spec['version']}"
        if spec.get("markers"):
            line += f"; {spec['markers']}"
        requirements.append(line)
    return requirements, []


def _main_dependencies(app: Path) -> list[str]:
    """The project's own main dependencies, from pyproject.toml (PEP 621 or Poetry's table)."""
    path = app / "pyproject.toml"
    if not path.is_file():
        raise LockError("the lock file needs the pyproject.toml it was made from")
    try:
        project = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise LockError(f"pyproject.toml: {exc}") from None
    names = [_name_of(r) for r in project.get("project", {}).get("dependencies", [])]
    poetry = project.get("tool", {}).get("poetry", {}).get("dependencies", {})
    names += [n for n in poetry if n.lower() != "python"]
    return sorted({_canonical(n): n for n in names}.values(), key=str.lower)


def _pins(app: Path, lock_name: str) -> list[str]:
    try:
        lock = tomllib.loads((app / lock_name).read_text())
    except tomllib.TOMLDecodeError as exc:
        raise LockError(f"{lock_name}: {exc}") from None
    pins = []
    for package in lock.get("package", []):
        source = package.get("source", {})
        if isinstance(source, dict) and ({"editable", "virtual"} & set(source)):
            continue  # the project itself
        if isinstance(source, dict) and ({"git", "path", "directory", "url"} & set(source)):
            # Git/path sources do not fit a constraints file; pip resolves them by name.
            continue
        if "name" in package and "version" in package:
            pins.append(f"{package['name']}=={package['version']}")
    if not pins and lock.get("package"):
        raise LockError(f"{lock_name} pins no package from an index")
    return sorted(set(pins), key=str.lower)


def poetry(app: Path) -> tuple[list[str], list[str]]:
    return _main_dependencies(app), _pins(app, "poetry.lock")


def uv(app: Path) -> tuple[list[str], list[str]]:
    return _main_dependencies(app), _pins(app, "uv.lock")


TOOLS = (
    ("Pipfile.lock", "pipenv", pipenv),
    ("poetry.lock", "poetry", poetry),
    ("uv.lock", "uv", uv),
)


def translate(app: Path) -> tuple[str, list[str], list[str]] | None:
    for lock_name, tool, read in TOOLS:
        if (app / lock_name).is_file():
            requirements, constraints = read(app)
            return tool, requirements, constraints
    return None


def main(argv: list[str]) -> int:
    app, out = Path(argv[1]), Path(argv[2])
    try:
        found = translate(app)
    except LockError as exc:
        print(exc, file=sys.stderr)
        return BAD_LOCK
    if found is None:
        return NO_LOCK
    tool, requirements, constraints = found
    out.mkdir(parents=True, exist_ok=True)
    (out / "requirements.txt").write_text("".join(f"{r}\n" for r in requirements))
    (out / "constraints.txt").write_text("".join(f"{c}\n" for c in constraints))
    print(tool)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
