"""Run chaos against a real cluster and check the history.

    python -m tests.chaos.runner --duration 60 --faults kill-leader,partition-leader \\
        --seed 42 --nodes 3 [--per-fault] [--clients 8] [--stale-reads]

One run: start N nodes (own network namespaces when root, else loopback), run the
register workload and the nemesis together for ``--duration`` seconds, heal
everything, read every key back, then check linearizability (history plus the
read-back, which is also the exact lost-write check), the lost-write rule, and
replica convergence (every node's local state equals the read-back). With
``--per-fault`` every fault gets its own run of ``--duration`` seconds with seed
``seed + i``; every run prints its own seed and the command that repeats it.

The seed fixes the fault schedule (which fault, when, on which role, how long)
and every client's operation mix; thread and network timing is the machine's, so
a failing seed reproduces the same schedule, and usually the failure.

A run that is not clean leaves its evidence in ``.chaos-runs/<seed>-<time>/``:
node logs and data dirs, ``history.jsonl`` (re-check with ``History.load``),
``events.json`` (the faults) and ``summary.txt``.

Exit status: 0 if every run was clean, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import math
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from node.client.errors import TadpoleError
from tests.chaos import netns
from tests.chaos.checkers import (
    CollectionResult,
    CounterResult,
    RunSummary,
    check_counter_history,
    check_log_history,
    check_lost_writes,
    check_sessions,
    check_set_history,
    summarise,
    with_final_reads,
)
from tests.chaos.cluster import FSYNC_SHIM_ENV, ChaosCluster
from tests.chaos.history import History, Op, Value
from tests.chaos.linearizability import check_linearizable
from tests.chaos.nemesis import FAULTS, Event, Nemesis, unavailable_faults
from tests.chaos.workload import (
    Workload,
    WorkloadConfig,
    converged_values,
    copies_settled,
    existing_agents,
    read_back,
    replica_values,
)

log = logging.getLogger(__name__)

DEFAULT_OUT = ".chaos-runs"
LOG_WARNINGS_SHOWN = 8  # per node, in the report of a run that is not clean
WRITE_KINDS = ("write", "cas")


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    duration_s: float = 30.0
    faults: tuple[str, ...] = ()
    seed: int = 0
    nodes: int = 3
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    # None = namespaces when root, loopback otherwise; False forces loopback.
    use_netns: bool | None = None
    out_dir: str = DEFAULT_OUT
    # Seconds between faults (seeded uniform).
    gap_s: tuple[float, float] = (0.5, 2.0)
    # Keep going past the duration until this many faults were injected (for the
    # failover trials); capped at ten times the duration.
    min_faults: int = 0

    def command(self) -> str:
        parts = [
            "python -m tests.chaos.runner",
            f"--duration {self.duration_s:g}",
            f"--faults {','.join(self.faults) or 'none'}",
            f"--seed {self.seed}",
            f"--nodes {self.nodes}",
            f"--clients {self.workload.clients}",
        ]
        if self.workload.stale_reads:
            parts.append("--stale-reads")
        if self.min_faults:
            parts.append(f"--min-faults {self.min_faults}")
        if self.use_netns is False:
            parts.append("--no-netns")
        return " ".join(parts)


@dataclass
class RunResult:
    config: RunConfig
    summary: RunSummary
    events: list[Event]
    skipped: dict[str, str]
    errors: list[str]
    divergence: list[str]
    failover_s: list[float]
    netns: bool
    run_dir: str | None = None
    # Longest stretch of the run in which no operation succeeded, seconds.
    longest_gap_s: float = 0.0

    @property
    def clean(self) -> bool:
        return self.summary.clean and not self.divergence and not self.errors

    @property
    def heal_s(self) -> list[float]:
        return [e.heal_s for e in self.events if e.heal_s is not None]

    @property
    def catchup_s(self) -> list[float]:
        return [e.catchup_s for e in self.events if e.catchup_s is not None]


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0-100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def failover_times(history: History, events: Sequence[Event]) -> list[float]:
    """Per kill-leader event: seconds from the kill to the first acknowledged write
    invoked after it (an upper bound by at most one write's latency). Sets every
    event's ``first_ok_s``, the same measure for any fault (time to first success)."""
    acks = sorted(
        (op.invoke_ns, op.complete_ns)
        for op in history
        if op.kind in WRITE_KINDS and op.outcome == "ok" and op.complete_ns is not None
    )
    out: list[float] = []
    for ev in events:
        after = [c for i, c in acks if i >= ev.start_ns]
        if not after:
            continue
        ev.first_ok_s = (min(after) - ev.start_ns) / 1e9
        if ev.fault == "kill-leader":
            ev.failover_s = ev.first_ok_s
            out.append(ev.failover_s)
    return out


def longest_gap(history: History | Sequence[Op]) -> float:
    """The longest time, in seconds, between the first invocation and the first
    success, between two successive successes, or from the last success to the last
    completion: the worst unavailability window a client saw."""
    ops = list(history)
    if not ops:
        return 0.0
    start = min(op.invoke_ns for op in ops)
    end = max(op.complete_ns or op.invoke_ns for op in ops)
    oks = sorted(op.complete_ns for op in ops if op.outcome == "ok" and op.complete_ns)
    marks = [start, *oks, end]
    return max(b - a for a, b in itertools.pairwise(marks)) / 1e9


def _free_base_port(count: int) -> int:
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 60_000, 10)
        try:
            for port in range(base + 1, base + count + 1):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free loopback port range")


