"""Batched CRDT updates (Tiers.UpdateMany) on a real three-node cluster: one call
carries many updates, each key's updates land in order, a resent batch applies
nothing twice (whichever node it reaches), and a malformed update refuses the
whole batch before anything is applied. Single updates the client sends together
(Tiers.UpdateEach) are each answered as a lone Update would be, an invalid one
refused alone, and concurrent counter adds travel in far fewer calls than updates."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest

from node.client import AsyncClient, CounterAdd, SetAdd, TierUpdate
from node.client.errors import InvalidArgument
from node.pb import tadpole_pb2 as pb
from tests.integration.conftest import start_http_cluster
from tests.integration.test_http_metrics import sample, scrape

pytestmark = pytest.mark.integration


def value(stubs: Any, cluster: Any, key: str) -> Any:
    resp = stubs(cluster, "n1").tiers.Read(
        pb.TierReadRequest(tier="population", key=key, consistency=pb.ALL), timeout=10
    )
    return json.loads(resp.value.value_json) if resp.found else None


def test_a_batch_applies_once_however_often_it_is_sent(make_cluster: Any, stubs: Any) -> None:
    cluster = make_cluster()
    keys = [f"job_resource_ledger/batch-{k}" for k in range(40)]
    updates = [
        TierUpdate("population", keys[i % 40], CounterAdd(i + 1), request_id=f"b-{i}")
        for i in range(400)
    ]
    updates.append(TierUpdate("population", keys[0], SetAdd(["x"]), request_id="misfit"))
    with cluster.client("n1") as client:
        first = client.tier_update_many(updates)
    assert [o.applied for o in first[:-1]] == [True] * 400
    assert not any(o.duplicate for o in first)
    misfit = first[-1]
    assert isinstance(misfit.error, InvalidArgument) and "counter" in str(misfit.error)
    expected = {key: sum(i + 1 for i in range(k, 400, 40)) for k, key in enumerate(keys)}
    assert {key: value(stubs, cluster, key) for key in keys} == expected
    # The same batch again, through each node: every update is a duplicate, nothing moves.
    for node_id in cluster.node_ids:
        with cluster.client(node_id) as client:
            again = client.tier_update_many(updates[:-1])
        assert all(o.applied and o.duplicate for o in again), [o for o in again if not o.duplicate]
    assert {key: value(stubs, cluster, key) for key in keys} == expected


def test_a_malformed_update_refuses_the_batch(make_cluster: Any, stubs: Any) -> None:
    cluster = make_cluster()
    good = pb.TierUpdateRequest(
        tier="population", key="job_resource_ledger/m", counter_add=pb.CounterAdd(amount=1)
    )
    no_op = pb.TierUpdateRequest(tier="population", key="job_resource_ledger/m")
    with pytest.raises(grpc.RpcError) as caught:
        stubs(cluster, "n2").tiers.UpdateMany(
            pb.TierUpdateManyRequest(updates=[good, good, no_op]), timeout=10
        )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "update 2 (population/job_resource_ledger/m)" in (caught.value.details() or "")
    assert value(stubs, cluster, "job_resource_ledger/m") is None


FORWARDED = 'tadpole_tier_forwarded_updates_total{tier="population"}'


def test_the_client_sends_each_key_to_its_coordinator(tmp_path_factory: Any, stubs: Any) -> None:
    # The client names each key's first owner from the members it learned, so the node
    # a routed batch reaches coordinates every key of it: nothing is forwarded. The same
    # kind of batch sent whole to one node makes it forward the keys it does not own.
    cluster = start_http_cluster(str(tmp_path_factory.mktemp("routed")))
    try:

        def forwarded() -> dict[str, float]:
            return {n: sample(scrape(cluster, n)[1], FORWARDED) for n in cluster.node_ids}

        assert forwarded() == {n: 0.0 for n in cluster.node_ids}
        updates = [
            TierUpdate("population", f"job_resource_ledger/routed-{i}", CounterAdd(1))
            for i in range(300)
        ]
        with cluster.client("n1") as client:  # configured with n1 alone
            outcomes = client.tier_update_many(updates)
            assert all(o.applied for o in outcomes), [o.error for o in outcomes if o.error]
            # Single updates go to the owner first too; with an id, a resend is a duplicate.
            for i in range(30):
                client.counter_add("population", f"job_resource_ledger/routed-{i}", 1)
            once = client.tier_update("population", "job_resource_ledger/routed-0",
                                      CounterAdd(5), request_id="single-1")  # fmt: skip
            again = client.tier_update("population", "job_resource_ledger/routed-0",
                                       CounterAdd(5), request_id="single-1")  # fmt: skip
        assert not once.duplicate and again.duplicate and again.value.value == once.value.value
        assert forwarded() == {n: 0.0 for n in cluster.node_ids}
        one = pb.CounterAdd(amount=1)
        whole = pb.TierUpdateManyRequest(
            updates=[
                pb.TierUpdateRequest(tier="population", key=f"job_resource_ledger/whole-{i}",
                                     counter_add=one, request_id=f"whole-{i}")
                for i in range(300)
            ]
        )  # fmt: skip
        stubs(cluster, "n1").tiers.UpdateMany(whole, timeout=10)
        # n1 coordinates about a third of the keys; it forwarded the rest.
        assert 100 < forwarded()["n1"] < 300
        assert value(stubs, cluster, "job_resource_ledger/routed-0") == 7
        for i in (1, 29):
            assert value(stubs, cluster, f"job_resource_ledger/routed-{i}") == 2
        assert value(stubs, cluster, "job_resource_ledger/routed-299") == 1
    finally:
        for node_id in cluster.node_ids:
            cluster.kill(node_id)


def counter(key: str, amount: int, request_id: str = "") -> Any:
    return pb.TierUpdateRequest(
        tier="population",
        key=f"job_resource_ledger/{key}",
        counter_add=pb.CounterAdd(amount=amount),
        request_id=request_id,
    )


def test_each_update_of_update_each_is_answered_as_a_lone_update(
    make_cluster: Any, stubs: Any
) -> None:
    cluster = make_cluster()
    s = stubs(cluster, "n2")
    lone = s.tiers.Update(counter("each-lone", 3, "lone-1"), timeout=10)
    no_op = pb.TierUpdateRequest(tier="population", key="job_resource_ledger/each-a")
    wrong_type = pb.TierUpdateRequest(
        tier="population",
        key="job_resource_ledger/each-lone",
        set_add=pb.SetElements(elements=["x"]),
    )
    resp = s.tiers.UpdateEach(
        pb.TierUpdateManyRequest(
            updates=[
                counter("each-a", 1, "a-1"),
                no_op,  # refused alone: the others are applied
                counter("each-a", 2, "a-2"),
                counter("each-lone", 3, "lone-1"),  # a resend of the lone update
                wrong_type,
                counter("each-b", 5),
            ]
        ),
        timeout=10,
    )
    assert resp.member_id == "n2"
    assert [r.code for r in resp.results] == [
        0,
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
        0,
        0,
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
        0,
    ]
    bad = resp.results[1]
    assert "op" in bad.message and ("tadpole-outcome", "not-applied") in [
        (t.key, t.value) for t in bad.trailers
    ]
    assert "counter" in resp.results[4].message
    a1, a2, again, b = (resp.results[i].update for i in (0, 2, 3, 5))
    # One key's updates in one call are one write: both answer the value after it.
    assert json.loads(a1.value.value_json) == 3 == json.loads(a2.value.value_json)
    assert a1.value.type == "pncounter" and not a1.duplicate and not a2.duplicate
    assert again.duplicate and not lone.duplicate
    assert again.value.value_json == lone.value.value_json
    assert json.loads(b.value.value_json) == 5
    for answer in (a1, again, b):  # coordinated by the key's first owner, on two replicas
        assert answer.member_id in cluster.node_ids
        assert len(answer.replicas) == 2 and answer.member_id in answer.replicas
        assert list(answer.hinted) == []
    assert value(stubs, cluster, "job_resource_ledger/each-a") == 3
    assert value(stubs, cluster, "job_resource_ledger/each-lone") == 3
    assert value(stubs, cluster, "job_resource_ledger/each-b") == 5


def _tier_calls(cluster: Any, method: str) -> float:
    """``Tiers.<method>`` calls the nodes served (0 before the first)."""
    name = f'tadpole_request_duration_seconds_count{{method="tadpole.v1.Tiers/{method}"}} '
    total = 0.0
    for n in cluster.node_ids:
        for line in scrape(cluster, n)[1].splitlines():
            if line.startswith(name):
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_the_client_sends_concurrent_counter_adds_together(
    tmp_path_factory: Any, stubs: Any
) -> None:
    cluster = start_http_cluster(str(tmp_path_factory.mktemp("each")))
    try:
        before = {m: _tier_calls(cluster, m) for m in ("Update", "UpdateEach")}

        async def add() -> list[Any]:
            async with AsyncClient(
                cluster.endpoints, credentials=cluster.client_credentials()
            ) as client:
                adds = [
                    client.tier_update(
                        "population",
                        f"job_resource_ledger/co-{i % 20}",
                        CounterAdd(i + 1),
                        request_id=f"co-{i}",
                    )
                    for i in range(400)
                ]
                results = await asyncio.gather(*adds)
                # A set add goes alone: its answer carries the whole set.
                await client.set_add("population", "job_resource_ledger/co-set", "x")
                return results

        results = asyncio.run(add())
        calls = {m: _tier_calls(cluster, m) - before[m] for m in ("Update", "UpdateEach")}
        assert calls["UpdateEach"] >= 1
        assert calls["Update"] >= 1  # the set add, at least
        assert calls["Update"] + calls["UpdateEach"] <= 60, calls  # 401 updates in few calls
        expected = {k: sum(i + 1 for i in range(k, 400, 20)) for k in range(20)}
        for i, result in enumerate(results):
            assert not result.duplicate and len(result.replicas) == 2
            assert result.value.type == "pncounter"
            # the value after this update: it holds at least this update
            assert i + 1 <= result.value.value <= expected[i % 20]
        finals = {k: value(stubs, cluster, f"job_resource_ledger/co-{k}") for k in range(20)}
        assert finals == expected
    finally:
        for node_id in cluster.node_ids:
            cluster.kill(node_id)
