"""``make bench``: Tadpole's system tier against etcd and raw pysyncobj, in one run.

    .venv/bin/python bench/run.py [--seconds 2.5] [--clients 1,16,64,256] [--repeat 3]
        [--fill-keys 100000] [--population 0x64,1x64,16x6,256x6] [--ref CHECKOUT]

Starts, in turn, on this machine:

``tadpole-ref``    with ``--ref``: three Tadpole nodes running another checkout's code
                   (``make bench`` passes the commit before issue 11's work), puts only
``tadpole-raft``   three Tadpole nodes on their own Raft group (fsync per tick)
``tadpole-etcd``   three Tadpole nodes with ``system_backend = "etcd"`` on a
                   three-member etcd (etcd fsyncs)
``etcd``           a three-member etcd alone, driven with aetcd (fsyncs)
``pysyncobj``      three raw pysyncobj processes, load generated inside the
                   leader process: the library's ceiling. Its journal does
                   **not** fsync, so it is not durable-equal to the others.

Each system is measured ``--repeat`` times, each time on a fresh cluster, the
systems alternating, and every figure is the median over the repetitions. On each
cluster: its idle CPU per server process (``/proc``, ``--idle-seconds`` once
``--idle-settle`` seconds have passed since every node served: a Tadpole node's first
seconds hold its one-time start work -- a full collection and ``gc.freeze``, the
connections, the first gossip and anti-entropy exchanges -- at 3-5% of a core);
then ``--fill-keys`` distinct 256-byte keys written (``--refill-keys`` after the
first repetition) and each process's RSS read; in the first repetition, a
follower (a non-leader etcd member) is killed with SIGKILL and started again, and
its peak RSS while it restores and catches up is read against its RSS just before.
Then one row per operation x concurrency: ``put`` (write), ``get_lin``
(linearizable read), ``get_ser`` (serializable read), ``cas`` (compare-and-swap on
the client's own key, so it measures the path, not contention). For every row of a
networked system: the server processes' CPU seconds per 1,000 ops (``/proc``, the
whole row), and from their own ``/metrics`` the peer RPCs Tadpole's nodes served
and the fsyncs (Raft journal and tier-store group commits; an etcd member's WAL)
per op. On ``tadpole-raft`` the population tier follows: PN-counter updates spread
over the three nodes, one per ``Tiers.Update`` and in ``Tiers.UpdateMany``
batches, each update with a request id; raw stubs, each call to one node, or (rows
marked ``r``) through the client library, which sends each key to its first owner.

The load generator is the same for the three networked systems: ``--procs``
separate processes, one asyncio loop each, clients spread evenly; Tadpole writes
carry a request id like the Tadpole client's. Clients of ``tadpole-raft`` and
``etcd`` talk to the leader (the best case; a Tadpole follower would forward);
``tadpole-etcd`` nodes are all equal, so clients are spread over the three nodes.

Only ratios within one run mean much on a shared, noisy machine: every row is
also given as a ratio to etcd's row in the same run, and the issue's targets are
printed with this run's figure. Output: Markdown tables,
``bench/results/bench-<time>.json`` and ``bench/results/bench-<time>.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grpc

from node.client.errors import TadpoleError
from node.client.messages import new_request_id
from node.dev.cluster import LocalCluster, exit_on_sigterm
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
    "tadpole-ref": "as tadpole-raft at the reference commit (--ref)",
}
VALUE = b"x" * 256
POPULATION_KEYS = 10_000  # per load process and row: a batch's keys are distinct
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
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


def rss_mib(pid: int | None, field: str = "VmRSS") -> float:
    """A process's resident memory now (``VmRSS``) or at its peak (``VmHWM``), in MiB."""
    if pid is None:
        return float("nan")
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def peak_rss_mib(pid: int | None) -> float:
    return rss_mib(pid, "VmHWM")


CLK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int | None] | list[int]) -> float:
    """User + system CPU seconds the processes have used (``/proc``)."""
    total = 0
    for pid in pids:
        if pid is None:
            continue
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLK


def wakeups(pids: list[int | None] | list[int]) -> int:
    """Times the processes' threads blocked and were woken (their voluntary context
    switches, ``/proc/<pid>/task/*/status``): each hand-off between threads, each
    wait for a socket or a disk costs one."""
    total = 0
    for pid in pids:
        if pid is None:
            continue
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/status") as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches:"):
                            total += int(line.split()[1])
            except OSError:
                continue  # a thread that has just ended
    return total


def scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as resp:
        text: str = resp.read().decode()
        return text


# Calls a Tadpole node served on its peer service and Raft batches it received on
# RaftStreams (an exchange each, as a Peer/Raft call was before the streams), and
# fsyncs (of Tadpole's Raft journal and group commits of its CRDT tiers' store, each one
# fsync; of an etcd member's WAL), as the servers count them on /metrics.
_PEER_CALLS = re.compile(
    r'^(?:tadpole_request_duration_seconds_count\{method="tadpole\.v1\.Peer/[^"]*"\}'
    r"|tadpole_raft_stream_batches_total) (\S+)$"
)
_FSYNCS = re.compile(
    r"^(?:tadpole_raft_journal_fsync_seconds_count|tadpole_store_commit_seconds_count"
    r"|etcd_disk_wal_fsync_duration_seconds_count)"
    r"(?:\{[^}]*\})? (\S+)$"
)


