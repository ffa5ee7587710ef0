"""Quick system-tier benchmark: write latency and throughput against a running cluster.

    .venv/bin/python bench/system_quick.py --endpoints 127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103

Load runs in separate processes (one asyncio loop each) so the generator does
not share a GIL with itself. Puts go to the leader with 256-byte values.
Reports ops/s and p50/p95/p99 latency per concurrency level. This is the
small measurement the foundation issue asks for; ``make bench`` (issue 7)
is the full comparison against etcd.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import time
from typing import Any

import grpc

from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc

# (CA, certificate, key) files of a client of a TLS cluster; None: plaintext.
Tls = tuple[str, str, str] | None


def _credentials(tls: Tls) -> grpc.ChannelCredentials | None:
    if tls is None:
        return None
    files = []
    for path in tls:
        with open(path, "rb") as f:
            files.append(f.read())
    return grpc.ssl_channel_credentials(files[0], private_key=files[2], certificate_chain=files[1])


def find_leader(endpoints: list[str], tls: Tls = None) -> str:
    creds = _credentials(tls)
    for address in endpoints:
        channel = (
            grpc.insecure_channel(address) if creds is None else grpc.secure_channel(address, creds)
        )
        with channel as ch:
            try:
                st = pb_grpc.ClusterStub(ch).Status(pb.StatusRequest(), timeout=2)
            except grpc.RpcError:
                continue
            if st.raft_role == "leader":
                return address
    raise SystemExit("no leader found")


async def _worker_proc(
    address: str, clients: int, seconds: float, op: str, tag: str, tls: Tls = None
) -> list[float]:
    creds = _credentials(tls)
    channel = (
        grpc.aio.insecure_channel(address)
        if creds is None
        else grpc.aio.secure_channel(address, creds)
    )
    kv = pb_grpc.KVStub(channel)
    tiers = pb_grpc.TiersStub(channel)
    value = b"x" * 256
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + seconds

    async def client(c: int) -> None:
        i = 0
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                await one(c, i)
            except grpc.aio.AioRpcError as exc:
                # A leader change under load answers UNAVAILABLE (not applied):
                # count it and go on, as a real client would retry.
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                errors.append(exc.code().name)
                continue
            latencies.append(time.perf_counter() - start)
            i += 1

    async def one(c: int, i: int) -> None:
        if True:
            if op == "pop":
                await tiers.Update(
                    pb.TierUpdateRequest(
                        tier="population",
                        key=f"job_resource_ledger/{tag}-{c}-{i % 100}",
                        counter_add=pb.CounterAdd(amount=1),
                    )
                )
            elif op == "put":
                await kv.Put(pb.PutRequest(key=f"bench/{tag}/{c}/{i % 1000}", value=value))
            elif op == "get":
                await kv.Get(pb.GetRequest(key=f"bench/{tag}/{c}/{i % 1000}"))
            else:
                await kv.Get(pb.GetRequest(key=f"bench/{tag}/{c}/{i % 1000}", consistency=1))

    await asyncio.gather(*(client(c) for c in range(clients)))
    await channel.close()
    if errors:
        print(f"{len(errors)} requests answered UNAVAILABLE (leader change) and were not counted")
    return latencies


def _run(args: tuple[str, int, float, str, str, Tls]) -> list[float]:
    return asyncio.run(_worker_proc(*args))


def measure(
    address: str, clients: int, seconds: float, op: str, procs: int, tls: Tls = None
) -> dict[str, float]:
    procs = max(1, min(procs, clients))
    per = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        started = time.perf_counter()
        parts = pool.map(_run, [(address, n, seconds, op, f"p{i}", tls) for i, n in enumerate(per)])
        elapsed = time.perf_counter() - started
    lat = sorted(x for part in parts for x in part)
    q = statistics.quantiles(lat, n=100, method="inclusive")
    return {
        "op": op,
        "clients": clients,
        "ops": len(lat),
        "ops_per_s": len(lat) / min(elapsed, seconds + 0.5),
        "p50_ms": q[49] * 1e3,
        "p95_ms": q[94] * 1e3,
        "p99_ms": q[98] * 1e3,
    }


def off_on_summary(rows: list[dict[str, Any]], flag: str) -> list[dict[str, Any]]:
    """Per (op, clients): the median ops/s and p50 of the rows with ``flag`` false
    ("off") and true ("on"), and the on/off ratio of the medians."""
    summary = []
    for op, clients in sorted({(r["op"], r["clients"]) for r in rows}):
        line: dict[str, Any] = {"op": op, "clients": clients}
        for on in (False, True):
            mine = [r for r in rows if (r["op"], r["clients"], r[flag]) == (op, clients, on)]
            mode = "on" if on else "off"
            line[f"{mode}_ops_per_s"] = statistics.median(r["ops_per_s"] for r in mine)
            line[f"{mode}_p50_ms"] = statistics.median(r["p50_ms"] for r in mine)
            if all("cpu_ms_per_op" in r for r in mine):
                line[f"{mode}_cpu_ms"] = statistics.median(r["cpu_ms_per_op"] for r in mine)
        line["ratio"] = line["on_ops_per_s"] / line["off_ops_per_s"]
        summary.append(line)
    return summary


def print_off_on(summary: list[dict[str, Any]]) -> None:
    """The summary as a table; with the nodes' CPU per op when the rows had it."""
    cpu = all("off_cpu_ms" in s and "on_cpu_ms" in s for s in summary)
    print(f"{'op':>6} {'clients':>8} {'off ops/s':>10} {'on ops/s':>9} {'on/off':>7}"
          f" {'off p50':>8} {'on p50':>7}"
          + (f" {'off CPU/op':>11} {'on CPU/op':>10}" if cpu else ""))  # fmt: skip
    for s in summary:
        print(
            f"{s['op']:>6} {s['clients']:>8} {s['off_ops_per_s']:>10.0f} {s['on_ops_per_s']:>9.0f}"
            f" {s['ratio']:>7.2f} {s['off_p50_ms']:>7.2f}ms {s['on_p50_ms']:>5.2f}ms"
            + (f" {s['off_cpu_ms']:>9.3f}ms {s['on_cpu_ms']:>8.3f}ms" if cpu else "")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", default="127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103")
    parser.add_argument("--clients", default="1,64")
    parser.add_argument(
        "--ops",
        default="put",
        help="put, get (linearizable), sget (serializable), pop (population counter)",
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--procs", type=int, default=2, help="load generator processes")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    leader = find_leader(args.endpoints.split(","))
    rows = [
        measure(leader, int(c), args.seconds, op, args.procs)
        for op in args.ops.split(",")
        for c in args.clients.split(",")
    ]
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
        return
    print(f"leader {leader}; 256-byte values; {args.seconds:.0f} s per row")
    print(f"{'op':>6} {'clients':>8} {'ops/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for r in rows:
        print(
            f"{r['op']:>6} {r['clients']:>8} {r['ops_per_s']:>9.0f} "
            f"{r['p50_ms']:>8.2f} {r['p95_ms']:>8.2f} {r['p99_ms']:>8.2f}"
        )


if __name__ == "__main__":
    main()
