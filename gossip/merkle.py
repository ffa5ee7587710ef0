"""A Merkle tree over a keyspace with a fixed bucket layout, updated per write.

Keys are hashed into ``branching ** depth`` leaf buckets (blake2b of the key, so two
nodes with the same :class:`MerkleLayout` put every key in the same bucket and their
trees line up node for node). Each key carries a *digest* chosen by the store (e.g. a
hash of the value, or of its version vector); the tree never sees values.

* Leaf hash: the sum, modulo 2**128, of ``blake2b(len(key) || key || digest)`` over the
  bucket's entries. Sums make a write O(1) at the leaf (subtract old entry, add new).
* Inner hash: ``blake2b(child_0 || ... || child_{b-1})``, recomputed lazily: a write only
  marks its ancestors dirty, and :meth:`MerkleTree.node_hash` recomputes dirty nodes on
  demand. So a burst of writes costs O(depth) each and one recomputation per touched
  path when the tree is next read.

The additive leaf hash is not collision resistant against an adversary choosing keys;
it is meant for reconciling honest replicas. Single-threaded; not thread-safe.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from hashlib import blake2b

from gossip.errors import ConfigError, SyncError

__all__ = ["HASH_BYTES", "MerkleLayout", "MerkleTree"]

HASH_BYTES = 16
_MOD = 1 << (8 * HASH_BYTES)
_EMPTY_LEAF = bytes(HASH_BYTES)


@dataclass(frozen=True, slots=True)
class MerkleLayout:
    """Shape of a tree: both peers of a sync must use the same one."""

    branching: int = 16
    depth: int = 4

    def __post_init__(self) -> None:
        if not 2 <= self.branching <= 256:
            raise ConfigError("MerkleLayout.branching must be in [2, 256]")
        if not 0 <= self.depth <= 8 or self.branching**self.depth > 1 << 24:
            raise ConfigError("MerkleLayout.depth must be in [0, 8] with <= 2**24 leaves")

    @classmethod
    def for_size(cls, n_keys: int, *, branching: int = 16, keys_per_leaf: int = 8) -> MerkleLayout:
        """A layout with about ``keys_per_leaf`` keys per bucket for ``n_keys`` keys."""
        leaves = max(1, n_keys // max(1, keys_per_leaf))
        depth = max(1, round(math.log(leaves, branching))) if leaves > 1 else 1
        return cls(branching, min(depth, 6))

    @property
    def leaves(self) -> int:
        return int(self.branching**self.depth)

    def width(self, level: int) -> int:
        """Number of nodes at ``level`` (0 = root, ``depth`` = leaves)."""
        return int(self.branching**level)

    def bucket(self, key: str) -> int:
        """The leaf index of ``key``."""
        h = blake2b(key.encode(), digest_size=8).digest()
        return int.from_bytes(h, "big") % self.leaves


def _entry_hash(key: str, digest: bytes) -> int:
    k = key.encode()
    h = blake2b(len(k).to_bytes(4, "big") + k + digest, digest_size=HASH_BYTES).digest()
    return int.from_bytes(h, "big")


class MerkleTree:
    """Incrementally maintained Merkle tree of ``key -> digest``."""

    __slots__ = ("_inner", "_leaf_entries", "_leaf_sum", "_size", "layout")

    def __init__(self, layout: MerkleLayout | None = None) -> None:
        self.layout = layout or MerkleLayout()
        n_leaves = self.layout.leaves
        self._leaf_entries: list[dict[str, bytes] | None] = [None] * n_leaves
        self._leaf_sum: list[int] = [0] * n_leaves
        # _inner[level][i] for level < depth; None means dirty (recompute on read).
        self._inner: list[list[bytes | None]] = [
            [None] * self.layout.width(level) for level in range(self.layout.depth)
        ]
        self._size = 0

    @classmethod
    def from_items(
        cls, items: Iterable[tuple[str, bytes]], layout: MerkleLayout | None = None
    ) -> MerkleTree:
        """Build a tree from ``(key, digest)`` pairs (later duplicates win)."""
        tree = cls(layout)
        for key, digest in items:
            tree.set(key, digest)
        return tree

    def copy(self) -> MerkleTree:
        """An independent copy (cheaper than rebuilding)."""
        other = MerkleTree(self.layout)
        other._leaf_entries = [None if e is None else dict(e) for e in self._leaf_entries]
        other._leaf_sum = list(self._leaf_sum)
        other._inner = [list(level) for level in self._inner]
        other._size = self._size
        return other

    def __len__(self) -> int:
        return self._size

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.digest(key) is not None

    def items(self) -> Iterator[tuple[str, bytes]]:
        """Every ``(key, digest)``, bucket by bucket."""
        for entries in self._leaf_entries:
            if entries:
                yield from entries.items()

    def digest(self, key: str) -> bytes | None:
        entries = self._leaf_entries[self.layout.bucket(key)]
        return None if entries is None else entries.get(key)

    def set(self, key: str, digest: bytes, *, bucket: int | None = None) -> None:
        """Record that ``key`` now has ``digest`` (insert or overwrite). ``bucket``:
        ``layout.bucket(key)`` when the caller has it already (it hashes the key)."""
        leaf = self.layout.bucket(key) if bucket is None else bucket
        entries = self._leaf_entries[leaf]
        if entries is None:
            entries = self._leaf_entries[leaf] = {}
        old = entries.get(key)
        if old == digest:
            return
        acc = self._leaf_sum[leaf]
        if old is None:
            self._size += 1
        else:
            acc -= _entry_hash(key, old)
        entries[key] = digest
        self._leaf_sum[leaf] = (acc + _entry_hash(key, digest)) % _MOD
        self._dirty(leaf)

    def delete(self, key: str, *, bucket: int | None = None) -> None:
        """Forget ``key``; a no-op if absent. ``bucket`` as in :meth:`set`."""
        leaf = self.layout.bucket(key) if bucket is None else bucket
        entries = self._leaf_entries[leaf]
        if entries is None or key not in entries:
            return
        old = entries.pop(key)
        self._size -= 1
        self._leaf_sum[leaf] = (self._leaf_sum[leaf] - _entry_hash(key, old)) % _MOD
        self._dirty(leaf)

    def _dirty(self, leaf: int) -> None:
        b = self.layout.branching
        idx = leaf
        for level in range(self.layout.depth - 1, -1, -1):
            idx //= b
            row = self._inner[level]
            if row[idx] is None:
                break  # invariant: a dirty node's ancestors are dirty too
            row[idx] = None

    def root(self) -> bytes:
        return self.node_hash(0, 0)

    def node_hash(self, level: int, index: int) -> bytes:
        """Hash of node ``index`` at ``level`` (0 = root, ``depth`` = leaf buckets)."""
        depth = self.layout.depth
        if not 0 <= level <= depth or not 0 <= index < self.layout.width(level):
            raise SyncError(f"no Merkle node {index} at level {level} of {self.layout}")
        if level == depth:
            acc = self._leaf_sum[index]
            return _EMPTY_LEAF if acc == 0 else acc.to_bytes(HASH_BYTES, "big")
        row = self._inner[level]
        cached = row[index]
        if cached is not None:
            return cached
        b = self.layout.branching
        h = blake2b(digest_size=HASH_BYTES)
        for child in range(index * b, index * b + b):
            h.update(self.node_hash(level + 1, child))
        out = h.digest()
        row[index] = out
        return out

    def children_hashes(self, level: int, index: int) -> bytes:
        """Concatenated hashes of the ``branching`` children (at ``level + 1``)."""
        b = self.layout.branching
        return b"".join(self.node_hash(level + 1, c) for c in range(index * b, index * b + b))

    def leaf_entries(self, leaf: int) -> dict[str, bytes]:
        """A copy of bucket ``leaf``'s ``key -> digest`` entries."""
        if not 0 <= leaf < self.layout.leaves:
            raise SyncError(f"no Merkle leaf {leaf} in {self.layout}")
        entries = self._leaf_entries[leaf]
        return {} if entries is None else dict(entries)