@dataclass
class Probe:
    """Where a system's server-side cost is read: the CPU time of its server processes
    and the counters on their ``/metrics``."""

    pids: Callable[[], list[int | None]]
    metrics: list[str] = field(default_factory=list)  # host:port serving /metrics (http)
    peer_rpcs: bool = False  # Tadpole's own peer calls (etcd's peer traffic is streams)

    def read(self) -> dict[str, float]:
        peer: list[float] = []
        fsyncs: list[float] = []
        for address in self.metrics:
            for line in scrape(address).splitlines():
                if m := _PEER_CALLS.match(line):
                    peer.append(float(m.group(1)))
                elif m := _FSYNCS.match(line):
                    fsyncs.append(float(m.group(1)))
        nan = float("nan")  # a server that does not count it (an older Tadpole): "-"
        pids = self.pids()
        return {
            "cpu_s": cpu_seconds(pids),
            "wakeups": float(wakeups(pids)),
            "peer_rpcs": sum(peer) if peer else nan,
            "fsyncs": sum(fsyncs) if fsyncs else nan,
        }

    def cost(self, before: dict[str, float], after: dict[str, float], ops: int) -> dict[str, float]:
        """Per operation: server CPU ms (= CPU s per 1,000 ops), thread wake-ups, peer
        RPCs, fsyncs."""
        ops = max(ops, 1)
        return {
            "cpu_ms_per_op": (after["cpu_s"] - before["cpu_s"]) * 1e3 / ops,
            "wakeups_per_op": (after["wakeups"] - before["wakeups"]) / ops,
            "peer_rpcs_per_op": (
                (after["peer_rpcs"] - before["peer_rpcs"]) / ops if self.peer_rpcs else float("nan")
            ),
            "fsyncs_per_op": (after["fsyncs"] - before["fsyncs"]) / ops,
        }

    def idle(self, seconds: float) -> dict[str, float]:
        """Over ``seconds`` at rest, the median server process's share of one core
        (``idle_cpu``) and thread wake-ups per second (``idle_wakeups``)."""
        pids = [p for p in self.pids() if p is not None]
        before = [(cpu_seconds([p]), wakeups([p])) for p in pids]
        time.sleep(seconds)
        after = [(cpu_seconds([p]), wakeups([p])) for p in pids]
        pairs = list(zip(before, after, strict=True))
        return {
            "idle_cpu": statistics.median((b[0] - a[0]) / seconds for a, b in pairs),
            "idle_wakeups": statistics.median((b[1] - a[1]) / seconds for a, b in pairs),
        }


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
    kind: str  # "tadpole" | "etcd" | "population" (Tadpole's CRDT tier)
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
    batch: int = 0  # population: 0 = Tiers.Update, n = Tiers.UpdateMany of n updates
    routed: bool = False  # population: through the client library, to each key's owner


