"""KV.PutMany and KV.GetMany on a real cluster, and the client's coalescing of
concurrent puts and gets into them: each put of a batch is answered exactly as a lone
Put would be (its own revision, request-id deduplication, error), a bad put is refused
alone and changes nothing, a policy write is refused (it must go alone, audited), each
get is answered as a lone Get at its own consistency, and concurrent client calls
travel in far fewer calls than puts or gets."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from typing import Any

import grpc
import pytest

from node.client import AsyncClient
from node.pb import tadpole_pb2 as pb
from node.rbac import POLICY_KEY
from tests.integration.conftest import start_http_cluster

pytestmark = pytest.mark.integration


def put(key: str, value: bytes = b"v", request_id: str = "", prev_kv: bool = False) -> Any:
    return pb.PutRequest(key=key, value=value, request_id=request_id, prev_kv=prev_kv)


def test_each_put_of_a_batch_is_answered_as_a_lone_put(make_cluster: Any, stubs: Any) -> None:
    cluster = make_cluster()
    leader = cluster.wait_leader()
    follower = next(n for n in cluster.node_ids if n != leader)
    kv = stubs(cluster, follower).kv  # forwarded to the leader, as a lone Put is
    kv.Put(put("pm/old", b"before"), timeout=10)
    batch = pb.PutManyRequest(
        puts=[
            put("pm/a", b"1", request_id="rid-a"),
            put("", b"no key"),
            put("pm/old", b"after", prev_kv=True),  # not offered in a batch
            put(POLICY_KEY, b'{"enabled": true}'),
            put("pm/a", b"1", request_id="rid-a"),  # a resend inside the batch
            put("pm/b", b"2", request_id="rid-b"),
        ]
    )
    resp = kv.PutMany(batch, timeout=10)
    codes = [grpc.StatusCode.OK.value[0] if r.code == 0 else r.code for r in resp.results]
    invalid = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert codes == [0, invalid, invalid, invalid, 0, 0], [r.message for r in resp.results]
    results = resp.results
    assert "key is empty" in results[1].message
    assert "prev_kv is not offered in PutMany" in results[2].message
    assert "access policy" in results[3].message
    for refused in results[1:4]:
        assert ("tadpole-outcome", "not-applied") in [(t.key, t.value) for t in refused.trailers]
    a, again, b = results[0].put, results[4].put, results[5].put
    assert again.header.revision == a.header.revision  # applied once, answered twice
    assert again.kv == a.kv
    assert b.header.revision != a.header.revision  # each its own write
    assert resp.header.revision == max(a.header.revision, b.header.revision)
    assert all(r.put.header.leader_id == leader for r in results if r.code == 0)

    reader = stubs(cluster, leader).kv
    assert reader.Get(pb.GetRequest(key="pm/old"), timeout=10).kv.value == b"before"
    assert reader.Get(pb.GetRequest(key="pm/a"), timeout=10).kv.value == b"1"
    policy = reader.Get(pb.GetRequest(key=POLICY_KEY), timeout=10)
    assert not policy.found  # refused, not written

    # The whole batch resent (an unknown outcome): nothing with a request id twice.
    top = reader.Get(pb.GetRequest(key="pm/b"), timeout=10).header.revision
    resent = kv.PutMany(pb.PutManyRequest(puts=[batch.puts[0], batch.puts[5]]), timeout=10)
    assert [r.put.header.revision for r in resent.results] == [
        a.header.revision,
        b.header.revision,
    ]
    assert reader.Get(pb.GetRequest(key="pm/b"), timeout=10).header.revision == top


def test_a_batch_over_the_limits(make_cluster: Any, stubs: Any) -> None:
    cluster = make_cluster(tls=False)
    kv = stubs(cluster, cluster.wait_leader()).kv
    with pytest.raises(grpc.RpcError) as caught:
        kv.PutMany(pb.PutManyRequest(puts=[put(f"lim/{i}") for i in range(1001)]), timeout=10)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "1001 puts in one call; the limit is 1000" in caught.value.details()
    assert kv.Range(pb.RangeRequest(prefix="lim/"), timeout=10).count == 0

    # The answer carries the values back: what would pass max_value_bytes is left,
    # not applied, for the client to send again alone.
    big = [put(f"lim/big{i}", bytes([65 + i]) * 400_000) for i in range(3)]
    resp = kv.PutMany(pb.PutManyRequest(puts=big), timeout=10)
    assert [r.code for r in resp.results][:2] == [0, 0]
    left = resp.results[2]
    assert left.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    trailers = [(t.key, t.value) for t in left.trailers]
    assert ("tadpole-outcome", "not-applied") in trailers
    assert ("tadpole-resend-alone", "1") in trailers
    assert kv.Range(pb.RangeRequest(prefix="lim/"), timeout=10).count == 2

    async def write() -> list[Any]:  # the client sends the one left over again alone
        async with AsyncClient(cluster.endpoints) as client:
            await client.put("lim/warm", "w")
            return await asyncio.gather(
                *(client.put(f"lim/c{i}", bytes([65 + i % 3]) * 400_000) for i in range(9))
            )

    assert len({r.revision for r in asyncio.run(write())}) == 9
    got = kv.Range(pb.RangeRequest(prefix="lim/c"), timeout=10)
    assert [kv_.value[:1] for kv_ in got.kvs] == [bytes([65 + i % 3]) for i in range(9)]


def test_a_get_batch_whose_answer_is_full_leaves_the_rest_to_send_again(
    make_cluster: Any, stubs: Any
) -> None:
    cluster = make_cluster(tls=False)
    kv = stubs(cluster, cluster.wait_leader()).kv
    for i in range(3):
        kv.Put(put(f"full/{i}", bytes([65 + i]) * 400_000), timeout=10)
    resp = kv.GetMany(
        pb.GetManyRequest(gets=[pb.GetRequest(key=f"full/{i}") for i in range(3)]), timeout=10
    )
    answered = [r for r in resp.results if r.code == 0]
    left = [r for r in resp.results if r.code != 0]
    assert [r.get.kv.value[:1] for r in answered] == [b"A", b"B"]  # 800 kB fit in 1 MiB
    assert len(left) == 1 and left[0].code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert ("tadpole-resend-alone", "1") in [(t.key, t.value) for t in left[0].trailers]

    async def read() -> list[Any]:  # the client sends the one left over again alone
        async with AsyncClient(cluster.endpoints) as client:
            await client.get("full/0")
            return await asyncio.gather(*(client.get(f"full/{i % 3}") for i in range(12)))

    values = [kv.value for kv in asyncio.run(read())]
    assert values == [bytes([65 + i % 3]) * 400_000 for i in range(12)]


def test_each_get_of_a_batch_is_answered_as_a_lone_get(make_cluster: Any, stubs: Any) -> None:
    cluster = make_cluster(tls=False)
    leader = cluster.wait_leader()
    follower = next(n for n in cluster.node_ids if n != leader)
    written = stubs(cluster, leader).kv.Put(put("gm/a", b"1"), timeout=10)
    kv = stubs(cluster, follower).kv  # linearizable: asks the leader for a read index
    kv.Get(pb.GetRequest(key="gm/a"), timeout=10)  # so the follower has applied it
    resp = kv.GetMany(
        pb.GetManyRequest(
            gets=[
                pb.GetRequest(key="gm/a"),
                pb.GetRequest(key="gm/missing"),
                pb.GetRequest(key=""),
                pb.GetRequest(key="gm/a", consistency=pb.SERIALIZABLE),
                pb.GetRequest(key="gm/a", consistency=7),
            ]
        ),
        timeout=10,
    )
    invalid = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert [r.code for r in resp.results] == [0, 0, invalid, 0, invalid]
    a, missing, _, serial, _ = resp.results
    assert a.get.found and a.get.kv.value == b"1"
    assert a.get.kv.mod_revision == written.header.revision
    assert a.get.header.revision >= written.header.revision  # it saw the acked write
    assert not missing.get.found
    assert serial.get.kv.value == b"1"
    assert "unknown consistency 7" in resp.results[4].message
    with pytest.raises(grpc.RpcError) as caught:
        kv.GetMany(pb.GetManyRequest(gets=[pb.GetRequest(key="k")] * 1001), timeout=10)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def _calls(cluster: Any, method: str) -> float:
    """``KV/<method>`` calls served by all the nodes: a leader elected just after the
    start can lose its place within the test (seen in CI), and the calls go after it."""
    pattern = re.compile(
        r'^tadpole_request_duration_seconds_count\{[^}]*method="tadpole\.v1\.KV/'
        + method
        + r'"[^}]*\} (\S+)$',
        re.M,
    )
    total = 0.0
    for node_id in cluster.node_ids:
        url = cluster.http_url(node_id, "/metrics")
        with urllib.request.urlopen(url, context=cluster.http_context(), timeout=5) as resp:
            total += sum(float(m) for m in pattern.findall(resp.read().decode()))
    return total


def test_the_client_sends_concurrent_puts_together(tmp_path: Any) -> None:
    cluster = start_http_cluster(str(tmp_path / "c"), tls=False)
    try:
        cluster.wait_leader()
        before = {m: _calls(cluster, m) for m in ("Put", "PutMany")}

        async def write() -> list[Any]:
            async with AsyncClient(cluster.endpoints) as client:
                await client.put("co/warm", "w")  # learn the leader first
                return await asyncio.gather(*(client.put(f"co/{i}", f"v{i}") for i in range(400)))

        results = asyncio.run(write())
        calls = {m: _calls(cluster, m) - before[m] for m in ("Put", "PutMany")}
        assert len({r.revision for r in results}) == 400
        assert calls["PutMany"] >= 1
        assert calls["Put"] + calls["PutMany"] <= 40, calls  # 401 puts in few calls

        before = {m: _calls(cluster, m) for m in ("Get", "GetMany")}

        async def read() -> list[Any]:
            async with AsyncClient(cluster.endpoints) as client:
                await client.get("co/0")  # learn the leader first
                return await asyncio.gather(*(client.get(f"co/{i}") for i in range(400)))

        values = [kv.value for kv in asyncio.run(read())]
        assert values == [f"v{i}".encode() for i in range(400)]
        calls = {m: _calls(cluster, m) - before[m] for m in ("Get", "GetMany")}
        assert calls["GetMany"] >= 1
        assert calls["Get"] + calls["GetMany"] <= 40, calls
    finally:
        for node_id in cluster.node_ids:
            cluster.kill(node_id)
