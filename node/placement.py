"""Where a key lives: rendezvous (highest-random-weight) hashing.

Every node computes, for a key, a weight per member — a keyed 64-bit hash of
``(member, key)`` — and ranks members by it. The first ``rf`` members are the
key's owners; the rest, in order, are its fallbacks (where a hinted write goes
when an owner is unreachable). Thaler & Ravishankar, "Using name-based
mappings to increase hit rates", IEEE/ACM ToN 1998.

Why rendezvous rather than a ring: no virtual nodes to tune, perfect balance
in expectation, and minimal movement by construction — adding a member takes
over exactly the keys for which it now ranks in the top ``rf`` (about
``rf/(n+1)`` of them), and removing one moves only the keys it owned. Every
node computes the same answer from the same membership; nothing is stored.

Pure functions, no I/O. Cost: ``O(members)`` hashes per key, which for the
cluster sizes this store targets (3-50 nodes) is microseconds.

This module is shared by the nodes (``node.replication``) and the client library
(``node.client`` routes a batch of tier updates to each key's first owner, so the
node it reaches coordinates the key itself instead of forwarding it): both must
place a key identically, so it imports nothing of ours.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

__all__ = ["first", "owners", "placement_key", "ranking", "weight"]


def weight(member: str, key: str) -> int:
    digest = hashlib.blake2b(
        key.encode("utf-8", "surrogatepass"), digest_size=8, key=member.encode()[:64]
    ).digest()
    return int.from_bytes(digest, "big")


def placement_key(tier: str, key: str) -> str:
    """What placement hashes for a CRDT-tier key: the tier and the key (a NUL cannot
    occur in either)."""
    return f"{tier}\x00{key}"


def ranking(key: str, members: Iterable[str]) -> list[str]:
    """Every member, best first. Ties (astronomically rare) break by member id."""
    return sorted(set(members), key=lambda m: (-weight(m, key), m))


def owners(key: str, members: Sequence[str] | Iterable[str], rf: int) -> list[str]:
    """The ``rf`` owners of ``key`` (fewer if there are fewer members)."""
    if rf < 1:
        raise ValueError(f"replication factor must be >= 1, got {rf}")
    return ranking(key, members)[:rf]


def first(key: str, members: Iterable[str]) -> str | None:
    """``ranking(key, members)[0]`` without sorting the rest; None with no members."""
    return min(set(members), key=lambda m: (-weight(m, key), m), default=None)
