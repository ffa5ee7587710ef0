"""The HTTP face against the gRPC API, and SSE fan-out, in one run (part of ``make bench``).

    .venv/bin/python bench/http_bench.py [--seconds 3] [--clients 1,16,64] [--repeats 3]
                                         [--subscribers 1000] [--writes 20]

Starts a three-node cluster of its own, creates one agent document per client,
then for each concurrency runs, alternating and ``--repeats`` times each:

``get``    read the client's own agent document (tier default: one owner)
``patch``  merge-patch it (``performance_state.current_metrics.step``)

over gRPC (``Documents.Get`` / ``Documents.Put``, the same calls the CLI makes)
and over HTTP (``GET`` / ``PATCH /state/agent/{id}`` with aiohttp, keep-alive), all
against node n1. Load runs in ``--procs`` processes, one asyncio loop each. The
table gives medians of the repeats and the HTTP/gRPC throughput ratio; the issue's
target is HTTP within 1.5x of gRPC's per-request cost (ratio >= 0.67).

SSE fan-out: ``--subscribers`` watchers of one prefix on n1 (spread over 4
processes), then ``--writes`` system-tier writes 100 ms apart; latency is the time
from the write's acknowledgement to each subscriber's receipt (CLOCK_MONOTONIC,
shared by the processes). Target: p99 < 100 ms at 1,000 subscribers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import aiohttp
import grpc

from node.dev.cluster import LocalCluster, exit_on_sigterm
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc
from tests.agent_docs import agent_doc
from tests.integration.conftest import free_base_port


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- request load ----------------------------------------------------------------------------


async def _load(
    proto: str, op: str, grpc_address: str, http_address: str, agents: list[str], seconds: float
) -> tuple[int, list[float]]:
    latencies: list[float] = []
    done = 0
    deadline = time.perf_counter() + seconds
    patch = {"performance_state": {"current_metrics": {"step": 0}}}
    if proto == "grpc":
        channel = grpc.aio.insecure_channel(grpc_address)
        stub = pb_grpc.DocumentsStub(channel)

        async def one(agent_id: str, i: int) -> None:
            if op == "get":
                await stub.Get(pb.DocGetRequest(tier="agent", id=agent_id), timeout=10)
            else:
                patch["performance_state"]["current_metrics"]["step"] = i
                await stub.Put(
                    pb.DocPutRequest(tier="agent", id=agent_id, doc_json=json.dumps(patch)),
                    timeout=10,
                )
    else:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=10)
        )
        base = f"http://{http_address}/state/agent/"

        async def one(agent_id: str, i: int) -> None:
            if op == "get":
                async with session.get(base + agent_id) as resp:
                    await resp.read()
                    assert resp.status == 200, resp.status
            else:
                patch["performance_state"]["current_metrics"]["step"] = i
                async with session.patch(
                    base + agent_id,
                    data=json.dumps(patch),
                    headers={"Content-Type": "application/merge-patch+json"},
                ) as resp:
                    await resp.read()
                    assert resp.status == 200, resp.status

    async def client(agent_id: str) -> None:
        nonlocal done
        i = 0
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            await one(agent_id, i)
            latencies.append(time.perf_counter() - start)
            done += 1
            i += 1

    try:
        await asyncio.gather(*(client(a) for a in agents))
    finally:
        if proto == "grpc":
            await channel.close()
        else:
            await session.close()
    return done, latencies


def _load_proc(args: tuple[Any, ...]) -> tuple[int, list[float]]:
    return asyncio.run(_load(*args))


def run_load(
    pool: Any,
    procs: int,
    proto: str,
    op: str,
    cluster: LocalCluster,
    agents: list[str],
    seconds: float,
) -> dict[str, float]:
    shares = [agents[i::procs] for i in range(procs)]
    http = cluster.metrics_address("n1")
    jobs = [(proto, op, cluster.addresses["n1"], http, share, seconds) for share in shares if share]
    started = time.perf_counter()
    results = pool.map(_load_proc, jobs)
    elapsed = max(time.perf_counter() - started, seconds)
    latencies = [x for _, lat in results for x in lat]
    return {
        "ops_s": sum(n for n, _ in results) / elapsed,
        "p50_ms": percentile(latencies, 0.5) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
    }


# -- SSE fan-out -----------------------------------------------------------------------------


async def _subscribers(
    address: str, prefix: str, count: int, writes: int, ready: Any
) -> list[tuple[int, float]]:
    received: list[tuple[int, float]] = []
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=300)
    )

    async def one() -> None:
        # Cheap on purpose: the subscribers share the machine's two cores with the
        # nodes, so a client reads the id line (the revision) and the event name only.
        async with session.get(f"http://{address}/api/v1/watch?prefix={prefix}") as resp:
            got, revision = 0, 0
            async for raw in resp.content:
                if raw.startswith(b"id: "):
                    revision = int(raw[4:])
                elif raw.startswith(b"event: ready"):
                    ready.put(1)
                elif raw.startswith(b"event: change"):
                    received.append((revision, time.monotonic()))
                    got += 1
                    if got == writes:
                        return

    try:
        await asyncio.gather(*(one() for _ in range(count)))
    finally:
        await session.close()
    return received


def _subscribers_proc(args: tuple[Any, ...]) -> list[tuple[int, float]]:
    return asyncio.run(_subscribers(*args))


async def _writer(address: str, prefix: str, writes: int) -> dict[int, float]:
    acked: dict[int, float] = {}
    async with aiohttp.ClientSession() as session:
        for i in range(writes):
            while True:  # a 503 (no leader for a moment on a saturated host) applied nothing
                async with session.patch(
                    f"http://{address}/state/system",
                    data=json.dumps({f"{prefix}k": i}),
                    headers={"Content-Type": "application/merge-patch+json"},
                ) as resp:
                    if resp.status == 503:
                        await asyncio.sleep(0.2)
                        continue
                    assert resp.status == 200, await resp.text()
                    acked[int(resp.headers["Tadpole-Revision"])] = time.monotonic()
                    break
            await asyncio.sleep(0.1)
    return acked


def fan_out(cluster: LocalCluster, subscribers: int, writes: int) -> dict[str, float]:
    address = cluster.metrics_address("n1")
    prefix = f"fan-{uuid.uuid4().hex[:8]}/"
    procs = 4
    manager = multiprocessing.Manager()
    ready = manager.Queue()
    with multiprocessing.Pool(procs) as pool:
        share = [subscribers // procs + (1 if i < subscribers % procs else 0) for i in range(procs)]
        pending = pool.map_async(
            _subscribers_proc, [(address, prefix, n, writes, ready) for n in share]
        )
        for _ in range(subscribers):
            ready.get(timeout=120)
        acked = asyncio.run(_writer(address, prefix, writes))
        received = [x for part in pending.get(timeout=300) for x in part]
    lags = [(t - acked[rev]) * 1e3 for rev, t in received if rev in acked]
    return {
        "subscribers": subscribers,
        "events": len(lags),
        "expected": subscribers * writes,
        "p50_ms": percentile(lags, 0.5),
        "p99_ms": percentile(lags, 0.99),
        "max_ms": max(lags) if lags else float("nan"),
    }


# -- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", default="1,16,64")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--writes", type=int, default=20)
    args = parser.parse_args()
    exit_on_sigterm()  # the finally blocks stop the nodes
    levels = [int(c) for c in args.clients.split(",")]
    root = tempfile.mkdtemp(prefix="tadpole-http-bench-")
    # plaintext: its gRPC and HTTP load has no certificate; TLS cost: make bench-security
    cluster = LocalCluster(
        root,
        ["n1", "n2", "n3"],
        free_base_port(3),
        metrics_base_port=free_base_port(3),
        tls=False,
    )
    cluster.start()
    rows: list[dict[str, Any]] = []
    try:
        cluster.wait_leader(60, all_up=True)
        agents = [str(uuid.uuid4()) for _ in range(max(levels))]
        with grpc.insecure_channel(cluster.addresses["n1"]) as channel:
            stub = pb_grpc.DocumentsStub(channel)
            for agent_id in agents:
                stub.Put(
                    pb.DocPutRequest(
                        tier="agent",
                        id=agent_id,
                        create=True,
                        doc_json=json.dumps(agent_doc(agent_id)),
                    ),
                    timeout=10,
                )
        with multiprocessing.Pool(args.procs) as pool:
            for clients in levels:
                for op in ("get", "patch"):
                    runs: dict[str, list[dict[str, float]]] = {"grpc": [], "http": []}
                    for r in range(args.repeats):
                        order = ("grpc", "http") if r % 2 == 0 else ("http", "grpc")
                        for proto in order:
                            procs = min(args.procs, clients)
                            runs[proto].append(
                                run_load(
                                    pool, procs, proto, op, cluster, agents[:clients], args.seconds
                                )
                            )
                    row: dict[str, Any] = {"op": op, "clients": clients}
                    for proto in ("grpc", "http"):
                        for metric in ("ops_s", "p50_ms", "p99_ms"):
                            row[f"{proto}_{metric}"] = statistics.median(
                                x[metric] for x in runs[proto]
                            )
                    row["ratio"] = row["http_ops_s"] / row["grpc_ops_s"]
                    rows.append(row)
                    print(
                        f"{op:5} x{clients:<3}  grpc {row['grpc_ops_s']:7.0f}/s "
                        f"p50 {row['grpc_p50_ms']:6.1f} ms   http {row['http_ops_s']:7.0f}/s "
                        f"p50 {row['http_p50_ms']:6.1f} ms   http/grpc {row['ratio']:.2f}",
                        flush=True,
                    )
        rounds = []
        for _ in range(args.repeats):
            rounds.append(fan_out(cluster, args.subscribers, args.writes))
            r = rounds[-1]
            print(
                f"SSE fan-out: {r['subscribers']} subscribers, {r['events']}/{r['expected']} "
                f"events, write-ack -> receipt p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} "
                f"ms, max {r['max_ms']:.1f} ms",
                flush=True,
            )
        fan = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        print(
            f"SSE fan-out, median of {len(rounds)}: p50 {fan['p50_ms']:.1f} ms, "
            f"p99 {fan['p99_ms']:.1f} ms (target p99 < 100 ms)",
            flush=True,
        )
    finally:
        cluster.stop()
    print()
    print("| op | clients | gRPC ops/s | HTTP ops/s | HTTP/gRPC | gRPC p50 ms | HTTP p50 ms |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['op']} | {row['clients']} | {row['grpc_ops_s']:.0f} | "
            f"{row['http_ops_s']:.0f} | {row['ratio']:.2f} | {row['grpc_p50_ms']:.1f} | "
            f"{row['http_p50_ms']:.1f} |"
        )
    os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
    out = os.path.join(
        os.path.dirname(__file__), "results", f"http-bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    with open(out, "w") as f:
        json.dump({"rows": rows, "fan_out": fan}, f, indent=2)
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
