"""Errors of the replication layer, placed in the node's one tree (:mod:`node.errors`).

::

    NodeError (node.errors)
    ├── Unavailable
    │   └── NoOwnerReachable      no owner of the key answered; nothing applied
    ├── ReplicationIncomplete
    │   └── NotEnoughReplicas     durable somewhere, below the write quorum; never resend
    └── ReplicationError          a replica exchange failed; outcome unknown
        ├── PeerUnreachable       no reply: the peer is down, partitioned, timed out or
        │   │                     refused the call (the message may still have landed)
        │   └── NotDelivered      the message never reached the peer's handler: no
        │                         connection could be opened, or the peer refused the
        │                         call before reading it; nothing applied
        ├── CodecError            bytes that are not one valid replica message
        ├── RemoteFailure         a peer answered with an error kind this node does not
        │                         know (a newer peer); carries the peer's outcome
        └── ForwardOutcomeUnknown a forwarded update may have been applied by an owner
                                  whose answer never came; also a TimeoutError

The first two reach clients (``node.api.status`` maps them by their base class), and so
does :class:`ForwardOutcomeUnknown`: it is a :class:`TimeoutError` as well, which the
status table answers ``DEADLINE_EXCEEDED`` with outcome *unknown* (a client reports
``OutcomeUnknown`` and does not resend an update without a request id). The rest of the
``ReplicationError`` family stays inside the node: the driver treats it as "this peer did
not do it" and falls back (another owner, a hint, the next round) — except when
forwarding, where only :class:`NotDelivered` (or an answer whose outcome is
*not applied*) lets the update go to the next owner
(:func:`node.replication.coordinator.forward_verdict`). A peer's answer that *is* a
known :mod:`node.errors` class is re-raised as that class
(:meth:`node.replication.messages.Failure.error`), never recognised by its words.
"""

from __future__ import annotations

from node.errors import Outcome, ReplicationError, ReplicationIncomplete, Unavailable

__all__ = [
    "CodecError",
    "ForwardOutcomeUnknown",
    "NoOwnerReachable",
    "NotDelivered",
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


class NotDelivered(PeerUnreachable):
    """A replica message that provably did not reach the peer's handler: no connection
    to the peer could be opened (so nothing was sent), or the peer refused the call
    before reading it (a wrong cluster credential). Nothing was applied."""

    outcome = Outcome.NOT_APPLIED


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


class ForwardOutcomeUnknown(ReplicationError):
    """An update forwarded to an owner may have been applied there, but no definite
    answer came back (the reply was lost, the call timed out, the owner failed in a way
    that does not say). It is not sent to another owner — a counter would count it
    twice — and must not be resent; it converges like any applied write if it was.
    ``node.api.status`` answers it ``ABORTED`` with outcome unknown."""
