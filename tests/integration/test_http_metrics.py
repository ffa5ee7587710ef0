"""Prometheus /metrics and /healthz on real nodes."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest

from node.pb import tadpole_pb2 as pb
from tests.integration.conftest import free_base_port

pytestmark = pytest.mark.integration


def scrape(address: str, path: str = "/metrics") -> tuple[int, str]:
    with urllib.request.urlopen(f"http://{address}{path}", timeout=5) as resp:
        return resp.status, resp.read().decode()


def sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exposed")


def test_metrics_reflect_the_node(stubs: Any, tmp_path_factory: Any) -> None:
    from node.dev.cluster import LocalCluster

    root = tmp_path_factory.mktemp("metrics-cluster")
    base = free_base_port(3)
    metrics_base = free_base_port(3)
    while abs(metrics_base - base) < 10:
        metrics_base = free_base_port(3)
    cluster = LocalCluster(str(root), ["n1", "n2", "n3"], base, metrics_base_port=metrics_base)
    cluster.start()
    try:
        leader = cluster.wait_leader(30, all_up=True)
        address = cluster.metrics_address(leader)
        assert address is not None
        status, text = scrape(address)
        assert status == 200
        assert sample(text, 'tadpole_system_role{role="leader"}') == 1.0
        before = sample(text, 'tadpole_requests_total{kind="kv_writes"}') if "kv_writes" in text \
            else 0.0  # fmt: skip
        stub = stubs(cluster.addresses[leader])
        for i in range(3):
            stub.kv.Put(pb.PutRequest(key=f"m{i}", value=b"v"), timeout=5)
        _, text = scrape(address)
        assert sample(text, 'tadpole_requests_total{kind="kv_writes"}') == before + 3
        assert sample(text, "tadpole_system_revision") >= 3
        assert sample(text, 'tadpole_tier_hints_pending{tier="population"}') == 0
        put = 'method="tadpole.v1.KV/Put"'
        assert sample(text, f"tadpole_request_duration_seconds_count{{{put}}}") >= 3
        assert sample(text, f'tadpole_request_duration_seconds_bucket{{le="+Inf",{put}}}') >= 3
        assert sample(text, f"tadpole_request_duration_seconds_sum{{{put}}}") > 0
        assert sample(text, "process_resident_memory_bytes") > 0
        # Durability: the leader fsynced its journal for those writes; a CRDT-tier write
        # is one group commit of the tier store on its owners.
        fsyncs = sample(text, "tadpole_raft_journal_fsync_seconds_count")
        assert fsyncs >= 3 and sample(text, "tadpole_raft_journal_fsync_seconds_sum") > 0
        assert sample(text, 'tadpole_raft_journal_fsync_seconds_bucket{le="+Inf"}') == fsyncs
        assert sample(text, "tadpole_raft_commit_seconds_count") >= 3  # proposed here
        assert sample(text, "tadpole_raft_apply_seconds_count") >= 3
        assert sample(text, "tadpole_raft_snapshot_seconds_count") == 0  # none taken yet
        stub.tiers.Update(
            pb.TierUpdateRequest(tier="metrics", key="m/x", counter_add=pb.CounterAdd(amount=1)),
            timeout=5,
        )  # the metrics tier: every node is an owner, the leader included
        _, text = scrape(address)
        assert sample(text, "tadpole_store_commit_seconds_count") >= 1
        assert sample(text, "tadpole_store_commit_items_sum") >= 1
        code, body = scrape(address, "/healthz")
        assert code == 200 and leader in body
    finally:
        for node_id in cluster.node_ids:
            cluster.kill(node_id)
