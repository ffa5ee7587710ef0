"""The write fence on real nodes (node/deadline.py): a CRDT write that reaches its
owner after its client's deadline is refused, so it cannot land after the writes the
client made since -- the session violation ``make chaos`` found in partition-leader."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import grpc
import pytest

from node.client import AsyncClient, RetryPolicy, WriteTimeout
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc
from node.placement import ranking
from tests.agent_docs import agent_doc
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

SEQ = ("performance_state", "current_metrics", "chaos_seq")


def patch(seq: int) -> dict[str, Any]:
    return {SEQ[0]: {SEQ[1]: {SEQ[2]: seq}}}


def seq_of(doc: dict[str, Any]) -> int:
    return int(doc[SEQ[0]][SEQ[1]][SEQ[2]])


@pytest.mark.parametrize(
    "late_s",
    [
        1.5,  # reaches the owner well after deadline + allowance: refused there
        0.2,  # within the allowance: applied, but before the client reports the timeout
    ],
)
async def test_a_patch_held_in_the_network_never_lands_after_the_next_one(
    make_cluster: Any, late_s: float
) -> None:
    cluster = make_cluster()
    agent = str(uuid.uuid4())
    owner = ranking(f"agent\x00{agent}", cluster.node_ids)[0]
    target = cluster.addresses[owner].rsplit(":", 1)
    proxy = TcpProxy((target[0], int(target[1])))
    creds = cluster.client_credentials()
    # One client straight to the owner, one through the proxy (no retries: a timed-out
    # write is the session's unknown outcome, as in the chaos workload).
    direct = AsyncClient([cluster.addresses[owner]], credentials=creds, timeout=10)
    held = AsyncClient(
        [f"127.0.0.1:{proxy.port}"], credentials=creds, timeout=1.0, retry=RetryPolicy(attempts=1)
    )
    loop = asyncio.get_running_loop()
    try:
        await direct.doc_create("agent", agent, agent_doc(agent))
        await held.doc_put("agent", agent, patch(1))  # the proxied connection is up
        proxy.hold()
        # The partition heals late_s after the write's deadline: the held request
        # reaches the owner then, and the cancellation its client sent 0.5 s later.
        loop.call_later(1.0 + late_s, proxy.release, 0.5)
        with pytest.raises(WriteTimeout):  # the session's write of 40: outcome unknown
            await held.doc_put("agent", agent, patch(40))
        done = await direct.doc_put("agent", agent, patch(43))  # the session goes on
        assert done.coordinator == owner
        await asyncio.sleep(late_s + 1.5)  # whatever was held has reached the owner
        got = await direct.doc_get("agent", agent, causal_token=done.causal_token)
        assert got is not None
        assert seq_of(got.doc) == 43, "a write the client gave up on landed after its next one"
    finally:
        await held.close()
        await direct.close()
        proxy.close()


def _docs(cluster: Any, node_id: str) -> Any:
    return pb_grpc.DocumentsStub(cluster.channel(node_id))


def _outcome(exc: grpc.RpcError) -> str:
    return dict(exc.trailing_metadata() or ()).get("tadpole-outcome", "")


def test_a_deadline_already_past_is_refused_and_a_bad_one_is_invalid(make_cluster: Any) -> None:
    cluster = make_cluster()
    agent = str(uuid.uuid4())
    owner, backup = ranking(f"agent\x00{agent}", cluster.node_ids)[:2]
    outsider = next(n for n in cluster.node_ids if n not in (owner, backup))
    docs = _docs(cluster, outsider)  # the write is forwarded: the deadline travels with it
    create = pb.DocPutRequest(
        tier="agent", id=agent, create=True, doc_json=json.dumps(agent_doc(agent))
    )
    docs.Put(create, timeout=10)
    put = pb.DocPutRequest(tier="agent", id=agent, doc_json=json.dumps(patch(7)))
    past = str(time.time_ns() - 2 * 10**9)
    with pytest.raises(grpc.RpcError) as caught:
        docs.Put(put, timeout=10, metadata=(("tadpole-deadline-ns", past),))
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert "after the client's deadline" in (caught.value.details() or "")
    assert _outcome(caught.value) == "not-applied"
    for value in ("soon", "-5", "0", "1e18", "9" * 20):
        with pytest.raises(grpc.RpcError) as bad:
            docs.Put(put, timeout=10, metadata=(("tadpole-deadline-ns", value),))
        assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT, value
        assert "tadpole-deadline-ns" in (bad.value.details() or "")
        assert _outcome(bad.value) == "not-applied"
    got = docs.Get(pb.DocGetRequest(tier="agent", id=agent, consistency=pb.ALL), timeout=10)
    assert SEQ[2] not in json.loads(got.doc_json)[SEQ[0]].get(SEQ[1], {})  # nothing applied
    # A deadline in time is applied.
    future = str(time.time_ns() + 10 * 10**9)
    docs.Put(put, timeout=10, metadata=(("tadpole-deadline-ns", future),))
    got = docs.Get(pb.DocGetRequest(tier="agent", id=agent), timeout=10)
    assert seq_of(json.loads(got.doc_json)) == 7
