"""Population-tier update throughput against a running cluster: one update per call
(``Tiers.Update``) against batches (``Tiers.UpdateMany``) of 16 and 256.

    .venv/bin/python bench/population_bench.py [--endpoints ...] [--seconds 5] [--clients 64]
        [--routes any,owner] [--ref CHECKOUT [--rounds 3] [--ref-env NAME=VALUE ...]
        [--env NAME=VALUE ...]]

Every row is sent two ways (``--routes``): ``any`` -- raw stubs, each call (a whole
batch) to one node, which forwards the keys it does not coordinate to their first
owners (one ``ForwardMany`` per owner), as a caller that knows nothing of placement
would; and ``owner`` -- through the client library (``AsyncClient.tier_update`` /
``tier_update_many``), which sends each key to its first owner (a batch split by
owner, the owners called at once), so no key is forwarded. The two alternate run by
run.

Every update is a PN-counter ``counter_add`` on one of ``--keys`` keys (so a batch
holds updates of distinct keys, nothing coalesced away by the bench itself) and
carries a request id, as the client library sends them. Load comes from
``--procs`` processes (one asyncio loop each) spread over all the endpoints;
``--clients`` concurrent callers in all. Reports updates per second (medians of
``--runs`` runs) and p50/p99 latency per call.

With ``--ref``, ``--env`` / ``--ref-env`` add to the environment of this tree's / the
reference's nodes (``--ref .`` and two values of one ``TADPOLE_*`` setting compare the
setting with itself).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid

import grpc

from node.client import AsyncClient, CounterAdd, TierUpdate
from node.client.messages import new_request_id
from node.dev.cluster import exit_on_sigterm
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc
from node.tls import dev_cluster_tls


async def _load(
    endpoints: list[str], clients: int, batch: int, seconds: float, keys: int, tag: str,
    route: str = "any",
) -> tuple[int, list[float], int]:  # fmt: skip
    if route == "owner":
        return await _load_routed(endpoints, clients, batch, seconds, keys, tag)
    tls = dev_cluster_tls(endpoints)  # `make cluster` runs mutual TLS
    channels = [
        grpc.aio.insecure_channel(e)
        if tls is None
        else grpc.aio.secure_channel(e, tls.channel_credentials())
        for e in endpoints
    ]
    stubs = [pb_grpc.TiersStub(c) for c in channels]
    done, failed, latencies = 0, 0, []
    deadline = time.perf_counter() + seconds

    def update(i: int) -> pb.TierUpdateRequest:
        return pb.TierUpdateRequest(
            tier="population",
            key=f"job_resource_ledger/{tag}-{i % keys}",
            counter_add=pb.CounterAdd(amount=1),
            request_id=new_request_id(),
        )

    async def client(c: int) -> None:
        nonlocal done, failed
        stub, i = stubs[c % len(stubs)], c * 7919
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            if batch == 0:
                await stub.Update(update(i), timeout=10)
                count = 1
            else:
                req = pb.TierUpdateManyRequest(updates=[update(i + j) for j in range(batch)])
                resp = await stub.UpdateMany(req, timeout=10)
                bad = sum(1 for r in resp.results if r.code != 0)
                failed += bad
                count = batch - bad
            i += max(batch, 1)
            latencies.append(time.perf_counter() - started)
            done += count

    await asyncio.gather(*(client(c) for c in range(clients)))
    for channel in channels:
        await channel.close()
    return done, latencies, failed


async def _load_routed(
    endpoints: list[str], clients: int, batch: int, seconds: float, keys: int, tag: str
) -> tuple[int, list[float], int]:
    """As :func:`_load`, each batch through ``AsyncClient.tier_update_many`` (batch 0:
    each update through ``tier_update``), one client per process shared by its callers,
    as an application would hold one."""
    tls = dev_cluster_tls(endpoints)
    credentials = None if tls is None else tls.channel_credentials()
    done, failed, latencies = 0, 0, []
    async with AsyncClient(endpoints, credentials=credentials, timeout=10) as client:
        await client.members()  # what the client learns on its first batch anyway
        deadline = time.perf_counter() + seconds

        async def caller(c: int) -> None:
            nonlocal done, failed
            i = c * 7919
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                if batch == 0:  # Tiers.Update, with a request id like the raw rows'
                    key = f"job_resource_ledger/{tag}-{i % keys}"
                    await client.tier_update(
                        "population", key, CounterAdd(1), request_id=new_request_id()
                    )
                    done, i = done + 1, i + 1
                    latencies.append(time.perf_counter() - started)
                    continue
                updates = [
                    TierUpdate(
                        "population",
                        f"job_resource_ledger/{tag}-{(i + j) % keys}",
                        CounterAdd(1),
                        request_id=new_request_id(),
                    )
                    for j in range(batch)
                ]
                outcomes = await client.tier_update_many(updates)
                bad = sum(1 for o in outcomes if not o.applied)
                failed += bad
                done += batch - bad
                i += batch
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(caller(c) for c in range(clients)))
    return done, latencies, failed


def _run(args: tuple[list[str], int, int, float, int, str, str]) -> tuple[int, list[float], int]:
    return asyncio.run(_load(*args))


def measure(endpoints: list[str], clients: int, batch: int, seconds: float, keys: int,
            procs: int, route: str = "any") -> dict[str, float]:  # fmt: skip
    procs = max(1, min(procs, clients))
    per = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        started = time.perf_counter()
        parts = pool.map(
            _run,
            [(endpoints, n, batch, seconds, keys, uuid.uuid4().hex[:6], route) for n in per],
        )
        elapsed = min(time.perf_counter() - started, seconds + 0.5)
    lat = sorted(x for _, part, _ in parts for x in part)
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else [lat[0]] * 99
    return {
        "updates_per_s": sum(n for n, _, _ in parts) / elapsed,
        "failed": sum(f for _, _, f in parts),
        "p50_ms": q[49] * 1e3,
        "p99_ms": q[98] * 1e3,
    }


def compare(args: argparse.Namespace, envs: dict[str, dict[str, str]]) -> None:
    """Alternate fresh clusters of ``args.ref`` and of this tree (see the module doc),
    their nodes with ``envs[side]`` added to their environment."""
    from run import REPO, cpu_seconds, envs_shown, start_tadpole

    trees = {"ref": os.path.abspath(args.ref), "this": REPO}
    batches = [int(b) for b in args.batches.split(",")]
    results: dict[tuple[str, str, int], list[dict[str, float]]] = {}
    for round_ in range(args.rounds):
        for name, tree in trees.items():
            print(f"round {round_ + 1}/{args.rounds}: {name} ({tree})", file=sys.stderr)
            with tempfile.TemporaryDirectory() as root:
                cluster = start_tadpole(root, tree, env=envs[name])
                try:
                    cluster.wait_leader(60, all_up=True)
                    time.sleep(3)  # the first anti-entropy rounds settle
                    pids = [cluster.pid(n) for n in cluster.node_ids]
                    endpoints = cluster.endpoints.split(",")
                    for batch in batches:
                        for way in args.routes.split(","):
                            before = cpu_seconds(pids)
                            callers = args.clients if batch == 0 else args.batch_clients
                            row = measure(endpoints, callers, batch, args.seconds, args.keys,
                                          args.procs, way)  # fmt: skip
                            row["callers"] = callers
                            used = cpu_seconds(pids) - before
                            row["cpu_s_per_1k"] = used / max(
                                row["updates_per_s"] * args.seconds / 1000, 1e-9
                            )
                            results.setdefault((name, way, batch), []).append(row)
                finally:
                    for node_id in cluster.node_ids:
                        cluster.kill(node_id)
    print(f"medians of {args.rounds} alternating rounds; ref = {trees['ref']}")
    for line in envs_shown(envs):
        print(line)
    print("| tree | updates per call | sent to | callers | updates/s | p50 ms | CPU s/1k updates |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for (name, way, batch), rows in results.items():
        rate = statistics.median(r["updates_per_s"] for r in rows)
        p50 = statistics.median(r["p50_ms"] for r in rows)
        cpu = statistics.median(r["cpu_s_per_1k"] for r in rows)
        label = "1 (Update)" if batch == 0 else str(batch)
        print(f"| {name} | {label} | {way} | {rows[0]['callers']:.0f} | {rate:.0f} | {p50:.1f} "
              f"| {cpu:.3f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", default="127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--batches", default="0,16,256", help="0 = one update per call")
    parser.add_argument("--batch-clients", type=int, default=6,
                        help="concurrent callers for batched rows")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument(
        "--routes", default="any,owner", help="batched rows: any (one node) and/or owner (client)"
    )
    parser.add_argument("--ref", help="a checkout to compare with, on fresh clusters")
    parser.add_argument("--rounds", type=int, default=3, help="with --ref")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from run import add_env_options, side_envs

    add_env_options(parser)  # with --ref
    args = parser.parse_args()
    exit_on_sigterm()  # the finally blocks stop the nodes
    envs = side_envs(parser, args)
    if any(envs.values()) and not args.ref:
        parser.error("--env and --ref-env go with --ref (fresh clusters)")
    endpoints = args.endpoints.split(",")
    routes = args.routes.split(",")
    if not set(routes) <= {"any", "owner"}:
        parser.error(f"--routes takes any and owner, not {args.routes!r}")
    if args.ref:
        compare(args, envs)
        return
    print(f"population counter_add with request ids, {len(endpoints)} endpoints, "
          f"{args.seconds:g} s per run, median of {args.runs}")  # fmt: skip
    print(
        f"{'updates/call':>12} {'sent to':>8} {'callers':>8} {'updates/s':>10} {'p50 ms':>8} "
        f"{'p99 ms':>8} failed"
    )
    for batch in (int(b) for b in args.batches.split(",")):
        clients = args.clients if batch == 0 else args.batch_clients
        ways = routes
        rows: dict[str, list[dict[str, float]]] = {way: [] for way in ways}
        for _ in range(args.runs):  # the ways alternate, so a slow moment hits both
            for way in ways:
                rows[way].append(
                    measure(endpoints, clients, batch, args.seconds, args.keys, args.procs, way)
                )
        for way in ways:
            rate = statistics.median(r["updates_per_s"] for r in rows[way])
            p50 = statistics.median(r["p50_ms"] for r in rows[way])
            p99 = statistics.median(r["p99_ms"] for r in rows[way])
            label = "1 (Update)" if batch == 0 else str(batch)
            failed = sum(r["failed"] for r in rows[way])
            print(f"{label:>12} {way:>8} {clients:>8} {rate:>10.0f} {p50:>8.1f} {p99:>8.1f} "
                  f"{failed:>6.0f}")  # fmt: skip
            sys.stdout.flush()


if __name__ == "__main__":
    main()
