"""Gossip (SWIM) membership on three real node processes."""

from __future__ import annotations

import time
from typing import Any

import pytest

from node.pb import tadpole_pb2 as pb

pytestmark = pytest.mark.integration

# Stated bound for "a crashed node is marked dead everywhere": with the lan()
# preset (1 s probe, 0.5 s probe timeout, suspicion 4 x log10(n) probe
# periods, stretched up to 6x until confirmations arrive) a crash is declared
# dead after roughly 2-12 s; 20 s leaves room for a loaded CI machine.
DEAD_WITHIN_S = 20.0


def gossip_view(stub: Any) -> dict[str, Any]:
    resp = stub.cluster.Members(pb.MembersRequest(), timeout=5)
    return {m.id: m for m in resp.members}


def wait_for(predicate: Any, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout} s")


def test_converge_detect_crash_and_rejoin_higher(make_cluster: Any, stubs: Any) -> None:
    cluster = make_cluster()
    views = {n: stubs(cluster, n) for n in cluster.node_ids}

    def all_alive() -> bool:
        for stub in views.values():
            view = gossip_view(stub)
            if sorted(view) != ["n1", "n2", "n3"]:
                return False
            if any(m.gossip_status != "alive" for m in view.values()):
                return False
        return True

    wait_for(all_alive, 15)
    victim = "n3"
    before = gossip_view(views["n1"])[victim].incarnation
    tiers = ["system", "population", "agent", "mesh", "metrics"]
    assert all(list(m.tiers) == tiers for m in gossip_view(views["n2"]).values())

    cluster.kill(victim)
    took = wait_for(
        lambda: all(gossip_view(views[n])[victim].gossip_status == "dead" for n in ("n1", "n2")),
        DEAD_WITHIN_S,
    )
    print(f"crashed node marked dead by both survivors after {took:.1f} s")

    cluster.start_node(victim)
    wait_for(all_alive, 15)
    after = gossip_view(views["n1"])[victim].incarnation
    assert after > before, (before, after)
