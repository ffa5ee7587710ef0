"""Wire messages: frozen dataclasses, one per protocol event.

Two families share one codec (:mod:`gossip.codec`):

* **SWIM** (:class:`Ping`, :class:`Ack`, :class:`Nack`, :class:`PingReq`,
  :class:`Gossip`, :class:`PushPull`), which carry piggybacked :data:`Update` values:
  membership changes (:class:`Alive`, :class:`Suspect`, :class:`Dead`) and opaque user
  deltas (:class:`Delta`).
* **Anti-entropy** (:class:`SyncBegin`, :class:`SyncNodes`, :class:`SyncLeaves`,
  :class:`SyncValues`, :class:`SyncDone`), produced and consumed by
  :class:`gossip.antientropy.SyncPeer`.

:func:`rpc_for` says which node RPC a message travels on. Node ids, addresses and keys
are ``str``; hashes, digests and user payloads are ``bytes``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "Ack",
    "Alive",
    "Dead",
    "Delta",
    "Gossip",
    "MemberMeta",
    "MemberState",
    "Message",
    "Nack",
    "Ping",
    "PingReq",
    "PushPull",
    "Rpc",
    "Status",
    "Suspect",
    "SwimMessage",
    "SyncBegin",
    "SyncDone",
    "SyncLeaves",
    "SyncMessage",
    "SyncNodes",
    "SyncValues",
    "Update",
    "rpc_for",
]


class Status(enum.StrEnum):
    """Liveness of a member as seen by one node."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


@dataclass(frozen=True, slots=True)
class MemberMeta:
    """What a member advertises about itself; travels inside :class:`Alive`.

    ``tags`` is a small sorted tuple of (key, value) pairs (for example the Raft role);
    build one from a mapping with :meth:`make`. Keep the whole thing well under
    ``max_message_bytes``: it is piggybacked on pings.
    """

    node_id: str
    address: str
    version: str = ""
    tiers: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()

    @classmethod
    def make(
        cls,
        node_id: str,
        address: str,
        *,
        version: str = "",
        tiers: tuple[str, ...] | list[str] = (),
        tags: Mapping[str, str] | None = None,
    ) -> MemberMeta:
        """Build a meta with ``tags`` given as a mapping (sorted for a stable encoding)."""
        return cls(node_id, address, version, tuple(tiers), tuple(sorted((tags or {}).items())))

    def tag_map(self) -> dict[str, str]:
        """The tags as a fresh dict."""
        return dict(self.tags)


# --- piggybacked updates ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Alive:
    """``meta.node_id`` is alive at ``incarnation`` (also: join, refute, meta change)."""

    meta: MemberMeta
    incarnation: int

    @property
    def node(self) -> str:
        return self.meta.node_id


@dataclass(frozen=True, slots=True)
class Suspect:
    """``src`` suspects ``node`` at ``incarnation``."""

    node: str
    incarnation: int
    src: str


@dataclass(frozen=True, slots=True)
class Dead:
    """``src`` declares ``node`` dead at ``incarnation``; ``src == node`` means it left."""

    node: str
    incarnation: int
    src: str


@dataclass(frozen=True, slots=True)
class Delta:
    """An opaque user delta in slot ``key``; the highest (version, origin) wins."""

    key: str
    version: int
    origin: str
    data: bytes


Update = Alive | Suspect | Dead | Delta


@dataclass(frozen=True, slots=True)
class MemberState:
    """One row of a full membership table, as exchanged by :class:`PushPull`."""

    meta: MemberMeta
    incarnation: int
    status: Status


# --- SWIM messages ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    """Direct probe of ``target`` (a node id, so a reused address is detected)."""

    seq: int
    src: str
    src_addr: str
    target: str
    updates: tuple[Update, ...] = ()


@dataclass(frozen=True, slots=True)
class Ack:
    """Answer to :class:`Ping` ``seq`` (or a relayed answer to a :class:`PingReq`)."""

    seq: int
    src: str
    updates: tuple[Update, ...] = ()


@dataclass(frozen=True, slots=True)
class Nack:
    """Lifeguard: the relay of :class:`PingReq` ``seq`` got no answer from the target."""

    seq: int
    src: str


@dataclass(frozen=True, slots=True)
class PingReq:
    """Ask the receiver to ping ``target`` at ``target_addr`` and relay the Ack."""

    seq: int
    src: str
    src_addr: str
    target: str
    target_addr: str
    updates: tuple[Update, ...] = ()


@dataclass(frozen=True, slots=True)
class Gossip:
    """Push of piggybacked updates, sent every gossip interval to ``fanout`` members."""

    src: str
    updates: tuple[Update, ...] = ()


@dataclass(frozen=True, slots=True)
class PushPull:
    """Full membership exchange: join (``join``), periodic repair, partition heal.

    The receiver of a request (``reply`` false) answers with its own table
    (``reply`` true).
    """

    src: str
    src_addr: str
    join: bool
    reply: bool
    states: tuple[MemberState, ...] = ()


SwimMessage = Ping | Ack | Nack | PingReq | Gossip | PushPull


# --- anti-entropy messages ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyncBegin:
    """Open a session on keyspace ``space``: the initiator's layout and root hash."""

    space: str
    session: int
    branching: int
    depth: int
    root: bytes


@dataclass(frozen=True, slots=True)
class SyncNodes:
    """The sender's hashes of every child (at ``level``) of each node in ``parents``.

    ``hashes`` is the concatenation, parent by parent, of ``branching`` hashes.
    """

    space: str
    session: int
    level: int
    parents: tuple[int, ...]
    hashes: bytes


@dataclass(frozen=True, slots=True)
class SyncLeaves:
    """The sender's (key, digest) entries of each leaf bucket in ``leaves``."""

    space: str
    session: int
    leaves: tuple[int, ...]
    entries: tuple[tuple[tuple[str, bytes], ...], ...]


@dataclass(frozen=True, slots=True)
class SyncValues:
    """Values the receiver lacks or holds differently, plus keys the sender wants back.

    ``final`` marks the last data-carrying message of a session.
    """

    space: str
    session: int
    values: tuple[tuple[str, bytes], ...]
    want: tuple[str, ...]
    final: bool


@dataclass(frozen=True, slots=True)
class SyncDone:
    """The session is over (roots equal, or nothing left to exchange)."""

    space: str
    session: int


SyncMessage = SyncBegin | SyncNodes | SyncLeaves | SyncValues | SyncDone

Message = SwimMessage | SyncMessage


class Rpc(enum.StrEnum):
    """The node RPC a message travels on (each carries one encoded message)."""

    PING = "Ping"
    PING_REQ = "PingReq"
    GOSSIP = "Gossip"
    SYNC = "Sync"


def rpc_for(msg: Message) -> Rpc:
    """Which RPC carries ``msg``: Ping/Ack/Nack -> Ping, PingReq -> PingReq,
    Gossip/PushPull -> Gossip, Sync* -> Sync."""
    if isinstance(msg, Ping | Ack | Nack):
        return Rpc.PING
    if isinstance(msg, PingReq):
        return Rpc.PING_REQ
    if isinstance(msg, Gossip | PushPull):
        return Rpc.GOSSIP
    return Rpc.SYNC
