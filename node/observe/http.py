"""Prometheus ``/metrics`` and a ``/healthz`` probe, served by the node's HTTP listener
(:mod:`node.http.app`, on when ``http_listen`` is set; ``make cluster`` sets it). Values are
read at scrape time from the running node — nothing is sampled in between —
through one custom collector on a registry of the node's own (no global
state, so several nodes can share a process in tests).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from consensus.durable import Histogram
from node.api.tiers import tier_health
from node.observe.view import Family, NodeView

log = logging.getLogger(__name__)

ROLES = ("leader", "follower", "candidate")
GOSSIP_STATES = ("alive", "suspect", "dead", "left")


class NodeCollector(Collector):
    def __init__(self, node: NodeView) -> None:
        self._node = node

    def collect(self) -> Iterator[Metric]:
        node = self._node
        node_id = node.config.node_id
        info = node.system.info()
        role = GaugeMetricFamily(
            "tadpole_system_role", "1 for this node's current system-tier role", labels=["role"]
        )
        for name in ROLES:
            role.add_metric([name], 1.0 if info.role == name else 0.0)
        yield role
        for name, value, doc in (
            ("tadpole_raft_term", info.term, "Current Raft term"),
            ("tadpole_raft_commit_index", info.commit_index, "Raft commit index"),
            ("tadpole_raft_applied_index", info.applied_index, "Raft applied index"),
            ("tadpole_raft_log_entries", info.log_entries, "Entries in the Raft journal"),
            ("tadpole_system_revision", info.revision, "System-tier revision"),
            ("tadpole_system_keys", info.keys, "Keys in the system tier"),
            ("tadpole_raft_has_quorum", 1 if info.has_quorum else 0, "1 if a majority is up"),
        ):
            yield GaugeMetricFamily(name, doc, value=float(value))
        members = GaugeMetricFamily(
            "tadpole_gossip_members", "Members by SWIM status, as this node sees them",
            labels=["status"],
        )  # fmt: skip
        views = node.gossip.members()
        for status in GOSSIP_STATES:
            members.add_metric([status], float(sum(1 for m in views if str(m.status) == status)))
        yield members
        served = CounterMetricFamily(
            "tadpole_requests", "Requests served by this node", labels=["kind"]
        )
        counts = node.metrics.local_counts()
        for kind, count in sorted(counts.items()):
            if kind != "bytes_in":
                served.add_metric([kind], float(count))
        yield served
        yield CounterMetricFamily(
            "tadpole_request_bytes", "Bytes of requests received", value=counts.get("bytes_in", 0)
        )
        if node.replication is not None:
            keys = GaugeMetricFamily("tadpole_tier_local_keys", "Keys stored here", labels=["tier"])
            under = GaugeMetricFamily(
                "tadpole_tier_under_replicated_keys",
                "Keys with fewer live owners than RF or differing on an owner",
                labels=["tier"],
            )
            hints = GaugeMetricFamily(
                "tadpole_tier_hints_pending", "Writes held for owners that were down",
                labels=["tier"],
            )  # fmt: skip
            lag = GaugeMetricFamily(
                "tadpole_tier_replica_lag_seconds", "Age of the oldest pending hint",
                labels=["tier"],
            )  # fmt: skip
            divergent = GaugeMetricFamily(
                "tadpole_tier_divergent_keys",
                "Keys the last anti-entropy round found differing from an owner again, "
                "both copies unchanged since the previous session joined them (should be 0)",
                labels=["tier"],
            )
            for row in tier_health(node.replication):
                keys.add_metric([row.tier], float(row.local_keys))
                under.add_metric([row.tier], float(row.under_replicated))
                hints.add_metric([row.tier], float(row.hints_pending))
                lag.add_metric([row.tier], float(row.oldest_hint_age_s))
                divergent.add_metric([row.tier], float(row.divergent))
            yield from (keys, under, hints, lag, divergent)
        yield from node.latency.metrics()
        for name, doc, histogram in node.histograms():
            family = HistogramMetricFamily(name, doc)
            _add_histogram(family, [], histogram)
            yield family
        for f in node.families():
            yield _family(f)
        log.debug("node %s scraped", node_id)


def _add_histogram(family: HistogramMetricFamily, labels: list[str], histogram: Histogram) -> None:
    buckets, total = histogram.snapshot()
    family.add_metric(
        labels, [("+Inf" if b == float("inf") else repr(b), c) for b, c in buckets], total
    )


def _family(f: Family) -> Metric:
    labels = list(f.labels)
    if f.kind == "histogram":
        histograms = HistogramMetricFamily(f.name, f.doc, labels=labels)
        for values, histogram in f.samples:
            assert isinstance(histogram, Histogram)
            _add_histogram(histograms, list(values), histogram)
        return histograms
    family: CounterMetricFamily | GaugeMetricFamily
    if f.kind == "counter":
        family = CounterMetricFamily(f.name, f.doc, labels=labels)
    else:
        family = GaugeMetricFamily(f.name, f.doc, labels=labels)
    for values, value in f.samples:
        assert not isinstance(value, Histogram)
        family.add_metric(list(values), float(value))
    return family


class MetricsEndpoints:
    """``/metrics`` and ``/healthz``; :mod:`node.http.app` serves them beside the API."""

    def __init__(self, node: NodeView) -> None:
        self._node = node
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(NodeCollector(node))
        # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds ...
        ProcessCollector(registry=self._registry)

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/metrics", self._metrics), web.get("/healthz", self._healthz)]

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _request: web.Request) -> web.Response:
        info = self._node.system.info()
        ok = info.role == "leader" or bool(info.leader_id)
        return web.json_response(
            {"node": self._node.config.node_id, "role": info.role, "leader": info.leader_id},
            status=200 if ok else 503,
        )
