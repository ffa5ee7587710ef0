"""Replication decisions, pure: who owns a key, who holds a hint, when a write is
acknowledged, what a read repairs, which anti-entropy sessions run over which keys.

No I/O, no asyncio, no clocks: every function takes the membership it reasons about
(``live``: the ids of the members that own keys now, this node included) and returns a
value. :mod:`node.replication.driver` asks, does the sending and storing, and reports
back (:class:`HintPlan`). The rules, each with its table of cases in
``tests/unit/node/replication/test_coordinator.py``:

* **Owners** — rendezvous ranking of ``tier\\0key`` over the live members; the first RF
  (RF 0: all of them). The rest, in ranking order, are the key's fallbacks.
* **Write plan** — a node that is not an owner forwards (unless the update was already
  forwarded to it); an owner applies locally, then: write quorum ``W = min(tier W,
  cluster size)`` (a W above the configured cluster is capped; one above the *live*
  members is not — hints cover that); W <= 1 with other owners means "owner + backup":
  acknowledged once durable here, copied to the others in the background.
* **Acks** — this node (if an owner), then each other owner that made the delta durable,
  in owner order; owners that did not are *down*.
* **Hints** — each down owner in turn takes the next candidate fallback (this node first
  when it is not an owner, then the non-owners in ranking order) until one stores the
  hint; a candidate is tried once per write. A stored hint counts as an ack (sloppy
  quorum).
* **Verdict** — acknowledged when acks (hints included) reach W, else incomplete:
  durable somewhere, never to be resent.
* **Forwarding** — owners are tried in placement order, and the next one only when the
  previous provably applied nothing: the message was never delivered (no connection) or
  the owner answered with outcome *not applied* (busy, unavailable). A refusal (bad
  request, not found, already exists) or an *applied* answer (below quorum) is the
  answer. Anything else — no reply after sending, a failure of unknown outcome — may
  have been applied: forwarding stops with outcome *unknown* (a counter must not count
  it twice).
* **Reads** — ONE needs 1 answer, QUORUM ``n // 2 + 1``, ALL ``n`` (n = owners; an
  unknown level reads as ONE); this node is asked first; QUORUM and ALL send the merged
  state to every answering owner whose copy differs from it (read repair).
* **Anti-entropy** — per tier, one session with every live peer, over the *pair space*:
  the keys this node holds that placement gives to both. A key is under-replicated when
  fewer members are live than its tier's RF.
* **Strays** — a copy this node holds of a key placement (over the live members) does
  not give it: left by a write while it was an owner or a fallback, before ownership
  moved. Each round it is merged into every current owner, at most
  :data:`STRAY_BATCH` keys per tier (a cursor carries the rest to the next rounds);
  once every current owner has acknowledged a merge of the exact state held, and this
  node still owns no part of the key, the copy is dropped. Until then it counts as
  under-replicated. RF 0 tiers (every live member owns every key) have no strays.
* **Hand-off** — every live peer gets the hints held for it, oldest first, at most
  :data:`HINT_BATCH` per round (in messages the peer's merge queue bounds in bytes);
  the ones it refuses wait for the next round without holding back the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass
from enum import Enum

from crdt import CRDTBase, encode
from node.errors import (
    AlreadyExists,
    DeadlineExpired,
    InvalidArgument,
    NodeError,
    NotFound,
    Outcome,
)
from node.placement import placement_key, ranking
from node.tiers.ops import TierSpec

__all__ = [
    "ALL",
    "HINT_BATCH",
    "ONE",
    "QUORUM",
    "STRAY_BATCH",
    "ForwardVerdict",
    "HintAttempt",
    "HintPlan",
    "ReadPlan",
    "Stray",
    "StrayRound",
    "SyncPair",
    "WriteMode",
    "WritePlan",
    "behind",
    "forward_verdict",
    "handoff_targets",
    "hint_candidates",
    "may_drop_stray",
    "merge_states",
    "owners",
    "pair_keys",
    "placement_key",
    "plan_read",
    "plan_write",
    "replication_factor",
    "space_name",
    "stray_round",
    "sync_pairs",
    "sync_partner",
    "tally",
    "under_replicated",
    "write_acknowledged",
    "write_quorum",
]

ONE, QUORUM, ALL = 1, 2, 3

# Hints handed to one member per round: bounds a round's work after a long outage
# (the rest go in the next rounds, a second apart by default).
HINT_BATCH = 256

# Stray copies handed to their owners per tier per anti-entropy round. A round then
# sends at most STRAY_BATCH x RF merges per tier (coalesced into MergeMany messages of at
# most 256 items per owner) and makes at most STRAY_BATCH local deletes; finding the
# strays costs one placement per local key (the pair spaces already pay that per
# peer). After a move of many keys the rest go in the next rounds, 3 s apart by
# default: 256 keys per tier per round is ~85 keys/s, larger batches drain faster but
# make one round (and the burst on the owners) longer.
STRAY_BATCH = 256


# --- placement --------------------------------------------------------------------------


def replication_factor(spec: TierSpec, live_count: int) -> int:
    """Copies a key of ``spec`` should have: its RF, or every live member for RF 0."""
    return live_count if spec.rf == 0 else spec.rf


def owners(spec: TierSpec, key: str, live: Iterable[str]) -> list[str]:
    """The key's owners among ``live``, best first (fewer than RF if too few are live)."""
    ids = list(live)
    return ranking(placement_key(spec.name, key), ids)[: replication_factor(spec, len(ids))]