class _Target:
    """One protocol surface: Tadpole's KV API or etcd's, same four operations; or
    Tadpole's population tier (counter updates, one per call or batched)."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.channels: list[Any] = []
        self.stubs: list[Any] = []
        self.client: Any = None

    async def open(self) -> None:
        if self.job.kind == "tadpole-client":  # puts through the client library
            from node.client import AsyncClient

            self.client = AsyncClient(list(self.job.endpoints), timeout=10)
            await self.client.members()
        if self.job.routed:
            from node.client import AsyncClient

            self.client = AsyncClient(list(self.job.endpoints), timeout=10)
            await self.client.members()  # what it learns on its first update anyway
        for endpoint in self.job.endpoints:
            channel = grpc.aio.insecure_channel(endpoint)
            self.channels.append(channel)
            if self.job.kind in ("tadpole", "tadpole-client"):
                self.stubs.append(pb_grpc.KVStub(channel))
            elif self.job.kind == "population":
                self.stubs.append(pb_grpc.TiersStub(channel))
            else:
                from aetcd import rpc

                self.stubs.append(rpc.KVStub(channel))

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()
        if self.client is not None:
            await self.client.close()

    async def put(self, stub: Any, key: str) -> int:
        if self.job.kind == "tadpole-client":  # a request id of its own, as every put
            return int((await self.client.put(key, VALUE)).revision)
        if self.job.kind == "tadpole":
            r = await stub.Put(pb.PutRequest(key=key, value=VALUE, request_id=new_request_id()))
            return int(r.header.revision)
        from aetcd import rpc

        r = await stub.Put(rpc.PutRequest(key=self.job.prefix + key.encode(), value=VALUE))
        return int(r.header.revision)

    async def update(self, stub: Any, first: int, failures: dict[str, int]) -> int:
        """A PN-counter ``counter_add`` on each of ``batch`` distinct keys (one when
        unbatched), each with its request id; returns how many were applied, and
        counts why the others were not in ``failures``."""

        def one(n: int) -> pb.TierUpdateRequest:
            return pb.TierUpdateRequest(
                tier="population",
                key=f"job_resource_ledger/{self.job.tag}-{n % POPULATION_KEYS}",
                counter_add=pb.CounterAdd(amount=1),
                request_id=new_request_id(),
            )

        if self.job.routed:
            return await self._update_routed(first, failures)
        if self.job.batch == 0:
            await stub.Update(one(first))
            return 1
        r = await stub.UpdateMany(
            pb.TierUpdateManyRequest(updates=[one(first + j) for j in range(self.job.batch)])
        )
        for x in r.results:
            if x.code != 0:
                what = f"item {_CODE_NAMES.get(x.code, x.code)}: {x.message}"[:160]
                failures[what] = failures.get(what, 0) + 1
        return sum(1 for x in r.results if x.code == 0)

    async def _update_routed(self, first: int, failures: dict[str, int]) -> int:
        """:meth:`update` through ``AsyncClient`` (``tier_update`` with a request id,
        or ``tier_update_many``), which sends each key to its first owner."""
        from node.client import CounterAdd, TadpoleError, TierUpdate

        def key(n: int) -> str:
            return f"job_resource_ledger/{self.job.tag}-{n % POPULATION_KEYS}"

        try:
            if self.job.batch == 0:
                rid = new_request_id()
                await self.client.tier_update("population", key(first), CounterAdd(1),
                                              request_id=rid)  # fmt: skip
                return 1
            outcomes = await self.client.tier_update_many(
                [
                    TierUpdate("population", key(first + j), CounterAdd(1), new_request_id())
                    for j in range(self.job.batch)
                ]
            )
        except TadpoleError as exc:
            what = f"{type(exc).__name__}: {exc}"[:160]
            failures[what] = failures.get(what, 0) + max(self.job.batch, 1)
            return 0
        for o in outcomes:
            if o.error is not None:
                what = f"item {type(o.error).__name__}: {o.error}"[:160]
                failures[what] = failures.get(what, 0) + 1
        return sum(1 for o in outcomes if o.applied)

    async def get(self, stub: Any, key: str, linearizable: bool) -> None:
        if self.job.kind == "tadpole-client":
            await self.client.get(key, serializable=not linearizable)
            return
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
                    request_id=new_request_id(),
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
    # units: ops (updates) applied in the measured window; all_ops: in the whole row,
    # warm-up included (the server CPU of a row is read over the whole row)
    errors = units = all_ops = 0
    failures: dict[str, int] = {}  # status and message -> count
    rng = random.Random(job.first_client)
    loop_start = time.perf_counter()
    measure_from = loop_start + job.warmup
    stop_at = measure_from + job.seconds

    async def client(c: int) -> None:
        nonlocal errors, units, all_ops
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
            done = 1
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
                elif job.op == "update":
                    done = await target.update(stub, c * 7919 + i * max(job.batch, 1), failures)
                    errors += max(job.batch, 1) - done
            except (grpc.aio.AioRpcError, TadpoleError) as exc:
                errors += 1
                what = (
                    f"{exc.code().name}: {exc.details()}"
                    if isinstance(exc, grpc.aio.AioRpcError)
                    else f"{type(exc).__name__}: {exc}"
                )[:160]
                failures[what] = failures.get(what, 0) + 1
                await asyncio.sleep(0.01)
                if job.op != "fill":
                    i += 1
                continue
            i += 1
            all_ops += done
            if t0 >= measure_from:
                latencies.append(time.perf_counter() - t0)
                units += done

    await asyncio.gather(*(client(job.first_client + k) for k in range(job.clients)))
    await target.close()
    return {
        "latencies": latencies,
        "errors": errors,
        "units": units,
        "all_ops": all_ops,
        "failures": failures,
    }


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
        batch: int = 0,
        routed: bool = False,
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
                    f"{op}{clients}b{batch}p{i}",
                    total_clients=clients,
                    batch=batch,
                    routed=routed,
                )
            )
            first += size
        parts = self.pool.map(_worker, jobs)
        lat = [x for part in parts for x in part["latencies"]]
        return {
            "latencies": lat,
            "errors": sum(p["errors"] for p in parts),
            "units": sum(p["units"] for p in parts),
            "all_ops": sum(p["all_ops"] for p in parts),
            "failures": dict(sum((Counter(p["failures"]) for p in parts), Counter())),
        }

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()


def summarize(
    system: str, op: str, clients: int, seconds: float, raw: dict[str, Any]
) -> dict[str, Any]:
    lat = sorted(raw["latencies"])
    ops = raw.get("units", len(lat))  # a batch is as many ops as it applied
    row: dict[str, Any] = {
        "system": system,
        "op": op,
        "clients": clients,
        "ops": ops,
        "errors": raw["errors"],
        "failures": raw.get("failures", {}),
        "ops_per_s": ops / seconds,
        "calls_per_s": len(lat) / seconds,
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
    repeat: int = 1
    refill_keys: int = 10_000  # keys written in repetitions after the first
    idle_seconds: float = 10.0
    idle_settle: float = 15.0
    # (updates per call, callers, routed through the client library)
    population: list[tuple[int, int, bool]] = field(default_factory=list)
    ref: str = ""  # a checkout whose Tadpole Raft tier is measured beside this tree's
    root: str = ""
    rep: int = 0  # the repetition being run
    notes: list[str] = field(default_factory=list)

    @property
    def first(self) -> bool:
        """The first repetition: the full fill, memory and restart are measured there."""
        return self.rep == 0

    @property
    def keys(self) -> int:
        return self.fill_keys if self.first else min(self.fill_keys, self.refill_keys)


def _fill_and_rss(
    gen: LoadGenerator,
    kind: str,
    endpoints: list[str],
    args: Args,
    pids: Callable[[], dict[str, int | None]],
    spread: bool,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    raw = gen.run(kind, endpoints, "fill", 256, 0, 0, args.keys, spread)
    took = time.perf_counter() - t0
    return {
        "keys": args.keys,
        "fill_s": round(took, 1),
        "fill_errors": raw["errors"],
        "peak_rss_mib": {name: round(peak_rss_mib(pid), 1) for name, pid in pids().items()},
        "rss_mib": {name: round(rss_mib(pid), 1) for name, pid in pids().items()},
    }


def _rows(
    gen: LoadGenerator,
    system: str,
    kind: str,
    endpoints: list[str],
    args: Args,
    spread: bool,
    probe: Probe | None = None,
    profile_pid: int | None = None,
    ops: list[str] | None = None,
) -> list[dict[str, Any]]:
    rows = []
    for op in ops if ops is not None else args.ops:
        for clients in args.clients:
            spy = None
            if args.py_spy and profile_pid and op == "put" and clients == 64 and args.first:
                spy = start_py_spy(args, system, profile_pid)
            before = probe.read() if probe else None
            raw = gen.run(
                kind, endpoints, op, clients, args.seconds, args.warmup, args.keys, spread
            )
            if spy is not None:
                spy.wait()
            row = summarize(system, op, clients, args.seconds, raw)
            if probe is not None and before is not None:
                row.update(probe.cost(before, probe.read(), raw["all_ops"]))
            row["rep"] = args.rep
            print(_line(row), flush=True)
            rows.append(row)
    return rows


def _population_rows(
    gen: LoadGenerator, system: str, endpoints: list[str], args: Args, probe: Probe
) -> list[dict[str, Any]]:
    """Population-tier counter updates spread over every node: one per ``Tiers.Update``
    call (batch 0), and ``Tiers.UpdateMany`` batches of each size; a routed row goes
    through the client library, which sends each key to its first owner."""
    rows = []
    for batch, callers, routed in args.population:
        before = probe.read()
        raw = gen.run(
            "population", endpoints, "update", callers, args.seconds, args.warmup, 0, True, batch,
            routed,
        )  # fmt: skip
        row = summarize(system, "update", callers, args.seconds, raw)
        row.update(
            probe.cost(before, probe.read(), raw["all_ops"]), batch=batch, rep=args.rep,
            routed=routed,
        )  # fmt: skip
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


REPO = os.path.dirname(HERE)


def node_env(pairs: list[str] | None) -> dict[str, str]:
    """``NAME=VALUE`` arguments (``--env``, ``--ref-env``) as a dict; ValueError names the
    one that is not of that form."""
    env: dict[str, str] = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or not name or not name.replace("_", "").isalnum():
            raise ValueError(f"{pair!r} is not NAME=VALUE")
        env[name] = value
    return env


def add_env_options(parser: argparse.ArgumentParser) -> None:
    """An A/B tool's ``--env`` / ``--ref-env NAME=VALUE`` (repeatable): added to the
    environment of this tree's / the reference's nodes."""
    parser.add_argument(
        "--env", action="append", metavar="NAME=VALUE", help="for this tree's nodes"
    )
    parser.add_argument(
        "--ref-env", action="append", metavar="NAME=VALUE", help="for the reference's nodes"
    )


def side_envs(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> dict[str, dict[str, str]]:
    """:func:`add_env_options`' values as ``{"ref": ..., "this": ...}``; a pair that is not
    ``NAME=VALUE`` ends the tool with a usage error naming it."""
    try:
        return {"ref": node_env(args.ref_env), "this": node_env(args.env)}
    except ValueError as exc:
        parser.error(str(exc))


def envs_shown(envs: dict[str, dict[str, str]]) -> list[str]:
    """One line per side whose nodes got an environment, for a report's header."""
    return [
        f"{side}'s nodes with " + " ".join(f"{k}={v}" for k, v in env.items())
        for side, env in envs.items()
        if env
    ]


