"""A/B of the system tier: this tree against another checkout, alternating, one run.

    .venv/bin/python bench/ab.py --ref /tmp/old-checkout [--rounds 3] [--seconds 5]
        [--clients 1,64,256] [--ops put,get] [--ref-env NAME=VALUE ...] [--env NAME=VALUE ...]

``--env`` / ``--ref-env`` add to the environment of this tree's / the reference's nodes,
so one setting can be compared with itself: ``--ref . --ref-env
TADPOLE_GIL_SWITCH_INTERVAL_S=0.0005 --env TADPOLE_GIL_SWITCH_INTERVAL_S=0.005``.

Each round starts a fresh three-node cluster from the reference checkout, then one
from this tree (same Python, same ports), and measures on each: idle CPU per node
(``/proc``, 10 s after start-up settles), then per operation and concurrency the
same load as ``bench/system_quick.py`` (2 load processes, leader-directed, 256-byte
values), with the nodes' server CPU seconds per 1,000 ops (``/proc``), Raft exchanges
per op (the followers' ``Peer/Raft`` calls and ``RaftStream`` batches) and journal
fsyncs per op (every node's ``tadpole_raft_journal_fsync_seconds_count``), read from
``/metrics``.
Reports medians over the rounds and this tree's ratio to the reference's. Only
ratios from one run mean much on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "bench"))

from run import (  # noqa: E402
    add_env_options,
    cpu_seconds,
    envs_shown,
    scrape,
    side_envs,
    start_tadpole,
)
from system_quick import find_leader, measure  # noqa: E402

from node.dev.cluster import LocalCluster, exit_on_sigterm  # noqa: E402


def counters(cluster: LocalCluster) -> dict[str, float]:
    """Raft exchanges served (Peer/Raft calls and RaftStream batches) and journal
    fsyncs, summed over the nodes."""
    raft = fsyncs = 0.0
    for node_id in cluster.node_ids:
        address = cluster.metrics_address(node_id)
        assert address is not None
        text = scrape(address)
        for line in text.splitlines():
            if line.startswith(
                (
                    'tadpole_request_duration_seconds_count{method="tadpole.v1.Peer/Raft"}',
                    "tadpole_raft_stream_batches_total ",
                )
            ):
                raft += float(line.split()[-1])
            elif re.match(r"tadpole_raft_journal_fsync_seconds_count(\{.*\})? ", line):
                fsyncs += float(line.split()[-1])
    return {"raft": raft, "fsyncs": fsyncs}


def start(tree: str, root: str, env: dict[str, str]) -> LocalCluster:
    # plaintext: the REF tree may predate TLS by default, and counters() scrapes http://
    cluster = start_tadpole(root, tree, env=env)
    cluster.wait_leader(60, all_up=True)
    return cluster


def run_tree(
    tree: str, env: dict[str, str], args: argparse.Namespace
) -> dict[tuple[str, int], dict[str, float]]:
    rows: dict[tuple[str, int], dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as root:
        cluster = start(tree, root, env)
        try:
            pids = [cluster.pid(n) for n in cluster.node_ids]
            assert all(p is not None for p in pids)
            live = [p for p in pids if p is not None]
            time.sleep(5)  # elections and the first anti-entropy rounds settle
            before = cpu_seconds(live)
            time.sleep(args.idle_seconds)
            idle = (cpu_seconds(live) - before) / args.idle_seconds / len(live)
            rows[("idle", 0)] = {"cpu_per_node": idle}
            leader = find_leader(cluster.endpoints.split(","))
            for op in args.ops.split(","):
                for clients in (int(c) for c in args.clients.split(",")):
                    count0, cpu0 = counters(cluster), cpu_seconds(live)
                    row = measure(leader, clients, args.seconds, op, args.procs)
                    count1, cpu1 = counters(cluster), cpu_seconds(live)
                    ops = max(row["ops"], 1)
                    row["cpu_ms_per_op"] = (cpu1 - cpu0) / ops * 1e3
                    row["raft_calls_per_op"] = (count1["raft"] - count0["raft"]) / ops
                    row["fsyncs_per_op"] = (count1["fsyncs"] - count0["fsyncs"]) / ops
                    rows[(op, clients)] = row
        finally:
            for node_id in cluster.node_ids:
                cluster.kill(node_id)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", required=True, help="the checkout to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--clients", default="1,64,256")
    parser.add_argument("--ops", default="put,get")
    parser.add_argument("--procs", type=int, default=2)
    add_env_options(parser)
    args = parser.parse_args()
    exit_on_sigterm()  # the finally blocks stop the nodes
    envs = side_envs(parser, args)
    trees = {"ref": os.path.abspath(args.ref), "this": HERE}
    results: dict[str, list[dict[tuple[str, int], dict[str, float]]]] = {t: [] for t in trees}
    for round_ in range(args.rounds):
        for name, tree in trees.items():
            print(f"round {round_ + 1}/{args.rounds}: {name} ({tree})", file=sys.stderr)
            results[name].append(run_tree(tree, envs[name], args))

    def med(name: str, key: tuple[str, int], field: str) -> float:
        return statistics.median(r[key][field] for r in results[name])

    print(f"medians of {args.rounds} alternating rounds; ref = {trees['ref']}")
    for line in envs_shown(envs):
        print(line)
    print(
        "| op | clients | ops/s ref | ops/s this | ratio | p50 ms ref | p50 ms this "
        "| CPU ms/op ref | CPU ms/op this | Raft calls/op ref | this | fsyncs/op ref | this |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key in results["this"][0]:
        if key[0] == "idle":
            continue
        ref_ops, this_ops = med("ref", key, "ops_per_s"), med("this", key, "ops_per_s")
        print(
            f"| {key[0]} | {key[1]} | {ref_ops:.0f} | {this_ops:.0f} | {this_ops / ref_ops:.2f}x "
            f"| {med('ref', key, 'p50_ms'):.2f} | {med('this', key, 'p50_ms'):.2f} "
            f"| {med('ref', key, 'cpu_ms_per_op'):.2f} | {med('this', key, 'cpu_ms_per_op'):.2f} "
            f"| {med('ref', key, 'raft_calls_per_op'):.2f} "
            f"| {med('this', key, 'raft_calls_per_op'):.2f} "
            f"| {med('ref', key, 'fsyncs_per_op'):.2f} | {med('this', key, 'fsyncs_per_op'):.2f} |"
        )
    idle = ("idle", 0)
    print(
        f"idle CPU per node: ref {med('ref', idle, 'cpu_per_node') * 100:.1f}% of a core, "
        f"this {med('this', idle, 'cpu_per_node') * 100:.1f}%"
    )


if __name__ == "__main__":
    main()