class OwnerCache:
    """:func:`owners`, remembered per key while the live set stays the same.

    Placement hashes every member for every key (a BLAKE2b each); anti-entropy asks it
    for every local key of every pair space in every round, and a busy node spent
    40% of its event loop there (py-spy, batched population writes). The answer
    depends only on the key and the live set, so it is computed once per key per
    live set. At most ``limit`` keys are held; past that the cache starts over."""

    def __init__(self, limit: int = 500_000) -> None:
        self._limit = limit
        self._live: frozenset[str] = frozenset()
        self._owners: dict[tuple[str, str], tuple[str, ...]] = {}

    def __call__(self, spec: TierSpec, key: str, live: Iterable[str]) -> list[str]:
        ids = frozenset(live)
        if ids != self._live or len(self._owners) >= self._limit:
            self._live, self._owners = ids, {}
        found = self._owners.get((spec.name, key))
        if found is None:
            found = self._owners[(spec.name, key)] = tuple(owners(spec, key, ids))
        return list(found)


def hint_candidates(
    spec: TierSpec, key: str, live: Iterable[str], key_owners: Sequence[str], self_id: str
) -> list[str]:
    """Where hints for the key's down owners may go, in the order to try: this node
    first when it is not an owner, then the non-owners in ranking order."""
    rest = [
        m for m in ranking(placement_key(spec.name, key), live)
        if m not in key_owners and m != self_id
    ]  # fmt: skip
    return rest if self_id in key_owners else [self_id, *rest]


# --- writes -----------------------------------------------------------------------------


class WriteMode(Enum):
    FORWARD = "forward"  # not an owner: hand the update to an owner
    SYNC = "sync"  # apply here, replicate, answer once W copies are durable
    BACKUP = "backup"  # apply here, answer at once, replicate in the background


@dataclass(frozen=True, slots=True)
class WritePlan:
    mode: WriteMode
    owners: tuple[str, ...]
    quorum: int


def observe_quorum(plan: WritePlan) -> int:
    """How many owners' copies (the coordinator's own included) an update that acts on
    what it has observed must join first, so that it sees every acknowledged write:
    any W of N owners and any N - W + 1 share one. 0 for "1 + backup" tiers, which
    acknowledge on one replica and so promise no more than best effort."""
    if plan.mode is not WriteMode.SYNC:
        return 0
    return max(1, len(plan.owners) - plan.quorum + 1)


def write_quorum(spec: TierSpec, cluster_size: int) -> int:
    """W for a tier in a cluster of ``cluster_size`` configured members (not live ones)."""
    return min(spec.write_quorum, cluster_size)


def plan_write(
    spec: TierSpec,
    key: str,
    live: Iterable[str],
    self_id: str,
    *,
    forwarded: bool,
    cluster_size: int,
    place: Callable[[TierSpec, str, Iterable[str]], list[str]] = owners,
) -> WritePlan:
    """How this node handles an update of ``key`` (``place``: :func:`owners`, or a
    cache of it)."""
    key_owners = place(spec, key, live)
    quorum = write_quorum(spec, cluster_size)
    if self_id not in key_owners and not forwarded:
        mode = WriteMode.FORWARD
    elif quorum <= 1 and len(key_owners) > 1:
        mode = WriteMode.BACKUP
    else:
        mode = WriteMode.SYNC
    return WritePlan(mode, tuple(key_owners), quorum)


def tally(
    self_id: str, key_owners: Sequence[str], durable: Mapping[str, bool]
) -> tuple[list[str], list[str]]:
    """``(acks, down)`` after sending a delta: ``durable`` says, per other owner, whether
    it made the delta durable. This node acks first when it is an owner."""
    acks = [self_id] if self_id in key_owners else []
    down: list[str] = []
    for owner in key_owners:
        if owner == self_id:
            continue
        (acks if durable.get(owner, False) else down).append(owner)
    return acks, down