async def _drive(
    workload: Workload, nemesis: Nemesis | None, duration_s: float, min_faults: int = 0
) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(workload.run(stop))
    if nemesis is not None:
        nemesis.start()
    done, _ = await asyncio.wait({task}, timeout=duration_s)
    cap = time.monotonic() + 9 * duration_s
    while not done and nemesis is not None and len(nemesis.events) < min_faults:
        if time.monotonic() > cap:
            break
        done, _ = await asyncio.wait({task}, timeout=0.5)
    if nemesis is not None:
        await asyncio.to_thread(nemesis.stop)
    stop.set()
    if not done:
        await asyncio.wait_for(task, timeout=workload.config.op_timeout_s * 4 + 10)
    task.result()  # a workload bug surfaces here


async def _converge(
    cluster: ChaosCluster, keys: Sequence[str], final: dict[str, Value]
) -> list[str]:
    """Wait until every node applied the same index, then compare local states."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        st = [cluster.status(n) for n in cluster.node_ids]
        if all(s is not None for s in st) and len({s.applied_index for s in st if s}) == 1:
            break
        await asyncio.sleep(0.1)
    problems = []
    for node_id, address in cluster.addresses.items():
        for attempt in range(100):  # a fresh channel may share a subchannel in back-off
            try:
                local = await replica_values(
                    address, keys, credentials=cluster.client_credentials()
                )
                break
            except TadpoleError:
                if attempt == 99:
                    raise
                await asyncio.sleep(0.2)
        for key in keys:
            if local.get(key) != final.get(key):
                problems.append(
                    f"{node_id}: key {key!r} is {local.get(key)!r} locally, "
                    f"{final.get(key)!r} by linearizable read"
                )
    return problems


def run(config: RunConfig, *, echo: bool = True) -> RunResult:
    """One chaos run; never leaves processes or namespaces behind."""
    say = print if echo else (lambda *_a, **_k: None)
    say(f"== chaos run seed={config.seed} faults={','.join(config.faults) or 'none'} "
        f"duration={config.duration_s:g}s nodes={config.nodes}")  # fmt: skip
    say(f"   reproduce: {config.command()}")
    can_net, why_not = netns.available()
    use_net = can_net if config.use_netns is None else (config.use_netns and can_net)
    skipped = unavailable_faults(list(config.faults), have_net=use_net)
    if config.use_netns is not False and not can_net:
        skipped = {f: f"{r} ({why_not})" for f, r in skipped.items()}
    for fault, reason in skipped.items():
        say(f"   SKIPPED {fault}: {reason}")
    faults = [f for f in config.faults if f not in skipped]

    ids = [f"n{i + 1}" for i in range(config.nodes)]
    root = tempfile.mkdtemp(prefix="tadpole-chaos-")
    net = netns.Netns(ids) if use_net else None
    cluster = ChaosCluster(
        root, ids, 0 if net else _free_base_port(len(ids)), net=net, env=dict(FSYNC_SHIM_ENV)
    )
    history = History()
    rng = random.Random(config.seed)
    nemesis = (
        Nemesis(cluster, faults, random.Random(rng.getrandbits(64)), gap_s=config.gap_s)
        if faults
        else None
    )
    events: list[Event] = []
    errors: list[str] = []
    divergence: list[str] = []
    final: dict[str, Value] = {}
    crdt_final: dict[str, Any] = {}  # population key -> its value after the heal
    workload = Workload(
        list(cluster.addresses.values()) if net is None else [], history, config.workload,
        seed=rng.getrandbits(32),
    )  # fmt: skip
    keep = False
    try:
        if net is not None:
            net.create()
            workload.endpoints = list(cluster.addresses.values())
        cluster.start()  # makes its CA and the client certificate the workload presents
        workload.credentials = credentials = cluster.client_credentials()
        cluster.wait_healthy(60)
        asyncio.run(_drive(workload, nemesis, config.duration_s, config.min_faults))
        history.close()
        if nemesis is not None:
            events, errors = nemesis.events, list(nemesis.errors)
        # Final heal: no rules, nothing paused, everyone up, one leader.
        if net is not None:
            net.heal()
        cluster.node_env.clear()
        cluster.revive_all()
        cluster.wait_healthy(60)
        keys = sorted(workload.keys_used)
        endpoints = list(cluster.addresses.values())
        final = asyncio.run(read_back(endpoints, keys, credentials=credentials))
        divergence = asyncio.run(_converge(cluster, keys, final))
        crdt_keys = [*workload.counter_keys(), *workload.set_keys(), *workload.log_keys()]
        if crdt_keys:
            crdt_final, split = asyncio.run(
                converged_values(endpoints, crdt_keys, credentials=credentials)
            )
            divergence += split
        if crdt_keys or workload.session_agents:
            agents = asyncio.run(
                existing_agents(endpoints, workload.session_agents, credentials=credentials)
            )
            present = sum(v is not None for v in crdt_final.values())
            expect = {"population": present, "agent": agents, "mesh": 0, "metrics": 0}
            divergence += asyncio.run(copies_settled(endpoints, expect, credentials=credentials))
    except Exception as exc:  # the run failed; report it as such and go on with the next
        keep = True
        log.exception("run seed %d aborted", config.seed)
        errors.append(f"run aborted: {type(exc).__name__}: {exc}")
        history.close()
    except BaseException:  # interrupted: clean up (finally) and stop
        keep = True
        history.close()
        raise
    finally:
        try:
            register = History(_register_ops(history))
            lin = check_linearizable(with_final_reads(register, final)) if final else None
            lost = check_lost_writes(register, final) if final else None
            counters, collections = _check_crdts(history, workload, crdt_final)
            summary = summarise(
                history,
                linearizability=lin,
                lost_writes=lost,
                counters=counters,
                collections=collections,
                sessions=check_sessions(history),
            )
            result = RunResult(
                config, summary, events, skipped, errors, divergence,
                failover_times(history, events), net is not None,
                longest_gap_s=longest_gap(history),
            )  # fmt: skip
            if keep or not result.clean:
                result.run_dir = _save(result, history, cluster, final)
        finally:
            cluster.kill_all()
            if net is not None:
                net.destroy()
            shutil.rmtree(root, ignore_errors=True)
    _report(result, say)
    return result


def _register_ops(history: History) -> list[Op]:
    """The register (read/write/cas) part of a history; CRDT updates are checked apart."""
    return [op for op in history if op.kind in ("read", "write", "cas")]


def _check_crdts(
    history: History, workload: Workload, final: dict[str, Any]
) -> tuple[list[CounterResult], list[CollectionResult]]:
    """Check the counters, sets and logs whose converged values were read back."""
    counters = [
        check_counter_history(history, key, int(final[key] or 0))
        for key in workload.counter_keys()
        if key in final
    ]
    collections = [
        check_set_history(history, key, final[key] or [])
        for key in workload.set_keys()
        if key in final
    ]
    collections += [
        check_log_history(
            history, key, [e["entry_id"] for e in (final[key] or {}).get("entries", [])]
        )
        for key in workload.log_keys()
        if key in final
    ]
    return counters, collections


def _save(
    result: RunResult, history: History, cluster: ChaosCluster, final: dict[str, Value]
) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = os.path.join(result.config.out_dir, f"{result.config.seed}-{stamp}")
    cluster.collect(dest)
    history.save(os.path.join(dest, "history.jsonl"))
    with open(os.path.join(dest, "events.json"), "w") as f:
        json.dump([e.to_json() for e in result.events], f, indent=1)
    with open(os.path.join(dest, "final.json"), "w") as f:
        json.dump(final, f, indent=1, sort_keys=True)
    with open(os.path.join(dest, "summary.txt"), "w") as f:
        f.write(f"reproduce: {result.config.command()}\n{_describe(result)}\n")
    return dest


def _describe(r: RunResult) -> str:
    lines = [r.summary.format()]
    lines += [f"divergence: {d}" for d in r.divergence]
    lines += [f"error: {e}" for e in r.errors]
    return "\n".join(lines)


def _report(r: RunResult, say: object) -> None:
    out = say if callable(say) else print
    verdict = "CLEAN" if r.clean else "FAILED"
    out(f"   {verdict} seed={r.config.seed} network={'netns' if r.netns else 'loopback'} "
        f"faults injected={len(r.events)}")  # fmt: skip
    out("   " + _describe(r).replace("\n", "\n   "))
    for ev in r.events:
        first = "" if ev.first_ok_s is None else f"first ack write after {ev.first_ok_s:.2f} s"
        said = "; ".join(x for x in (ev.detail.lstrip("; "), first) if x)
        if said:
            out(f"   fault {ev.fault} on {ev.node}: {said}")
    if r.failover_s:
        out(f"   failover: n={len(r.failover_s)} p50={percentile(r.failover_s, 50):.3f}s "
            f"p99={percentile(r.failover_s, 99):.3f}s")  # fmt: skip
    if r.run_dir:
        out(f"   evidence saved in {r.run_dir}")
        # CI keeps only this output: the nodes' own last complaints travel with it.
        for node, lines in node_warnings(r.run_dir).items():
            for line in lines:
                out(f"   {node} log: {line}")


def node_warnings(run_dir: str, last: int = LOG_WARNINGS_SHOWN) -> dict[str, list[str]]:
    """The last ``last`` WARNING and ERROR lines of each node's log saved in ``run_dir``
    (first line of each record, cut at 300 characters)."""
    found: dict[str, list[str]] = {}
    for node in sorted(os.listdir(run_dir)):
        path = os.path.join(run_dir, node, "node.log")
        if not os.path.isfile(path):
            continue
        with open(path, errors="replace") as f:
            lines = [ln.rstrip()[:300] for ln in f if " WARNING " in ln or " ERROR " in ln]
        if lines:
            found[node] = lines[-last:]
    return found


# -- summary table -----------------------------------------------------------------


def table(results: Sequence[RunResult]) -> str:
    rows: dict[str, list[RunResult]] = {}
    for r in results:
        rows.setdefault(",".join(r.config.faults) or "none", []).append(r)
    head = (
        f"{'fault':<26} {'runs':>4} {'faults':>6} {'ops':>7} {'ok':>6} {'fail':>6} "
        f"{'unknown':>7} {'violations':>10} {'lost':>5} {'crdt':>7} {'diverged':>8} "
        f"{'max_gap':>7} {'first_ok':>8}  seeds / notes"
    )
    lines = [head, "-" * len(head)]
    for name, rs in rows.items():
        outcomes = {
            k: sum(r.summary.by_outcome.get(k, 0) for r in rs) for k in ("ok", "fail", "unknown")
        }
        notes = " ".join(str(r.config.seed) for r in rs)
        skipped = {s for r in rs for s in r.skipped}
        if skipped:
            notes += f" (skipped: {', '.join(sorted(skipped))})"
        first_ok = [e.first_ok_s for r in rs for e in r.events if e.first_ok_s is not None]
        bad = [r for r in rs if not r.clean]
        if bad:
            notes += f" FAILED: {' '.join(str(r.config.seed) for r in bad)}"
        lines.append(
            f"{name:<26} {len(rs):>4} {sum(len(r.events) for r in rs):>6} "
            f"{sum(r.summary.ops for r in rs):>7} {outcomes['ok']:>6} {outcomes['fail']:>6} "
            f"{outcomes['unknown']:>7} {sum(r.summary.violations for r in rs):>10} "
            f"{sum(r.summary.lost_writes for r in rs):>5} "
            f"{sum(r.summary.crdt_violations for r in rs):>7} "
            f"{sum(len(r.divergence) for r in rs):>8} "
            f"{max(r.longest_gap_s for r in rs):>6.2f}s "
            f"{f'{max(first_ok):.2f}s' if first_ok else '-':>8}  {notes}"
        )
    failover = [x for r in results for x in r.failover_s]
    heal = [x for r in results for x in r.heal_s]
    catchup = [x for r in results for x in r.catchup_s]
    for label, xs in (("failover (kill leader -> next ack)", failover),
                      ("heal (partition healed -> all caught up)", heal),
                      ("catch-up (restarted empty)", catchup)):  # fmt: skip
        if xs:
            lines.append(
                f"{label}: n={len(xs)} p50={percentile(xs, 50):.3f}s "
                f"p99={percentile(xs, 99):.3f}s max={max(xs):.3f}s"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos.runner", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--duration", type=float, default=30.0, help="seconds per run (30)")
    p.add_argument(
        "--faults", default="all", help=f"comma list, 'all' or 'none'; known: {', '.join(FAULTS)}"
    )
    p.add_argument("--seed", type=int, default=None, help="base seed (default: random, printed)")
    p.add_argument("--nodes", type=int, choices=(3, 5), default=3)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--keys", type=int, default=4)
    p.add_argument("--per-fault", action="store_true", help="one run per fault (seed + i)")
    p.add_argument("--stale-reads", action="store_true",
                   help="broken workload: serializable reads checked as linearizable"
                        " (must FAIL)")  # fmt: skip
    p.add_argument("--min-faults", type=int, default=0,
                   help="keep a run going until this many faults were injected")  # fmt: skip
    p.add_argument("--failover-trials", type=int, default=0,
                   help="add a kill-leader run with at least this many kills")  # fmt: skip
    p.add_argument("--no-netns", action="store_true", help="loopback only (no partition faults)")
    p.add_argument("--out", default=DEFAULT_OUT, help="where failed runs are saved")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    if args.faults == "all":
        faults = list(FAULTS)
    elif args.faults in ("none", ""):
        faults = []
    else:
        faults = [f.strip() for f in args.faults.split(",") if f.strip()]
        unavailable_faults(faults, have_net=True)  # raises on unknown names
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    print(f"chaos: base seed {seed}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup
    wl = WorkloadConfig(clients=args.clients, keys=args.keys, stale_reads=args.stale_reads)
    groups = (
        [([f], args.min_faults) for f in faults] if args.per_fault else [(faults, args.min_faults)]
    )
    if args.failover_trials:
        groups.append((["kill-leader"], args.failover_trials))
    results = []
    for i, (group, min_faults) in enumerate(groups):
        cfg = RunConfig(
            duration_s=args.duration, faults=tuple(group), seed=seed + i, nodes=args.nodes,
            workload=wl, use_netns=False if args.no_netns else None,
            out_dir=args.out, min_faults=min_faults,
        )  # fmt: skip
        results.append(run(cfg))
    print()
    print(table(results))
    return 0 if all(r.clean for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
