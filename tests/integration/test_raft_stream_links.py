"""A cluster whose Raft links use streams (``[raft] stream_links``): writes and
linearizable reads go through, the followers receive the leader's batches on
``Peer.RaftStream`` and no ``Peer.Raft`` call, and after the leader is killed the
others elect a new one over their streams and go on committing."""

from __future__ import annotations

import time
from typing import Any

import pytest

from node.dev.cluster import LocalCluster, free_base_port
from tests.integration.test_http_metrics import sample, scrape

UNARY = 'tadpole_request_duration_seconds_count{method="tadpole.v1.Peer/Raft"}'


def _unary_calls(text: str) -> float:
    return sample(text, UNARY) if UNARY + " " in text else 0.0


def test_a_cluster_on_stream_links_commits_reads_and_fails_over(
    tmp_path_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TADPOLE_RAFT_STREAM_LINKS", "true")  # the nodes inherit it
    base = free_base_port(3)
    metrics_base = free_base_port(3)
    while abs(metrics_base - base) < 10:
        metrics_base = free_base_port(3)
    root = str(tmp_path_factory.mktemp("stream-links"))
    cluster = LocalCluster(root, ["n1", "n2", "n3"], base, metrics_base_port=metrics_base)
    cluster.start()
    try:
        leader = cluster.wait_leader(30, all_up=True)
        with cluster.client(timeout=10.0) as client:
            for i in range(20):
                assert client.put(f"/stream/{i}", str(i)).revision > 0
            for i in range(20):
                kv = client.get(f"/stream/{i}")  # linearizable: a ReadIndex round each
                assert kv is not None and kv.value == str(i).encode()
        for follower in (n for n in cluster.node_ids if n != leader):
            _, text = scrape(cluster, follower)
            assert sample(text, "tadpole_raft_stream_batches_total") >= 20, follower
            assert _unary_calls(text) == 0, follower
        cluster.kill(leader)
        deadline = time.monotonic() + 30
        new = cluster.wait_leader(30)
        while new == leader and time.monotonic() < deadline:
            time.sleep(0.1)
            new = cluster.wait_leader(30)
        assert new != leader
        survivors = [n for n in cluster.node_ids if n != leader]
        with cluster.client(*survivors, timeout=10.0) as client:
            assert client.put("/stream/after", "failover").revision > 0
            kv = client.get("/stream/after")
            assert kv is not None and kv.value == b"failover"
            kv = client.get("/stream/7")
            assert kv is not None and kv.value == b"7"
        for node in survivors:
            _, text = scrape(cluster, node)
            assert _unary_calls(text) == 0, node
    finally:
        for node_id in cluster.node_ids:
            cluster.kill(node_id)
