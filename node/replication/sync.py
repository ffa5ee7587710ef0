"""The pair space: gossip's ``SyncStore`` over the keys of one tier two nodes both own.

:func:`node.replication.coordinator.pair_keys` decides which keys are in it; this class
holds their Merkle tree for one session and makes the values the session brings in
durable. ``SyncStore.merge_values`` is synchronous in the protocol, so received values
are queued and joined into the store by :meth:`PairSpace.flush`, which the driver awaits
after every protocol step, before the next message is sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

from gossip.merkle import MerkleLayout, MerkleTree
from node.replication.store import ReplicaStore, digest_of

__all__ = ["MERKLE_LAYOUT", "PairSpace"]

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
        items: list[tuple[str, bytes]],
    ) -> None:
        self._store = store
        self._merge = merge
        self.tier = tier
        self.name = name
        self._tree = MerkleTree.from_items(items, MERKLE_LAYOUT)
        self._pending: dict[str, bytes] = {}
        self.merged = 0  # values received and joined in
        self.served = 0  # values sent to the other side

    @property
    def tree(self) -> MerkleTree:
        return self._tree

    def get_values(self, keys: Sequence[str]) -> dict[str, bytes]:
        values = {}
        for key in keys:
            raw = self._store.get(self.tier, key)
            if raw is not None:
                values[key] = raw
        self.served += len(values)
        return values

    def merge_values(self, values: Mapping[str, bytes]) -> None:
        self._pending.update(values)

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for key, value in pending.items():
            merged = await self._merge(self.tier, key, value)
            if merged is not None:
                self._tree.set(key, digest_of(merged))
            self.merged += 1
