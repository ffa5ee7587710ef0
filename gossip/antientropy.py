"""Merkle anti-entropy: a stateless, symmetric sync protocol over any :class:`SyncStore`.

A session reconciles one keyspace (*space*) between two nodes. Both ends run a
:class:`SyncPeer`; the initiator calls :meth:`SyncPeer.begin`, then both feed each other's
messages to :meth:`SyncPeer.handle` until one returns ``None``::

    I -> R  SyncBegin(root)                 roots equal?  R -> I SyncDone
    R -> I  SyncNodes(level 1: R's children of the root)
    I -> R  SyncNodes(level 2: I's children of the level-1 nodes that differ)
    ...     (alternating, one level per message, only under differing nodes)
    X -> Y  SyncLeaves(X's key->digest entries of the differing leaf buckets)
    Y -> X  SyncValues(Y's values for keys that differ, keys Y wants from X)
    X -> Y  SyncValues(X's values for those keys, final)

Every message is self-contained (it names its space, level and node indices), so the
responder keeps no session state: a gRPC ``Sync`` handler is one call to
:meth:`SyncPeer.handle` whose result (or nothing) is the response. Round trips are about
``(depth + 3) / 2``; bytes are ``O(d * branching * depth * HASH_BYTES)`` plus the
entries of the differing buckets and the differing values.

Merge semantics belong to the store: both sides send their value for each differing
key and each side calls :meth:`SyncStore.merge_values`, so a key missing on one side is
*copied*, never deleted. Stores that need deletes keep tombstones as values (as CRDTs
do).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from gossip.errors import SyncError
from gossip.merkle import HASH_BYTES, MerkleTree
from gossip.messages import (
    SyncBegin,
    SyncDone,
    SyncLeaves,
    SyncMessage,
    SyncNodes,
    SyncValues,
)

__all__ = ["DictStore", "SyncPeer", "SyncStore"]


@runtime_checkable
class SyncStore(Protocol):
    """What anti-entropy needs from a tier's store.

    Contract:

    * ``tree`` is the store's :class:`MerkleTree`, kept current by the store itself on
      every local write (``tree.set(key, digest_of(value))``) and after
      :meth:`merge_values` -- at once, or (as the node's pair spaces do, from a change
      feed) before the next session. The same layout must be used by every replica of
      a space.
    * :meth:`get_values` returns the current encoded value of each key it holds;
      absent keys are simply omitted (no error). The returned bytes are owned by the
      caller.
    * :meth:`merge_values` merges remote values into the store (CRDT merge, LWW, ...:
      the store decides); ``tree`` must reflect every key whose value changed. It
      must be idempotent and commutative for replicas to converge. It may raise only
      for a value it cannot decode; the session then fails with that error.

    Calls happen from the thread that drives the :class:`SyncPeer`; they are never
    concurrent with each other.
    """

    @property
    def tree(self) -> MerkleTree: ...

    def get_values(self, keys: Sequence[str]) -> dict[str, bytes]: ...

    def merge_values(self, values: Mapping[str, bytes]) -> None: ...


class DictStore:
    """In-memory :class:`SyncStore` for tests and the simulator.

    ``merge`` decides what to keep when a key exists on both sides (default: the
    larger byte string, a deterministic stand-in for a real CRDT merge).
    """

    def __init__(
        self,
        tree: MerkleTree | None = None,
        *,
        digest: Callable[[bytes], bytes] | None = None,
        merge: Callable[[bytes, bytes], bytes] = max,
    ) -> None:
        self._tree = tree if tree is not None else MerkleTree()
        self.data: dict[str, bytes] = {}
        self._digest = digest or _default_digest
        self._merge = merge

    @property
    def tree(self) -> MerkleTree:
        return self._tree

    def put(self, key: str, value: bytes) -> None:
        self.data[key] = value
        self._tree.set(key, self._digest(value))

    def delete(self, key: str) -> None:
        self.data.pop(key, None)
        self._tree.delete(key)

    def get_values(self, keys: Sequence[str]) -> dict[str, bytes]:
        return {k: self.data[k] for k in keys if k in self.data}

    def merge_values(self, values: Mapping[str, bytes]) -> None:
        for k, v in values.items():
            old = self.data.get(k)
            self.put(k, v if old is None else self._merge(old, v))


def _default_digest(value: bytes) -> bytes:
    from hashlib import blake2b

    return blake2b(value, digest_size=HASH_BYTES).digest()


class SyncPeer:
    """One node's end of anti-entropy for any number of spaces.

    ``stores`` maps a space name to its store (the mapping is read at each call, so a
    driver may add spaces later). :meth:`handle` raises :class:`SyncError` for an
    unknown space, a layout mismatch or out-of-range indices; the driver should answer
    the RPC with an error and drop the session. Not thread-safe.
    """

    def __init__(self, stores: Mapping[str, SyncStore]) -> None:
        self._stores = stores
        self.keys_sent = 0
        self.keys_received = 0

    def _store(self, space: str) -> SyncStore:
        store = self._stores.get(space)
        if store is None:
            raise SyncError(f"unknown anti-entropy space {space!r}")
        return store

    def begin(self, space: str, session: int) -> SyncBegin:
        """The first message of a session on ``space`` (``session`` tags logs only)."""
        tree = self._store(space).tree
        layout = tree.layout
        return SyncBegin(space, session, layout.branching, layout.depth, tree.root())

    def handle(self, msg: SyncMessage) -> SyncMessage | None:
        """Answer ``msg``; ``None`` means the session is over on this side."""
        if isinstance(msg, SyncDone):
            return None
        store = self._store(msg.space)
        tree = store.tree
        if isinstance(msg, SyncBegin):
            layout = tree.layout
            if (msg.branching, msg.depth) != (layout.branching, layout.depth):
                raise SyncError(
                    f"Merkle layout mismatch on {msg.space!r}: peer "
                    f"{msg.branching}^{msg.depth}, local {layout.branching}^{layout.depth}"
                )
            if msg.root == tree.root():
                return SyncDone(msg.space, msg.session)
            if layout.depth == 0:
                return self._leaves(msg.space, msg.session, tree, [0])
            return SyncNodes(msg.space, msg.session, 1, (0,), tree.children_hashes(0, 0))
        if isinstance(msg, SyncNodes):
            return self._on_nodes(msg, tree)
        if isinstance(msg, SyncLeaves):
            return self._on_leaves(msg, store)
        return self._on_values(msg, store)

    def _on_nodes(self, msg: SyncNodes, tree: MerkleTree) -> SyncMessage:
        layout = tree.layout
        b = layout.branching
        level = msg.level
        if not 1 <= level <= layout.depth:
            raise SyncError(f"level {level} outside 1..{layout.depth}")
        if len(msg.hashes) != len(msg.parents) * b * HASH_BYTES:
            raise SyncError("SyncNodes hashes do not match its parents")
        parent_width = layout.width(level - 1)
        differing: list[int] = []
        for i, parent in enumerate(msg.parents):
            if not 0 <= parent < parent_width:
                raise SyncError(f"parent {parent} outside level {level - 1}")
            theirs = msg.hashes[i * b * HASH_BYTES : (i + 1) * b * HASH_BYTES]
            mine = tree.children_hashes(level - 1, parent)
            if theirs == mine:
                continue
            for j in range(b):
                lo = j * HASH_BYTES
                if theirs[lo : lo + HASH_BYTES] != mine[lo : lo + HASH_BYTES]:
                    differing.append(parent * b + j)
        if not differing:
            return SyncDone(msg.space, msg.session)
        if level == layout.depth:
            return self._leaves(msg.space, msg.session, tree, differing)
        hashes = b"".join(tree.children_hashes(level, n) for n in differing)
        return SyncNodes(msg.space, msg.session, level + 1, tuple(differing), hashes)

    @staticmethod
    def _leaves(space: str, session: int, tree: MerkleTree, leaves: list[int]) -> SyncLeaves:
        entries = tuple(tuple(sorted(tree.leaf_entries(leaf).items())) for leaf in leaves)
        return SyncLeaves(space, session, tuple(leaves), entries)

    def _on_leaves(self, msg: SyncLeaves, store: SyncStore) -> SyncMessage:
        tree = store.tree
        send: list[str] = []
        want: list[str] = []
        for leaf, entries in zip(msg.leaves, msg.entries, strict=True):
            mine = tree.leaf_entries(leaf)
            theirs = dict(entries)
            for key, digest in theirs.items():
                if mine.get(key) != digest:
                    want.append(key)
            for key, digest in mine.items():
                if theirs.get(key) != digest:
                    send.append(key)
        values = store.get_values(send)
        if not values and not want:
            return SyncDone(msg.space, msg.session)
        self.keys_sent += len(values)
        return SyncValues(
            msg.space, msg.session, tuple(sorted(values.items())), tuple(want), not want
        )

    def _on_values(self, msg: SyncValues, store: SyncStore) -> SyncMessage | None:
        if msg.values:
            store.merge_values(dict(msg.values))
            self.keys_received += len(msg.values)
        if msg.final or not msg.want:
            return None
        values = store.get_values(msg.want)
        self.keys_sent += len(values)
        return SyncValues(msg.space, msg.session, tuple(sorted(values.items())), (), True)
