"""A follower's acknowledgement never moves its ``nextIndex`` backwards.

A real pysyncobj leader (no thread, no sockets, memory journal) behind the
HeldTransport seam: two append-entries go out before the first is acknowledged,
then the older acknowledgement arrives. pysyncobj alone rolls ``nextIndex`` back
to just after the older batch and re-sends the newer one; at the seam it stays.
"""

from __future__ import annotations

import pickle
from typing import Any

from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.node import Node

from consensus.raft.transport import HeldTransport


class Replicated(SyncObj):  # type: ignore[misc]
    @replicated  # type: ignore[untyped-decorator]
    def apply_command(self, payload: bytes) -> bytes:
        return payload


class Leader:
    """n1 made leader of {n1, n2, n3} by hand, ticked by the test."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.transport: HeldTransport | None = None

        def make_transport(sync_obj: Any, self_node: Node, others: Any) -> HeldTransport:
            self.transport = HeldTransport(
                sync_obj,
                self_node,
                others,
                sender=lambda peer, frames: self.sent.extend(
                    (peer, pickle.loads(f)) for f in frames
                ),
                wake=lambda: None,
            )
            return self.transport

        conf = SyncObjConf(autoTick=False, appendEntriesUseBatch=True, raftMinTimeout=20.0,
                           raftMaxTimeout=21.0, appendEntriesPeriod=5.0,
                           leaderFallbackTimeout=30.0, connectionTimeout=30.0)  # fmt: skip
        self.obj = Replicated(Node("n1"), [Node("n2"), Node("n3")], conf=conf,
                              transportClass=make_transport)  # fmt: skip
        t = self.transport
        assert t is not None
        for peer in ("n2", "n3"):
            t.peer_up(peer)
        t.drain()
        self.obj._SyncObj__raftElectionDeadline = 0  # campaign now
        self.tick()
        term = self.obj.raftCurrentTerm
        self.deliver("n2", {"type": "response_vote", "term": term})
        self.tick()
        assert self.obj._isLeader()
        self.sent.clear()

    @property
    def node(self) -> Node:
        assert self.transport is not None
        return self.transport._nodes["n2"]

    def next_index(self) -> int:
        return int(self.obj._SyncObj__raftNextIndex[self.node])

    def deliver(self, peer: str, message: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.deliver(peer, [pickle.dumps(message)])
        self.transport.drain()

    def tick(self) -> None:
        assert self.transport is not None
        self.obj.doTick(0.0)
        self.transport.flush()

    def propose_and_send(self, count: int) -> list[int]:
        """Append ``count`` commands and send them; the entry indexes sent to n2."""
        for i in range(count):
            self.obj.apply_command(b"c%d" % i, callback=lambda *_: None)
        self.obj.doTick(0.0)
        self.obj._SyncObj__sendAppendEntries()
        assert self.transport is not None
        self.transport.flush()
        sent = [
            e[1]
            for peer, m in self.sent
            if peer == "n2" and m["type"] == "append_entries"
            for e in m.get("entries", [])
        ]
        self.sent.clear()
        return sent


def test_an_older_acknowledgement_does_not_roll_next_index_back() -> None:
    leader = Leader()
    first = leader.propose_and_send(3)
    second = leader.propose_and_send(3)
    assert first and second and second[0] == first[-1] + 1
    assert leader.next_index() == second[-1] + 1
    # n2 acknowledges the first batch only now, after the second went out.
    ack = {"type": "next_node_idx", "next_node_idx": first[-1] + 1, "reset": False,
           "success": True}  # fmt: skip
    leader.deliver("n2", ack)
    assert leader.next_index() == second[-1] + 1, "rolled back: the second batch would be re-sent"
    third = leader.propose_and_send(2)
    assert third[0] == second[-1] + 1, f"entries re-sent: {third}"
    assert leader.transport is not None and leader.transport.rollbacks_prevented == 1


def test_a_refusal_still_moves_next_index_back() -> None:
    leader = Leader()
    first = leader.propose_and_send(3)
    leader.propose_and_send(3)
    refusal = {"type": "next_node_idx", "next_node_idx": first[0], "reset": True,
               "success": False}  # fmt: skip
    leader.deliver("n2", refusal)
    assert leader.next_index() == first[0]
    assert leader.propose_and_send(1)[0] == first[0], "the follower's gap is re-sent"
