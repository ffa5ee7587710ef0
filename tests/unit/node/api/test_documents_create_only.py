"""Create-only agent writes (HTTP If-None-Match: *) see an acknowledged create even
when the coordinating owner's own copy has not received it yet."""

from __future__ import annotations

import uuid

import pytest

from node.api.documents import Documents
from node.errors import AlreadyExists
from node.replication import coordinator
from node.tiers.ops import TIERS
from tests.agent_docs import agent_doc
from tests.support.memory_cluster import memory_cluster


async def test_a_create_acknowledged_by_one_owner_blocks_a_create_through_the_other() -> None:
    net, nodes = memory_cluster()
    agent_id = str(uuid.UUID(int=7, version=4))
    first, second = coordinator.owners(TIERS["agent"], agent_id, ["n1", "n2", "n3"])
    net.partition(first, second)  # the async backup cannot reach the other owner
    written = await Documents(nodes[first]).agent_write(
        agent_id, agent_doc(agent_id), {}, replace=True, only_new=True
    )
    assert written.replicas[0] == first  # acknowledged by one owner (write quorum 1)
    assert nodes[second].store.get("agent", agent_id) is None
    net.heal()
    with pytest.raises(AlreadyExists):
        await Documents(nodes[second]).agent_write(
            agent_id, agent_doc(agent_id), {}, replace=True, only_new=True
        )
