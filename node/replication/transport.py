"""What the replication driver needs from the world: who is live, and a way to reach them.

Two protocols, each with a real implementation and an in-memory one:

* :class:`Membership` — in a node :class:`GossipMembership` (the SWIM view); in tests
  :class:`node.replication.memory.MemoryMembership`;
* :class:`PeerTransport` — in a node :class:`node.replication.grpc_transport.GrpcTransport`
  (the authenticated ``Peer.Replica`` RPC); in tests
  :class:`node.replication.memory.MemoryTransport` (with faults).

The store is the third dependency (:class:`node.replication.store.ReplicaStore`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from gossip.messages import Status
from node.replication.messages import Reply, Request

__all__ = [
    "GossipMember",
    "GossipMembership",
    "GossipView",
    "MemberInfo",
    "Membership",
    "PeerTransport",
    "cancelled_from_below",
]


def cancelled_from_below() -> bool:
    """Whether a CancelledError being handled came from something awaited (gRPC raises
    it in the caller of a call whose channel it closed) rather than from a cancellation
    of this task (the node stopping, a caller's timeout)."""
    task = asyncio.current_task()
    return task is None or not task.cancelling()


class MemberInfo(Protocol):
    """One member as membership reports it (``gossip.swim.MemberView`` is one)."""

    @property
    def id(self) -> str: ...

    @property
    def address(self) -> str: ...


class Membership(Protocol):
    """This node's current view of the cluster. Called from the event loop only.

    Contract:

    * :attr:`self_id` never changes.
    * :meth:`live` is a fresh dict ``member id -> peer address`` of the members that
      own keys now (alive or suspect: a suspect may be slow, not gone), **always
      including this node**, in a stable order (placement does not depend on it; the
      order in which peers are visited does). It never raises.
    * :meth:`members` lists every member heard of, whatever its status (status reports
      count the hints held for each).
    """

    @property
    def self_id(self) -> str: ...

    def live(self) -> dict[str, str]: ...

    def members(self) -> Sequence[MemberInfo]: ...


class PeerTransport(Protocol):
    """Carries one replica message to a peer and brings back its reply.

    Contract:

    * :meth:`call` sends ``message`` to ``peer`` (at ``address``) and returns the
      decoded reply, which may be a :class:`~node.replication.messages.Failure` (the
      caller decides what a failure means). Calls may be concurrent, to one peer or
      many; each is independent (no ordering between them).
    * It raises :class:`~node.replication.errors.NotDelivered` (a
      :class:`~node.replication.errors.PeerUnreachable`) only when the message provably
      did not reach the peer's handler — no connection could be opened, or the peer
      refused the call before reading it — so nothing was applied; plain
      :class:`~node.replication.errors.PeerUnreachable` when no reply came otherwise
      (down, partitioned, timed out after sending) — the message may still have been
      applied; and :class:`~node.replication.errors.CodecError` when the reply is not a
      valid message. Nothing else, except cancellation. When in doubt, an
      implementation says ``PeerUnreachable``: forwarding moves an update to another
      owner only after ``NotDelivered``.
    * :meth:`close` releases connections; no call may follow it.
    """

    async def call(self, peer: str, address: str, message: Request) -> Reply: ...

    async def close(self) -> None: ...


class GossipMember(MemberInfo, Protocol):
    """A member with its SWIM status (``gossip.swim.MemberView``)."""

    @property
    def status(self) -> object: ...


class GossipView(Protocol):
    """The part of :class:`node.peer.gossip.GossipDriver` membership is read from."""

    @property
    def address(self) -> str: ...

    def members(self) -> Sequence[GossipMember]: ...


_LIVE = (Status.ALIVE.value, Status.SUSPECT.value)


class GossipMembership:
    """:class:`Membership` read from the node's SWIM view (``GossipDriver``)."""

    def __init__(self, self_id: str, gossip: GossipView) -> None:
        self._self_id = self_id
        self._gossip = gossip

    @property
    def self_id(self) -> str:
        return self._self_id

    def live(self) -> dict[str, str]:
        members = {m.id: m.address for m in self._gossip.members() if str(m.status) in _LIVE}
        members.setdefault(self._self_id, self._gossip.address)
        return members

    def members(self) -> Sequence[MemberInfo]:
        return self._gossip.members()
