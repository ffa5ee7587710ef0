"""Replica messages: what owners, fallbacks and coordinators say to each other.

One frozen, slotted dataclass per message; :mod:`node.replication.codec` turns each
into bytes and back (one tag byte per type, msgpack body; the tag table is there).
Every request has exactly one reply type, or :class:`Failure`::

    request                              reply           the receiver
    Merge(tier, key, state)              Done            joins the state into its copy, durably
    MergeMany(items: Merge...)           MergeManyDone   the same per item, one batch; ok per item
    StoreHint(target, tier, key, state)  Done            keeps the state as a hint for ``target``
    Read(tier, key)                      ReadReply       answers its copy (or none)
    Forward(tier, key, op)               ForwardReply    coordinates the update as an owner
    Scan(tier, prefix, after)            ScanReply       answers its keys under ``prefix``
    Sync(tier, pair, step)               SyncReply       takes one Merkle anti-entropy step over
                                                         the keys both nodes of ``pair`` own
    Changes(tier, prefix, after, limit)  ChangesReply    answers its change feed after ``after``

A hinted write is handed off as a plain :class:`Merge` (a hint is a CRDT state or
delta).

Errors travel as :class:`Failure`: the :mod:`node.errors` class by its wire name
(:data:`ERROR_KINDS`, append-only), the class's :class:`~node.errors.Outcome`, and a
message for people. :meth:`Failure.error` rebuilds the same class on the receiving
side, so no one ever parses a message to learn what happened.

Node ids, tiers and keys are ``str``; CRDT states are ``bytes`` (``crdt.encode``).
Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from gossip.messages import SyncMessage
from node.errors import (
    AlreadyExists,
    DeadlineExpired,
    InvalidArgument,
    InvalidDocument,
    NodeError,
    NotFound,
    Outcome,
    ReplicationError,
    ReplicationIncomplete,
    Unavailable,
)
from node.replication.errors import NoOwnerReachable, NotEnoughReplicas, RemoteFailure
from node.tiers.agent import AgentNotFound
from node.tiers.documents import DocOp
from node.tiers.mesh import MeshExists, MeshNotFound
from node.tiers.ops import Op

__all__ = [
    "ERROR_KINDS",
    "Changes",
    "ChangesReply",
    "Done",
    "Failure",
    "Fenced",
    "Forward",
    "ForwardReply",
    "Merge",
    "MergeMany",
    "MergeManyDone",
    "Observe",
    "Read",
    "ReadReply",
    "ReplicaMessage",
    "Reply",
    "Request",
    "Scan",
    "ScanReply",
    "StoreHint",
    "Sync",
    "SyncReply",
    "Until",
    "reply_type",
]


# --- requests ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Merge:
    """Join ``state`` (a CRDT state or delta) into the receiver's copy of ``tier/key``.

    ``base``, when set, is the digest (``store.digest_of``) of the sender's copy that
    ``state`` -- then the sender's whole new copy -- was made from by joining into it.
    ``state`` includes that copy, so a receiver whose copy has that digest may store
    ``state`` as it is instead of decoding, joining and encoding. It travels in a
    :class:`MergeMany` only (a lone Merge's layout has no place for it)."""

    tier: str
    key: str
    state: bytes
    base: bytes | None = None


@dataclass(frozen=True, slots=True)
class MergeMany:
    """Several merges committed together (coalesced by the sender per peer)."""

    items: tuple[Merge, ...]


@dataclass(frozen=True, slots=True)
class StoreHint:
    """Keep ``state`` durably for ``target``, an owner that did not answer."""

    target: str
    tier: str
    key: str
    state: bytes


@dataclass(frozen=True, slots=True)
class Read:
    """The receiver's copy of ``tier/key``."""

    tier: str
    key: str


@dataclass(frozen=True, slots=True)
class Observe:
    """The receiver's copy of ``tier/key`` joined with the hints it holds for that key:
    everything it has acknowledged of the key, as owner or as a stand-in for one."""

    tier: str
    key: str


@dataclass(frozen=True, slots=True)
class Forward:
    """Apply ``op`` to ``tier/key`` as an owner (the sender is not one)."""

    tier: str
    key: str
    op: Op | DocOp


@dataclass(frozen=True, slots=True)
class ForwardGroup:
    """Apply ``items`` -- (op, request id or "") in order -- to ``tier/key`` as an
    owner, as one durable write and one replication; ids applied before are skipped."""

    tier: str
    key: str
    items: tuple[tuple[Op | DocOp, str], ...]


@dataclass(frozen=True, slots=True)
class ForwardMany:
    """Many :class:`ForwardGroup` for the receiver to coordinate (it is the first owner
    of each key): one message per owner for a whole batch of updates."""

    groups: tuple[ForwardGroup, ...]


@dataclass(frozen=True, slots=True)
class Scan:
    """The receiver's keys of ``tier`` starting with ``prefix``, sorting after ``after``."""

    tier: str
    prefix: str
    after: str


@dataclass(frozen=True, slots=True)
class Sync:
    """One anti-entropy step over the keys of ``tier`` that both nodes of ``pair`` own.

    ``pair`` is the two node ids, sorted; ``step.space`` must be the space the
    coordinator names for them (:func:`node.replication.coordinator.space_name`).
    """

    tier: str
    pair: tuple[str, str]
    step: SyncMessage


@dataclass(frozen=True, slots=True)
class Changes:
    """The receiver's change feed of ``tier`` (keys under ``prefix``) after seq ``after``,
    at most ``limit`` entries (:meth:`node.replication.store.TierStore.changes`)."""

    tier: str
    prefix: str
    after: int
    limit: int


# The forwards a write fence (Until) may carry.
Fenced = Forward | ForwardGroup | ForwardMany


@dataclass(frozen=True, slots=True)
class Until:
    """Serve ``request`` -- a forwarded write -- only if its owner applies it by
    ``deadline_ns`` (the client's wall-clock deadline; :mod:`node.deadline`). The
    reply is ``request``'s."""

    deadline_ns: int
    request: Fenced


Request = (
    Merge
    | MergeMany
    | StoreHint
    | Read
    | Forward
    | Scan
    | Sync
    | Observe
    | Changes
    | ForwardGroup
    | ForwardMany
    | Until
)


# --- replies ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Done:
    """The request's effect is durable on the receiver (Merge, StoreHint)."""


@dataclass(frozen=True, slots=True)
class MergeManyDone:
    """Per item of the MergeMany, in order: durable (True) or failed."""

    ok: tuple[bool, ...]


@dataclass(frozen=True, slots=True)
class ReadReply:
    """The receiver's copy (encoded CRDT state), or None when it holds none."""

    state: bytes | None


@dataclass(frozen=True, slots=True)
class ForwardReply:
    """The owner's state after the update, who acknowledged it and who was hinted."""

    state: bytes
    replicas: tuple[str, ...]
    hinted: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ForwardGroupReply:
    """:class:`ForwardReply` of a group, which items were duplicates (not applied
    again), and why an item did not apply ("" = it did): an InvalidArgument's words."""

    state: bytes
    replicas: tuple[str, ...]
    hinted: tuple[str, ...]
    duplicates: tuple[bool, ...]
    errors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ForwardManyReply:
    """One answer per group of a :class:`ForwardMany`, in order."""

    results: tuple[ForwardGroupReply | Failure, ...]


@dataclass(frozen=True, slots=True)
class ScanReply:
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ChangesReply:
    """One page of the receiver's feed: ``(seq, key, state or None)`` per changed key,
    complete through seq ``through``; ``trimmed``: seqs up to it are gone; ``feed``:
    the feed's id (a new one after the store was created anew)."""

    feed: str
    entries: tuple[tuple[int, str, bytes | None], ...]
    through: int
    trimmed: int


@dataclass(frozen=True, slots=True)
class SyncReply:
    """The responder's next step, or None when the session is over."""

    step: SyncMessage | None


@dataclass(frozen=True, slots=True)
class Failure:
    """The request failed on the receiver.

    ``kind`` names a :mod:`node.errors` class (:data:`ERROR_KINDS`); ``outcome`` says
    whether the request's effect is absent, durable somewhere, or unknown.
    """

    kind: str
    outcome: Outcome
    message: str

    @classmethod
    def from_exception(cls, exc: BaseException) -> Failure:
        """The failure that reports ``exc``: its nearest class in :data:`ERROR_KINDS`.

        Anything outside the node's tree (a CRDT or store error, a bug) is a
        ``ReplicationError`` with outcome unknown, its type named in the message."""
        if isinstance(exc, RemoteFailure):
            return cls(exc.kind, exc.outcome, exc.detail)
        if isinstance(exc, NodeError):
            for klass in type(exc).__mro__:
                name = _KIND_OF.get(klass)
                if name is not None:
                    return cls(name, exc.outcome, str(exc))
        return cls("ReplicationError", Outcome.UNKNOWN, f"{type(exc).__name__}: {exc}")

    def error(self) -> NodeError:
        """The exception to raise on the receiving side: the same class, or
        :class:`RemoteFailure` (with the peer's outcome) for a kind unknown here."""
        klass = ERROR_KINDS.get(self.kind)
        if klass is None:
            return RemoteFailure(self.kind, self.outcome, self.message)
        return klass(self.message)


Reply = (
    Done
    | MergeManyDone
    | ReadReply
    | ForwardReply
    | ScanReply
    | SyncReply
    | ChangesReply
    | ForwardGroupReply
    | ForwardManyReply
    | Failure
)

ReplicaMessage = Request | Reply

_REPLIES: dict[type[Request], type[Reply]] = {
    Merge: Done,
    MergeMany: MergeManyDone,
    StoreHint: Done,
    Read: ReadReply,
    Forward: ForwardReply,
    Scan: ScanReply,
    Sync: SyncReply,
    Observe: ReadReply,
    Changes: ChangesReply,
    ForwardGroup: ForwardGroupReply,
    ForwardMany: ForwardManyReply,
}


def reply_type(request: Request) -> type[Reply]:
    """The reply a successful ``request`` gets (a failed one gets :class:`Failure`)."""
    if isinstance(request, Until):
        return _REPLIES[type(request.request)]
    return _REPLIES[type(request)]


# Wire names of the error classes a Failure can carry. Append-only: a name is never
# reused for another class, and a renamed class keeps its old name here. A subclass
# not listed travels as its nearest listed ancestor.
ERROR_KINDS: dict[str, type[NodeError]] = {
    "NodeError": NodeError,
    "InvalidArgument": InvalidArgument,
    "NotFound": NotFound,
    "AlreadyExists": AlreadyExists,
    "Unavailable": Unavailable,
    "ReplicationIncomplete": ReplicationIncomplete,
    "ReplicationError": ReplicationError,
    "NotEnoughReplicas": NotEnoughReplicas,
    "NoOwnerReachable": NoOwnerReachable,
    "MeshNotFound": MeshNotFound,
    "MeshExists": MeshExists,
    "AgentNotFound": AgentNotFound,
    "InvalidDocument": InvalidDocument,
    "DeadlineExpired": DeadlineExpired,
}
_KIND_OF: dict[type[BaseException], str] = {klass: name for name, klass in ERROR_KINDS.items()}
