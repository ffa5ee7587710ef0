"""An idle cluster of real nodes is idle: once nothing happens, its Raft group rests
(quiet heartbeats), its links make no keepalive calls the heartbeats make needless, and
nothing polls the system tier (the access policy is followed by a watch)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.integration.conftest import start_http_cluster
from tests.integration.test_http_metrics import sample, scrape

pytestmark = pytest.mark.integration

RAFT_CALLS = 'tadpole_request_duration_seconds_count{method="tadpole.v1.Peer/Raft"}'


def test_an_idle_cluster_rests_and_makes_few_peer_calls(tmp_path_factory: Any) -> None:
    cluster = start_http_cluster(str(tmp_path_factory.mktemp("idle")))
    try:
        deadline = time.monotonic() + 30
        while not all(
            sample(scrape(cluster, n)[1], "tadpole_raft_quiet") == 1.0 for n in cluster.node_ids
        ):
            assert time.monotonic() < deadline, "the idle cluster never went quiet"
            time.sleep(0.5)

        def calls() -> float:
            return sum(sample(scrape(cluster, n)[1], RAFT_CALLS) for n in cluster.node_ids)

        before, start = calls(), time.monotonic()
        time.sleep(5)
        rate = (calls() - before) / (time.monotonic() - start)
        # At rest: a quiet heartbeat to each follower every 0.5 s and one keepalive a
        # second between the followers, about 5 calls a second in all. Before: 45
        # heartbeats, 8 keepalives and 3 policy reads' rounds a second, over 55.
        assert rate < 12, f"{rate:.1f} Raft calls/s in an idle cluster"
        leader = cluster.wait_leader(5, all_up=True)
        assert sample(scrape(cluster, leader)[1], "tadpole_raft_quiet_entered_total") >= 1
    finally:
        for node_id in cluster.node_ids:
            cluster.kill(node_id)
