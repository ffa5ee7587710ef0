"""What encryption at rest costs: put throughput with it off and on, in the same run.

    .venv/bin/python bench/atrest_bench.py [--rounds 3] [--seconds 5] [--clients 1,64]

Fresh three-node clusters, alternately without and with encryption at rest (so drift
of a shared, noisy machine hits both alike), ``--rounds`` of each. In every cluster:
system-tier puts (256-byte values) at each ``--clients`` level and population counter
adds at the largest, each for ``--seconds`` (``bench/system_quick.py``'s load
generator). Reports the median ops/s and p50 per mode and the on/off ratio, and,
for scale, the cost of one AES-256-GCM seal of a 256-byte value in this process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from system_quick import find_leader, measure

from consensus.atrest import Key, Keyring
from node.dev.cluster import LocalCluster, free_base_port


def seal_cost_us(n: int = 20_000) -> float:
    key = Keyring([Key("bench", os.urandom(32))]).new_data_key()
    value = os.urandom(256)
    started = time.perf_counter()
    for _ in range(n):
        key.encrypt(value, b"state:10:population:job_resource_ledger/x")
    return (time.perf_counter() - started) / n * 1e6


def one_cluster(work: str, encrypt: bool, args: argparse.Namespace) -> list[dict[str, Any]]:
    root = tempfile.mkdtemp(prefix="on-" if encrypt else "off-", dir=work)
    cluster = LocalCluster(root, ["n1", "n2", "n3"], free_base_port(3), encrypt=encrypt)
    cluster.start()
    try:
        cluster.wait_leader(30, all_up=True)
        leader = find_leader(cluster.endpoints.split(","))
        clients = [int(c) for c in args.clients.split(",")]
        rows = [measure(leader, c, args.seconds, "put", args.procs) for c in clients]
        rows.append(measure(leader, max(clients), args.seconds, "pop", args.procs))
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
    summary = []
    for op, clients in sorted({(r["op"], r["clients"]) for r in rows}):
        line: dict[str, Any] = {"op": op, "clients": clients}
        for encrypt in (False, True):
            mine = [
                r for r in rows if (r["op"], r["clients"], r["encrypt"]) == (op, clients, encrypt)
            ]
            mode = "on" if encrypt else "off"
            line[f"{mode}_ops_per_s"] = statistics.median(r["ops_per_s"] for r in mine)
            line[f"{mode}_p50_ms"] = statistics.median(r["p50_ms"] for r in mine)
        line["ratio"] = line["on_ops_per_s"] / line["off_ops_per_s"]
        summary.append(line)
    seal_us = seal_cost_us()
    if args.json:
        json.dump({"rows": rows, "summary": summary, "seal_us": seal_us}, sys.stdout, indent=1)
        print()
        return
    print(f"medians of {args.rounds} fresh clusters per mode, {args.seconds:.0f} s per row;"
          " 256-byte values")  # fmt: skip
    print(f"{'op':>5} {'clients':>8} {'off ops/s':>10} {'on ops/s':>9} {'on/off':>7}"
          f" {'off p50':>8} {'on p50':>7}")  # fmt: skip
    for s in summary:
        print(
            f"{s['op']:>5} {s['clients']:>8} {s['off_ops_per_s']:>10.0f} {s['on_ops_per_s']:>9.0f}"
            f" {s['ratio']:>7.2f} {s['off_p50_ms']:>7.2f}ms {s['on_p50_ms']:>5.2f}ms"
        )
    print(f"one AES-256-GCM seal of a 256-byte value: {seal_us:.1f} µs")


if __name__ == "__main__":
    main()
