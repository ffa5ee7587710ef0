"""The CRDT tiers on three real node processes: placement, quorum writes,
hinted handoff, re-replication after a death, convergence after a restart.

Copies are counted on each node's disk through the LocalKeys debug RPC, not
taken from a counter the nodes report about themselves.
"""

from __future__ import annotations

import json
import time
from typing import Any

import grpc
import pytest

from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc
from node.placement import ranking

pytestmark = pytest.mark.integration

KEY = "job_resource_ledger/job-42"


def tiers(stubs: Any, cluster: Any, node_id: str) -> Any:
    return pb_grpc.TiersStub(stubs(cluster, node_id).channel)


def owners_of(tier: str, key: str, members: list[str], rf: int) -> list[str]:
    return ranking(f"{tier}\x00{key}", members)[:rf]


def copies(stubs: Any, cluster: Any, tier: str, key: str, nodes: list[str]) -> dict[str, bytes]:
    found = {}
    for node_id in nodes:
        resp = tiers(stubs, cluster, node_id).LocalKeys(pb.TierKeysRequest(tier=tier), timeout=5)
        for k, digest in zip(resp.keys, resp.digests, strict=True):
            if k == key:
                found[node_id] = digest
    return found


def add(stub: Any, amount: int, key: str = KEY) -> Any:
    return stub.Update(
        pb.TierUpdateRequest(tier="population", key=key, counter_add=pb.CounterAdd(amount=amount)),
        timeout=10,
    )


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s")


def population_health(stubs: Any, cluster: Any, node_id: str) -> Any:
    status = stubs(cluster, node_id).cluster.Status(pb.StatusRequest(), timeout=5)
    (row,) = [t for t in status.tiers if t.tier == "population"]
    return row


def wait_gossip(stubs: Any, cluster: Any, observer: str, target: str, status: str) -> None:
    def seen() -> bool:
        resp = stubs(cluster, observer).cluster.Members(pb.MembersRequest(), timeout=5)
        return any(m.id == target and m.gossip_status == status for m in resp.members)

    wait_for(seen, 30, f"{observer} sees {target} {status}")


def test_rf2_survives_an_owner_kill_rereplicates_and_converges(
    make_cluster: Any, stubs: Any
) -> None:
    cluster = make_cluster()
    nodes = cluster.node_ids
    for node_id in nodes:
        for other in nodes:
            wait_gossip(stubs, cluster, node_id, other, "alive")
    owners = owners_of("population", KEY, nodes, 2)
    (spare,) = [n for n in nodes if n not in owners]

    # Writes through every node; the key lives on exactly its two owners.
    total = 0
    for i, node_id in enumerate(nodes * 2):
        resp = add(tiers(stubs, cluster, node_id), i + 1)
        total += i + 1
        assert sorted(resp.replicas) == sorted(owners) and not resp.hinted
    assert sorted(copies(stubs, cluster, "population", KEY, nodes)) == sorted(owners)

    # Kill one owner: writes are still acknowledged by two durable copies
    # (the live owner + a hint on the spare), and reads still answer.
    victim, survivor = owners
    cluster.kill(victim)
    resp = add(tiers(stubs, cluster, spare), 100)
    total += 100
    assert resp.hinted == [victim], resp
    assert len(resp.replicas) == 2
    got = tiers(stubs, cluster, spare).Read(
        pb.TierReadRequest(tier="population", key=KEY, consistency=pb.ONE), timeout=10
    )
    assert json.loads(got.value.value_json) == total
    lag = population_health(stubs, cluster, spare)
    assert lag.hints_pending >= 1 and lag.oldest_hint_age_s > 0, lag

    # Once gossip declares it dead, placement over the live members makes the
    # spare an owner and anti-entropy copies the key there: RF is back to 2.
    wait_gossip(stubs, cluster, survivor, victim, "dead")
    wait_for(
        lambda: (
            sorted(copies(stubs, cluster, "population", KEY, [survivor, spare]))
            == sorted([survivor, spare])
        ),
        30,
        "re-replicated to the spare",
    )

    # The victim returns: the hint is handed off and every copy converges.
    cluster.start_node(victim)
    for node_id in nodes:
        wait_gossip(stubs, cluster, node_id, victim, "alive")

    def converged() -> bool:
        found = copies(stubs, cluster, "population", KEY, nodes)
        return victim in found and len(set(found.values())) == 1

    wait_for(converged, 30, "all copies converge after the restart")

    def healthy() -> bool:
        rows = [population_health(stubs, cluster, n) for n in nodes]
        return all(r.hints_pending == 0 and r.under_replicated == 0 for r in rows)

    wait_for(healthy, 30, "no hints pending and nothing under-replicated")
    got = tiers(stubs, cluster, victim).Read(
        pb.TierReadRequest(tier="population", key=KEY, consistency=pb.ONE), timeout=10
    )
    assert json.loads(got.value.value_json) == total


