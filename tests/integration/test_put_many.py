"""KV.PutMany on a real cluster, and the client's coalescing of concurrent puts into
it: each put of a batch is answered exactly as a lone Put would be (its own revision,
request-id deduplication, error), a bad put is refused alone and changes nothing, a
policy write is refused (it must go alone, audited), and concurrent client puts travel
in far fewer calls than puts."""

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
            put("pm/too-big", b"x" * ((1 << 20) + 1)),  # over max_value_bytes
            put("", b"no key"),
            put("pm/old", b"after", prev_kv=True),
            put(POLICY_KEY, b'{"enabled": true}'),
            put("pm/a", b"1", request_id="rid-a"),  # a resend inside the batch
            put("pm/b", b"2", request_id="rid-b", prev_kv=True),
        ]
    )
    resp = kv.PutMany(batch, timeout=10)
    codes = [grpc.StatusCode.OK.value[0] if r.code == 0 else r.code for r in resp.results]
    invalid = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert codes == [0, invalid, invalid, 0, invalid, 0, 0], [r.message for r in resp.results]
    results = resp.results
    assert "the limit is 1048576 bytes" in results[1].message
    assert "key" in results[2].message
    assert "access policy" in results[4].message
    for refused in (results[1], results[2], results[4]):
        assert ("tadpole-outcome", "not-applied") in [(t.key, t.value) for t in refused.trailers]
    a, old, again, b = results[0].put, results[3].put, results[5].put, results[6].put
    assert again.header.revision == a.header.revision  # applied once, answered twice
    assert again.kv == a.kv
    revisions = sorted({a.header.revision, old.header.revision, b.header.revision})
    assert len(revisions) == 3  # each its own write
    assert resp.header.revision == revisions[-1]
    assert old.prev_kv.value == b"before" and old.kv.value == b"after"
    assert not b.HasField("prev_kv") or b.prev_kv.key == ""  # there was none
    assert all(r.put.header.leader_id == leader for r in results if r.code == 0)

    reader = stubs(cluster, leader).kv
    for key in ("pm/too-big", ""):
        if key:
            assert not reader.Get(pb.GetRequest(key=key), timeout=10).found
    assert reader.Get(pb.GetRequest(key="pm/a"), timeout=10).kv.value == b"1"
    policy = reader.Get(pb.GetRequest(key=POLICY_KEY), timeout=10)
    assert not policy.found  # refused, not written

    # The whole batch resent (an unknown outcome): nothing with a request id twice.
    top = reader.Get(pb.GetRequest(key="pm/b"), timeout=10).header.revision
    resent = kv.PutMany(pb.PutManyRequest(puts=[batch.puts[0], batch.puts[6]]), timeout=10)
    assert [r.put.header.revision for r in resent.results] == [
        a.header.revision,
        b.header.revision,
    ]
    assert reader.Get(pb.GetRequest(key="pm/b"), timeout=10).header.revision == top


def test_a_batch_over_the_limit_is_refused_whole(make_cluster: Any, stubs: Any) -> None:
    cluster = make_cluster(tls=False)
    kv = stubs(cluster, cluster.wait_leader()).kv
    with pytest.raises(grpc.RpcError) as caught:
        kv.PutMany(pb.PutManyRequest(puts=[put(f"lim/{i}") for i in range(1001)]), timeout=10)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "1001 puts in one call; the limit is 1000" in caught.value.details()
    assert kv.Range(pb.RangeRequest(prefix="lim/"), timeout=10).count == 0


def _calls(url: str, context: Any, method: str) -> float:
    with urllib.request.urlopen(url, context=context, timeout=5) as resp:
        text = resp.read().decode()
    pattern = re.compile(
        r'^tadpole_request_duration_seconds_count\{[^}]*method="tadpole\.v1\.KV/'
        + method
        + r'"[^}]*\} (\S+)$',
        re.M,
    )
    return sum(float(m) for m in pattern.findall(text))


def test_the_client_sends_concurrent_puts_together(tmp_path: Any) -> None:
    cluster = start_http_cluster(str(tmp_path / "c"), tls=False)
    try:
        leader = cluster.wait_leader()
        url = cluster.http_url(leader, "/metrics")
        context = cluster.http_context()
        before = {m: _calls(url, context, m) for m in ("Put", "PutMany")}

        async def write() -> list[Any]:
            async with AsyncClient(cluster.endpoints) as client:
                await client.put("co/warm", "w")  # learn the leader first
                return await asyncio.gather(*(client.put(f"co/{i}", f"v{i}") for i in range(400)))

        results = asyncio.run(write())
        calls = {m: _calls(url, context, m) - before[m] for m in ("Put", "PutMany")}
        assert len({r.revision for r in results}) == 400
        assert calls["PutMany"] >= 1
        assert calls["Put"] + calls["PutMany"] <= 40, calls  # 401 puts in few calls

        async def read() -> list[Any]:
            async with AsyncClient(cluster.endpoints) as client:
                return [await client.get(f"co/{i}") for i in (0, 199, 399)]

        assert [kv.value for kv in asyncio.run(read())] == [b"v0", b"v199", b"v399"]
    finally:
        for node_id in cluster.node_ids:
            cluster.kill(node_id)
