"""Micro-benchmark of crdt/: merge and delta-apply throughput, encoded size.

Not a test. Run:  .venv/bin/python bench/crdt_bench.py [--json] [--quick]

Sizes follow issue 3: an OR-set of 10,000 elements spread over 5 replicas, a
256-dimension capability vector edited by 16 replicas; the other types at sizes
their tiers are expected to hold. For each type it reports

* full merge: joining the 5 (or 16) replica states into one, per second;
* delta apply: single-operation deltas joined into the full state, per second;
* grouped delta apply: the same deltas joined 100 at a time into a delta group
  first (Almeida et al. 2018, §4), then applied: per delta, per second;
* encode / decode of the full state, and its encoded bytes per element.

Everything is seeded; numbers vary only with the machine.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import crdt
from crdt import (
    CapabilityVector,
    EventLog,
    GCounter,
    GSet,
    LWWMap,
    MVRegister,
    ORMap,
    ORSet,
    PNCounter,
    Timestamp,
)


def rate(fn: Callable[[], Any], *, min_time: float = 0.3) -> float:
    """Calls per second of ``fn`` (repeated until ``min_time`` has elapsed)."""
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return n / elapsed


def per_second(items: list[Any], fn: Callable[[Any], Any]) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)
    return len(items) / (time.perf_counter() - start)


def measure(
    name: str,
    size: str,
    elements: int,
    replicas: list[Any],
    deltas: list[Any],
    target: Any,
    min_time: float,
) -> dict[str, Any]:
    full = functools.reduce(lambda a, b: a.merge(b), replicas)
    blob = full.to_bytes()

    def apply_all() -> None:
        state = target
        for delta in deltas:
            state = state.apply_delta(delta)

    start = time.perf_counter()
    apply_all()
    delta_rate = len(deltas) / (time.perf_counter() - start)

    # Delta groups (Almeida et al. 2018, §4): join 100 small deltas, apply the group once.
    start = time.perf_counter()
    state = target
    for i in range(0, len(deltas), 100):
        state = state.apply_delta(functools.reduce(lambda a, b: a.merge(b), deltas[i : i + 100]))
    group_rate = len(deltas) / (time.perf_counter() - start)
    delta_bytes = sum(len(d.to_bytes()) for d in deltas) / len(deltas)
    return {
        "type": name,
        "size": size,
        "replicas": len(replicas),
        "full_merge_per_s": rate(
            lambda: functools.reduce(lambda a, b: a.merge(b), replicas), min_time=min_time
        ),
        "delta_apply_per_s": delta_rate,
        "grouped_delta_per_s": group_rate,
        "encode_per_s": rate(full.to_bytes, min_time=min_time),
        "decode_per_s": rate(lambda: crdt.decode(blob), min_time=min_time),
        "encoded_bytes": len(blob),
        "bytes_per_element": len(blob) / max(elements, 1),
        "delta_bytes": delta_bytes,
    }


def bench_orset(n_elems: int, n_deltas: int, min_time: float) -> dict[str, Any]:
    rng = random.Random(1)
    names = [f"node-{i}" for i in range(5)]
    replicas = []
    per = n_elems // 5
    for i, name in enumerate(names):
        s = ORSet()
        s = s.apply_delta(s.add_all(name, (f"agent-{i * per + j:06d}" for j in range(per))))
        replicas.append(s)
    full = functools.reduce(ORSet.merge, replicas)
    source, deltas = full, []
    for _ in range(n_deltas):
        element = f"agent-{rng.randrange(n_elems * 11 // 10):06d}"
        d = source.remove(element) if rng.random() < 0.5 else source.add("node-0", element)
        source = source.apply_delta(d)
        deltas.append(d)
    return measure("ORSet", f"{n_elems} elements", n_elems, replicas, deltas, full, min_time)


def bench_capvec(n_replicas: int, n_deltas: int, min_time: float) -> dict[str, Any]:
    rng = random.Random(2)
    names = [f"agent-{i:02d}" for i in range(n_replicas)]
    replicas = []
    for name in names:
        v = CapabilityVector()
        v = v.apply_delta(v.add_many(name, {d: rng.uniform(-1, 1) for d in range(256)}))
        replicas.append(v)
    full = functools.reduce(CapabilityVector.merge, replicas)
    source, deltas = full, []
    for _ in range(n_deltas):
        name = rng.choice(names)
        d = source.add(name, rng.randrange(256), rng.uniform(-0.1, 0.1))
        source = source.apply_delta(d)
        deltas.append(d)
    row = measure("CapabilityVector", "256 dims", 256, replicas, deltas, full, min_time)
    row["value_per_s"] = rate(
        lambda: CapabilityVector.merge(full, deltas[0]).value(), min_time=min_time
    )
    return row


def bench_counters(n_nodes: int, min_time: float) -> list[dict[str, Any]]:
    names = [f"node-{i:03d}" for i in range(n_nodes)]
    groups = [names[i::5] for i in range(5)]
    rows = []
    g_reps = [GCounter({n: 1000 + i for i, n in enumerate(g)}) for g in groups]
    g_full = functools.reduce(GCounter.merge, g_reps)
    g_deltas, src = [], g_full
    for i in range(2000):
        d = src.increment(names[i % n_nodes])
        src = src.apply_delta(d)
        g_deltas.append(d)
    rows.append(
        measure("GCounter", f"{n_nodes} nodes", n_nodes, g_reps, g_deltas, g_full, min_time)
    )
    p_reps = [PNCounter({n: 50 for n in g}, {n: 7 for n in g}) for g in groups]
    p_full = functools.reduce(PNCounter.merge, p_reps)
    p_deltas, psrc = [], p_full
    for i in range(2000):
        d = psrc.decrement(names[i % n_nodes]) if i % 2 else psrc.increment(names[i % n_nodes])
        psrc = psrc.apply_delta(d)
        p_deltas.append(d)
    rows.append(
        measure("PNCounter", f"{n_nodes} nodes", n_nodes, p_reps, p_deltas, p_full, min_time)
    )
    return rows


def bench_gset(n: int, min_time: float) -> dict[str, Any]:
    reps = [GSet(frozenset(f"cap-{i:06d}" for i in range(k, n, 5))) for k in range(5)]
    full = functools.reduce(GSet.merge, reps)
    deltas = [full.add(f"new-{i}") for i in range(2000)]
    return measure("GSet", f"{n} elements", n, reps, deltas, full, min_time)


def bench_mvreg(min_time: float) -> dict[str, Any]:
    reps = [
        MVRegister().assign(f"node-{i}", {"endpoint": f"10.0.0.{i}", "port": 7000 + i})
        for i in range(5)
    ]
    full = functools.reduce(MVRegister.merge, reps)
    deltas, src = [], full
    for i in range(2000):
        d = src.assign(f"node-{i % 5}", {"rev": i})
        src = src.apply_delta(d)
        deltas.append(d)
    return measure("MVRegister", "5 concurrent values", 5, reps, deltas, full, min_time)


def bench_ormap(n_keys: int, min_time: float) -> dict[str, Any]:
    reps = []
    for r in range(5):
        m = ORMap()
        name = f"node-{r}"
        for k in range(r, n_keys, 5):
            m = m.apply_delta(
                m.update(name, f"job-{k:05d}", lambda c, n=name: c.increment(n), GCounter())
            )
        reps.append(m)
    full = functools.reduce(ORMap.merge, reps)
    rng = random.Random(3)
    deltas, src = [], full
    for _ in range(500):
        key = f"job-{rng.randrange(n_keys):05d}"
        d = (
            src.remove(key)
            if rng.random() < 0.2
            else src.update("node-0", key, lambda c: c.increment("node-0"), GCounter())
        )
        src = src.apply_delta(d)
        deltas.append(d)
    return measure("ORMap[GCounter]", f"{n_keys} keys", n_keys, reps, deltas, full, min_time)


def bench_lwwmap(n_keys: int, min_time: float) -> dict[str, Any]:
    reps = []
    for r in range(5):
        entries = LWWMap()
        for k in range(r, n_keys, 5):
            entries = entries.apply_delta(
                entries.put(
                    f"mesh-{k:05d}",
                    {"members": k % 17, "hash": "ab" * 8},
                    Timestamp(1_700_000_000_000_000_000 + k),
                    f"node-{r}",
                )
            )
        reps.append(entries)
    full = functools.reduce(LWWMap.merge, reps)
    deltas = [
        full.put(f"mesh-{i % n_keys:05d}", {"members": i}, Timestamp(1_800_000_000 + i), "node-0")
        for i in range(2000)
    ]
    return measure("LWWMap", f"{n_keys} keys", n_keys, reps, deltas, full, min_time)


def bench_eventlog(n_entries: int, min_time: float) -> dict[str, Any]:
    base = 1_700_000_000_000_000_000
    reps = []
    for r in range(5):
        log = EventLog()
        for i in range(r, n_entries, 5):
            log = log.apply_delta(
                log.append(
                    Timestamp(base + i * 1000),
                    f"node-{r}",
                    f"evt-{i:07d}",
                    {"job": i % 97, "kind": "started"},
                )
            )
        reps.append(log)
    full = functools.reduce(EventLog.merge, reps)
    deltas = [
        full.append(Timestamp(base + 10**12 + i), "node-1", f"new-{i}", {"job": i})
        for i in range(2000)
    ]
    return measure("EventLog", f"{n_entries} entries", n_entries, reps, deltas, full, min_time)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, shorter timing")
    args = parser.parse_args()
    min_time = 0.1 if args.quick else 0.5
    n = 2_000 if args.quick else 10_000
    rows = [
        bench_orset(n, 500 if args.quick else 2000, min_time),
        bench_capvec(16, 500 if args.quick else 2000, min_time),
        *bench_counters(100, min_time),
        bench_gset(n, min_time),
        bench_mvreg(min_time),
        bench_ormap(n // 10, min_time),
        bench_lwwmap(n, min_time),
        bench_eventlog(n, min_time),
    ]
    if args.json:
        print(json.dumps({"python": platform.python_version(), "rows": rows}, indent=2))
        return
    print(f"crdt bench — Python {platform.python_version()} on {platform.machine()}")
    head = (
        f"{'type':<17}{'size':<19}{'reps':>5}{'merge/s':>10}{'delta/s':>10}{'grp d/s':>10}"
        f"{'enc/s':>9}{'dec/s':>9}{'bytes':>9}{'B/elem':>8}{'B/delta':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['type']:<17}{r['size']:<19}{r['replicas']:>5}{r['full_merge_per_s']:>10.0f}"
            f"{r['delta_apply_per_s']:>10.0f}{r['grouped_delta_per_s']:>10.0f}"
            f"{r['encode_per_s']:>9.0f}{r['decode_per_s']:>9.0f}"
            f"{r['encoded_bytes']:>9}{r['bytes_per_element']:>8.1f}{r['delta_bytes']:>8.0f}"
        )
    cap = next(r for r in rows if r["type"] == "CapabilityVector")
    print(f"\nCapabilityVector value() (sum 16x256 + float32 pack): {cap['value_per_s']:.0f}/s")


if __name__ == "__main__":
    main()
