"""What encryption at rest costs: put throughput with it off and on, in the same run.

    .venv/bin/python bench/atrest_bench.py [--rounds 3] [--seconds 5] [--clients 1,64]

Fresh three-node clusters, alternately without and with encryption at rest (so drift
of a shared, noisy machine hits both alike), ``--rounds`` of each. In every cluster:
system-tier puts (256-byte values) at each ``--clients`` level and population counter
adds at the largest, each for ``--seconds`` (``bench/system_quick.py``'s load
generator), then counter adds in ``Tiers.UpdateMany`` batches of 256 from 6 callers
(``bench/population_bench.py``'s; op ``pop256``, where the tier store's own cost per
value shows: an index every encrypted value write updated cost 13% there). Reports per
mode the median ops/s, p50 and the nodes' CPU per op (``/proc``), the on/off ratios,
and, for scale, the cost of one AES-256-GCM seal of a 256-byte value in this process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from population_bench import measure as measure_batches
from run import cpu_seconds
from system_quick import find_leader, measure, off_on_summary, print_off_on

from consensus.atrest import Key, Keyring
from node.dev.cluster import LocalCluster, exit_on_sigterm, free_base_port


def seal_cost_us(n: int = 20_000) -> float:
    key = Keyring([Key("bench", os.urandom(32))]).new_data_key()
    value = os.urandom(256)
    started = time.perf_counter()
    for _ in range(n):
        key.encrypt(value, b"state:10:population:job_resource_ledger/x")
    return (time.perf_counter() - started) / n * 1e6


def one_cluster(work: str, encrypt: bool, args: argparse.Namespace) -> list[dict[str, Any]]:
    root = tempfile.mkdtemp(prefix="on-" if encrypt else "off-", dir=work)
    # plaintext: its load (system_quick) has no certificate; at-rest cost alone measured
    cluster = LocalCluster(root, ["n1", "n2", "n3"], free_base_port(3), encrypt=encrypt, tls=False)
    cluster.start()
    try:
        cluster.wait_leader(30, all_up=True)
        endpoints = cluster.endpoints.split(",")
        leader = find_leader(endpoints)
        pids = [cluster.pid(n) for n in cluster.node_ids]
        clients = [int(c) for c in args.clients.split(",")]

        def timed(run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
            before = cpu_seconds(pids)
            row = run()
            used = cpu_seconds(pids) - before
            row["cpu_ms_per_op"] = used * 1e3 / max(row["ops_per_s"] * args.seconds, 1e-9)
            return row

        def batches() -> dict[str, Any]:
            got = measure_batches(endpoints, 6, 256, args.seconds, 10_000, args.procs)
            return {"op": "pop256", "clients": 6, "ops_per_s": got["updates_per_s"],
                    "p50_ms": got["p50_ms"], "failed": got["failed"]}  # fmt: skip

        rows = [timed(lambda c=c: measure(leader, c, args.seconds, "put", args.procs))
                for c in clients]  # fmt: skip
        rows.append(timed(lambda: measure(leader, max(clients), args.seconds, "pop", args.procs)))
        rows.append(timed(batches))
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    for row in rows:
        row["encrypt"] = encrypt
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", default="1,64")
    parser.add_argument("--procs", type=int, default=2, help="load generator processes")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    exit_on_sigterm()  # the finally blocks stop the nodes
    work = tempfile.mkdtemp(prefix="tadpole-atrest-bench-")
    rows: list[dict[str, Any]] = []
    try:
        for n in range(args.rounds):
            for encrypt in (False, True):
                print(f"round {n + 1}/{args.rounds}: encryption {'on' if encrypt else 'off'}",
                      file=sys.stderr)  # fmt: skip
                rows.extend(one_cluster(work, encrypt, args))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = off_on_summary(rows, "encrypt")
    seal_us = seal_cost_us()
    if args.json:
        json.dump({"rows": rows, "summary": summary, "seal_us": seal_us}, sys.stdout, indent=1)
        print()
        return
    print(f"medians of {args.rounds} fresh clusters per mode, {args.seconds:.0f} s per row;"
          " 256-byte values")  # fmt: skip
    print_off_on(summary)
    print(f"one AES-256-GCM seal of a 256-byte value: {seal_us:.1f} µs")


if __name__ == "__main__":
    main()