@dataclass(frozen=True, slots=True)
class HintAttempt:
    owner: str  # the down owner the hint is for
    fallback: str  # the member asked to hold it


class HintPlan:
    """Places a hint for each down owner, one attempt at a time.

    ``next()`` names the attempt to make; the driver makes it and reports with
    ``record(stored)``. A refused candidate is not asked again in this write; an owner
    keeps taking candidates until one stores its hint or none are left. Pure state: the
    caller does the I/O.
    """

    def __init__(self, down: Sequence[str], candidates: Sequence[str]) -> None:
        self._down = list(down)
        self._candidates = list(candidates)
        self._pending: HintAttempt | None = None
        self.acks: list[str] = []  # "fallback (hint for owner)", in the order stored
        self.hinted: list[str] = []  # owners whose hint is stored

    def next(self) -> HintAttempt | None:
        """The next attempt, or None when every down owner is hinted or no candidate is left."""
        if self._pending is not None:
            raise RuntimeError("record() the outcome of the previous attempt first")
        if not self._down or not self._candidates:
            return None
        self._pending = HintAttempt(self._down[0], self._candidates.pop(0))
        return self._pending

    def record(self, stored: bool) -> None:
        attempt, self._pending = self._pending, None
        if attempt is None:
            raise RuntimeError("record() without an attempt")
        if stored:
            self.acks.append(f"{attempt.fallback} (hint for {attempt.owner})")
            self.hinted.append(attempt.owner)
            self._down.pop(0)

    @property
    def unhinted(self) -> list[str]:
        """Down owners for which no hint is stored (so far)."""
        return list(self._down)


def write_acknowledged(acks: Sequence[str], quorum: int) -> bool:
    """Whether a write with these acks (hints included) is acknowledged; if not, it is
    incomplete: durable somewhere, converging, and never to be resent."""
    return len(acks) >= quorum


class ForwardVerdict(Enum):
    """What a failed attempt to forward an update to one owner leads to."""

    NEXT = "next"  # provably nothing applied: try the next owner
    ANSWER = "answer"  # a definite answer (refused, or applied below quorum): raise it
    UNKNOWN = "unknown"  # it may have been applied: stop, outcome unknown


def forward_verdict(error: NodeError) -> ForwardVerdict:
    """What an owner's failure to apply a forwarded update means for the forwarding.

    * The request itself was refused (bad argument, not found, already exists, past its
      deadline): another owner would say the same — :attr:`ForwardVerdict.ANSWER`.
    * Applied (below quorum): resending it to another owner would apply it twice —
      :attr:`~ForwardVerdict.ANSWER`.
    * Provably not applied — the message was never delivered
      (:class:`~node.replication.errors.NotDelivered`) or the owner answered with outcome
      *not applied* (unavailable, busy) — :attr:`~ForwardVerdict.NEXT` owner.
    * Anything else — no reply after the message was sent, a failure of unknown outcome —
      may have been applied: :attr:`~ForwardVerdict.UNKNOWN`, and no other owner is asked.
    """
    if isinstance(error, InvalidArgument | NotFound | AlreadyExists | DeadlineExpired):
        return ForwardVerdict.ANSWER
    if error.outcome is Outcome.APPLIED:
        return ForwardVerdict.ANSWER
    if error.outcome is Outcome.NOT_APPLIED:
        return ForwardVerdict.NEXT
    return ForwardVerdict.UNKNOWN


# --- reads ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadPlan:
    order: tuple[str, ...]  # owners to ask, this node first
    want: int  # answers needed
    repair: bool  # send the merged state to answering owners that were behind


