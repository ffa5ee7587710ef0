"""``make bench``: Tadpole's system tier against etcd and raw pysyncobj, in one run.

    .venv/bin/python bench/run.py [--seconds 2.5] [--clients 1,16,64,256] [--fill-keys 100000]

Starts, in turn, on this machine:

``tadpole-raft``   three Tadpole nodes on their own Raft group (fsync per tick)
``tadpole-etcd``   three Tadpole nodes with ``system_backend = "etcd"`` on a
                   three-member etcd (etcd fsyncs)
``etcd``           a three-member etcd alone, driven with aetcd (fsyncs)
``pysyncobj``      three raw pysyncobj processes, load generated inside the
                   leader process: the library's ceiling. Its journal does
                   **not** fsync, so it is not durable-equal to the others.

Each system first gets ``--fill-keys`` distinct 256-byte keys written (then
peak RSS per server process is read from /proc), then one row per operation
x concurrency: ``put`` (write), ``get_lin`` (linearizable read), ``get_ser``
(serializable read), ``cas`` (compare-and-swap on the client's own key, so it
measures the path, not contention). The load generator is the same for the
three networked systems: ``--procs`` separate processes, one asyncio loop
each, clients spread evenly; Tadpole writes carry a request id like the
Tadpole client's. Clients of ``tadpole-raft`` and ``etcd`` talk to the leader
(the best case; a Tadpole follower would forward); ``tadpole-etcd`` nodes are
all equal, so clients are spread over the three nodes.

Only ratios within one run mean much on a shared, noisy machine: every row
is also given as a ratio to etcd's row in the same run. Output: a Markdown
table, ``bench/results/bench-<time>.json`` and ``bench/results/bench-<time>.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grpc

from node.dev.cluster import LocalCluster
from node.dev.etcd import INSTALL_HINT, LocalEtcd, find_etcd
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc

SYSTEMS = ("tadpole-raft", "tadpole-etcd", "etcd", "pysyncobj")
OPS = ("put", "get_lin", "get_ser", "cas")
FSYNC = {
    "tadpole-raft": "yes: one fdatasync per Raft tick on leader and followers before acking",
    "tadpole-etcd": "yes: etcd fsyncs its WAL before acking",
    "etcd": "yes: etcd fsyncs its WAL before acking",
    "pysyncobj": "NO: pysyncobj's FileJournal writes through mmap and never fsyncs",
}
VALUE = b"x" * 256
HERE = os.path.dirname(os.path.abspath(__file__))


# -- ports and process helpers ------------------------------------------------------


def free_base(count: int) -> int:
    rng = random.Random()
    for _ in range(500):
        base = rng.randrange(20_000, 60_000, 20)
        ok = True
        for port in range(base + 1, base + count + 1):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range")


def peak_rss_mib(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def wait_serving(cluster: LocalCluster, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = [cluster.status(n) for n in cluster.node_ids]
        if all(st is not None and st.has_quorum for st in statuses):
            return
        time.sleep(0.1)
    raise TimeoutError("Tadpole nodes not serving")


# -- the load generator (runs in worker processes) -------------------------------------


@dataclass(frozen=True)
class Job:
    kind: str  # "tadpole" | "etcd"
    endpoints: tuple[str, ...]
    op: str
    clients: int
    first_client: int
    seconds: float
    warmup: float
    fill_keys: int
    tag: str
    total_clients: int = 1
    prefix: bytes = b"/bench/"


class _Target:
    """One protocol surface: Tadpole's KV API or etcd's, same four operations."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.channels: list[Any] = []
        self.stubs: list[Any] = []

    async def open(self) -> None:
        for endpoint in self.job.endpoints:
            channel = grpc.aio.insecure_channel(endpoint)
            self.channels.append(channel)
            if self.job.kind == "tadpole":
                self.stubs.append(pb_grpc.KVStub(channel))
            else:
                from aetcd import rpc

                self.stubs.append(rpc.KVStub(channel))

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()

    async def put(self, stub: Any, key: str) -> int:
        if self.job.kind == "tadpole":
            r = await stub.Put(
                pb.PutRequest(key=key, value=VALUE, request_id=uuid.uuid4().hex[:20])
            )
            return int(r.header.revision)
        from aetcd import rpc

        r = await stub.Put(rpc.PutRequest(key=self.job.prefix + key.encode(), value=VALUE))
        return int(r.header.revision)

    async def get(self, stub: Any, key: str, linearizable: bool) -> None:
        if self.job.kind == "tadpole":
            consistency = pb.LINEARIZABLE if linearizable else pb.SERIALIZABLE
            await stub.Get(pb.GetRequest(key=key, consistency=consistency))
            return
        from aetcd import rpc

        await stub.Range(
            rpc.RangeRequest(key=self.job.prefix + key.encode(), serializable=not linearizable)
        )

    async def cas(self, stub: Any, key: str, mod_revision: int) -> tuple[bool, int]:
        if self.job.kind == "tadpole":
            r = await stub.Txn(
                pb.TxnRequest(
                    compare=[
                        pb.Compare(
                            key=key,
                            target=pb.Compare.MOD,
                            result=pb.Compare.EQUAL,
                            number=mod_revision,
                        )
                    ],
                    success=[pb.RequestOp(put=pb.PutRequest(key=key, value=VALUE))],
                    failure=[pb.RequestOp(range=pb.RangeRequest(prefix=key))],
                    request_id=uuid.uuid4().hex[:20],
                )
            )
            if r.succeeded:
                return True, int(r.header.revision)
            kvs = r.responses[0].range.kvs
            return False, int(kvs[0].mod_revision) if kvs else 0
        from aetcd import rpc

        raw = self.job.prefix + key.encode()
        r = await stub.Txn(
            rpc.TxnRequest(
                compare=[
                    rpc.Compare(
                        key=raw,
                        result=rpc.Compare.EQUAL,
                        target=rpc.Compare.MOD,
                        mod_revision=mod_revision,
                    )
                ],
                success=[rpc.RequestOp(request_put=rpc.PutRequest(key=raw, value=VALUE))],
                failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=raw))],
            )
        )
        if r.succeeded:
            return True, int(r.header.revision)
        kvs = r.responses[0].response_range.kvs
        return False, int(kvs[0].mod_revision) if kvs else 0


