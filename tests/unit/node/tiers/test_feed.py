"""How change-feed entries read (node/tiers/feed.py)."""

from __future__ import annotations

import uuid

from crdt import ORSet, PNCounter, Timestamp, encode
from node.tiers import agent as agent_doc
from node.tiers import mesh as mesh_doc
from node.tiers.feed import change_value
from node.tiers.ops import apply_op
from tests.agent_docs import agent_doc as agent_json

HLC = Timestamp(1_700_000_000 * 10**9, 0)


def test_plain_crdt_values_deleted_and_undecodable_states() -> None:
    assert change_value("population", "p/a", encode(PNCounter().increment("n1", 4))) == (
        "pncounter",
        4,
    )
    assert change_value("population", "p/a", None) == ("deleted", None)
    assert change_value("population", "p/a", b"\xffnot a state") == ("undecodable", None)
    assert change_value("agent", "x", encode(ORSet().add("n1", "e"))) == ("undecodable", None)


def test_documents_and_the_mesh_index() -> None:
    agent_id, mesh_id = str(uuid.uuid4()), str(uuid.uuid4())
    agent, _ = agent_doc.create(None, agent_json(agent_id), "n1", HLC, key=agent_id)
    kind, value = change_value("agent", agent_id, encode(agent))
    assert kind == "agent" and value["identity"]["agent_id"] == agent_id
    mesh, _ = mesh_doc.create(
        {"topology": {"mesh_id": mesh_id, "member_agents": [agent_id]}}, "n1", HLC
    )
    kind, value = change_value("mesh", mesh_id, encode(mesh))
    assert kind == "mesh" and value["topology"]["member_agents"] == [agent_id]
    deleted, _ = mesh_doc.delete(mesh, "n1", Timestamp(HLC.wall_ns + 1, 0))
    assert change_value("mesh", mesh_id, encode(deleted)) == ("mesh", None)
    index = mesh_doc.index_deltas(mesh_id, [agent_id], [])[agent_id]
    state, _ = apply_op(None, index, "n1", HLC)
    assert change_value("mesh", mesh_doc.index_key(agent_id), encode(state)) == (
        "mesh_index",
        [mesh_id],
    )
