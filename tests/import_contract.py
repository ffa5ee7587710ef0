"""The dependency direction of DESIGN.md, checked from the source.

    crdt       imports nothing of ours
    gossip     may import crdt
    consensus  may import crdt
    node       wires everything

Run directly (``make imports``) or through ``tests/unit/test_layout.py``.
"""

from __future__ import annotations

import ast
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
OURS = {"crdt", "gossip", "consensus", "node"}
ALLOWED = {
    "crdt": {"crdt"},
    "gossip": {"gossip", "crdt"},
    "consensus": {"consensus", "crdt"},
    "node": OURS,
}


def violations() -> list[str]:
    found = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    top = name.split(".")[0]
                    if top in OURS and top not in allowed:
                        rel = path.relative_to(ROOT)
                        found.append(f"{rel}:{node.lineno}: {package} must not import {name}")
    return found


if __name__ == "__main__":
    problems = violations()
    for line in problems:
        print(line)
    print("import contract: " + ("broken" if problems else "kept"))
    sys.exit(1 if problems else 0)