def start_tadpole(
    root: str,
    tree: str = REPO,
    extra_args: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> LocalCluster:
    """Three plaintext Tadpole nodes (like the etcd they are compared with; TLS is
    ``make bench-security``) running the code of ``tree``, with /metrics on, and ``env``
    added to their environment (``TADPOLE_*`` settings, say)."""
    base = free_base(3)
    http = free_base(3)
    while abs(base - http) < 10:
        http = free_base(3)
    with open(os.path.join(tree, "node", "main.py"), encoding="utf-8") as f:
        older = "--http-listen" not in f.read()
    cluster = (_OlderCluster if older else LocalCluster)(
        root,
        ["n1", "n2", "n3"],
        base,
        metrics_base_port=http,
        extra_args=extra_args or [],
        tls=False,
        env=dict(env or {}),
    )
    with _cwd(tree):  # nodes run `python -m node.main` from the working directory
        cluster.start()
    return cluster


class _OlderCluster(LocalCluster):
    """Nodes of a checkout from before the HTTP face, whose port for /metrics was
    ``--metrics-listen``."""

    def command(self, node_id: str) -> list[str]:
        return ["--metrics-listen" if a == "--http-listen" else a for a in super().command(node_id)]


@contextlib.contextmanager
def _cwd(path: str) -> Any:
    here = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(here)


def _tadpole_probe(
    cluster: LocalCluster,
    extra: Callable[[], list[int | None]] | None = None,
    metrics: list[str] | None = None,
    peer_rpcs: bool = True,
) -> Probe:
    def pids() -> list[int | None]:
        return [cluster.pid(n) for n in cluster.node_ids] + (extra() if extra else [])

    own = [a for n in cluster.node_ids if (a := cluster.metrics_address(n)) is not None]
    return Probe(pids, own + (metrics or []), peer_rpcs)


def _settle_and_idle(probe: Probe, args: Args) -> dict[str, float]:
    time.sleep(args.idle_settle)  # elections, start work, first gossip and anti-entropy
    return probe.idle(args.idle_seconds)


def _restart_tadpole_follower(cluster: LocalCluster, tree: str = REPO) -> dict[str, Any]:
    """kill -9 a follower and start it again: its peak RSS while it loads its snapshot
    and journal and catches up, against its resident memory just before."""
    leader = cluster.wait_leader(60)
    node = next(n for n in cluster.node_ids if n != leader)
    steady = rss_mib(cluster.pid(node))
    status = cluster.status(leader, timeout=5)
    target = status.commit_index if status is not None else 0
    cluster.kill(node)
    t0 = time.perf_counter()
    with _cwd(tree):
        cluster.start_node(node)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        st = cluster.status(node)
        if st is not None and st.applied_index >= target and st.has_quorum:
            break
        time.sleep(0.1)
    else:
        raise TimeoutError(f"{node} did not catch up after its restart")
    return _restarted(node, steady, cluster.pid(node), time.perf_counter() - t0)


def _restarted(name: str, steady: float, pid: int | None, took: float) -> dict[str, Any]:
    """What a restart cost: RSS just before, the new process's peak while it restored
    and caught up, and its RSS a second later."""
    time.sleep(1)
    return {
        "process": name,
        "steady_mib": steady,
        "restart_peak_mib": peak_rss_mib(pid),
        "after_mib": rss_mib(pid),
        "catch_up_s": round(took, 1),
    }


def _raft_cluster(
    gen: LoadGenerator, args: Args, system: str, tree: str, *, full: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A Tadpole Raft cluster running ``tree``'s code: its idle cost, then (``full``)
    the fill, the restart, every row and the population rows, or puts alone."""
    cluster = start_tadpole(os.path.join(args.root, f"{system}-{args.rep}"), tree)
    try:
        cluster.wait_leader(60)
        wait_serving(cluster)
        probe = _tadpole_probe(cluster)
        mem: dict[str, Any] = dict(_settle_and_idle(probe, args))
        leader = cluster.wait_leader(60)
        if full:
            mem.update(
                _fill_and_rss(
                    gen,
                    "tadpole",
                    [cluster.addresses[leader]],
                    args,
                    lambda: {n: cluster.pid(n) for n in cluster.node_ids},
                    spread=False,
                )
            )
            if args.first:
                mem["restart"] = _restart_tadpole_follower(cluster, tree)
            leader = cluster.wait_leader(60)
        rows = _rows(
            gen,
            system,
            "tadpole",
            [cluster.addresses[leader]],
            args,
            spread=False,
            probe=probe,
            profile_pid=cluster.pid(leader) if full else None,
            ops=None if full else [op for op in args.ops if op == "put"],
        )
        coalesced = [op for op in ("put", "get_lin") if op in args.ops]
        if full and coalesced:
            # The same puts and linearizable gets through the client library, one
            # AsyncClient per load process shared by its callers (as aetcd's client is):
            # it coalesces the calls waiting for the leader into KV.PutMany / GetMany.
            rows += _rows(
                gen,
                "tadpole-client",
                "tadpole-client",
                [cluster.addresses[leader]]
                + [a for n, a in cluster.addresses.items() if n != leader],
                args,
                spread=True,
                probe=probe,
                ops=coalesced,
            )
        if full:
            rows += _population_rows(gen, system, list(cluster.addresses.values()), args, probe)
        return rows, mem
    finally:
        for n in cluster.node_ids:
            cluster.kill(n)


def bench_tadpole_raft(
    gen: LoadGenerator, args: Args
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    return _raft_cluster(gen, args, "tadpole-raft", REPO, full=True)


def bench_tadpole_ref(
    gen: LoadGenerator, args: Args
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The Raft tier of the ``--ref`` checkout: idle cost and puts, for the same-run
    comparison of server CPU and wake-ups per put."""
    return _raft_cluster(gen, args, "tadpole-ref", args.ref, full=False)


def _start_etcd(args: Args, name: str) -> LocalEtcd:
    binary = find_etcd()
    if binary is None:
        raise SystemExit(f"make bench needs etcd: {INSTALL_HINT}")
    etcd = LocalEtcd(os.path.join(args.root, f"{name}-{args.rep}"), free_base(6), 3, binary)
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


def _etcd_pids(etcd: LocalEtcd) -> list[int | None]:
    return [etcd.pid(n) for n in etcd.names]


def _restart_etcd_follower(etcd: LocalEtcd) -> dict[str, Any]:
    """The same as ``_restart_tadpole_follower`` for an etcd member."""
    leader = etcd.leader()
    name = next(n for n in etcd.names if n != leader)
    steady = rss_mib(etcd.pid(name))
    etcd.kill(name)
    t0 = time.perf_counter()
    etcd.start_member(name)
    etcd.wait_ready(180, among=[name])
    return _restarted(name, steady, etcd.pid(name), time.perf_counter() - t0)


def bench_tadpole_etcd(
    gen: LoadGenerator, args: Args
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    etcd = _start_etcd(args, "tadpole-etcd-etcd")
    cluster: LocalCluster | None = None
    try:
        endpoints = _etcd_leader_first(etcd)
        cluster = start_tadpole(
            os.path.join(args.root, f"tadpole-etcd-{args.rep}"),
            extra_args=["--system-backend", "etcd", "--etcd-endpoints", ",".join(endpoints)],
        )
        wait_serving(cluster)
        nodes = list(cluster.addresses.values())
        c = cluster
        etcd_metrics = [f"127.0.0.1:{etcd.client_port(n)}" for n in etcd.names]
        # the nodes' idle CPU alone; under load the etcd members' CPU and fsyncs count too
        idle = _settle_and_idle(_tadpole_probe(cluster), args)
        probe = _tadpole_probe(cluster, lambda: _etcd_pids(etcd), etcd_metrics, peer_rpcs=False)

        def pids() -> dict[str, int | None]:
            out: dict[str, int | None] = {n: c.pid(n) for n in c.node_ids}
            out.update({n: etcd.pid(n) for n in etcd.names})
            return out

        mem = _fill_and_rss(gen, "tadpole", nodes, args, pids, spread=True)
        mem.update(idle)
        rows = _rows(gen, "tadpole-etcd", "tadpole", nodes, args, spread=True, probe=probe)
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
        metrics = [f"127.0.0.1:{etcd.client_port(n)}" for n in etcd.names]
        probe = Probe(lambda: _etcd_pids(etcd), metrics)
        idle = _settle_and_idle(probe, args)
        mem = _fill_and_rss(
            gen, "etcd", endpoints, args, lambda: {n: etcd.pid(n) for n in etcd.names}, spread=False
        )
        mem.update(idle)
        if args.first:
            mem["restart"] = _restart_etcd_follower(etcd)
            endpoints = _etcd_leader_first(etcd)
        rows = _rows(gen, "etcd", "etcd", endpoints, args, spread=False, probe=probe)
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
        leader.ask({"cmd": "fill", "keys": args.keys, "clients": 256})
        mem = {
            "keys": args.keys,
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
                row["rep"] = args.rep
                print(_line(row), flush=True)
                rows.append(row)
        return rows, mem
    finally:
        for p in procs:
            p.stop()


RUNNERS = {
    "tadpole-ref": bench_tadpole_ref,
    "tadpole-raft": bench_tadpole_raft,
    "tadpole-etcd": bench_tadpole_etcd,
    "etcd": bench_etcd,
    "pysyncobj": bench_pysyncobj,
}


# -- output ------------------------------------------------------------------------------


def _line(row: dict[str, Any]) -> str:
    op = row["op"] if "batch" not in row else f"update/{row['batch'] or '-'}"
    cost = (
        f"  CPU {row['cpu_ms_per_op']:.2f} ms/op  fsyncs {_num(row['fsyncs_per_op'], '.2f')}/op"
        if "cpu_ms_per_op" in row
        else ""
    )
    return (
        f"  {row['system']:<13} {op:<10} c={row['clients']:<4} {row['ops_per_s']:>9.0f} ops/s"
        f"  p50 {row['p50_ms']:7.2f}  p95 {row['p95_ms']:7.2f}  p99 {row['p99_ms']:7.2f} ms"
        + cost
        + (f"  errors {row['errors']}" if row["errors"] else "")
        + "".join(f"\n      {n} x {what}" for what, n in row.get("failures", {}).items())
    )


MEDIAN_FIELDS = (
    "ops_per_s",
    "calls_per_s",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "cpu_ms_per_op",
    "wakeups_per_op",
    "peer_rpcs_per_op",
    "fsyncs_per_op",
)


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per system, op, clients, batch and route: the median of each figure over
    the repetitions, errors summed."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        key = (r["system"], r["op"], r["clients"], r.get("batch"), r.get("routed", False))
        groups.setdefault(key, []).append(r)
    out = []
    for (system, op, clients, batch, routed), group in groups.items():
        row: dict[str, Any] = {"system": system, "op": op, "clients": clients}
        if batch is not None:
            row.update(batch=batch, routed=routed)
        for name in MEDIAN_FIELDS:
            values = [r[name] for r in group if name in r]
            if values:
                row[name] = statistics.median(values)
        row["errors"] = sum(r["errors"] for r in group)
        row["reps"] = len(group)
        out.append(row)
    return out


def add_ratios(rows: list[dict[str, Any]]) -> None:
    etcd = {(r["op"], r["clients"]): r for r in rows if r["system"] == "etcd"}
    for r in rows:
        base = etcd.get((r["op"], r["clients"]))
        if base and base["ops_per_s"] > 0 and "batch" not in r:
            r["x_etcd_ops"] = r["ops_per_s"] / base["ops_per_s"]
            r["x_etcd_p50"] = r["p50_ms"] / base["p50_ms"] if base["p50_ms"] else float("nan")
            r["x_etcd_p99"] = r["p99_ms"] / base["p99_ms"] if base["p99_ms"] else float("nan")


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None or value != value else format(value, fmt)


def markdown(rows: list[dict[str, Any]], memory: dict[str, Any]) -> str:
    out = [
        "| system | op | clients | ops/s | p50 ms | p95 ms | p99 ms "
        "| ops/s vs etcd | p50 vs etcd | p99 vs etcd | CPU s/1k ops | wake-ups/op "
        "| peer RPCs/op | fsyncs/op | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "batch" in r:
            continue
        ratio = (
            f"{r['x_etcd_ops']:.2f}x | {r['x_etcd_p50']:.2f}x | {r['x_etcd_p99']:.2f}x"
            if "x_etcd_ops" in r
            else "- | - | -"
        )
        out.append(
            f"| {r['system']} | {r['op']} | {r['clients']} | {r['ops_per_s']:.0f} | "
            f"{r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | {ratio} | "
            f"{_num(r.get('cpu_ms_per_op'), '.2f')} | {_num(r.get('wakeups_per_op'), '.1f')} | "
            f"{_num(r.get('peer_rpcs_per_op'), '.2f')} | "
            f"{_num(r.get('fsyncs_per_op'), '.2f')} | {r['errors']} |"
        )
    population = [r for r in rows if "batch" in r]
    if population:
        out += [
            "",
            "| population counter_add | updates per call | callers | updates/s | calls/s "
            "| p50 ms | p99 ms | CPU s/1k updates | wake-ups/update | peer RPCs/update "
            "| fsyncs/update | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in population:
            call = "Tiers.Update" if r["batch"] == 0 else "Tiers.UpdateMany"
            call += ", client, to owners" if r.get("routed") else ", raw, to any node"
            out.append(
                f"| {call} | {max(r['batch'], 1)} | {r['clients']} | {r['ops_per_s']:.0f} | "
                f"{r['calls_per_s']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                f"{_num(r.get('cpu_ms_per_op'), '.3f')} | "
                f"{_num(r.get('wakeups_per_op'), '.2f')} | "
                f"{_num(r.get('peer_rpcs_per_op'), '.2f')} | "
                f"{_num(r.get('fsyncs_per_op'), '.3f')} | {r['errors']} |"
            )
    out += [
        "",
        "| system | fsync before ack | idle CPU per node | idle wake-ups/s | keys | fill s "
        "| RSS per process after the fill (MiB) | restarted | RSS before → peak at restart (MiB) |",
        "|---|---|---:|---:|---:|---:|---|---|---|",
    ]
    for system, mem in memory.items():
        first = mem["reps"][0]
        idle = [m["idle_cpu"] for m in mem["reps"] if "idle_cpu" in m]
        idle_text = f"{statistics.median(idle) * 100:.1f}%" if idle else "-"
        woken = [m["idle_wakeups"] for m in mem["reps"] if "idle_wakeups" in m]
        idle_text += f" | {statistics.median(woken):.0f}" if woken else " | -"
        rss = ", ".join(
            f"{k} {v:.0f}" for k, v in first.get("rss_mib", first.get("peak_rss_mib", {})).items()
        )
        restart = first.get("restart")
        again = "- | -"
        if restart:
            before, peak = restart["steady_mib"], restart["restart_peak_mib"]
            again = (
                f"{restart['process']} ({restart['catch_up_s']} s to catch up) | "
                f"{before:.0f} → {peak:.0f} ({peak / before:.2f}x)"
            )
        keys = first.get("keys", "-")
        out.append(
            f"| {system} | {FSYNC[system]} | {idle_text} | {keys} | {first.get('fill_s', '-')} "
            f"| {rss or '-'} | {again} |"
        )
    return "\n".join(out)


def _find(
    rows: list[dict[str, Any]], system: str, op: str, clients: int, batch: int | None = None
) -> dict[str, Any] | None:
    for r in rows:
        if (r["system"], r["op"], r["clients"], r.get("batch")) == (system, op, clients, batch):
            return r
    return None


def targets(rows: list[dict[str, Any]], memory: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """The issue's targets, each with this run's figure and whether it is met."""
    out: list[tuple[str, str, bool]] = []

    def ratio(op: str, clients: int, goal: float, what: str, system: str = "tadpole-raft") -> None:
        r = _find(rows, system, op, clients)
        if r is not None and "x_etcd_ops" in r:
            out.append(
                (f"{what} >= {goal}x etcd", f"{r['x_etcd_ops']:.2f}x", r["x_etcd_ops"] >= goal)
            )

    ratio("put", 64, 0.5, "put at 64 clients")
    ratio("put", 256, 0.5, "put at 256 clients")
    ratio("put", 64, 0.5, "put at 64 clients, client library", "tadpole-client")
    ratio("put", 256, 0.5, "put at 256 clients, client library", "tadpole-client")
    one = _find(rows, "tadpole-raft", "put", 1)
    if one is not None and "x_etcd_p50" in one:
        out.append(
            (
                "single-client put p50 <= 3x etcd's",
                f"{one['x_etcd_p50']:.2f}x",
                one["x_etcd_p50"] <= 3,
            )
        )
    ratio("get_lin", 64, 0.7, "linearizable get at 64 clients")
    ratio("get_lin", 64, 0.7, "linearizable get at 64 clients, client library", "tadpole-client")
    ref = _find(rows, "tadpole-ref", "put", 64)
    for system, how in (("tadpole-raft", ""), ("tadpole-client", ", client library")):
        this = _find(rows, system, "put", 64)
        if this is not None and ref is not None and "cpu_ms_per_op" in this:
            share = this["cpu_ms_per_op"] / ref["cpu_ms_per_op"]
            out.append(
                (
                    f"server CPU per put at 64 clients{how} <= 0.5x the reference's",
                    f"{this['cpu_ms_per_op']:.2f} vs {ref['cpu_ms_per_op']:.2f} ms = {share:.2f}x",
                    share <= 0.5,
                )
            )
    batched = [r for r in rows if r.get("batch", 0) > 1]
    if batched:
        best = max(batched, key=lambda r: r["ops_per_s"])
        out.append(
            (
                "population batched updates >= 20,000/s",
                f"{best['ops_per_s']:,.0f}/s (batches of {best['batch']})",
                best["ops_per_s"] >= 20_000,
            )
        )
    singles = [
        r for r in rows
        if (r["system"], r["op"], r["clients"], r.get("batch")) == ("tadpole-raft", "update", 64, 0)
    ]  # fmt: skip
    # Like against like: raw one-call-per-update stubs against raw one-call-per-put
    # stubs; the client library (which sends concurrent counter adds together in
    # Tiers.UpdateEach, as it sends puts in KV.PutMany) against the client library.
    likes = ((False, "tadpole-raft", ""), (True, "tadpole-client", ", client library"))
    for routed, system, how in likes:
        single = next((r for r in singles if bool(r.get("routed")) == routed), None)
        put64 = _find(rows, system, "put", 64)
        if single is None or put64 is None:
            continue
        x = single["ops_per_s"] / put64["ops_per_s"]
        out.append(
            (
                f"population unbatched >= 3x system put at 64 clients{how}",
                f"{single['ops_per_s']:,.0f} vs {put64['ops_per_s']:,.0f}/s = {x:.2f}x",
                x >= 3,
            )
        )
    raft = memory.get("tadpole-raft")
    if raft is not None:
        idle = statistics.median(m["idle_cpu"] for m in raft["reps"])
        out.append(("idle node <= 2% of a core", f"{idle * 100:.1f}%", idle <= 0.02))
        etcd = memory.get("etcd")
        first = raft["reps"][0]
        if etcd is not None and first.get("keys") and "rss_mib" in first:
            mine = statistics.median(first["rss_mib"].values())
            theirs = statistics.median(etcd["reps"][0]["rss_mib"].values())
            out.append(
                (
                    f"steady RSS per node at {first['keys']:,} keys <= 1.2x an etcd member's",
                    f"{mine:.0f} vs {theirs:.0f} MiB = {mine / theirs:.2f}x",
                    mine / theirs <= 1.2,
                )
            )
        restart = first.get("restart")
        if restart:
            before, peak = restart["steady_mib"], restart["restart_peak_mib"]
            x = peak / before
            out.append(
                (
                    "peak RSS at restart <= 2x steady",
                    f"{peak:.0f} vs {before:.0f} MiB = {x:.2f}x",
                    x <= 2,
                )
            )
    return out


def chart(rows: list[dict[str, Any]], path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ops = sorted({r["op"] for r in rows if r["op"] in OPS}, key=OPS.index)
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


def _population(spec: str) -> list[tuple[int, int, bool]]:
    """``0x64,16x6,256x6r`` → [(0, 64, False), (16, 6, False), (256, 6, True)]: updates
    per call (0 = one ``Tiers.Update``) x concurrent callers, ``r``: through the client
    library, routed to each key's owner (else raw stubs, each call to one node)."""
    out = []
    for item in filter(None, spec.split(",")):
        routed = item.endswith("r")
        batch, _, callers = item.removesuffix("r").partition("x")
        out.append((int(batch), int(callers), routed))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.5, help="measured seconds per row")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds per row")
    parser.add_argument("--clients", default="1,16,64,256")
    parser.add_argument("--ops", default=",".join(OPS))
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--repeat", type=int, default=3, help="fresh clusters per system")
    parser.add_argument("--fill-keys", type=int, default=100_000)
    parser.add_argument(
        "--refill-keys", type=int, default=10_000, help="keys written in later repetitions"
    )
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument(
        "--idle-settle",
        type=float,
        default=15.0,
        help="seconds after the cluster serves before idle CPU is measured",
    )
    parser.add_argument(
        "--population",
        default="0x64,0x64r,1x64,16x6,256x6,256x6r",
        help="population rows, updates per call x callers (0 = Tiers.Update; r: routed by "
        "the client library); '' for none",
    )
    parser.add_argument(
        "--ref", default="", help="a checkout whose Raft tier's puts are measured in the same run"
    )
    parser.add_argument("--procs", type=int, default=2, help="load generator processes")
    parser.add_argument(
        "--py-spy", default="", help="record the Tadpole Raft leader during put@64 into DIR"
    )
    parser.add_argument("--keep", action="store_true", help="keep the data directories")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    ns = parser.parse_args()
    exit_on_sigterm()  # the finally blocks stop the nodes
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
        repeat=max(1, ns.repeat),
        refill_keys=ns.refill_keys,
        idle_seconds=ns.idle_seconds,
        idle_settle=ns.idle_settle,
        population=_population(ns.population),
        ref=os.path.abspath(ns.ref) if ns.ref else "",
    )
    for s in args.systems:
        if s not in RUNNERS or s == "tadpole-ref":
            raise SystemExit(f"unknown system {s!r}; choose from {', '.join(SYSTEMS)}")
    if args.ref:
        if not os.path.isfile(os.path.join(args.ref, "node", "main.py")):
            raise SystemExit(f"--ref {ns.ref}: not a Tadpole checkout (no node/main.py)")
        args.systems.insert(0, "tadpole-ref")
    if any(s in ("tadpole-etcd", "etcd") for s in args.systems) and find_etcd() is None:
        raise SystemExit(f"make bench needs etcd: {INSTALL_HINT}")
    args.root = tempfile.mkdtemp(prefix="tadpole-bench-")
    started = time.time()
    gen = LoadGenerator(args.procs)
    raw_rows: list[dict[str, Any]] = []
    memory: dict[str, Any] = {s: {"reps": []} for s in args.systems}
    print(
        f"256-byte values; {args.seconds} s per row after {args.warmup} s warm-up; "
        f"{args.procs} load processes; {args.repeat} repetitions (fresh clusters, systems "
        f"alternating); data in {args.root}"
    )
    try:
        for rep in range(args.repeat):
            args.rep = rep
            for system in args.systems:
                print(
                    f"== {system}, repetition {rep + 1}/{args.repeat} (fsync: {FSYNC[system]})",
                    flush=True,
                )
                t0 = time.perf_counter()
                system_rows, mem = RUNNERS[system](gen, args)
                raw_rows += system_rows
                memory[system]["reps"].append(mem)
                idle = (
                    f"idle CPU {mem['idle_cpu'] * 100:.1f}% per node; " if "idle_cpu" in mem else ""
                )
                filled = (
                    f"{mem['keys']} keys filled in {mem['fill_s']} s; RSS MiB {mem['rss_mib']}; "
                    if "rss_mib" in mem
                    else ""
                )
                print(f"   {idle}{filled}{time.perf_counter() - t0:.0f} s in all", flush=True)
    finally:
        gen.close()
        if not args.keep:
            shutil.rmtree(args.root, ignore_errors=True)
    rows = aggregate(raw_rows)
    add_ratios(rows)
    goals = targets(rows, memory)
    os.makedirs(ns.out, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    result = {
        "started": stamp,
        "wall_s": round(time.time() - started, 1),
        "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "settings": {k: v for k, v in vars(ns).items()},
        "fsync": {s: FSYNC[s] for s in args.systems},
        "rows": rows,
        "runs": raw_rows,
        "memory": memory,
        "targets": [{"target": t, "figure": f, "met": m} for t, f, m in goals],
    }
    json_path = os.path.join(ns.out, f"bench-{stamp}.json")
    with open(json_path, "w") as f:
        json.dump(result, f, indent=2)
    png_path = os.path.join(ns.out, f"bench-{stamp}.png")
    drew = chart(rows, png_path)
    print()
    print(
        f"medians of {args.repeat} repetitions; CPU = the server processes' /proc time "
        "per op over the row (warm-up included); peer RPCs and fsyncs from their /metrics"
    )
    print()
    print(markdown(rows, memory))
    if goals:
        print()
        print("| target | this run | met |")
        print("|---|---|---|")
        for target, figure, met in goals:
            print(f"| {target} | {figure} | {'yes' if met else 'NO'} |")
    print()
    for s in args.systems:
        print(f"fsync — {s}: {FSYNC[s]}")
    if args.ref:
        print(f"tadpole-ref: {args.ref}")
    print(f"\nJSON: {json_path}")
    print(
        f"chart: {png_path}"
        if drew
        else "chart: skipped (pip install -e '.[bench]' for matplotlib)"
    )
    print(f"wall time {result['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
