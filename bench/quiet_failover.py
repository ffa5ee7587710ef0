"""Failover when the leader dies while the cluster is idle, with quiet heartbeats on
and off (consensus/raft/quiet.py), and the idle cost each setting buys.

    .venv/bin/python bench/quiet_failover.py --kills 5

For each setting (alternating), a fresh 3-node cluster (plaintext, like make bench):
measure the median node's share of a core over ``--idle-seconds`` at rest, then
``--kills`` times: wait until the group has rested (``tadpole_raft_quiet`` when on, the
same wait when off), ``kill -9`` the leader, and time until the two survivors agree on
a new one; restart the victim. Reports idle CPU and failover p50 / max per setting.
Nothing here is pass/fail: the numbers go in notes and docs with this command.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.run import Probe, scrape, start_tadpole
from node.dev.cluster import LocalCluster, exit_on_sigterm

SETTINGS = {
    "quiet on (default)": [],
    "quiet off": ["--set", "raft.quiet_heartbeat_s=0"],
}


def _quiet(cluster: LocalCluster) -> bool:
    for node_id in cluster.node_ids:
        address = cluster.metrics_address(node_id)
        if address is None or not re.search(r"^tadpole_raft_quiet 1", scrape(address), re.M):
            return False
    return True


def _rested(cluster: LocalCluster, on: bool, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    if not on:
        time.sleep(3.0)  # as long as a quiet group takes to come to rest
        return
    while not _quiet(cluster):
        if time.monotonic() > deadline:
            raise TimeoutError("the cluster never came to rest")
        time.sleep(0.2)


def run(name: str, extra: list[str], kills: int, idle_s: float) -> dict[str, float]:
    root = tempfile.mkdtemp(prefix="tadpole-quiet-")
    cluster = start_tadpole(root, extra_args=extra)
    on = not extra
    try:
        cluster.wait_leader(30, all_up=True)
        _rested(cluster, on)
        probe = Probe(lambda: [cluster.pid(n) for n in cluster.node_ids])
        idle = probe.idle(idle_s)["idle_cpu"]
        took: list[float] = []
        for _ in range(kills):
            leader = cluster.wait_leader(30, all_up=True)
            _rested(cluster, on)
            others = [n for n in cluster.node_ids if n != leader]
            cluster.kill(leader)
            lost = time.monotonic()
            cluster.wait_leader(30, among=others)
            took.append(time.monotonic() - lost)
            cluster.start_node(leader)
        print(f"{name}: failovers {', '.join(f'{t:.2f}' for t in took)} s", flush=True)
        return {"idle": idle, "p50": statistics.median(took), "max": max(took)}
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--runs", type=int, default=1, help="fresh clusters per setting")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    args = parser.parse_args()
    exit_on_sigterm()  # the finally blocks stop the nodes
    results: dict[str, list[dict[str, float]]] = {name: [] for name in SETTINGS}
    for _ in range(args.runs):
        for name, extra in SETTINGS.items():
            results[name].append(run(name, extra, args.kills, args.idle_seconds))
    print("| setting | idle CPU per node | failover p50 | failover max |")
    print("|---|---|---|---|")
    for name, rows in results.items():
        idle = statistics.median(r["idle"] for r in rows)
        p50 = statistics.median(r["p50"] for r in rows)
        worst = max(r["max"] for r in rows)
        print(f"| {name} | {idle * 100:.1f}% | {p50:.2f} s | {worst:.2f} s |")


if __name__ == "__main__":
    main()
