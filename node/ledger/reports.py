"""Reports over the ledger (spec analytics): blocking SQL, run in a thread.

Each report is a table -- ``{"title", "columns", "rows", "notes"}`` -- that the CLI
prints as text or JSON:

* ``capacity``: per pool, replayed from ``resource_allocations``: allocations made
  and released, units in use now and at the peak (the most held at once), the peak
  against the pool's capacity, and a throttling recommendation;
* ``jobs``: job latency percentiles (from assignment to completion, ``job_metrics``)
  and mean efficiency, per outcome;
* ``ttl``: TTL expirations per worker type (tadpole instances as their own type);
* ``findings``: analysis findings ranked by monetization then novelty score.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine, func, select

from node.ledger.lifecycle import RESOURCES
from node.ledger.schema import (
    AnalysisFinding,
    JobMetric,
    ResourceAllocation,
    TadpoleInstance,
    Worker,
)

__all__ = ["REPORTS", "run_report"]

REPORTS = ("capacity", "jobs", "ttl", "findings")
HOT = 0.9  # peak use at or above this share of capacity: throttle or grow
COLD = 0.3  # peak use below this share: the pool is larger than it needs


def run_report(
    engine: Engine, name: str, *, capacities: Mapping[str, Mapping[str, int]], limit: int = 20
) -> dict[str, Any]:
    with engine.connect() as conn:
        if name == "capacity":
            rows = conn.execute(
                select(
                    ResourceAllocation.pool,
                    ResourceAllocation.allocated_at,
                    ResourceAllocation.released_at,
                    *(getattr(ResourceAllocation, r) for r in RESOURCES),
                )
            ).all()
            return _capacity(rows, capacities)
        if name == "jobs":
            metrics = conn.execute(
                select(JobMetric.latency_ms, JobMetric.efficiency, JobMetric.details)
            ).all()
            return _jobs(metrics)
        if name == "ttl":
            workers = conn.execute(
                select(Worker.worker_type, Worker.status, func.count()).group_by(
                    Worker.worker_type, Worker.status
                )
            ).all()
            tadpoles = conn.execute(
                select(TadpoleInstance.status, func.count()).group_by(TadpoleInstance.status)
            ).all()
            return _ttl(workers, tadpoles)
        if name == "findings":
            found = conn.execute(
                select(
                    AnalysisFinding.finding_id,
                    AnalysisFinding.title,
                    AnalysisFinding.monetization_score,
                    AnalysisFinding.novelty_score,
                    AnalysisFinding.confidence,
                )
                .order_by(
                    AnalysisFinding.monetization_score.desc().nulls_last(),
                    AnalysisFinding.novelty_score.desc().nulls_last(),
                    AnalysisFinding.finding_id,
                )
                .limit(limit)
            ).all()
            return {
                "title": "findings by monetization, then novelty score",
                "columns": ["finding", "title", "monetization", "novelty", "confidence"],
                "rows": [list(r) for r in found],
                "notes": [] if found else ["no findings recorded yet"],
            }
    raise ValueError(f"unknown report {name!r} (known: {', '.join(REPORTS)})")


def _capacity(rows: Any, capacities: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
    steps: dict[str, list[tuple[float, int, tuple[int, ...]]]] = defaultdict(list)
    made: dict[str, int] = defaultdict(int)
    released: dict[str, int] = defaultdict(int)
    for pool, allocated_at, released_at, *units in rows:
        made[pool] += 1
        steps[pool].append((allocated_at.timestamp(), 1, tuple(units)))
        if released_at is not None:
            released[pool] += 1
            # At one instant a release counts before an allocation: the units went back
            # first (a re-assignment releases, then takes).
            steps[pool].append((released_at.timestamp(), 0, tuple(-u for u in units)))
    out = []
    notes = []
    for pool in sorted(set(steps) | set(capacities)):
        now = [0] * len(RESOURCES)
        peak = [0] * len(RESOURCES)
        for _at, _order, delta in sorted(steps[pool]):
            now = [a + b for a, b in zip(now, delta, strict=True)]
            peak = [max(a, b) for a, b in zip(peak, now, strict=True)]
        cap = capacities.get(pool, {})
        shares = [p / cap[r] for r, p in zip(RESOURCES, peak, strict=True) if cap.get(r)]
        share = max(shares) if shares else math.nan
        if math.isnan(share):
            advice = "no capacity known"
        elif share >= HOT:
            advice = "throttle admissions or raise capacity"
        elif share < COLD:
            advice = "over-provisioned: capacity could shrink"
        else:
            advice = "ok"
        for i, res in enumerate(RESOURCES):
            share_of = None if not cap.get(res) else round(peak[i] / cap[res], 3)
            out.append([pool, res, cap.get(res, None), now[i], peak[i], share_of])
        peak_text = "no capacity known" if math.isnan(share) else f"peak {share:.0%} of capacity"
        notes.append(
            f"pool {pool}: {made[pool]} allocations, {released[pool]} released; "
            f"{peak_text} -> {advice}"
        )
    return {
        "title": "capacity replay per pool (from resource_allocations)",
        "columns": ["pool", "resource", "capacity", "in_use", "peak", "peak_share"],
        "rows": out,
        "notes": notes,
    }


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted ``values``."""
    rank = max(1, math.ceil(q * len(values)))
    return values[rank - 1]


def _jobs(metrics: Any) -> dict[str, Any]:
    by_outcome: dict[str, list[tuple[float, float | None]]] = defaultdict(list)
    for latency, efficiency, details in metrics:
        outcome = str((details or {}).get("outcome", "?"))
        if latency is not None:
            by_outcome[outcome].append((latency, efficiency))
    rows = []
    for outcome, items in sorted(by_outcome.items()):
        latencies = sorted(x[0] for x in items)
        effs = [x[1] for x in items if x[1] is not None]
        rows.append(
            [
                outcome,
                len(items),
                round(_percentile(latencies, 0.5), 1),
                round(_percentile(latencies, 0.9), 1),
                round(_percentile(latencies, 0.99), 1),
                round(latencies[-1], 1),
                round(sum(effs) / len(effs), 3) if effs else None,
            ]
        )
    return {
        "title": "job latency from assignment to completion, ms (job_metrics)",
        "columns": ["outcome", "jobs", "p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_efficiency"],
        "rows": rows,
        "notes": [] if rows else ["no finished jobs recorded yet"],
    }


def _ttl(workers: Any, tadpoles: Any) -> dict[str, Any]:
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for worker_type, status, n in workers:
        counts[worker_type][status or "?"] += n
    for status, n in tadpoles:
        counts["(tadpole instance)"][status or "?"] += n
    rows = []
    for kind, by_status in sorted(counts.items()):
        total = sum(by_status.values())
        expired = by_status.get("expired", 0)
        rows.append([kind, total, expired, round(expired / total, 3) if total else None])
    return {
        "title": "TTL expirations per worker type",
        "columns": ["worker_type", "spawned", "expired", "expired_share"],
        "rows": rows,
        "notes": [] if rows else ["no workers recorded yet"],
    }
