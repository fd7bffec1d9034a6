"""Print the largest modules and longest functions under a folder.

python scripts/measure_sizes.py controller [N]
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def main() -> None:
    root = Path(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    modules: list[tuple[int, str]] = []
    functions: list[tuple[int, str]] = []
    for path in sorted(root.rglob("*.py")):
        source = path.read_text()
        rel = path.relative_to(root.parent)
        modules.append((len(source.splitlines()), str(rel)))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                functions.append((length, f"{rel}:{node.lineno} {node.name}"))
    print(f"modules: {len(modules)}, total lines {sum(m for m, _ in modules)}")
    for lines, name in sorted(modules, reverse=True)[:n]:
        print(f"  {lines:5d} {name}")
    print("longest functions:")
    for lines, name in sorted(functions, reverse=True)[:n]:
        print(f"  {lines:5d} {name}")


if __name__ == "__main__":
    main()