def plan_read(key_owners: Sequence[str], self_id: str, consistency: int) -> ReadPlan:
    n = len(key_owners)
    want = {ONE: 1, QUORUM: n // 2 + 1, ALL: n}.get(consistency, 1)
    order = tuple(sorted(key_owners, key=lambda o: o != self_id))
    return ReadPlan(order, want, consistency in (QUORUM, ALL))


def merge_states(states: Iterable[CRDTBase | None]) -> CRDTBase | None:
    """The join of the copies (None: nobody holds the key)."""
    merged: CRDTBase | None = None
    for state in states:
        if state is not None:
            merged = state if merged is None else merged.merge(state)
    return merged


def behind(states: Mapping[str, CRDTBase | None], merged: CRDTBase) -> list[str]:
    """Owners whose copy is not the merged state (missing or different), in answer order."""
    merged_bytes = encode(merged)
    return [o for o, s in states.items() if s is None or encode(s) != merged_bytes]


# --- anti-entropy and hand-off ----------------------------------------------------------


def space_name(tier: str, a: str, b: str) -> str:
    """The Merkle space two nodes reconcile for a tier (the same name on both sides)."""
    first, second = sorted((a, b))
    return f"{tier}|{first}|{second}"


@dataclass(frozen=True, slots=True)
class SyncPair:
    """One anti-entropy session: this node and ``peer`` over ``tier``'s shared keys."""

    tier: str
    peer: str
    pair: tuple[str, str]  # the two node ids, sorted

    @property
    def space(self) -> str:
        return space_name(self.tier, *self.pair)


def sync_pairs(tiers: Iterable[str], live: Iterable[str], self_id: str) -> list[SyncPair]:
    """This round's sessions: per tier, every live peer, in ``live`` order."""
    peers = [m for m in live if m != self_id]
    out = []
    for tier in tiers:
        for peer in peers:
            first, second = sorted((self_id, peer))
            out.append(SyncPair(tier, peer, (first, second)))
    return out


def pair_keys(
    spec: TierSpec,
    items: Iterable[tuple[str, bytes]],
    self_id: str,
    peer: str,
    live: Iterable[str],
) -> list[tuple[str, bytes]]:
    """The pair space: the ``(key, digest)`` items placement gives to both nodes.

    Syncing only these never spreads a key beyond its owners. (A copy held by a node
    that is no longer an owner is outside every pair space it is in; it goes to the
    owners as a stray instead, :func:`stray_round`.)"""
    ids = list(live)
    both = {self_id, peer}
    return [(k, d) for k, d in items if both <= set(owners(spec, k, ids))]


def sync_partner(tier: str, pair: tuple[str, str], space: str, self_id: str) -> str:
    """The other node of an incoming session, once it is checked to be one this node
    takes part in under this tier; :class:`InvalidArgument` otherwise."""
    a, b = pair
    if self_id not in pair or a == b or space != space_name(tier, a, b):
        raise InvalidArgument(f"anti-entropy space {space!r} is not shared with this node")
    return b if a == self_id else a


def under_replicated(spec: TierSpec, keys: Iterable[str], live: Sized) -> int:
    """How many of ``keys`` have fewer live owners than the tier's RF (all of them when
    fewer members than RF are live; none for RF 0)."""
    if spec.rf == 0 or len(live) >= spec.rf:
        return 0
    return sum(1 for _ in keys)


def handoff_targets(live: Iterable[str], self_id: str) -> list[str]:
    """Members to hand hints to this round: every live peer, in ``live`` order."""
    return [m for m in live if m != self_id]


# --- stray copies -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stray:
    """A copy this node holds of a key it does not own, and where it belongs now."""

    key: str
    owners: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StrayRound:
    """This round's share of the stray copies of one tier."""

    batch: tuple[Stray, ...]  # to hand to their owners now, at most the round's limit
    total: int  # stray copies held in all (each one under-replicated until dropped)
    resume_after: str  # the next round's cursor ("": from the first key)


def stray_round(
    spec: TierSpec,
    keys: Iterable[str],
    live: Iterable[str],
    self_id: str,
    *,
    after: str = "",
    limit: int = STRAY_BATCH,
) -> StrayRound:
    """The keys among ``keys`` (this node's, ascending) that placement over ``live`` does
    not give to ``self_id``, and which of them to hand off this round: up to ``limit``,
    the first ones after the cursor ``after``, wrapping around to the smallest, so that
    strays whose owners are unreachable do not hold up the others. Holds at most
    ``2 * limit`` strays in memory, whatever the number of keys."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if spec.rf == 0:  # every live member owns every key
        return StrayRound((), 0, "")
    ids = list(live)
    total = 0
    beyond: list[Stray] = []  # the first strays after the cursor
    first: list[Stray] = []  # the first strays from the start (for the wrap)
    for key in keys:
        key_owners = owners(spec, key, ids)
        if self_id in key_owners:
            continue
        total += 1
        stray = Stray(key, tuple(key_owners))
        if key > after and len(beyond) < limit:
            beyond.append(stray)
        if len(first) < limit:
            first.append(stray)
    batch = beyond + [s for s in first if s.key <= after][: limit - len(beyond)]
    resume = batch[-1].key if total > len(batch) else ""
    return StrayRound(tuple(batch), total, resume)


def may_drop_stray(
    spec: TierSpec, key: str, live: Iterable[str], self_id: str, acked: Iterable[str]
) -> bool:
    """Whether this node may drop its copy of ``key`` now that the members in ``acked``
    have made a merge of it durable: only if placement over ``live`` (read again after
    the merges) still does not give the key to this node, and every owner it names is
    in ``acked``. The caller drops the copy only if it is still the state it sent (a
    write that landed meanwhile keeps it for the next round)."""
    if spec.rf == 0:
        return False
    key_owners = owners(spec, key, live)
    return bool(key_owners) and self_id not in key_owners and set(key_owners) <= set(acked)
