"""Memory of a node restoring its system-tier snapshot: steady RSS vs the peak.

    .venv/bin/python bench/snapshot_memory.py [--keys 100000] [--ref /path/to/old/checkout]

Builds a state of ``--keys`` keys of 256-byte values, each written with a request id
(so the dedup table is full, as under the Tadpole client), writes it as a Raft snapshot
file, then in a fresh process per run restores it the way a restarting node does
(``RaftBackend._read_snapshot``) and reports, from ``/proc`` and ``getrusage``: RSS
before, steady RSS after (state held), and the peak during the restore. With
``--ref`` that source tree (an older commit's checkout) also writes the same state
with its own code and restores it, alternating runs, so the two are compared in one
invocation (snapshot sizes too: the formats may differ).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WRITE = r"""
import pickle, sys
sys.path.insert(0, sys.argv[1])
from consensus.raft.backend import RaftBackend
from consensus.statemachine import PutOp, SystemStateMachine, Txn
sm = SystemStateMachine()
for i in range(int(sys.argv[3])):
    sm.apply(Txn(success=(PutOp(f"bench/key/{i:08d}", b"x" * 256),), request_id=f"req-{i:08d}"))
backend = RaftBackend("n1", [], sys.argv[2] + ".dir", sender=lambda p, f: None)
backend._write_snapshot(sm, pickle.dumps((("c", 10, 1), ("c", 9, 1), {})), sys.argv[2])
"""

RESTORE = r"""
import gc, json, resource, sys
sys.path.insert(0, sys.argv[1])
from consensus.raft.backend import RaftBackend
def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
backend = RaftBackend("n1", [], sys.argv[2] + ".dir", sender=lambda p, f: None)
gc.collect()
before = rss()
backend._read_snapshot(sys.argv[2])
gc.collect()
steady = rss()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"before": before, "steady": steady, "peak": peak,
                  "keys": backend.read(len)}))
"""


def restore(tree: str, path: str) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", RESTORE, tree, path], check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, int] = json.loads(out)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ref", help="an older checkout to compare with (same snapshot file)")
    args = parser.parse_args()
    trees = {"this tree": HERE}
    if args.ref:
        trees = {"ref": os.path.abspath(args.ref), "this tree": HERE}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {name: os.path.join(tmp, f"{i}.snapshot") for i, name in enumerate(trees)}
        sizes = {}
        for name, tree in trees.items():
            cmd = [sys.executable, "-c", WRITE, tree, paths[name], str(args.keys)]
            subprocess.run(cmd, check=True)
            sizes[name] = os.path.getsize(paths[name])
        runs: dict[str, list[dict[str, int]]] = {name: [] for name in trees}
        for _ in range(args.runs):
            for name, tree in trees.items():
                runs[name].append(restore(tree, paths[name]))
    mib = 1 << 20
    print(f"{args.keys:,} keys of 256 B, each written with a request id")
    print(f"median of {args.runs} restores each, alternating")
    header = f"{'code':>10} {'snapshot MiB':>13} {'steady MiB':>11} {'peak MiB':>9}"
    print(header + f" {'peak/steady':>12}")
    for name, rows in runs.items():
        steady = statistics.median(r["steady"] for r in rows) / mib
        peak = statistics.median(r["peak"] for r in rows) / mib
        assert all(r["keys"] == args.keys for r in rows)
        size = sizes[name] / mib
        print(f"{name:>10} {size:>13.1f} {steady:>11.0f} {peak:>9.0f} {peak / steady:>12.2f}")


if __name__ == "__main__":
    main()
