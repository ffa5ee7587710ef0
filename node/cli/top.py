"""``tadpole top``: one screen of per-node load, latency and lag, refreshed.

Every frame asks each endpoint for its ``Cluster.Status``, whose ``load`` carries the
node's cumulative per-method call counts, time and latency buckets (the same histogram
``/metrics`` exports), its CPU seconds and resident memory. A frame's rates and
quantiles are the *differences* between two samples of the same node, divided by the
node's own uptime between them, so they describe the last interval, not the process
lifetime; the first frame, with nothing before it, covers the time since each node
started. Quantiles are interpolated within a bucket as Prometheus's
``histogram_quantile`` does.

:func:`frame` is pure (samples in, rows out) so it is tested without a cluster;
:func:`run` draws with ``rich`` (imported only here, so other commands stay quick).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from node.client.types import EndpointStatus, MethodLoad, NodeStatus

__all__ = ["MethodRow", "NodeRow", "frame", "quantile", "run"]


@dataclass(frozen=True, slots=True)
class NodeRow:
    endpoint: str
    node: str  # "" when the endpoint did not answer
    role: str
    ops_per_s: float
    p50_s: float  # NaN when no call finished in the interval
    p99_s: float
    cpu_percent: float  # of one core
    rss_bytes: int
    apply_lag: int  # committed entries not yet applied here
    hints: int
    replica_lag_s: float  # age of the oldest pending hint (0: none)
    under_replicated: int
    error: str = ""


@dataclass(frozen=True, slots=True)
class MethodRow:
    method: str
    ops_per_s: float  # summed over the nodes
    p50_s: float
    p99_s: float


def quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float:
    """The ``q`` quantile of a histogram with upper ``bounds`` and per-bucket
    ``counts`` (one more than the bounds: the last is +Inf); NaN when it is empty.
    Linear within the bucket; a quantile in the +Inf bucket is the last finite bound."""
    total = sum(counts)
    if total <= 0:
        return math.nan
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            if i >= len(bounds):
                return bounds[-1] if bounds else math.nan
            lower = bounds[i - 1] if i > 0 else 0.0
            return lower + (bounds[i] - lower) * ((rank - seen) / count)
        seen += count
    return bounds[-1] if bounds else math.nan


def _delta(now: MethodLoad, before: MethodLoad | None) -> tuple[int, list[int]]:
    if before is None or before.count > now.count:  # new method, or the node restarted
        return now.count, list(now.buckets)
    return now.count - before.count, [
        a - b for a, b in zip(now.buckets, before.buckets, strict=True)
    ]


def frame(
    current: Sequence[EndpointStatus], previous: Sequence[EndpointStatus] | None
) -> tuple[list[NodeRow], list[MethodRow]]:
    """Rows for one screen: each node's activity since ``previous`` (the last frame's
    samples; None: since the node started) and each method's across the nodes."""
    before: dict[str, NodeStatus] = {}
    for r in previous or ():
        if r.status is not None:
            before[r.status.id] = r.status
    nodes: list[NodeRow] = []
    methods: dict[str, tuple[float, list[int]]] = {}
    bounds: tuple[float, ...] = ()
    for r in current:
        s = r.status
        if s is None:
            nodes.append(_unreachable(r))
            continue
        bounds = bounds or s.latency_bounds  # the method rows use the first node's
        old = before.get(s.id)
        if old is not None and old.uptime_s > s.uptime_s:  # restarted since: from its start
            old = None
        elapsed = s.uptime_s - (old.uptime_s if old is not None else 0.0)
        old_load = {m.method: m for m in old.load} if old is not None else {}
        calls = 0
        summed = [0] * (len(s.latency_bounds) + 1)
        for load in s.load:
            count, buckets = _delta(load, old_load.get(load.method))
            calls += count
            rate, acc = methods.get(load.method, (0.0, [0] * (len(bounds) + 1)))
            # Buckets of another layout (a node of another version, a bad answer) count
            # as calls but not toward the quantiles they would skew.
            if len(buckets) == len(summed):
                summed = [a + b for a, b in zip(summed, buckets, strict=True)]
            if len(buckets) == len(acc) and s.latency_bounds == bounds:
                acc = [a + b for a, b in zip(acc, buckets, strict=True)]
            methods[load.method] = (rate + (count / elapsed if elapsed > 0 else 0.0), acc)
        cpu = s.cpu_seconds - (old.cpu_seconds if old is not None else 0.0)
        hinted = [t for t in s.tiers if t.hints_pending]
        nodes.append(
            NodeRow(
                endpoint=r.endpoint,
                node=s.id,
                role=s.raft_role,
                ops_per_s=calls / elapsed if elapsed > 0 else 0.0,
                p50_s=quantile(0.5, s.latency_bounds, summed),
                p99_s=quantile(0.99, s.latency_bounds, summed),
                cpu_percent=100.0 * cpu / elapsed if elapsed > 0 else 0.0,
                rss_bytes=s.rss_bytes,
                apply_lag=max(0, s.commit_index - s.applied_index),
                hints=sum(t.hints_pending for t in s.tiers),
                replica_lag_s=max((t.oldest_hint_age_s for t in hinted), default=0.0),
                under_replicated=sum(t.under_replicated for t in s.tiers),
            )
        )
    rows = [
        MethodRow(name, rate, quantile(0.5, bounds, acc), quantile(0.99, bounds, acc))
        for name, (rate, acc) in methods.items()
        if sum(acc)
    ]
    rows.sort(key=lambda m: (-m.ops_per_s, m.method))
    return nodes, rows


