"""Prometheus /metrics and /healthz on real nodes."""

from __future__ import annotations

import time
import urllib.request
from typing import Any

import grpc
import pytest

from node.config import NodeConfig
from node.dev.cluster import LocalCluster
from node.pb import tadpole_pb2 as pb
from tests.integration.conftest import free_base_port

pytestmark = pytest.mark.integration


def scrape(cluster: LocalCluster, node_id: str, path: str = "/metrics") -> tuple[int, str]:
    url = cluster.http_url(node_id, path)
    with urllib.request.urlopen(url, context=cluster.http_context(), timeout=5) as resp:
        return resp.status, resp.read().decode()


def sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exposed")


def test_metrics_reflect_the_node(stubs: Any, tmp_path_factory: Any) -> None:
    root = tmp_path_factory.mktemp("metrics-cluster")
    base = free_base_port(3)
    metrics_base = free_base_port(3)
    while abs(metrics_base - base) < 10:
        metrics_base = free_base_port(3)
    cluster = LocalCluster(str(root), ["n1", "n2", "n3"], base, metrics_base_port=metrics_base)
    cluster.start()
    try:
        leader = cluster.wait_leader(30, all_up=True)
        status, text = scrape(cluster, leader)
        assert status == 200
        assert sample(text, 'tadpole_system_role{role="leader"}') == 1.0
        before = sample(text, 'tadpole_requests_total{kind="kv_writes"}') if "kv_writes" in text \
            else 0.0  # fmt: skip
        stub = stubs(cluster, leader)
        for i in range(3):
            stub.kv.Put(pb.PutRequest(key=f"m{i}", value=b"v"), timeout=5)
        _, text = scrape(cluster, leader)
        assert sample(text, 'tadpole_requests_total{kind="kv_writes"}') == before + 3
        assert sample(text, "tadpole_system_revision") >= 3
        assert sample(text, 'tadpole_tier_hints_pending{tier="population"}') == 0
        put = 'method="tadpole.v1.KV/Put"'
        assert sample(text, f"tadpole_request_duration_seconds_count{{{put}}}") >= 3
        assert sample(text, f'tadpole_request_duration_seconds_bucket{{le="+Inf",{put}}}') >= 3
        assert sample(text, f"tadpole_request_duration_seconds_sum{{{put}}}") > 0
        assert sample(text, "process_resident_memory_bytes") > 0
        # Garbage collection: young collections every gc_young_threshold allocations,
        # not Python's 700, and what the node keeps for good (modules, servers,
        # restored state) out of full collections once it caught up.
        young = sample(text, 'tadpole_gc_threshold{generation="0"}')
        assert young == NodeConfig().gc_young_threshold > 700
        deadline = time.monotonic() + 15
        while sample(text, "tadpole_gc_frozen_objects") == 0 and time.monotonic() < deadline:
            time.sleep(0.5)
            _, text = scrape(cluster, leader)
        assert sample(text, "tadpole_gc_frozen_objects") > 10_000
        assert sample(text, 'tadpole_gc_pause_seconds_count{generation="2"}') >= 1  # settling
        collections = 'tadpole_gc_pause_seconds_count{generation="0"}'
        assert sample(text, collections) >= 1  # start-up allocates far more than one threshold
        assert sample(text, 'tadpole_gc_pause_seconds_bucket{generation="0",le="+Inf"}') == (
            sample(text, collections)
        )
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
        _, text = scrape(cluster, leader)
        assert sample(text, "tadpole_store_commit_seconds_count") >= 1
        assert sample(text, "tadpole_store_commit_items_sum") >= 1
        assert sample(text, "tadpole_store_request_ids") >= 0  # exposed (counts: test_store)
        code, body = scrape(cluster, leader, "/healthz")
        assert code == 200 and leader in body
        # Internals: proposals settled, traffic to each peer on each channel, SWIM
        # round trips (a probe a second), the invariant check at 0.
        assert sample(text, "tadpole_raft_proposals_pending") == 0
        assert sample(text, "tadpole_raft_proposals_failed_total") == 0
        assert sample(text, "tadpole_raft_leader_changes_total") >= 1  # it saw itself win
        assert sample(text, "tadpole_raft_late_answers_total") == 0  # a leader forwards none
        assert sample(text, "tadpole_raft_forwards_resent_total") == 0
        assert 'tadpole_raft_forward_copies_total{outcome="answered"}' in text
        # It won the pre-vote before its election (on by default), and no more than it asked.
        won = sample(text, "tadpole_raft_pre_votes_won_total")
        assert 1 <= won <= sample(text, "tadpole_raft_pre_votes_started_total")
        assert sample(text, "tadpole_raft_next_index_rollbacks_prevented_total") >= 0
        # Every tick is measured from when it was due; the stalls past the election
        # timeout are counted (a busy host may have had some: none are asserted).
        ticks = sample(text, "tadpole_raft_tick_stall_seconds_count")
        assert ticks >= 3 and sample(text, 'tadpole_raft_tick_stall_seconds_bucket{le="+Inf"}') == (
            ticks
        )
        assert sample(text, "tadpole_raft_tick_stalls_total") >= 0
        assert sample(text, "tadpole_hints_refused_total") >= 0  # exported
        assert sample(text, "tadpole_antientropy_sessions_left_to_peers_total") >= 0
        followers = [n for n in cluster.node_ids if n != leader]
        # The leader's append-entries reach each follower as Peer/Raft calls (at least
        # one per write above): RaftStreams are off by default ([raft] stream_links).
        for follower in followers:
            _, theirs = scrape(cluster, follower)
            assert sample(theirs, "tadpole_raft_stream_batches_total") == 0
            unary = 'tadpole_request_duration_seconds_count{method="tadpole.v1.Peer/Raft"}'
            assert sample(theirs, unary) >= 3
        deadline = time.monotonic() + 15
        while True:
            _, text = scrape(cluster, leader)
            probed = all(f'tadpole_peer_rtt_seconds_count{{peer="{f}"}}' in text for f in followers)
            # A round is counted as it starts and timed once it ends: wait for the time.
            if (probed and sample(text, "tadpole_antientropy_round_seconds_count") >= 1) or (
                time.monotonic() > deadline
            ):
                break
            time.sleep(0.5)
        assert sample(text, "tadpole_antientropy_rounds_total") >= 1  # one every 3 s
        timed = sample(text, "tadpole_antientropy_round_seconds_count")
        assert timed >= 1 and sample(text, "tadpole_antientropy_round_seconds_sum") > 0
        for peer in followers:
            assert sample(text, f'tadpole_peer_rtt_seconds_count{{peer="{peer}"}}') >= 1
            assert 0 < sample(text, f'tadpole_peer_rtt_seconds_sum{{peer="{peer}"}}') < 5
            for channel in ("raft", "gossip"):
                labels = f'channel="{channel}",peer="{peer}"'
                assert sample(text, f"tadpole_peer_sent_bytes_total{{{labels}}}") > 0
                assert sample(text, f"tadpole_peer_received_bytes_total{{{labels}}}") > 0
        # The metrics tier write above replicated to every node.
        replica = f'channel="replica",peer="{followers[0]}"'
        assert sample(text, f"tadpole_peer_sent_bytes_total{{{replica}}}") > 0
        assert sample(text, 'tadpole_tier_divergent_keys{tier="agent"}') == 0
        assert sample(text, "tadpole_divergent_keys_detected_total") == 0
        # Operations per tier, whichever face: the three gRPC puts, one over HTTP, a
        # read; the metrics-tier write. The data files, by name.
        request = urllib.request.Request(
            cluster.http_url(leader, "/state/system"), data=b'{"m-http": "v"}', method="PATCH",
            headers={"Content-Type": "application/merge-patch+json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, context=cluster.http_context(), timeout=5) as resp:
            assert resp.status == 200
        stub.kv.Get(pb.GetRequest(key="m0"), timeout=5)
        _, text = scrape(cluster, leader)

        def operations(tier: str, op: str) -> float:
            return sample(
                text, f'tadpole_operation_duration_seconds_count{{op="{op}",tier="{tier}"}}'
            )

        assert operations("system", "write") == 3  # the gRPC puts
        # The PATCH reads the keys it patches, then writes them in one transaction
        # conditional on their revisions; then the gRPC get.
        assert operations("system", "txn") == 1 and operations("system", "read") == 2
        assert operations("metrics", "write") == 1
        assert sample(text, 'tadpole_storage_bytes{file="raft.journal"}') > 0
        assert sample(text, 'tadpole_storage_bytes{file="tiers.db"}') > 0
        # Cluster.Status carries the load `tadpole top` shows.
        st = stub.cluster.Status(pb.StatusRequest(), timeout=5)
        puts = next(m for m in st.load if m.method == "tadpole.v1.KV/Put")
        assert puts.count >= 3 and sum(puts.buckets) == puts.count
        assert len(puts.buckets) == len(st.latency_bounds) + 1
        assert st.cpu_seconds > 0 and st.rss_bytes > 10 << 20
        # ... and `tadpole top` draws it: every node, the leader's role, the Put method.
        from click.testing import CliRunner

        from node.cli.app import cli

        flags = ["--endpoints", cluster.endpoints, *cluster.cli_flags()]
        shown = CliRunner().invoke(cli, [*flags, "top", "--count", "2", "--every", "0.2"])
        assert shown.exit_code == 0, shown.output
        assert shown.stdout.count("tadpole top") == 2
        assert all(n in shown.stdout for n in cluster.node_ids)
        assert "leader" in shown.stdout and "tadpole.v1.KV/Put" in shown.stdout
        # A refused peer call is logged -- without what it presented or what the
        # cluster uses: no secret or token is in any node's log.
        with pytest.raises(grpc.RpcError):
            stub.peer.Replica(
                pb.PeerMessage(from_id="intruder", payload=b"x"),
                metadata=(("authorization", "Bearer guessed-token-123"),), timeout=5,
            )  # fmt: skip
        with open(cluster.secret_file, "rb") as f:
            secret = f.read().strip()
        config = NodeConfig(cluster_secret=secret.decode())
        for node_id in cluster.node_ids:
            with open(cluster.log_file(node_id), "rb") as f:
                logged = f.read()
            for word in (secret, config.peer_token().encode(), config.operator_token().encode(),
                         b"guessed-token-123"):  # fmt: skip
                assert word not in logged, (node_id, word[:6])
    finally:
        for node_id in cluster.node_ids:
            cluster.kill(node_id)
