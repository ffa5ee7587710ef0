"""What the nodes' instrumentation costs per system-tier put, as a share of the put's CPU.

    .venv/bin/python bench/instrumentation_cost.py [--clients 64] [--seconds 8] [--rounds 3]

Instrumentation cannot be switched off in a node (there is no such setting, on
purpose), so the cost is measured in two parts of one run and multiplied out:

1. **Unit costs** (``timeit``, median of 7): one histogram observation
   (``consensus.durable.Histogram``), the latency interceptor's timing of a call (two
   ``perf_counter`` reads, one ``RequestLatency.observe`` and the extra coroutine frame
   its wrapper adds), and the per-peer byte counting of one Raft exchange
   (``PeerTraffic.sent`` + ``received``, each summing frame lengths).
2. **Counts per put** on a real three-node cluster under ``--clients`` concurrent
   leader-directed puts (``bench/system_quick.py``'s load): how many calls the nodes
   timed (every ``tadpole_request_duration_seconds`` and
   ``tadpole_operation_duration_seconds`` observation), how many
   histogram observations the durability histograms took (journal fsyncs, Raft commit,
   apply, tier-store commits), and how many Raft calls carried frames, from each
   node's ``/metrics`` before and after; and the nodes' CPU seconds per put (``/proc``).

The overhead is the sum of count x unit cost over the CPU per put. Rounds alternate a
fresh cluster; the medians are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Callable

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "bench"))

from ab import start  # noqa: E402
from run import cpu_seconds, scrape  # noqa: E402
from system_quick import find_leader, measure  # noqa: E402

from consensus.durable import Histogram  # noqa: E402
from node.observe.latency import RequestLatency  # noqa: E402
from node.peer.traffic import PeerTraffic  # noqa: E402

DURABILITY = (
    "tadpole_raft_journal_fsync_seconds_count",
    "tadpole_raft_commit_seconds_count",
    "tadpole_raft_apply_seconds_count",
    "tadpole_store_commit_seconds_count",
    "tadpole_store_commit_items_count",
)
_DURABILITY = re.compile("(" + "|".join(DURABILITY) + r")(\{.*\})? ")


def _unit(stmt: Callable[[], object], number: int = 200_000) -> float:
    """Seconds per call of ``stmt``, the median of 7 repeats."""
    return statistics.median(timeit.repeat(stmt, number=number, repeat=7)) / number


def _timed_call_cost() -> float:
    """The latency interceptor's extra work per call: its link in the interceptor chain
    (an awaited lookup of the cached timed handler) and the awaited wrapper with two
    clock reads and one observation, less the bare awaited handler."""
    latency = RequestLatency()
    perf = time.perf_counter
    cache = {"/tadpole.v1.KV/Put": (1, 2)}

    async def inner() -> int:
        return 1

    async def intercept(method: str) -> int:
        handler = await inner()
        cached = cache.get(method)
        return cached[1] if cached is not None and cached[0] == handler else handler

    async def timed() -> int:
        await intercept("/tadpole.v1.KV/Put")
        started = perf()
        try:
            return await inner()
        finally:
            latency.observe("tadpole.v1.KV/Put", perf() - started)

    async def loop(fn: Callable[[], object], n: int) -> float:
        started = perf()
        for _ in range(n):
            await fn()  # type: ignore[misc]
        return perf() - started

    n = 100_000
    runs = [asyncio.run(loop(timed, n)) - asyncio.run(loop(inner, n)) for _ in range(7)]
    return max(statistics.median(runs) / n, 0.0)


def unit_costs() -> dict[str, float]:
    histogram = Histogram((0.001, 0.01, 0.1, 1.0))
    traffic = PeerTraffic()
    frames = [b"x" * 300]
    answers = [b"y" * 40]

    def exchange() -> None:
        traffic.sent("n2", "raft", sum(map(len, frames)))
        traffic.received("n2", "raft", sum(map(len, answers)))

    return {
        "histogram_observe": _unit(lambda: histogram.observe(0.004)),
        "timed_call": _timed_call_cost(),
        "raft_exchange_bytes": _unit(exchange),
    }


def counts(text: str) -> dict[str, float]:
    out = {"timed": 0.0, "durability": 0.0, "raft_calls": 0.0}
    for line in text.splitlines():
        value = line.rsplit(" ", 1)[-1]
        if line.startswith("tadpole_request_duration_seconds_count{"):
            out["timed"] += float(value)
            if 'method="tadpole.v1.Peer/Raft"' in line:
                out["raft_calls"] += float(value)
        elif line.startswith("tadpole_operation_duration_seconds_count{"):
            out["timed"] += float(value)  # the per-tier timing: the same awaited wrapper
        elif _DURABILITY.match(line):
            out["durability"] += float(value)
    return out


def one_round(args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as root:
        cluster = start(HERE, root)
        try:
            pids = [p for p in (cluster.pid(n) for n in cluster.node_ids) if p is not None]
            addresses = [cluster.metrics_address(n) for n in cluster.node_ids]
            time.sleep(3)

            def totals() -> dict[str, float]:
                summed = {"timed": 0.0, "durability": 0.0, "raft_calls": 0.0}
                for address in addresses:
                    assert address is not None
                    for k, v in counts(scrape(address)).items():
                        summed[k] += v
                return summed

            leader = find_leader(cluster.endpoints.split(","))
            before, cpu0 = totals(), cpu_seconds(pids)
            row = measure(leader, args.clients, args.seconds, "put", 2)
            after, cpu1 = totals(), cpu_seconds(pids)
        finally:
            for node_id in cluster.node_ids:
                cluster.kill(node_id)
    puts = max(row["ops"], 1)
    per = {k: (after[k] - before[k]) / puts for k in before}
    per["cpu_s"] = (cpu1 - cpu0) / puts
    per["ops_per_s"] = row["ops_per_s"]
    return per


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    unit = unit_costs()
    rounds = [one_round(args) for _ in range(args.rounds)]
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    # Each Raft call is counted on both ends: the sender's link and the receiver's handler.
    cost = (
        med["timed"] * unit["timed_call"]
        + med["durability"] * unit["histogram_observe"]
        + med["raft_calls"] * 2 * unit["raft_exchange_bytes"]
    )
    print(f"unit costs: timed call {unit['timed_call'] * 1e6:.2f} us, histogram observation "
          f"{unit['histogram_observe'] * 1e6:.2f} us, Raft exchange byte counts "
          f"{unit['raft_exchange_bytes'] * 1e6:.2f} us")  # fmt: skip
    print(f"per put at {args.clients} clients (median of {args.rounds} rounds, "
          f"{med['ops_per_s']:.0f} puts/s): {med['timed']:.2f} timed calls, "
          f"{med['durability']:.2f} durability observations, {med['raft_calls']:.2f} Raft calls; "
          f"server CPU {med['cpu_s'] * 1e3:.3f} ms")  # fmt: skip
    print(f"instrumentation: {cost * 1e6:.1f} us per put = {100 * cost / med['cpu_s']:.2f}% "
          "of the put's server CPU")  # fmt: skip


if __name__ == "__main__":
    main()
