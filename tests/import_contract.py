"""No import cycles in our packages, checked over import-linter's own import graph.

The layer contracts live in ``pyproject.toml`` (``[tool.importlinter]``) and are run
by ``lint-imports``; import-linter has no contract for "no cycle between any two
modules", so this script adds one. It reads the graph that grimp (import-linter's
library) builds from the source: every ``import`` statement counts, including those
inside functions and under ``if TYPE_CHECKING:``, because each still ties the two
modules together.

Run by ``make imports`` (part of ``make check``) and by ``tests/unit/test_layout.py``::

    python tests/import_contract.py [ROOT]

ROOT (default: this repository) is the directory holding the packages. Prints each
cycle as ``a (l.N) -> b (l.M) -> a`` and exits 1 if there is any.
"""

from __future__ import annotations

import itertools
import pathlib
import sys

import grimp

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("crdt", "gossip", "consensus", "node")


def import_graph(root: pathlib.Path = ROOT) -> grimp.ImportGraph:
    """The graph of our packages as found under ``root``.

    grimp locates packages through the import system, so ``root`` goes first on
    ``sys.path``; a package already imported from elsewhere would shadow it, which
    is why checks of another tree run in a fresh process (see ``main``).
    """
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return grimp.build_graph(*PACKAGES, cache_dir=None)


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Import cycles as module paths ``[a, b, ..., a]``, every module in a cycle shown.

    Tarjan's algorithm finds the strongly connected sets (iteratively: no recursion
    limit). Within a set, a breadth-first search gives a shortest cycle through its
    smallest module not yet shown, until every module of the set appears in some
    cycle. A module importing itself is a cycle too.
    """
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    found = []
    for component in _components(edges):
        unshown = set(component)
        while unshown:
            cycle = _shortest_cycle(edges, component, min(unshown))
            found.append(cycle)
            unshown -= set(cycle)
    return sorted(found)


def _components(edges: dict[str, list[str]]) -> list[set[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[set[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work: list[tuple[str, int]] = [(start, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            targets = edges[node]
            if i < len(targets):
                work.append((node, i + 1))
                target = targets[i]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges[node]:
                    result.append(component)
    return result


def _shortest_cycle(edges: dict[str, list[str]], component: set[str], start: str) -> list[str]:
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in edges[node]:
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if target in component and target not in came_from:
                    came_from[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # pragma: no cover - Tarjan found one


def describe(graph: grimp.ImportGraph, cycle: list[str]) -> str:
    """``a (l.3) -> b (l.9) -> a``: each module with the line of its import of the next."""
    hops = []
    for importer, imported in itertools.pairwise(cycle):
        details = graph.get_import_details(importer=importer, imported=imported)
        lines = ",".join(str(d["line_number"]) for d in details)
        hops.append(f"{importer} (l.{lines})")
    return " -> ".join([*hops, cycle[-1]])


def main(argv: list[str]) -> int:
    root = pathlib.Path(argv[0]).resolve() if argv else ROOT
    graph = import_graph(root)
    found = cycles(graph)
    for cycle in found:
        print("import cycle: " + describe(graph, cycle))
    print(f"import cycles: {len(found) or 'none'}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