def _unreachable(r: EndpointStatus) -> NodeRow:
    return NodeRow(
        r.endpoint, "", "unreachable", 0.0, math.nan, math.nan, 0.0, 0, 0, 0, 0.0, 0,
        error=str(r.error),
    )  # fmt: skip


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.1f} ms"


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB" if n else "-"


def run(
    sample: Callable[[], list[EndpointStatus]],
    every: float,
    count: int | None,
    *,
    methods_shown: int = 8,
) -> None:
    """Draw frames every ``every`` seconds, ``count`` of them (None: until Ctrl-C). On
    a terminal one screen is redrawn in place; otherwise frames are printed in turn."""
    from rich.console import Console, Group
    from rich.live import Live
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # piped: no terminal to fit, keep every column whole
        console = Console(width=160)

    def render(nodes: list[NodeRow], rows: list[MethodRow], span: str) -> Group:
        table = Table(title=f"tadpole top · {span}", title_justify="left", expand=False)
        for header in ("NODE", "ROLE", "OPS/S", "P50", "P99", "CPU", "RSS", "APPLY-LAG"):
            table.add_column(header, justify="left" if header in ("NODE", "ROLE") else "right")
        for header in ("HINTS", "REPLICA-LAG", "UNDER-REP"):
            table.add_column(header, justify="right")
        for n in nodes:
            if not n.node:
                table.add_row(n.endpoint, "[red]unreachable[/]", *[""] * 9)
                continue
            table.add_row(
                n.node,
                n.role,
                f"{n.ops_per_s:,.0f}",
                _ms(n.p50_s),
                _ms(n.p99_s),
                f"{n.cpu_percent:.0f}%",
                _mib(n.rss_bytes),
                str(n.apply_lag),
                str(n.hints),
                f"{n.replica_lag_s:.1f} s" if n.hints else "-",
                str(n.under_replicated),
            )
        busiest = Table(title="busiest methods", title_justify="left")
        for header in ("METHOD", "OPS/S", "P50", "P99"):
            busiest.add_column(header, justify="left" if header == "METHOD" else "right")
        for m in rows[:methods_shown]:
            busiest.add_row(m.method, f"{m.ops_per_s:,.0f}", _ms(m.p50_s), _ms(m.p99_s))
        return Group(table, busiest)

    previous: list[EndpointStatus] | None = None
    drawn = 0
    live = Live(console=console, auto_refresh=False) if console.is_terminal else None
    try:
        if live is not None:
            live.start()
        while count is None or drawn < count:
            current = sample()
            span = "since start" if previous is None else f"last {every:g} s"
            view = render(*frame(current, previous), span)
            if live is not None:
                live.update(view, refresh=True)
            else:
                console.print(view)
            previous, drawn = current, drawn + 1
            if count is None or drawn < count:
                time.sleep(every)
    except KeyboardInterrupt:
        pass
    finally:
        if live is not None:
            live.stop()
