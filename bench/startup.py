"""How long a restarted node takes to serve: spawn -> answering, -> following the leader.

    .venv/bin/python bench/startup.py [--trials 5] [--hog 0]

Starts a three-node cluster in a temporary directory, then restarts one follower
``--trials`` times (SIGTERM, start again on the same data) and times, from the spawn:

* ``answers``: the node's gRPC ``Status`` answers;
* ``follows``: it reports the same leader as the others and is a Raft follower again,
  i.e. it can serve linearizable reads and forward writes.

``--hog K`` runs K busy-loop processes beside the cluster for the whole run: a
loaded host. Prints median and max of each, in seconds.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time

from node.dev.cluster import LocalCluster, exit_on_sigterm


def _busy() -> None:
    while True:
        pass


def _wait(predicate: object, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():  # type: ignore[operator]
            return time.monotonic()
        time.sleep(0.01)
    raise TimeoutError("the node did not come back")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--hog", type=int, default=0, help="busy-loop processes beside the cluster")
    p.add_argument("--base-port", type=int, default=7400, help="nodes on base + 1..3")
    args = p.parse_args(argv)
    exit_on_sigterm()  # the finally blocks stop the nodes
    hogs = [multiprocessing.Process(target=_busy, daemon=True) for _ in range(args.hog)]
    for h in hogs:
        h.start()
    answers: list[float] = []
    follows: list[float] = []
    with tempfile.TemporaryDirectory(prefix="tadpole-startup-") as root:
        # plaintext: startup figures comparable with earlier runs
        cluster = LocalCluster(root, ["n1", "n2", "n3"], args.base_port, tls=False)
        try:
            cluster.start()
            cluster.wait_leader(60, all_up=True)
            for _ in range(args.trials):
                leader = cluster.wait_leader(60, all_up=True)
                node = next(n for n in cluster.node_ids if n != leader)
                cluster.stop_node(node)
                spawned = time.monotonic()
                cluster.start_node(node)
                up = _wait(lambda n=node: cluster.status(n) is not None, 120)
                back = _wait(lambda: cluster.leader(all_up=True) is not None, 120)
                answers.append(up - spawned)
                follows.append(back - spawned)
        finally:
            cluster.stop()
            for h in hogs:
                h.terminate()
    print(f"hog={args.hog} trials={args.trials}")
    for name, xs in (("answers", answers), ("follows", follows)):
        print(f"{name:<8} median {statistics.median(xs):.2f} s  max {max(xs):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
