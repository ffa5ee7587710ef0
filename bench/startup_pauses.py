"""The garbage-collection pause a node takes once it has caught up after start, and
whether the first leader keeps its place: this tree against a reference checkout.

    .venv/bin/python bench/startup_pauses.py --ref CHECKOUT [--starts 10] [--settle 4]

Each start is a fresh plaintext three-node cluster, the two trees alternating. Once
every node serves, it waits ``--settle`` seconds and reads the Raft term of every node
(a term above 1 means a leader was elected and then replaced), and the pauses each
node logged: "objects out of later full collections (N ms)" -- the collection after
catch-up, which runs while Raft runs (its election timeout starts at 150 ms) -- and,
where the tree has it, "... before start (N ms)", the collection before anything
runs. Reports per tree: the starts whose term went past 1, and the median and largest
pause of each kind over all nodes.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "bench"))

from run import start_tadpole  # noqa: E402

from node.dev.cluster import exit_on_sigterm  # noqa: E402

AFTER = re.compile(r"out of later full collections \((\d+) ms\)")
BEFORE = re.compile(r"out of later full collections before start \((\d+) ms\)")


def _one(tree: str, settle_s: float) -> tuple[int, list[float], list[float]]:
    """One fresh start of ``tree``: (highest term, pauses after catch-up, before start)."""
    root = tempfile.mkdtemp(prefix="tadpole-pauses-")
    cluster = start_tadpole(root, tree)
    try:
        cluster.wait_leader(60, all_up=True)
        time.sleep(settle_s)
        terms = []
        for node_id in cluster.node_ids:
            status = cluster.status(node_id)
            terms.append(0 if status is None else int(status.header.raft_term))
        after: list[float] = []
        before: list[float] = []
        for node_id in cluster.node_ids:
            with open(os.path.join(root, node_id, "node.log"), encoding="utf-8") as f:
                text = f.read()
            after += [float(ms) for ms in AFTER.findall(text)]
            before += [float(ms) for ms in BEFORE.findall(text)]
        return max(terms), after, before
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def _summary(pauses: list[float]) -> str:
    if not pauses:
        return "-"
    return f"{statistics.median(pauses):.0f} / {max(pauses):.0f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ref", required=True, help="a checkout to compare with")
    p.add_argument("--starts", type=int, default=10, help="fresh clusters per tree")
    p.add_argument("--settle", type=float, default=4.0, help="seconds after all serve")
    args = p.parse_args(argv)
    exit_on_sigterm()  # the finally blocks stop the nodes
    trees = {"ref": os.path.abspath(args.ref), "this": HERE}
    runs: dict[str, list[tuple[int, list[float], list[float]]]] = {k: [] for k in trees}
    for i in range(args.starts):
        order = list(trees.items()) if i % 2 == 0 else list(trees.items())[::-1]
        for name, tree in order:
            term, after, before = _one(tree, args.settle)
            runs[name].append((term, after, before))
            print(f"start {i + 1}/{args.starts} {name}: term {term}, after catch-up "
                  f"{after} ms, before start {before} ms", flush=True)  # fmt: skip
    print(f"{args.starts} fresh starts per tree; ref = {trees['ref']}")
    print("| tree | starts with term > 1 | pause after catch-up ms (median / max) "
          "| pause before start ms (median / max) |")  # fmt: skip
    print("|---|---:|---:|---:|")
    for name, rows in runs.items():
        churned = sum(term > 1 for term, _, _ in rows)
        after = [ms for _, a, _ in rows for ms in a]
        before = [ms for _, _, b in rows for ms in b]
        print(f"| {name} | {churned} of {len(rows)} | {_summary(after)} | {_summary(before)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
