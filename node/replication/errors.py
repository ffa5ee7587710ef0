"""Errors of the replication layer, placed in the node's one tree (:mod:`node.errors`).

::

    NodeError (node.errors)
    ├── Unavailable
    │   └── NoOwnerReachable      no owner of the key answered; nothing applied
    ├── ReplicationIncomplete
    │   └── NotEnoughReplicas     durable somewhere, below the write quorum; never resend
    └── ReplicationError          a replica exchange failed; outcome unknown
        ├── PeerUnreachable       no reply: the peer is down, partitioned, timed out or
        │                         refused the call (the message may still have landed)
        ├── CodecError            bytes that are not one valid replica message
        └── RemoteFailure         a peer answered with an error kind this node does not
                                  know (a newer peer); carries the peer's outcome

The first two reach clients (``node.api.status`` maps them by their base class). The
``ReplicationError`` family stays inside the node: the driver treats it as "this peer did
not do it" and falls back (another owner, a hint, the next round). A peer's answer that
*is* a known :mod:`node.errors` class is re-raised as that class
(:meth:`node.replication.messages.Failure.error`), never recognised by its words.
"""

from __future__ import annotations

from node.errors import Outcome, ReplicationError, ReplicationIncomplete, Unavailable

__all__ = [
    "CodecError",
    "NoOwnerReachable",
    "NotEnoughReplicas",
    "PeerUnreachable",
    "RemoteFailure",
]


class NotEnoughReplicas(ReplicationIncomplete):
    """The update is durable somewhere but fewer than the write quorum
    acknowledged it. It will converge; resending would apply it twice."""


class NoOwnerReachable(Unavailable):
    """No owner of the key answered; nothing was applied."""


class PeerUnreachable(ReplicationError):
    """A replica message got no reply (down, partitioned, timed out, refused).

    Outcome unknown: a message that timed out may have been applied by the peer."""


class CodecError(ReplicationError):
    """Bytes that are not exactly one valid replica message of this protocol."""


class RemoteFailure(ReplicationError):
    """A peer failed with an error kind this node does not know (a newer peer).

    ``kind`` is the peer's wire name for it; ``outcome`` is the peer's, per instance."""

    def __init__(self, kind: str, outcome: Outcome, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.outcome = outcome
        self.detail = message
