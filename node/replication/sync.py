"""The pair space: gossip's ``SyncStore`` over the keys of one tier two nodes both own.

:func:`node.replication.coordinator.pair_keys` says which keys are in it;
:class:`PairTrees` keeps their Merkle tree current from the store's change feed, and
:class:`PairSpace` serves one session over it and makes the values the session brings
in durable. ``SyncStore.merge_values`` is synchronous in the protocol, so received values
are queued and joined into the store by :meth:`PairSpace.flush`, which the driver awaits
after every protocol step, before the next message is sent. :class:`ServedSessions`
remembers the sessions peers ran with this node, so that a round leaves a pair to the
peer that has just synced it, and :class:`DivergenceCheck` is the invariant check over
what sessions found.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

from gossip.merkle import MerkleLayout, MerkleTree
from gossip.messages import SyncBegin, SyncDone, SyncMessage, SyncValues
from node.replication.store import ReplicaStore, digest_of

__all__ = [
    "MERKLE_LAYOUT",
    "DivergenceCheck",
    "Members",
    "PairSpace",
    "PairTrees",
    "Served",
    "ServedSessions",
]

MERKLE_LAYOUT = MerkleLayout(branching=16, depth=3)  # 4096 buckets; same on every node

# Joins an encoded state into the local copy of (tier, key), durably; returns the result.
MergeLocal = Callable[[str, str, bytes], Awaitable[bytes | None]]


class PairSpace:
    def __init__(
        self,
        store: ReplicaStore,
        merge: MergeLocal,
        tier: str,
        name: str,
        tree: MerkleTree,
    ) -> None:
        self._store = store
        self._merge = merge
        self.tier = tier
        self.name = name
        # A PairTrees tree. Joins made here reach it through the change feed at the
        # next refresh, which places each key: a peer with another view of the live
        # set may send keys outside this pair's space, and those must stay out of it.
        self._tree = tree
        self._pending: dict[str, bytes] = {}
        self.merged = 0  # values received and joined in
        self.served = 0  # values sent to the other side
        # Each key the session found differing -> this node's digest of it before the
        # session joined anything into it (None: not held here), and after the
        # session's joins. The driver's divergence check compares ``found`` with what
        # the previous session ``left``.
        self.found: dict[str, bytes | None] = {}
        self.left: dict[str, bytes | None] = {}
        self._received: dict[str, bytes] = {}  # key -> digest of the peer's value

    @property
    def theirs(self) -> dict[str, bytes | None]:
        """Each key the session found differing -> the digest of the copy the peer sent
        (None: it sent none, so it holds none: a peer sends every differing key it
        holds)."""
        return {key: self._received.get(key) for key in self.found}

    @property
    def tree(self) -> MerkleTree:
        return self._tree

    def get_values(self, keys: Sequence[str]) -> dict[str, bytes]:
        values = {}
        for key in keys:
            raw = self._store.get(self.tier, key)
            if raw is not None:
                values[key] = raw
            if key not in self.found:
                self.found[key] = self.left[key] = None if raw is None else digest_of(raw)
        self.served += len(values)
        return values

    def merge_values(self, values: Mapping[str, bytes]) -> None:
        self._pending.update(values)

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for key, value in pending.items():
            self._received[key] = digest_of(value)
            if key not in self.found:
                raw = self._store.get(self.tier, key)
                self.found[key] = None if raw is None else digest_of(raw)
            merged = await self._merge(self.tier, key, value)
            self.left[key] = None if merged is None else digest_of(merged)
            self.merged += 1


# Placement of a key among live members: coordinator.owners or a cache of it.
Place = Callable[[str, frozenset[str]], Sequence[str]]


class PairTrees:
    """One tier's pair-space Merkle trees on this node, kept up to date from the
    store's change feed instead of rebuilt from every key each round.

    ``tree(peer)`` is the tree of the keys placement gives to both this node and
    ``peer``. :meth:`refresh` brings every tree up to date: after a change of the live
    set (placement moves), when the feed cannot say what changed (a new store, or
    changes trimmed away), or the first time, it rebuilds them from every key;
    otherwise it applies only the keys changed since the last refresh, so an
    anti-entropy round costs what changed, not what is stored."""

    FEED_PAGE = 1000

    def __init__(self, store: ReplicaStore, tier: str, self_id: str) -> None:
        self._store = store
        self.tier = tier
        self._self = self_id
        self._live: frozenset[str] | None = None
        self._feed = ""
        self._seq = 0
        self._trees: dict[str, MerkleTree] = {}
        # Keys held here that placement over the live set does not give to this node
        # (stray copies, to hand to their owners): every key at a rebuild, and each
        # changed key as it is applied, is placed -- so a copy that became a stray by
        # any path (a write planned under an older view, a merge from a node with
        # another view) is found by the next refresh.
        self.strays: set[str] = set()
        self.rebuilds = 0
        self.applied = 0  # changed keys applied incrementally

    def tree(self, peer: str) -> MerkleTree:
        return self._trees.setdefault(peer, MerkleTree(MERKLE_LAYOUT))

    def refresh(self, live: frozenset[str], place: Place) -> None:
        if live != self._live or not self._catch_up(live, place):
            self._rebuild(live, place)

    def _rebuild(self, live: frozenset[str], place: Place) -> None:
        start = self._store.changes(self.tier, "", -1, 1)  # the feed position first
        trees: dict[str, MerkleTree] = {p: MerkleTree(MERKLE_LAYOUT) for p in live - {self._self}}
        self.strays = set()
        for key, digest in self._store.keys_and_digests(self.tier):
            self._move(trees, key, digest, live, place)
        self._trees, self._live = trees, live
        self._feed, self._seq = start.feed, start.through
        self.rebuilds += 1

    def _catch_up(self, live: frozenset[str], place: Place) -> bool:
        """Apply the changes since the last refresh; False if the feed cannot tell."""
        while True:
            # Digests straight from the store: no value read, decrypted or hashed again.
            page = self._store.changes(self.tier, "", self._seq, self.FEED_PAGE, digests=True)
            if page.feed != self._feed or page.trimmed > self._seq:
                return False
            for _seq, key, digest in page.entries:  # each changed key once (the feed's)
                self._move(self._trees, key, digest, live, place)
            self.applied += len(page.entries)
            if page.through <= self._seq or not page.entries:
                self._seq = max(self._seq, page.through)
                return True
            self._seq = page.through

    def _move(
        self,
        trees: dict[str, MerkleTree],
        key: str,
        digest: bytes | None,
        live: frozenset[str],
        place: Place,
    ) -> None:
        """Put a key where it now belongs: in the tree of each other owner with
        ``digest``, out of every other tree, and among the strays if this node is not
        an owner (or out of everything: ``digest`` None, deleted)."""
        owners = place(key, live) if digest is not None else ()
        mine = self._self in owners
        if digest is not None and not mine:
            self.strays.add(key)
        else:
            self.strays.discard(key)
        bucket = MERKLE_LAYOUT.bucket(key)  # one hash of the key for every tree
        for peer, tree in trees.items():
            if digest is not None and mine and peer in owners:
                tree.set(key, digest, bucket=bucket)
            else:
                tree.delete(key, bucket=bucket)


class DivergenceCheck:
    """The background invariant check (spec ``automated_invariant_checking``): keys two
    owners still disagree on after anti-entropy joined them.

    A session joins both sides' values for every key it finds differing, so after it
    the two copies are equal unless a write landed meanwhile. For each (tier, peer)
    this remembers, for each such key, the digest it had here once the session was
    over and the digest of the copy the peer sent. When the next session with that
    peer finds the key differing *again*, while this node's copy is still exactly
    what the last session left and the peer sends the very copy it sent then, neither
    side has changed since the join, yet they differ: the join did not make the
    copies converge. The other side dropped or failed the value it was sent, or
    placement keeps pushing the key where it does not belong (the change feed bug
    found by chaos seed 202 looked exactly so). A key written on either side in
    between is not counted. The peer's copy has to be compared too: a write the peer
    coordinated reaches this node as a replica write, but under load that write can
    still be on its way when the next session runs, and without the peer's side such
    keys were counted (28-38 keys a session under batches of 256, all converging once
    the load stopped). Pure: the driver feeds it what a session found and left."""

    def __init__(self) -> None:
        # (tier, peer) -> key -> (this copy as the session left it, the peer's as sent)
        self._left: dict[tuple[str, str], dict[str, tuple[bytes | None, bytes | None]]] = {}
        self.detected = 0  # persisting divergences seen since start

    def session(
        self,
        tier: str,
        peer: str,
        found: Mapping[str, bytes | None],
        left: Mapping[str, bytes | None],
        theirs: Mapping[str, bytes | None],
    ) -> list[str]:
        """Record one session with ``peer``: ``found`` maps each key it found differing
        to this node's digest before any join, ``left`` to the digest after, ``theirs``
        to the digest of the copy the peer sent (None: none). Returns the keys whose
        divergence persisted from the previous session, sorted."""
        before = self._left.get((tier, peer), {})
        persisting = sorted(
            k for k, d in found.items() if k in before and before[k] == (d, theirs.get(k))
        )
        if left:
            self._left[(tier, peer)] = {k: (d, theirs.get(k)) for k, d in left.items()}
        else:
            self._left.pop((tier, peer), None)
        self.detected += len(persisting)
        return persisting

    def forget(self, tier: str, peer: str) -> None:
        """Drop what the last session with ``peer`` left (it failed part-way: what it
        sent may never have arrived, so the next one starts afresh)."""
        self._left.pop((tier, peer), None)

    def keep_only(self, peers: Iterable[str]) -> None:
        """Forget sessions with members no longer live."""
        keep = set(peers)
        for key in [k for k in self._left if k[1] not in keep]:
            del self._left[key]


Members = tuple[tuple[str, str], ...]  # the live set as (id, address), sorted


@dataclasses.dataclass
class Served:
    """One session a peer ran with this node, as this node served it. What it says
    of this node's copies is what they were when it began (later steps may compare
    subtrees with writes made since, or may not)."""

    session: int
    # How many anti-entropy rounds this node had begun when the session began.
    # Counted, not timed: "since my previous round began" needs an order, and one
    # that is exact under a frozen test clock.
    began: int
    version: int  # the tier's store version when it began, before anything was read
    members: Members  # the live set then (it decides the pair's space)
    keys: int = 0  # values the session sent from here or joined in here
    over: bool = False  # its last step was answered here


class ServedSessions:
    """The anti-entropy sessions peers ran with this node: what lets a round leave a
    pair to the peer that has just synced it.

    A session is symmetric (values are merged both ways), so one session reconciles
    a pair whichever node starts it. Both nodes of a pair run rounds on their own
    clocks, and before this each started its own session, so under sustained writes
    every pair was synced twice per interval and its in-flight keys exchanged and
    joined twice. A round now skips a pair whose peer began a session with this node
    after this node's previous round began, which this node has served to its end
    over one live set, the one the round sees (:meth:`covering`). While the two
    nodes' rounds do not line up, one node of a pair starts the sessions and the
    other serves them; rounds that do line up both run their own, as before.

    A change is reconciled at most one interval later than when every node ran its
    own sessions. A round skips a pair only for a session that *began* after this
    node's previous round began, so of two rounds in a row, the second runs its own
    session or leaves the pair to one that began after the first one began: a change
    made here before the first round began is in one of them. (Not "ended": a
    session that began before the change and ended after it says nothing of it.)

    "Served to its end" is as seen here: when this node's answer is the last message,
    the initiator may still fail to join what it carries. That initiator then counts
    its session as failed and runs another in its next round, so this node's round
    that left the pair to it delayed the repair by one round at most. Pure: the
    driver feeds it each step it serves."""

    def __init__(self) -> None:
        self._served: dict[tuple[str, str], Served] = {}  # (tier, peer) -> last session

    def begin(
        self, tier: str, peer: str, message: SyncMessage, *, rounds: int, version: int,
        members: Members,
    ) -> None:  # fmt: skip
        """Before ``message`` from ``peer`` is answered (before anything is read for
        it): if it begins a session, remember that session's start (``rounds`` begun
        here, the tier's store ``version``, the live set ``members``); it replaces the
        peer's last one."""
        if isinstance(message, SyncBegin):
            self._served[(tier, peer)] = Served(message.session, rounds, version, members)

    def step(
        self,
        tier: str,
        peer: str,
        message: SyncMessage,
        reply: SyncMessage | None,
        *,
        keys: int,
        members: Members,
    ) -> None:
        """Record one step served: ``message`` from ``peer``, answered with ``reply``
        (None: nothing, the session is over), ``keys`` values sent or joined by it,
        over the live set ``members``. A session whose live set changed part-way
        covers nothing: its earlier steps compared trees of another placement, and
        keys that moved into the pair's space may sit in subtrees found equal then.
        A step of a session whose beginning was not seen here (this node restarted
        in between) is not recorded."""
        served = self._served.get((tier, peer))
        if served is None or served.session != message.session or served.over:
            return
        if members != served.members:
            del self._served[(tier, peer)]
            return
        served.keys += keys
        if (
            reply is None
            or isinstance(reply, SyncDone)
            or (isinstance(reply, SyncValues) and reply.final)
        ):
            served.over = True

    def covering(self, tier: str, peer: str, since: int, members: Members) -> Served | None:
        """The session ``peer`` ran with this node on ``tier`` that makes this node's own
        unnecessary: one that began once ``since`` rounds had begun here (the count
        when this node's previous round began) and was served to its end, over the
        live set ``members``; None if there is none."""
        served = self._served.get((tier, peer))
        if served is None or not served.over or served.began < since:
            return None
        return served if served.members == members else None

    def keep_only(self, peers: Iterable[str]) -> None:
        """Forget sessions run by members no longer live."""
        keep = set(peers)
        for key in [k for k in self._served if k[1] not in keep]:
            del self._served[key]
