"""GraphQL (node/http/graphql.py) executed in process over the in-memory replication
network: answers, the batching bound (reads = distinct keys, one wave per level),
abuse limits and errors."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from consensus.memory import MemorySystem
from consensus.statemachine import PutOp, Txn
from node.api.documents import Documents
from node.http.graphql import GraphContext, schema
from node.replication.driver import Replication
from node.tiers import agent as agent_tier
from tests.agent_docs import agent_doc
from tests.support.memory_cluster import memory_cluster


def ids(n: int, seed: int) -> list[str]:
    import random

    rng = random.Random(seed)
    return sorted(str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n))


@pytest.fixture
def replication() -> Replication:
    return memory_cluster()[1]["n1"]


def context(replication: Replication, system: MemorySystem | None = None) -> GraphContext:
    members = SimpleNamespace(members=lambda: [])
    return GraphContext(Documents(replication), system or MemorySystem(), members, 5.0)  # type: ignore[arg-type]


async def run(ctx: GraphContext, query: str, **variables: Any) -> Any:
    result = await schema.execute(query, variable_values=variables, context_value=ctx)
    if result.errors:
        raise AssertionError([e.message for e in result.errors])
    return result.data


async def test_fifty_meshes_with_members_read_each_key_once_in_two_waves(
    replication: Replication,
) -> None:
    docs = Documents(replication)
    agents = ids(20, 1)
    meshes = ids(50, 2)
    for agent_id in agents:
        await docs.agent_write(agent_id, agent_doc(agent_id), {}, replace=True)
    for i, mesh_id in enumerate(meshes):  # 3 members each, overlapping across meshes
        members = [agents[(i + k) % len(agents)] for k in range(3)]
        topology = {"mesh_id": mesh_id, "member_agents": members}
        await docs.mesh_write(mesh_id, {"topology": topology}, create=True)
    ctx = context(replication)
    data = await run(
        ctx,
        "query($ids: [ID!]!) { meshes(ids: $ids) { id members(first: 10) "
        "{ items { id document } more } } }",
        ids=meshes,
    )
    assert [m["id"] for m in data["meshes"]] == meshes
    assert all(len(m["members"]["items"]) == 3 for m in data["meshes"])
    assert data["meshes"][0]["members"]["items"][0]["document"]["identity"]["agent_id"] in agents
    # No N+1: 50 mesh reads in one wave, then the 20 distinct agents in one more,
    # however often each agent appears (150 member slots).
    assert (ctx.loaders.reads, ctx.loaders.waves) == (50 + 20, 2)


async def test_agent_graph_fields_use_the_index(replication: Replication) -> None:
    docs = Documents(replication)
    a, b, c = ids(3, 3)
    m1, m2 = ids(2, 4)
    for agent_id in (a, b, c):
        await docs.agent_write(agent_id, agent_doc(agent_id), {}, replace=True)
    await docs.mesh_write(m1, {"topology": {"mesh_id": m1, "member_agents": [a, b]}}, create=True)
    await docs.mesh_write(m2, {"topology": {"mesh_id": m2, "member_agents": [a, c]}}, create=True)
    await docs.mesh_members(m2, [], [c])
    ctx = context(replication)
    data = await run(
        ctx,
        "query($id: ID!) { agent(id: $id) { id meshes { items { id } more } "
        "neighbours(first: 1) { items { id } more endCursor } } }",
        id=a,
    )
    assert [m["id"] for m in data["agent"]["meshes"]["items"]] == sorted([m1, m2])
    assert data["agent"]["neighbours"] == {"items": [{"id": b}], "more": False, "endCursor": b}
    # c left m2 and shares no mesh with a any more; the confirmed index says so.


async def test_system_keys_and_causal_agent_reads(replication: Replication) -> None:
    system = MemorySystem()
    await system.txn(Txn(success=(PutOp("cfg/a", b'{"x": 1}'), PutOp("cfg/b", b"\xff"))), 1.0)
    agent_id = ids(1, 5)[0]
    written = await Documents(replication).agent_write(
        agent_id, agent_doc(agent_id), {}, replace=True
    )
    ctx = context(replication, system)
    data = await run(
        ctx,
        'query($id: ID!, $t: JSON) { systemKeys(prefix: "cfg/", first: 1) '
        "{ items { key value modRevision } more endCursor revision } "
        "agent(id: $id, causalToken: $t) { document causalToken } }",
        id=agent_id,
        t=agent_tier.clock(written.state),
    )
    assert data["systemKeys"] == {
        "items": [{"key": "cfg/a", "value": {"x": 1}, "modRevision": 1}],
        "more": True,
        "endCursor": "cfg/a",
        "revision": 1,
    }
    assert data["agent"]["document"]["identity"]["agent_id"] == agent_id


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("{ " + "agent(id: \"x\") { meshes { items { members { items { " * 3 + "id"
         + " } } } } }" * 3 + " }", "exceeds maximum operation depth"),
        ("{ " + " ".join(f"a{i}: members {{ id }}" for i in range(30)) + " }", "aliases"),
        ("{ systemKeys(first: 5000) { more } }", "first must be within"),
        ("{ meshes(ids: [\"\"]) { id } }", "id is empty"),
        ("{ tierKeys(tier: \"nope\") { more } }", "unknown tier"),
        ("{ agent(id: \"not-a-uuid\") { id } }", "uuid4"),
    ],
)  # fmt: skip
async def test_abusive_or_bad_queries_are_refused_with_a_reason(
    replication: Replication, query: str, words: str
) -> None:
    ctx = context(replication)
    result = await schema.execute(query, context_value=ctx)
    assert result.errors, query
    assert words.lower() in " ".join(e.message for e in result.errors).lower()
    assert ctx.loaders.reads == 0  # refused before anything was read
