"""Fail when an import crosses a layer it must not cross.

Two rules, read from the source with ``ast`` (imports inside functions and
``TYPE_CHECKING`` blocks count too):

- ``controller/core`` is the controller's pure core: its modules import the
  standard library, ``slipway`` and ``controller.core`` only, nothing else of
  the controller.
- The daemons (controller, agent, router, builder) do not import each other.

Prints one line per offending import and exits 1; run by ``make check``.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DAEMONS = ("controller", "agent", "router", "builder")
CORE = "controller.core"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(path: Path) -> Iterator[tuple[int, str]]:
    """Every module ``path`` imports, as absolute dotted names, with its line."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                parent = ".".join(base + ([node.module] if node.module else []))
            else:
                parent = node.module or ""
            # "from controller import scheduler" imports controller.scheduler.
            for alias in node.names:
                yield node.lineno, f"{parent}.{alias.name}"


def inside(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violations() -> Iterator[str]:
    for daemon in DAEMONS:
        for path in sorted((ROOT / daemon).rglob("*.py")):
            own = module_name(path)
            for line, name in imported(path):
                where = f"{path.relative_to(ROOT)}:{line}"
                other = next((d for d in DAEMONS if d != daemon and inside(name, d)), None)
                if other:
                    yield f"{where}: {daemon} imports {name} (daemons do not import each other)"
                if inside(own, CORE) and inside(name, "controller") and not inside(name, CORE):
                    yield f"{where}: {CORE} imports {name} (nothing else of the controller)"


def main() -> int:
    found = list(violations())
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