async def _run_job(job: Job) -> dict[str, Any]:
    target = _Target(job)
    await target.open()
    latencies: list[float] = []
    errors = 0
    rng = random.Random(job.first_client)
    loop_start = time.perf_counter()
    measure_from = loop_start + job.warmup
    stop_at = measure_from + job.seconds

    async def client(c: int) -> None:
        nonlocal errors
        stub = target.stubs[c % len(target.stubs)]
        i = 0
        cas_key = f"cas/{job.tag}/{c}"
        mod_revision = 0
        if job.op == "cas":
            with contextlib.suppress(grpc.aio.AioRpcError):
                mod_revision = await target.put(stub, cas_key)
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return
            try:
                if job.op == "put":
                    await target.put(stub, f"bench/{job.tag}/{c}/{i % 1000}")
                elif job.op in ("get_lin", "get_ser"):
                    key = f"fill/{rng.randrange(max(job.fill_keys, 1))}"
                    await target.get(stub, key, job.op == "get_lin")
                elif job.op == "cas":
                    _ok, mod_revision = await target.cas(stub, cas_key, mod_revision)
                elif job.op == "fill":  # key n is written by client n mod total_clients
                    n = c + i * job.total_clients
                    if n >= job.fill_keys:
                        return
                    await target.put(stub, f"fill/{n}")
            except grpc.aio.AioRpcError:
                errors += 1
                await asyncio.sleep(0.01)
                if job.op != "fill":
                    i += 1
                continue
            i += 1
            if t0 >= measure_from:
                latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(client(job.first_client + k) for k in range(job.clients)))
    await target.close()
    return {"latencies": latencies, "errors": errors}


def _worker(job: Job) -> dict[str, Any]:
    return asyncio.run(_run_job(job))