def test_bad_tier_requests_are_rejected_and_change_nothing(make_cluster: Any, stubs: Any) -> None:
    cluster = make_cluster()
    stub = tiers(stubs, cluster, "n1")
    add(stub, 5, "worker_journal/w-1")
    cases = [
        (pb.TierUpdateRequest(tier="pop", key="x", counter_add=pb.CounterAdd(amount=1)), "tier"),
        (
            pb.TierUpdateRequest(
                tier="population", key="unknown/x", counter_add=pb.CounterAdd(amount=1)
            ),
            "subspace",
        ),
        (
            pb.TierUpdateRequest(
                tier="population", key="worker_journal/w-1", set_add=pb.SetElements(elements=["a"])
            ),
            "holds a pncounter",
        ),
        (
            pb.TierUpdateRequest(
                tier="mesh", key="m-1", register_set=pb.RegisterSet(value_json="{nope")
            ),
            "not valid JSON",
        ),
        (pb.TierUpdateRequest(tier="mesh", key="m-1"), "no operation"),
        (
            pb.TierUpdateRequest(tier="mesh", key="", counter_add=pb.CounterAdd(amount=1)),
            "key is empty",
        ),
    ]
    for request, fragment in cases:
        with pytest.raises(grpc.RpcError) as err:
            stub.Update(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request
        assert fragment in (err.value.details() or ""), err.value.details()
    got = stub.Read(
        pb.TierReadRequest(tier="population", key="worker_journal/w-1", consistency=pb.ALL),
        timeout=10,
    )
    assert json.loads(got.value.value_json) == 5
    assert not stub.Read(pb.TierReadRequest(tier="mesh", key="m-1"), timeout=10).found


def test_metrics_tier_counts_spread_by_gossip(make_cluster: Any, stubs: Any) -> None:
    cluster = make_cluster()
    for i in range(4):
        stubs(cluster, "n1").kv.Put(pb.PutRequest(key=f"m{i}", value=b"v"), timeout=5)
    add(tiers(stubs, cluster, "n2"), 1, "tadpole_activity_log/t-1")
    reader = tiers(stubs, cluster, "n3")

    def counted() -> dict[str, Any] | None:
        resp = reader.Read(pb.TierReadRequest(tier="metrics", key="cluster/kv_writes"), timeout=5)
        if not resp.found:
            return None
        value: dict[str, Any] = json.loads(resp.value.value_json)
        return value if value["per_node"].get("n1", 0) >= 4 else None

    wait_for(lambda: counted() is not None, 15, "n3 sees n1's writes counted")
    value = counted()
    assert value is not None and value["total"] >= 4
    with pytest.raises(grpc.RpcError) as err:
        reader.Update(
            pb.TierUpdateRequest(
                tier="metrics", key="cluster/kv_writes", counter_add=pb.CounterAdd(amount=1)
            ),
            timeout=5,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
