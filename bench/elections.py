"""Elections on a starved host: a 3-node cluster with CPU hogs on the same cores.

    .venv/bin/python bench/elections.py --seconds 60 --hogs 6 --runs 2

For each run, every configuration in ``--configs`` starts a fresh cluster (order rotated
per run, so neither always runs first), waits for a leader, starts ``--hogs`` busy-loop
processes, and for ``--seconds`` samples every node's Status twice a second while one
client puts a key every 0.2 s. It reports, per configuration, the medians over runs of:
terms per minute (each candidacy raises the term), leader changes per minute, puts that
failed, and the longest gap between two successful puts. Nothing here is a pass/fail
test: the numbers go in notes and docs with this command.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

import grpc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from node.dev.cluster import LocalCluster, exit_on_sigterm
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc

CONFIGS = {
    "pre-vote off": ["--set", "raft.pre_vote=false"],
    "pre-vote on": ["--set", "raft.pre_vote=true"],
}


@dataclass
class Sample:
    terms_per_min: float
    leader_changes_per_min: float
    puts_ok: int
    puts_failed: int
    longest_gap_s: float


def _hogs(n: int, core: int | None) -> list[subprocess.Popen[bytes]]:
    pin = ["taskset", "-c", str(core)] if core is not None else []
    return [
        subprocess.Popen([*pin, sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
        for _ in range(n)
    ]


def _pin(cluster: LocalCluster, core: int) -> None:
    """Move every node process (all its threads) onto one core, beside the hogs."""
    for node in cluster.node_ids:
        pid = cluster.pid(node)
        if pid is not None:
            subprocess.run(
                ["taskset", "-a", "-cp", str(core), str(pid)], check=True, capture_output=True
            )


def _writer(endpoints: list[str], stop: threading.Event, out: dict[str, float]) -> None:
    channels = [grpc.insecure_channel(e) for e in endpoints]
    stubs = [pb_grpc.KVStub(c) for c in channels]
    last_ok = time.monotonic()
    i = 0
    while not stop.is_set():
        stub = stubs[i % len(stubs)]
        i += 1
        try:
            stub.Put(pb.PutRequest(key="bench/e", value=b"x", request_id=f"r{i}"), timeout=2.0)
            now = time.monotonic()
            out["gap"] = max(out["gap"], now - last_ok)
            last_ok = now
            out["ok"] += 1
        except grpc.RpcError:
            out["failed"] += 1
        stop.wait(0.2)
    out["gap"] = max(out["gap"], time.monotonic() - last_ok)
    for c in channels:
        c.close()


def run_one(args: list[str], seconds: float, hogs: int, base_port: int, core: int | None) -> Sample:
    with tempfile.TemporaryDirectory(prefix="tp-elections-") as root:
        # plaintext: its status probes use insecure channels, figures as in earlier runs
        cluster = LocalCluster(root, ["n1", "n2", "n3"], base_port, extra_args=args, tls=False)
        cluster.prepare()
        cluster.start()
        try:
            cluster.wait_leader(60.0, all_up=True)
            first_term = max(
                (st.term for n in cluster.node_ids if (st := cluster.status(n))), default=0
            )
            if core is not None:
                _pin(cluster, core)
            procs = _hogs(hogs, core)
            stop = threading.Event()
            out = {"ok": 0.0, "failed": 0.0, "gap": 0.0}
            writer = threading.Thread(
                target=_writer, args=(list(cluster.addresses.values()), stop, out)
            )
            writer.start()
            leaders: list[str] = []
            term = first_term
            start = time.monotonic()
            try:
                while time.monotonic() - start < seconds:
                    for node in cluster.node_ids:
                        st = cluster.status(node, timeout=1.0)
                        if st is None:
                            continue
                        term = max(term, st.term)
                        if st.raft_role == "leader" and (not leaders or leaders[-1] != node):
                            leaders.append(node)
                    time.sleep(0.5)
            finally:
                stop.set()
                writer.join()
                for p in procs:
                    p.kill()
                    p.wait()
            minutes = (time.monotonic() - start) / 60
            return Sample(
                terms_per_min=(term - first_term) / minutes,
                leader_changes_per_min=max(len(leaders) - 1, 0) / minutes,
                puts_ok=int(out["ok"]),
                puts_failed=int(out["failed"]),
                longest_gap_s=out["gap"],
            )
        finally:
            cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--hogs", type=int, default=6, help="busy-loop processes")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--base-port", type=int, default=7400)
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma list of names")
    parser.add_argument(
        "--pin-core", type=int, default=None, help="put nodes and hogs on this one core"
    )
    opts = parser.parse_args()
    exit_on_sigterm()  # the finally blocks stop the nodes
    names = [n.strip() for n in opts.configs.split(",")]
    results: dict[str, list[Sample]] = {n: [] for n in names}
    for r in range(opts.runs):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            sample = run_one(CONFIGS[name], opts.seconds, opts.hogs, opts.base_port, opts.pin_core)
            results[name].append(sample)
            print(f"run {r + 1} {name}: {sample}", flush=True)
    load = os.getloadavg()
    pinned = "" if opts.pin_core is None else f", nodes and hogs pinned to core {opts.pin_core}"
    print(
        f"\n{opts.hogs} hogs{pinned}, {opts.seconds:g} s per run, {opts.runs} runs; "
        f"load {load[0]:.1f}"
    )
    print("| config | terms/min | leader changes/min | puts ok | puts failed | longest gap |")
    print("|---|---|---|---|---|---|")
    for name, samples in results.items():

        def med(attr: str, samples: list[Sample] = samples) -> float:
            return statistics.median(getattr(s, attr) for s in samples)

        print(
            f"| {name} | {med('terms_per_min'):.1f} | {med('leader_changes_per_min'):.1f} "
            f"| {med('puts_ok'):.0f} | {med('puts_failed'):.0f} | {med('longest_gap_s'):.2f} s |"
        )


if __name__ == "__main__":
    main()