class LoadGenerator:
    """``procs`` long-lived worker processes (spawned once; imports paid once)."""

    def __init__(self, procs: int) -> None:
        self.procs = procs
        self.pool = multiprocessing.get_context("spawn").Pool(procs)

    def run(
        self,
        kind: str,
        endpoints: list[str],
        op: str,
        clients: int,
        seconds: float,
        warmup: float,
        fill_keys: int,
        spread: bool,
    ) -> dict[str, Any]:
        procs = max(1, min(self.procs, clients))
        sizes = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
        jobs, first = [], 0
        for i, size in enumerate(sizes):
            # Spread: client c uses endpoint c mod n; otherwise all use endpoints[0].
            eps = tuple(endpoints) if spread else (endpoints[0],)
            if op == "fill":
                seconds, warmup = 1e9, 0.0  # runs until every key is written
            jobs.append(
                Job(
                    kind,
                    eps,
                    op,
                    size,
                    first,
                    seconds,
                    warmup,
                    fill_keys,
                    f"{op}{clients}p{i}",
                    total_clients=clients,
                )
            )
            first += size
        parts = self.pool.map(_worker, jobs)
        lat = [x for part in parts for x in part["latencies"]]
        return {"latencies": lat, "errors": sum(p["errors"] for p in parts)}

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()


def summarize(
    system: str, op: str, clients: int, seconds: float, raw: dict[str, Any]
) -> dict[str, Any]:
    lat = sorted(raw["latencies"])
    row: dict[str, Any] = {
        "system": system,
        "op": op,
        "clients": clients,
        "ops": len(lat),
        "errors": raw["errors"],
        "ops_per_s": len(lat) / seconds,
    }
    if len(lat) >= 2:
        q = statistics.quantiles(lat, n=100, method="inclusive")
        row.update(p50_ms=q[49] * 1e3, p95_ms=q[94] * 1e3, p99_ms=q[98] * 1e3)
    elif lat:
        row.update(p50_ms=lat[0] * 1e3, p95_ms=lat[0] * 1e3, p99_ms=lat[0] * 1e3)
    else:
        row.update(p50_ms=float("nan"), p95_ms=float("nan"), p99_ms=float("nan"))
    return row


# -- the systems ---------------------------------------------------------------------


@dataclass
class Args:
    seconds: float
    warmup: float
    clients: list[int]
    ops: list[str]
    systems: list[str]
    fill_keys: int
    procs: int
    py_spy: str
    keep: bool
    root: str = ""
    notes: list[str] = field(default_factory=list)


def _fill_and_rss(
    gen: LoadGenerator,
    kind: str,
    endpoints: list[str],
    args: Args,
    pids: Callable[[], dict[str, int | None]],
    spread: bool,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    raw = gen.run(kind, endpoints, "fill", 256, 0, 0, args.fill_keys, spread)
    took = time.perf_counter() - t0
    return {
        "keys": args.fill_keys,
        "fill_s": round(took, 1),
        "fill_errors": raw["errors"],
        "peak_rss_mib": {name: round(peak_rss_mib(pid), 1) for name, pid in pids().items()},
    }


def _rows(
    gen: LoadGenerator,
    system: str,
    kind: str,
    endpoints: list[str],
    args: Args,
    spread: bool,
    profile_pid: int | None = None,
) -> list[dict[str, Any]]:
    rows = []
    for op in args.ops:
        for clients in args.clients:
            spy = None
            if args.py_spy and profile_pid and op == "put" and clients == 64:
                spy = start_py_spy(args, system, profile_pid)
            raw = gen.run(
                kind, endpoints, op, clients, args.seconds, args.warmup, args.fill_keys, spread
            )
            if spy is not None:
                spy.wait()
            row = summarize(system, op, clients, args.seconds, raw)
            print(_line(row), flush=True)
            rows.append(row)
    return rows


def start_py_spy(args: Args, system: str, pid: int) -> subprocess.Popen[bytes]:
    os.makedirs(args.py_spy, exist_ok=True)
    out = os.path.join(args.py_spy, f"{system}-put64")
    exe = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    duration = max(1, int(args.seconds + args.warmup))
    print(f"  py-spy recording pid {pid} for {duration} s -> {out}.txt", flush=True)
    return subprocess.Popen(
        [
            exe,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(duration),
            "--rate",
            "200",
            "--format",
            "raw",
            "--threads",
            "-o",
            out + ".txt",
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def bench_tadpole_raft(
    gen: LoadGenerator, args: Args
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    # plaintext, like the etcd and pysyncobj it is compared with (TLS: make bench-security)
    cluster = LocalCluster(
        os.path.join(args.root, "tadpole-raft"), ["n1", "n2", "n3"], free_base(3), tls=False
    )
    try:
        cluster.start()
        leader = cluster.wait_leader(60)
        wait_serving(cluster)
        address = cluster.addresses[leader]
        mem = _fill_and_rss(
            gen,
            "tadpole",
            [address],
            args,
            lambda: {n: cluster.pid(n) for n in cluster.node_ids},
            spread=False,
        )
        leader = cluster.wait_leader(60)
        rows = _rows(
            gen,
            "tadpole-raft",
            "tadpole",
            [cluster.addresses[leader]],
            args,
            spread=False,
            profile_pid=cluster.pid(leader),
        )
        return rows, mem
    finally:
        for n in cluster.node_ids:
            cluster.kill(n)


def _start_etcd(args: Args, name: str) -> LocalEtcd:
    binary = find_etcd()
    if binary is None:
        raise SystemExit(f"make bench needs etcd: {INSTALL_HINT}")
    etcd = LocalEtcd(os.path.join(args.root, name), free_base(6), 3, binary)
    etcd.start(60)
    return etcd


def _etcd_leader_first(etcd: LocalEtcd) -> list[str]:
    deadline = time.monotonic() + 20
    leader = etcd.leader()
    while leader is None and time.monotonic() < deadline:
        time.sleep(0.1)
        leader = etcd.leader()
    order = [leader] + [n for n in etcd.names if n != leader] if leader else etcd.names
    return [f"127.0.0.1:{etcd.client_port(n)}" for n in order]


def bench_tadpole_etcd(
    gen: LoadGenerator, args: Args
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    etcd = _start_etcd(args, "tadpole-etcd-etcd")
    cluster: LocalCluster | None = None
    try:
        endpoints = _etcd_leader_first(etcd)
        cluster = LocalCluster(
            os.path.join(args.root, "tadpole-etcd"),
            ["n1", "n2", "n3"],
            free_base(3),
            extra_args=["--system-backend", "etcd", "--etcd-endpoints", ",".join(endpoints)],
            tls=False,  # plaintext, like the etcd it is compared with
        )
        cluster.start()
        wait_serving(cluster)
        nodes = list(cluster.addresses.values())
        c = cluster

        def pids() -> dict[str, int | None]:
            out: dict[str, int | None] = {n: c.pid(n) for n in c.node_ids}
            out.update({n: etcd.pid(n) for n in etcd.names})
            return out

        mem = _fill_and_rss(gen, "tadpole", nodes, args, pids, spread=True)
        rows = _rows(gen, "tadpole-etcd", "tadpole", nodes, args, spread=True)
        return rows, mem
    finally:
        if cluster is not None:
            for n in cluster.node_ids:
                cluster.kill(n)
        etcd.stop()


def bench_etcd(gen: LoadGenerator, args: Args) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    etcd = _start_etcd(args, "etcd")
    try:
        endpoints = _etcd_leader_first(etcd)
        mem = _fill_and_rss(
            gen, "etcd", endpoints, args, lambda: {n: etcd.pid(n) for n in etcd.names}, spread=False
        )
        rows = _rows(gen, "etcd", "etcd", endpoints, args, spread=False)
        return rows, mem
    finally:
        etcd.stop()


class _SyncObjProc:
    def __init__(self, addr: str, partners: list[str], directory: str) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                os.path.join(HERE, "pysyncobj_raw.py"),
                "--self",
                addr,
                "--partners",
                ",".join(partners),
                "--dir",
                directory,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )

    def ask(self, cmd: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return answer

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def bench_pysyncobj(_gen: LoadGenerator, args: Args) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    base = free_base(3)
    addrs = [f"127.0.0.1:{base + i + 1}" for i in range(3)]
    procs = [
        _SyncObjProc(a, [p for p in addrs if p != a], os.path.join(args.root, "pysyncobj", f"m{i}"))
        for i, a in enumerate(addrs)
    ]
    try:
        leader = None
        deadline = time.monotonic() + 60
        while leader is None and time.monotonic() < deadline:
            states = [p.ask({"cmd": "state"}) for p in procs]
            leaders = [p for p, s in zip(procs, states, strict=True) if s["leader"] and s["ready"]]
            leader = leaders[0] if leaders else None
            if leader is None:
                time.sleep(0.2)
        if leader is None:
            raise RuntimeError("pysyncobj elected no leader")
        t0 = time.perf_counter()
        leader.ask({"cmd": "fill", "keys": args.fill_keys, "clients": 256})
        mem = {
            "keys": args.fill_keys,
            "fill_s": round(time.perf_counter() - t0, 1),
            "fill_errors": 0,
            "peak_rss_mib": {
                f"m{i}": round(peak_rss_mib(p.proc.pid), 1) for i, p in enumerate(procs)
            },
        }
        rows = []
        for op in args.ops:
            for clients in args.clients:
                raw = leader.ask(
                    {
                        "cmd": "run",
                        "op": op,
                        "clients": clients,
                        "seconds": args.seconds,
                        "warmup": args.warmup,
                    }
                )
                row = summarize("pysyncobj", op, clients, args.seconds, raw)
                print(_line(row), flush=True)
                rows.append(row)
        return rows, mem
    finally:
        for p in procs:
            p.stop()


RUNNERS = {
    "tadpole-raft": bench_tadpole_raft,
    "tadpole-etcd": bench_tadpole_etcd,
    "etcd": bench_etcd,
    "pysyncobj": bench_pysyncobj,
}


# -- output ------------------------------------------------------------------------------


def _line(row: dict[str, Any]) -> str:
    return (
        f"  {row['system']:<13} {row['op']:<8} c={row['clients']:<4} {row['ops_per_s']:>9.0f} ops/s"
        f"  p50 {row['p50_ms']:7.2f}  p95 {row['p95_ms']:7.2f}  p99 {row['p99_ms']:7.2f} ms"
        + (f"  errors {row['errors']}" if row["errors"] else "")
    )


def add_ratios(rows: list[dict[str, Any]]) -> None:
    etcd = {(r["op"], r["clients"]): r for r in rows if r["system"] == "etcd"}
    for r in rows:
        base = etcd.get((r["op"], r["clients"]))
        if base and base["ops_per_s"] > 0:
            r["x_etcd_ops"] = r["ops_per_s"] / base["ops_per_s"]
            r["x_etcd_p50"] = r["p50_ms"] / base["p50_ms"] if base["p50_ms"] else float("nan")
            r["x_etcd_p99"] = r["p99_ms"] / base["p99_ms"] if base["p99_ms"] else float("nan")


def markdown(rows: list[dict[str, Any]], memory: dict[str, Any]) -> str:
    out = [
        "| system | op | clients | ops/s | p50 ms | p95 ms | p99 ms "
        "| ops/s vs etcd | p50 vs etcd | p99 vs etcd | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = (
            f"{r['x_etcd_ops']:.2f}x | {r['x_etcd_p50']:.2f}x | {r['x_etcd_p99']:.2f}x"
            if "x_etcd_ops" in r
            else "- | - | -"
        )
        out.append(
            f"| {r['system']} | {r['op']} | {r['clients']} | {r['ops_per_s']:.0f} | "
            f"{r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | {ratio} | {r['errors']} |"
        )
    out += [
        "",
        "| system | fsync before ack | keys | fill s | peak RSS per process (MiB) |",
        "|---|---|---:|---:|---|",
    ]
    for system, mem in memory.items():
        rss = ", ".join(f"{k} {v:.0f}" for k, v in mem["peak_rss_mib"].items())
        out.append(f"| {system} | {FSYNC[system]} | {mem['keys']} | {mem['fill_s']} | {rss} |")
    return "\n".join(out)


def chart(rows: list[dict[str, Any]], path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ops = sorted({r["op"] for r in rows}, key=OPS.index)
    fig, axes = plt.subplots(2, len(ops), figsize=(4.2 * len(ops), 7.5), squeeze=False)
    for j, op in enumerate(ops):
        for system in SYSTEMS:
            pts = sorted((r["clients"], r) for r in rows if r["system"] == system and r["op"] == op)
            if not pts:
                continue
            xs = [c for c, _ in pts]
            label = system + (" (no fsync)" if system == "pysyncobj" else "")
            axes[0][j].plot(xs, [r["ops_per_s"] for _, r in pts], marker="o", label=label)
            axes[1][j].plot(xs, [r["p99_ms"] for _, r in pts], marker="o", label=label)
        for i, what in enumerate(("ops/s", "p99 latency, ms")):
            ax = axes[i][j]
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("concurrent clients")
            ax.set_ylabel(what)
            ax.set_title(f"{op}: {what}")
            ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Tadpole system tier vs etcd vs raw pysyncobj (256-byte values, one machine)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.5, help="measured seconds per row")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds per row")
    parser.add_argument("--clients", default="1,16,64,256")
    parser.add_argument("--ops", default=",".join(OPS))
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--fill-keys", type=int, default=100_000)
    parser.add_argument("--procs", type=int, default=2, help="load generator processes")
    parser.add_argument(
        "--py-spy", default="", help="record the Tadpole Raft leader during put@64 into DIR"
    )
    parser.add_argument("--keep", action="store_true", help="keep the data directories")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    ns = parser.parse_args()
    args = Args(
        seconds=ns.seconds,
        warmup=ns.warmup,
        clients=[int(c) for c in ns.clients.split(",")],
        ops=[o for o in ns.ops.split(",") if o],
        systems=[s for s in ns.systems.split(",") if s],
        fill_keys=ns.fill_keys,
        procs=ns.procs,
        py_spy=ns.py_spy,
        keep=ns.keep,
    )
    for s in args.systems:
        if s not in RUNNERS:
            raise SystemExit(f"unknown system {s!r}; choose from {', '.join(SYSTEMS)}")
    if any(s in ("tadpole-etcd", "etcd") for s in args.systems) and find_etcd() is None:
        raise SystemExit(f"make bench needs etcd: {INSTALL_HINT}")
    args.root = tempfile.mkdtemp(prefix="tadpole-bench-")
    started = time.time()
    gen = LoadGenerator(args.procs)
    rows: list[dict[str, Any]] = []
    memory: dict[str, Any] = {}
    print(
        f"256-byte values; {args.seconds} s per row after {args.warmup} s warm-up; "
        f"{args.procs} load processes; data in {args.root}"
    )
    try:
        for system in args.systems:
            print(f"== {system} (fsync: {FSYNC[system]})", flush=True)
            t0 = time.perf_counter()
            system_rows, mem = RUNNERS[system](gen, args)
            rows += system_rows
            memory[system] = mem
            print(
                f"   {args.fill_keys} keys filled in {mem['fill_s']} s; peak RSS MiB "
                f"{mem['peak_rss_mib']}; {time.perf_counter() - t0:.0f} s in all",
                flush=True,
            )
    finally:
        gen.close()
        if not args.keep:
            shutil.rmtree(args.root, ignore_errors=True)
    add_ratios(rows)
    os.makedirs(ns.out, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    result = {
        "started": stamp,
        "wall_s": round(time.time() - started, 1),
        "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "settings": {k: v for k, v in vars(ns).items()},
        "fsync": {s: FSYNC[s] for s in args.systems},
        "rows": rows,
        "memory": memory,
    }
    json_path = os.path.join(ns.out, f"bench-{stamp}.json")
    with open(json_path, "w") as f:
        json.dump(result, f, indent=2)
    png_path = os.path.join(ns.out, f"bench-{stamp}.png")
    drew = chart(rows, png_path)
    print()
    print(markdown(rows, memory))
    print()
    for s in args.systems:
        print(f"fsync — {s}: {FSYNC[s]}")
    print(f"\nJSON: {json_path}")
    print(
        f"chart: {png_path}"
        if drew
        else "chart: skipped (pip install -e '.[bench]' for matplotlib)"
    )
    print(f"wall time {result['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
