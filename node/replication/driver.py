"""Replication of the CRDT tiers: the asyncio driver.

One :class:`Replication` per node serves the population, agent, mesh and metrics tiers
(``node/tiers/ops.py`` says what they are). It asks :mod:`node.replication.coordinator`
what to do — owners, forwarding, quorum, hints, repair, anti-entropy pairs — and does it
through three interfaces: the store (:class:`~node.replication.store.ReplicaStore`),
membership (:class:`~node.replication.transport.Membership`) and peers
(:class:`~node.replication.transport.PeerTransport`, messages in
:mod:`node.replication.messages`). A node runs it on SQLite, SWIM and gRPC; the scenario
tests on :mod:`node.replication.memory`.

Write path (any node coordinates)::

    owners = rendezvous(tier/key, live members)[:RF]
    not an owner?  -> Forward to the first owner; the next one only if the message was
                      never delivered or the owner answered "not applied" (otherwise
                      the outcome is unknown: ForwardOutcomeUnknown, never sent twice)
    an owner:      apply the op locally -> (state, delta); durable (store, group commit)
                   Merge the delta into the other owners (batched per peer as MergeMany)
                   owner down? a live fallback stores it as a hint (StoreHint) for it
                   ack when write_quorum copies (hints included) are durable

Read path: ONE asks one owner (itself first); QUORUM/ALL merge the owners' states and
send the merged state to any owner that was behind (read repair).

Background (:meth:`Replication.start`):

* hinted handoff — every second, hints for live members are merged into them (through
  each one's merge queue, at most 256 a round) and deleted once durable
  there; a refused hint stays for the next round without holding back the others;
* anti-entropy — every few seconds, per tier and live peer, a Merkle session (gossip's
  ``SyncPeer``, carried by Sync messages) over the keys both nodes own: equal roots end
  it at once; otherwise only differing subtrees and keys move, merged both ways (so a
  pair the peer has just synced with this node is left out of the round). This
  is also how RF is restored: when a member dies, placement over the live members names
  a new owner for each of its keys, and the next round copies them there;
* stray hand-off — in the same round, per tier, copies this node holds of keys it does
  not own (left by writes from before ownership moved: as an owner, as a forwarded-to
  coordinator, as a hint target) are merged into their current owners and then
  dropped, at most ``coordinator.STRAY_BATCH`` keys per tier per round (the rest in the
  next rounds). A copy is dropped only once every current owner made a merge of that
  exact state durable, and only if it is still that state; until then it counts as
  under-replicated. This is what makes an applied update reach the owners of its key
  whatever moves ownership made in between;
* population retention (``node/tiers/population.py``).

Everything a replica receives is a CRDT state (a delta is a small state), and merging is
idempotent, so duplicates and retries are harmless.

Writer ids. A CRDT remembers its writers' histories by id: a PN-counter keeps one
running total per writer and merges by max, an OR-set names each add by a dot
``(writer, n)``. A writer that forgets its own history and goes on under the same id
re-issues totals and dots the other replicas have already seen, and merging discards
those updates, acknowledged or not. A node forgets in two ways: its store is lost (a
wiped data directory, a replaced disk) or it drops a stray copy and is later given the
key again. So the node does not write under its node id but under ``<node id>~<epoch>``
(:attr:`Replication.writer`), the epoch a random token kept in the store's metadata:
a new, empty store gets a new one, and a new one is made durable before a stray copy
the current writer wrote to is dropped. Within one epoch the node's local copy of every
key it writes holds the latest of its own history, which is what the CRDTs assume. The
cost is one more entry in a counter (or version vector) per epoch that wrote to it.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import secrets
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from consensus.durable import Histogram
from crdt import CRDTBase, CRDTError, HybridLogicalClock, LWWRegister, PNCounter, decode, encode
from gossip.antientropy import SyncPeer
from gossip.errors import GossipError
from gossip.messages import SyncMessage
from node import deadline
from node.errors import InvalidArgument, NodeError, NotFound, ReplicationError, Unavailable
from node.replication import codec, coordinator
from node.replication.batcher import ForwardBatcher, MergeBatcher
from node.replication.coordinator import ALL, ONE, QUORUM, ForwardVerdict, SyncPair, WriteMode
from node.replication.errors import (
    CodecError,
    ForwardOutcomeUnknown,
    NoOwnerReachable,
    NotEnoughReplicas,
)
from node.replication.messages import (
    Changes,
    ChangesReply,
    Done,
    Failure,
    Fenced,
    Forward,
    ForwardGroup,
    ForwardGroupReply,
    ForwardMany,
    ForwardManyReply,
    ForwardReply,
    Merge,
    MergeMany,
    MergeManyDone,
    Observe,
    Read,
    ReadReply,
    Reply,
    Request,
    Scan,
    ScanReply,
    StoreHint,
    Sync,
    SyncReply,
    Until,
)
from node.replication.store import (
    ChangePage,
    CorruptValueError,
    Hint,
    OnceFn,
    ReplicaStore,
    UpdateFn,
    digest_of,
)
from node.replication.sync import DivergenceCheck, PairSpace, PairTrees, ServedSessions
from node.replication.transport import (
    GossipMembership,
    GossipView,
    Membership,
    PeerTransport,
    cancelled_from_below,
)
from node.tiers import mesh as mesh_doc
from node.tiers import population
from node.tiers.documents import DocOp, apply_doc_op, member_changes
from node.tiers.ops import TIERS, Op, TierSpec, apply_op, check_tier_key, render, tier_spec
from node.tiers.population import PopulationLog
from node.tiers.retention import write_archive

__all__ = [
    "ALL",
    "ONE",
    "QUORUM",
    "NoOwnerReachable",
    "NotEnoughReplicas",
    "ReadResult",
    "Replication",
    "TierHealth",
    "UpdateResult",
]

log = logging.getLogger(__name__)

WRITER_META = "crdt-writer"  # store metadata: this node's current writer id (Writer ids)

R = TypeVar("R")
# Seconds, for the per-tier operation histograms: a local CRDT write is ~1 ms, a
# quorum write a few, a timed-out one the call deadline.
OP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Seconds, for anti-entropy rounds: ~0.1 ms when every tier is settled, ~0.7 s under
# 10,000 batched population updates a second, more while a replaced node is refilled.
ROUND_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# A peer that has left hints undelivered this long is logged (then at most this often).
HANDOFF_REPORT_S = 30.0

# Failures a peer may report for a request that are not bugs on this side.
_EXPECTED = (NodeError, GossipError, CRDTError, ValueError, KeyError, TypeError)


@dataclass
class UpdateResult:
    state: CRDTBase  # the key's state on the coordinating owner after the update
    replicas: list[str]
    hinted: list[str]
    coordinator: str
    # per item of the group: its request id had been applied before (not applied again)
    duplicates: tuple[bool, ...] = (False,)
    # per item: why it was not applied (it does not fit the key), while others were
    errors: tuple[InvalidArgument | None, ...] = (None,)

    @property
    def value(self) -> tuple[str, str]:
        return render(self.state)

    @property
    def duplicate(self) -> bool:
        return all(self.duplicates)

    def one(self, position: int) -> UpdateResult:
        """This group's result as seen by its item at ``position``."""
        return dataclasses.replace(
            self, duplicates=(self.duplicates[position],), errors=(self.errors[position],)
        )


@dataclass
class ReadResult:
    state: CRDTBase | None
    replicas: list[str]
    repaired: int


@dataclass
class TierHealth:
    under_replicated: int = 0
    last_round: float = -1.0  # monotonic time the round started
    divergent: int = 0  # keys whose divergence persisted past a session (sync.DivergenceCheck)


@dataclass
class _Round:
    """What the last anti-entropy round found, per tier."""

    health: dict[str, TierHealth] = field(default_factory=dict)
    # tier -> (store version, live members) when a round last found it settled
    settled: dict[str, tuple[int, tuple[tuple[str, str], ...]]] = field(default_factory=dict)


class Replication:
    """The CRDT tiers on one node.

    ``membership`` and ``transport`` default to the node's SWIM view (``gossip``) and
    the authenticated gRPC ``Peer.Replica`` call (``token``, ``call_timeout_s``); tests
    pass in-memory ones. The driver owns the transport: :meth:`stop` closes it.
    ``clock_ns`` stamps updates (HLC) and drives retention; ``monotonic`` stamps
    anti-entropy rounds.
    """

    def __init__(
        self,
        *,
        node_id: str,
        store: ReplicaStore,
        gossip: GossipView | None = None,
        token: str = "",
        anti_entropy_interval_s: float = 3.0,
        handoff_interval_s: float = 1.0,
        call_timeout_s: float = 2.0,
        clock_ns: Callable[[], int] = time.time_ns,
        archive_dir: str | None = None,
        compaction_interval_s: float = 3600.0,
        cluster_size: int = 3,
        membership: Membership | None = None,
        transport: PeerTransport | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        new_epoch: Callable[[], str] = lambda: secrets.token_hex(4),
    ) -> None:
        if membership is None:
            if gossip is None:
                raise TypeError("Replication needs gossip= or membership=")
            membership = GossipMembership(node_id, gossip)
        if transport is None:
            # Imported here so that the driver itself (and every in-memory test) does
            # not load gRPC.
            from node.replication.grpc_transport import GrpcTransport

            transport = GrpcTransport(node_id, token, timeout_s=call_timeout_s)
        self.node_id = node_id
        self.store = store
        self.membership = membership
        self.transport = transport
        self._ae_interval = anti_entropy_interval_s
        self._handoff_interval = handoff_interval_s
        self._timeout = call_timeout_s
        self._owners = coordinator.OwnerCache()
        # tier -> its pair-space Merkle trees, kept current from the store's change feed
        self._pair_trees: dict[str, PairTrees] = {}
        self.divergence = DivergenceCheck()
        # (tier, "read" | "write") -> durations of the operations clients asked of
        # this node (forwarded work is timed where the client arrived); all there from
        # the start, so each series exists before its first operation. Loop only.
        self.op_seconds: dict[tuple[str, str], Histogram] = {
            (tier, op): Histogram(OP_BUCKETS) for tier in TIERS for op in ("read", "write")
        }

        self._clock_ns = clock_ns
        self._monotonic = monotonic
        self.archive_dir = archive_dir
        # Configured members (not live ones): a write quorum larger than the
        # whole cluster (RF 2 on a single-node deployment) is capped to it;
        # one above the *live* members is not — that is what hints are for.
        self._cluster_size = cluster_size
        self._compaction_interval = compaction_interval_s
        self.archived_entries = 0
        # Updates that reached this node for keys another member coordinates, forwarded
        # to it, per tier: what a client routing by placement saves. Loop only.
        self.forwarded_updates: collections.Counter[str] = collections.Counter()
        self._hlc = HybridLogicalClock()
        self._new_epoch = new_epoch
        self._writer: str | None = None  # see "Writer ids" above; set by _writer_ready
        self._writer_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._round = _Round()
        self.handed_off = 0
        self.hints_refused = 0  # hints a hand-off sent that the peer did not make durable
        # peer -> (since when hand-off to it leaves hints behind, when that was reported)
        self._handoff_short: dict[str, tuple[float, float]] = {}
        self.repaired = 0
        self.synced_keys = 0
        self.rounds = 0  # anti-entropy rounds run
        self.round_seconds = Histogram(ROUND_BUCKETS)  # each round's duration; loop only
        self.rounds_skipped = 0  # tiers an anti-entropy round found settled
        self.strays_handed_off = 0  # copies of keys not owned, merged into the owners, dropped
        self._stray_cursor: dict[str, str] = {}  # tier -> last stray key handled
        self._session = 0
        self._served = ServedSessions()  # sessions peers ran with this node
        self.sessions_left_to_peers = 0  # pair sessions a round left to the peer that ran one
        self._batchers: dict[str, MergeBatcher] = {}
        self._addresses: dict[str, str] = {}  # peer -> the address its merges go to
        self._forwarders: dict[str, ForwardBatcher] = {}
        self._pending_tasks: set[asyncio.Task[Any]] = set()
        self._repairing: set[tuple[str, str]] = set()  # corrupt keys being repaired
        self.corrupt_found = 0  # corrupt local values met by reads and writes
        self.corrupt_repaired = 0

    @property
    def gossip(self) -> Membership:
        """The membership view (kept under its old name for status reports)."""
        return self.membership

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._every(self._handoff_interval, self.hand_off), name="handoff"),
            loop.create_task(
                self._every(self._ae_interval, self.anti_entropy_round), name="anti-entropy"
            ),
            loop.create_task(
                self._every(self._compaction_interval, self.compact_population),
                name="population-retention",
            ),
        ]

    @property
    def writer(self) -> str | None:
        """The id this node's updates carry in the CRDTs (None until the first write)."""
        return self._writer

    async def _writer_ready(self) -> None:
        """Load the store's writer id, or start the first epoch of an empty store."""
        if self._writer is not None:
            return
        async with self._writer_lock:
            if self._writer is None:
                raw = self.store.get_meta(WRITER_META)
                if raw is None:
                    await self._begin_epoch("the store holds none")
                else:
                    self._writer = raw.decode()

    async def _begin_epoch(self, why: str) -> None:
        """Write under a new writer id from now on (durable before it is used).
        Called with ``_writer_lock`` held."""
        writer = f"{self.node_id}~{self._new_epoch()}"
        await self.store.set_meta(WRITER_META, writer.encode())
        log.info("CRDT writer id %s (new epoch: %s)", writer, why)
        self._writer = writer

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pending_tasks:  # let asynchronous backup copies finish briefly
            await asyncio.wait(set(self._pending_tasks), timeout=self._timeout)
        await self.transport.close()

    async def settle(self) -> None:
        """Wait until the background copies started so far (owner + backup writes) end."""
        while self._pending_tasks:
            await asyncio.gather(*set(self._pending_tasks), return_exceptions=True)

    async def _every(self, interval: float, job: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await job()
            except asyncio.CancelledError:
                if not cancelled_from_below():
                    raise  # the node is stopping
                # A future the job awaited was cancelled under it: a failure of this
                # run, not an end to hand-off or anti-entropy for the node's lifetime.
                log.warning("replication background job %s: cancelled from below", job.__name__)
            except Exception:
                log.exception("replication background job %s failed", job.__name__)

    # -- membership and placement ------------------------------------------------------

    def live(self) -> dict[str, str]:
        """Live members (alive or suspect) -> address; always includes self."""
        return self.membership.live()

    def owners(self, spec: TierSpec, key: str, live: Iterable[str]) -> list[str]:
        return self._owners(spec, key, live)

    # -- peer calls --------------------------------------------------------------------

    async def _ask(self, peer: str, address: str, message: Request, expect: type[R]) -> R:
        """Send ``message`` and return its reply; a :class:`Failure` is raised as the
        error it names; no reply is :class:`PeerUnreachable` (from the transport)."""
        reply = await self.transport.call(peer, address, message)
        if isinstance(reply, Failure):
            raise reply.error()
        if not isinstance(reply, expect):
            raise ReplicationError(
                f"{peer} answered {type(message).__name__} with {type(reply).__name__}"
            )
        return reply

    def _fenced(self, message: Fenced, due: int | None = None) -> Fenced | Until:
        """``message`` under the deadline ``due`` -- by default that of the write being
        served -- if there is one (0: none): the owner refuses it once that has passed
        (node/deadline.py)."""
        if due is None:
            due = deadline.WRITE_DEADLINE.get()
        return Until(due, message) if due else message

    async def _try(self, peer: str, address: str, message: Request, expect: type[R]) -> R | None:
        """:meth:`_ask`, with any failure of the peer as None."""
        try:
            return await self._ask(peer, address, message, expect)
        except NodeError:
            return None

    async def _merge_remote(self, peer: str, address: str, merge: Merge) -> bool:
        """Merge into a peer's copy, durably. Concurrent merges to one peer are
        coalesced (:class:`~node.replication.batcher.MergeBatcher`)."""
        return (await self._merge_many_remote(peer, address, (merge,)))[0]

    async def _merge_many_remote(
        self, peer: str, address: str, merges: Sequence[Merge]
    ) -> list[bool]:
        """:meth:`_merge_remote` for each of ``merges``: whether each is durable there."""
        self._addresses[peer] = address  # the newest a caller knew: the queue sends there
        batcher = self._batchers.get(peer)
        if batcher is None:

            async def send(batch: MergeMany) -> Sequence[bool]:
                reply = await self._try(peer, self._addresses[peer], batch, MergeManyDone)
                return reply.ok if reply is not None else ()

            batcher = self._batchers[peer] = MergeBatcher(send)
        return await batcher.submit_many(merges)

    # -- local state -------------------------------------------------------------------

    async def merge_local(self, tier: str, key: str, state_bytes: bytes) -> bytes | None:
        """Join ``state_bytes`` into the local copy; durable on return."""
        joiner = _joiner(tier, key, decode(state_bytes), state_bytes)
        try:
            return await self.store.update(tier, key, joiner)
        except CorruptValueError as exc:
            raise self._repair_soon(exc) from exc

    async def merge_many_local(self, merges: Sequence[Merge]) -> list[bool]:
        """:meth:`merge_local` for each merge, as one store work item (one hand-over to
        the writer, the rows read and written in bulk): whether each is durable here."""
        joins: list[tuple[int, str, str, UpdateFn]] = []
        refused: list[str] = []
        for i, m in enumerate(merges):
            try:
                joiner = _joiner(m.tier, m.key, decode(m.state), m.state, m.base)
                joins.append((i, m.tier, m.key, joiner))
            except Exception as exc:  # not a CRDT this node reads: that merge alone fails
                refused.append(f"{m.tier}/{m.key}: {exc}")
        results = await self.store.update_many([(t, k, fn) for _, t, k, fn in joins])
        ok = [False] * len(merges)
        for (i, tier, key, _), result in zip(joins, results, strict=True):
            if isinstance(result, CorruptValueError):
                self._repair_soon(result)
            elif isinstance(result, Exception):  # e.g. a copy of another CRDT type here
                refused.append(f"{tier}/{key}: {result}")
            ok[i] = not isinstance(result, Exception)
        if refused:  # once per message, not per merge
            log.warning("%d merges refused, the first: %s", len(refused), refused[0])
        return ok

    async def repair_corrupt(self, tier: str, key: str, corrupt: bytes) -> bool:
        """Replace a local value found corrupt (its bytes no longer match their digest)
        with the join of the other owners' copies. Not a join with the local copy: its
        bytes are garbage. Updates only this copy held are lost with it; anything acked
        with the write quorum is on another owner. Returns False, changing nothing, when
        no other owner holds the key (it stays reported), or when the value was rewritten
        meanwhile (a new write replaced it)."""
        live = self.live()
        others = [o for o in self.owners(tier_spec(tier), key, live) if o != self.node_id]
        states: list[CRDTBase | None] = []
        for owner in others:
            reply = await self._try(owner, live[owner], Read(tier, key), ReadReply)
            if reply is not None and reply.state is not None:
                states.append(decode(reply.state))
        merged = coordinator.merge_states(states)
        if merged is None:
            return False
        return await self.store.replace_if(tier, key, corrupt, encode(merged))

    def _repair_soon(self, exc: CorruptValueError) -> Unavailable:
        """A read or write met a corrupt local value: repair it now (once at a time per
        key) rather than at the scrubber's next pass, and say so to the caller."""
        what = (exc.tier, exc.key)
        if what not in self._repairing:
            self._repairing.add(what)
            self.corrupt_found += 1
            log.error("corrupt value found: %s", exc)

            async def repair() -> None:
                try:
                    if await self.repair_corrupt(exc.tier, exc.key, exc.value):
                        self.corrupt_repaired += 1
                        log.warning("repaired %s/%s from its other owners", *what)
                finally:
                    self._repairing.discard(what)

            self._background(repair())
        return Unavailable(
            f"{exc.tier}/{exc.key}: this node's copy is corrupt (it no longer matches its "
            "digest) and is being repaired from the other owners; nothing was applied, retry"
        )

    def local_state(self, tier: str, key: str) -> CRDTBase | None:
        """This node's copy; CorruptValueError if it rotted on disk."""
        raw = self.store.get_checked(tier, key)
        return decode(raw) if raw is not None else None

    # -- writes ------------------------------------------------------------------------

    async def update(
        self, tier: str, key: str, op: Op | DocOp, *, forwarded: bool = False
    ) -> UpdateResult:
        return await self.update_group(tier, key, ((op, ""),), forwarded=forwarded)

    async def update_group(
        self,
        tier: str,
        key: str,
        items: Sequence[tuple[Op | DocOp, str]],
        *,
        forwarded: bool = False,
    ) -> UpdateResult:
        """Apply ``items`` -- (op, request id or "") -- to ``tier/key`` in order, as one
        durable write and one replication of the joined deltas. An item whose request
        id this node has applied before (``store.update_once``, within the store's
        window), or that repeats an id earlier in ``items``, is skipped and marked in
        ``UpdateResult.duplicates``. Timed per item in :attr:`op_seconds` unless
        ``forwarded`` (the node the client reached times it)."""
        started = time.perf_counter()
        try:
            return await self._update_group(tier, key, items, forwarded=forwarded)
        except CorruptValueError as exc:
            raise self._repair_soon(exc) from exc
        finally:
            if not forwarded:
                self._timed(tier, "write", started, len(items))

    def _timed(self, tier: str, op: str, started: float, times: int = 1) -> None:
        """Record a client operation's duration in :attr:`op_seconds` (``times`` items
        that each took it). Unknown tiers are refused before any work and not kept."""
        histogram = self.op_seconds.get((tier, op))
        if histogram is not None:
            histogram.observe(time.perf_counter() - started, times)

    async def _update_group(
        self,
        tier: str,
        key: str,
        items: Sequence[tuple[Op | DocOp, str]],
        *,
        forwarded: bool = False,
    ) -> UpdateResult:
        spec = check_tier_key(tier, key)
        live = self.live()
        plan = coordinator.plan_write(
            spec,
            key,
            live,
            self.node_id,
            forwarded=forwarded,
            cluster_size=self._cluster_size,
            place=self._owners,
        )
        owners = list(plan.owners)
        has_ids = any(rid for _, rid in items)
        if plan.mode is WriteMode.FORWARD:
            return await self._forward(tier, key, items, owners[:1] if has_ids else owners, live)
        if not forwarded and owners[0] != self.node_id and has_ids:
            # Request ids are remembered by the owner that coordinates, so updates that
            # carry them go to the key's first live owner, whoever received them, and
            # to no other: a resend then meets the ids it carries. If that owner does
            # not answer, nothing is applied (NoOwnerReachable: retry); once gossip
            # declares it dead, placement names a new first owner.
            return await self._forward(tier, key, items, owners[:1], live)
        observes = any(op.observes for op, _ in items)
        observed = await self._observe(tier, key, plan, live) if observes else None
        await self._writer_ready()
        mutate, captured = self._group_mutator(tier, key, items, observed)

        await self.store.update_once(tier, key, mutate, _scoped_ids(tier, key, items))
        state = captured["state"]
        duplicates = captured["duplicates"]
        if state is None:
            raise NotFound(f"{tier}/{key}: only duplicates, and no value here")
        delta, base = _outgoing(captured)
        if plan.mode is WriteMode.BACKUP:
            # "1 + backup": acknowledged once durable here; the other owners
            # (the backup) get it asynchronously, hinted if they are down.
            self._background(self._replicate(spec, key, delta, owners, live, base))
            return UpdateResult(
                state, [self.node_id], [], self.node_id, duplicates, captured["errors"]
            )
        acks, hinted = await self._replicate(spec, key, delta, owners, live, base)
        if not coordinator.write_acknowledged(acks, plan.quorum):
            raise NotEnoughReplicas(
                f"{tier}/{key}: the update is durable on {', '.join(acks)} but reached "
                f"{len(acks)} of the {plan.quorum} required replicas; it will "
                "converge when the owners are back (resending would apply it twice)"
            )
        result = UpdateResult(state, acks, hinted, self.node_id, duplicates, captured["errors"])
        if tier == "mesh" and any(isinstance(op, DocOp) for op, _ in items):
            await self._update_mesh_index(key, captured["before"], state)
        return result

    def _group_mutator(
        self,
        tier: str,
        key: str,
        items: Sequence[tuple[Op | DocOp, str]],
        observed: CRDTBase | None,
    ) -> tuple[OnceFn, dict[str, Any]]:
        """The store update function of a group, and the dict it fills in (before,
        state, delta, duplicates, errors) when the store runs it."""
        captured: dict[str, Any] = {}
        due = deadline.WRITE_DEADLINE.get()

        def mutate(
            old: bytes | None, seen: frozenset[str] = frozenset()
        ) -> tuple[bytes | None, list[str]]:
            # The writer id is read here, atomically with the local copy: a stray drop
            # starts a new epoch before it deletes, so a copy that is gone is never
            # rebuilt under the epoch that wrote it.
            writer = self._writer
            assert writer is not None
            state = decode(old, verified=True) if old is not None else None  # _STORED
            if observed is not None:
                state = coordinator.merge_states((state, observed))
            captured["before"] = state
            delta: CRDTBase | None = None
            duplicates: list[bool] = []
            errors: list[InvalidArgument | None] = []
            applied: list[str] = []
            stamped = False
            for op, rid in items:
                if rid and (_scoped(tier, key, rid) in seen or rid in applied):
                    duplicates.append(True)
                    errors.append(None)
                    continue
                now = self._clock_ns()
                if not stamped:
                    # The fence, where the first timestamp is taken: a write that is
                    # applied is stamped by its deadline (plus the clock allowance). A
                    # resend of only applied ids is answered as duplicates.
                    deadline.check(due, now, f"{tier}/{key}")
                    stamped = True
                hlc = self._hlc.now(now)
                try:
                    if isinstance(op, DocOp):
                        new, step = apply_doc_op(state, op, writer, hlc)
                    else:
                        new, step = apply_op(state, op, writer, hlc, tier=tier)
                except InvalidArgument as exc:  # this op only: the others still apply
                    duplicates.append(False)
                    errors.append(exc)
                    continue
                state, delta = new, step if delta is None else delta.merge(step)
                applied.append(rid)
                duplicates.append(False)
                errors.append(None)
            if delta is None and not any(duplicates):
                failed = next(e for e in errors if e is not None)
                raise failed  # nothing applies: nothing is written
            captured["state"], captured["delta"] = state, delta
            captured["duplicates"], captured["errors"] = tuple(duplicates), tuple(errors)
            captured["stored"] = stored = encode(state) if state is not None else old
            # The base is hashed only for a state that goes whole: a log or set can be
            # large, and its digest would go unused.
            whole = stored is not None and _sent_whole(state, stored)
            captured["base"] = digest_of(old) if whole and old is not None else None
            captured["whole"] = whole
            done = [_scoped(tier, key, r) for r in applied if r]
            return stored, done

        return mutate, captured

    async def _update_groups_here(
        self,
        groups: Sequence[tuple[str, str, Sequence[tuple[Op | DocOp, str]]]],
        *,
        forwarded: bool = False,
    ) -> list[UpdateResult | BaseException]:
        """Groups this node coordinates, as a batch: the plain ones -- synchronous
        replication, nothing to observe first, no documents -- in one store hand-over
        (``update_many_once``) and one ``MergeMany`` per other owner, with no
        coroutine per key; the rest through :meth:`update_group`."""
        live = self.live()
        results: list[UpdateResult | BaseException | None] = [None] * len(groups)
        plain: list[tuple[int, TierSpec, coordinator.WritePlan]] = []
        special: list[int] = []
        for i, (tier, key, items) in enumerate(groups):
            try:
                spec = check_tier_key(tier, key)
            except InvalidArgument as exc:
                results[i] = exc
                continue
            plan = coordinator.plan_write(
                spec, key, live, self.node_id, forwarded=forwarded,
                cluster_size=self._cluster_size, place=self._owners,
            )  # fmt: skip
            is_plain = plan.mode is WriteMode.SYNC and tier != "mesh"
            is_plain = is_plain and not any(op.observes or isinstance(op, DocOp) for op, _ in items)
            coordinates = forwarded or plan.owners[0] == self.node_id
            if is_plain and (coordinates or not any(r for _, r in items)):
                plain.append((i, spec, plan))
            else:
                special.append(i)
        others = asyncio.gather(
            *(self._update_group(*groups[i], forwarded=forwarded) for i in special),
            return_exceptions=True,
        )
        mutators = [self._group_mutator(*groups[i], None) for i, _, _ in plain]
        try:
            if plain:
                await self._writer_ready()
            stored: list[Any] = await self.store.update_many_once(
                [
                    (groups[i][0], groups[i][1], mutate, _scoped_ids(*groups[i]))
                    for (i, _, _), (mutate, _) in zip(plain, mutators, strict=True)
                ]
            )
        except Exception as exc:  # the store failed the hand-over: every plain group
            stored = [exc] * len(plain)
        # Every group's delta for each other owner, in one submission to its batcher:
        # one MergeMany (more for a big batch), shared with concurrent writes'.
        outgoing: dict[str, list[tuple[int, Merge]]] = {}
        deltas: dict[int, bytes] = {}
        for (i, spec, plan), (_, captured), outcome in zip(plain, mutators, stored, strict=True):
            if isinstance(outcome, Exception):
                results[i] = outcome
                continue
            delta, base = _outgoing(captured)
            deltas[i] = delta
            for owner in plan.owners:
                if owner != self.node_id:
                    outgoing.setdefault(owner, []).append(
                        (i, Merge(spec.name, groups[i][1], delta, base))
                    )
        replies = await asyncio.gather(
            *(
                self._merge_many_remote(owner, live[owner], [m for _, m in batch])
                for owner, batch in outgoing.items()
            )
        )
        durable: dict[int, dict[str, bool]] = {i: {} for i in deltas}
        for (owner, batch), oks in zip(outgoing.items(), replies, strict=True):
            for (i, _), ok in zip(batch, oks, strict=True):
                durable[i][owner] = ok
        for (i, spec, plan), (_, captured) in zip(plain, mutators, strict=True):
            if i not in deltas:
                continue
            key = groups[i][1]
            acks, hinted = await self._hint_down(
                spec, key, deltas[i], list(plan.owners), live, durable[i]
            )
            if not coordinator.write_acknowledged(acks, plan.quorum):
                results[i] = NotEnoughReplicas(
                    f"{spec.name}/{key}: the update is durable on {', '.join(acks)} but "
                    f"reached {len(acks)} of the {plan.quorum} required replicas; it will "
                    "converge when the owners are back (resending would apply it twice)"
                )
                continue
            results[i] = UpdateResult(
                captured["state"], acks, hinted, self.node_id,
                captured["duplicates"], captured["errors"],
            )  # fmt: skip
        for i, answer in zip(special, await others, strict=True):
            results[i] = answer
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    async def update_many(
        self, items: Sequence[tuple[str, str, Op | DocOp, str]]
    ) -> list[UpdateResult | BaseException]:
        """:meth:`_update_many`, each item timed as a write of its tier (it waited the
        batch)."""
        started = time.perf_counter()
        try:
            results = await self._update_many(items)
        except CorruptValueError as exc:
            raise self._repair_soon(exc) from exc
        finally:
            for tier, n in collections.Counter(item[0] for item in items).items():
                self._timed(tier, "write", started, n)
        return [self._repair_soon(r) if isinstance(r, CorruptValueError) else r for r in results]

    async def _update_many(
        self, items: Sequence[tuple[str, str, Op | DocOp, str]]
    ) -> list[UpdateResult | BaseException]:
        """Apply ``items`` -- (tier, key, op, request id) -- grouping the updates of one
        key (in their order) into one :meth:`update_group`. Groups this node
        coordinates run here, concurrently, so their durable writes share the store's
        group commits and their replication the per-peer merge batches; the groups
        another owner must coordinate go to it in one :class:`ForwardMany` per owner.
        One result per item, in order: its :class:`UpdateResult`, or the exception that
        failed it (its key's group, or that item alone when it did not fit the key)."""
        groups: dict[tuple[str, str], list[int]] = {}
        for i, (tier, key, _op, _rid) in enumerate(items):
            groups.setdefault((tier, key), []).append(i)
        live = self.live()
        here: list[tuple[str, str]] = []
        elsewhere: dict[str, list[tuple[str, str]]] = {}
        for tier, key in groups:
            owners = self.owners(tier_spec(tier), key, live) if tier in TIERS else []
            has_ids = any(items[i][3] for i in groups[(tier, key)])
            if not owners or owners[0] == self.node_id or (self.node_id in owners and not has_ids):
                here.append((tier, key))
            else:
                elsewhere.setdefault(owners[0], []).append((tier, key))

        def group_items(tier: str, key: str) -> list[tuple[Op | DocOp, str]]:
            return [(items[i][2], items[i][3]) for i in groups[(tier, key)]]

        def count_forwarded(keys: list[tuple[str, str]]) -> None:
            for tier, key in keys:
                self.forwarded_updates[tier] += len(groups[(tier, key)])

        async def run_here() -> list[UpdateResult | BaseException]:
            return await self._update_groups_here([(t, k, group_items(t, k)) for t, k in here])

        async def run_at(owner: str, keys: list[tuple[str, str]]) -> list[Any]:
            groups = tuple(ForwardGroup(t, k, tuple(group_items(t, k))) for t, k in keys)
            outcomes = await self._forward_many(
                owner, live[owner], groups, deadline.WRITE_DEADLINE.get()
            )
            if outcomes is None:  # nothing applied: each group on its own
                # (counted as forwarded there, if it is forwarded again)
                return await asyncio.gather(
                    *(self._update_group(t, k, group_items(t, k)) for t, k in keys),
                    return_exceptions=True,
                )
            count_forwarded(keys)
            return outcomes

        answers = await asyncio.gather(
            run_here(),
            *(run_at(owner, keys) for owner, keys in elsewhere.items()),
            return_exceptions=True,
        )
        by_key: dict[tuple[str, str], UpdateResult | BaseException] = {}
        for keys, outcomes in zip([here, *elsewhere.values()], answers, strict=True):
            if isinstance(outcomes, BaseException):  # that part failed as a whole
                outcomes = [outcomes] * len(keys)
            by_key.update(zip(keys, outcomes, strict=True))
        results: list[UpdateResult | BaseException] = [RuntimeError("unset")] * len(items)
        for key_id, members in groups.items():
            outcome = by_key[key_id]
            for position, i in enumerate(members):
                if not isinstance(outcome, UpdateResult):
                    results[i] = outcome
                elif (error := outcome.errors[position]) is not None:
                    results[i] = error
                else:
                    results[i] = outcome.one(position)
        return results

    async def _observe(
        self, tier: str, key: str, plan: coordinator.WritePlan, live: dict[str, str]
    ) -> CRDTBase | None:
        """The join of the other owners' copies of ``key``, read before an update that
        acts on what it has observed (an OR-set remove): without it, an add that was
        acknowledged while this node was down, wiped or not yet an owner would survive
        an acknowledged remove. Asks every other owner at once, and as many stand-ins
        (hint holders, in the order hints are placed) as there are owners, since a
        write's quorum counts hints; fewer owners' answers than
        :func:`~node.replication.coordinator.observe_quorum` fail the update before
        anything is applied."""
        others = [o for o in plan.owners if o != self.node_id]
        stand_ins = coordinator.hint_candidates(
            tier_spec(tier), key, live, plan.owners, self.node_id
        )
        stand_ins = [m for m in stand_ins if m != self.node_id][: len(plan.owners)]
        asked = others + stand_ins
        replies = await asyncio.gather(
            *(self._try(m, live[m], Observe(tier, key), ReadReply) for m in asked)
        )
        states = [decode(r.state) for r in replies if r is not None and r.state is not None]
        answered = int(self.node_id in plan.owners)
        answered += sum(r is not None for m, r in zip(asked, replies, strict=True) if m in others)
        need = coordinator.observe_quorum(plan)
        if answered < need:
            raise NoOwnerReachable(
                f"{tier}/{key}: the update removes what it has seen, which needs the copies "
                f"of {need} owners; {answered} of {', '.join(plan.owners)} answered"
            )
        return coordinator.merge_states([self._observed_here(tier, key), *states])

    def _observed_here(self, tier: str, key: str) -> CRDTBase | None:
        """This node's copy of ``tier/key`` joined with the hints it holds for it."""
        hinted = (decode(h.value) for h in self.store.hints_about(tier, key))
        return coordinator.merge_states([self.local_state(tier, key), *hinted])

    def _background(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._pending_tasks.add(task)
        task.add_done_callback(self._pending_tasks.discard)

    async def _update_mesh_index(
        self, mesh_id: str, before: CRDTBase | None, after: CRDTBase
    ) -> None:
        """Best effort: the agent -> meshes index is advisory (queries re-check
        every entry against the mesh document), so a failed index write only
        hides the mesh from "meshes of agent" until the next membership write."""
        added, removed = member_changes(before, after)
        updates = mesh_doc.index_deltas(mesh_id, added, removed)
        # The mesh write is applied: its index entries follow it whatever the deadline.
        fence = deadline.WRITE_DEADLINE.set(0)
        try:
            results = await asyncio.gather(
                *(
                    self.update("mesh", mesh_doc.index_key(agent), index_op)
                    for agent, index_op in updates.items()
                ),
                return_exceptions=True,
            )
        finally:
            deadline.WRITE_DEADLINE.reset(fence)
        for agent, outcome in zip(updates, results, strict=True):
            if isinstance(outcome, BaseException):
                log.warning("mesh index for agent %s not updated: %s", agent, outcome)

    async def _replicate(
        self,
        spec: TierSpec,
        key: str,
        delta: bytes,
        owners: list[str],
        live: dict[str, str],
        base: bytes | None = None,
    ) -> tuple[list[str], list[str]]:
        """Send the delta (with its ``base``: see :class:`Merge`) to the other owners,
        hint the ones that did not take it; return ``(acks, hinted)``."""
        others = [o for o in owners if o != self.node_id]
        merge = Merge(spec.name, key, delta, base)
        durable = await asyncio.gather(*(self._merge_remote(o, live[o], merge) for o in others))
        return await self._hint_down(
            spec, key, delta, owners, live, dict(zip(others, durable, strict=True))
        )

    async def _hint_down(
        self,
        spec: TierSpec,
        key: str,
        delta: bytes,
        owners: list[str],
        live: dict[str, str],
        durable: dict[str, bool],
    ) -> tuple[list[str], list[str]]:
        """Given which other owners took the delta durably, hint the ones that did not;
        return ``(acks, hinted)``."""
        acks, down = coordinator.tally(self.node_id, owners, durable)
        if not down:
            return acks, []
        hints = coordinator.HintPlan(
            down, coordinator.hint_candidates(spec, key, live, owners, self.node_id)
        )
        while (attempt := hints.next()) is not None:
            if attempt.fallback == self.node_id:
                await self.store.add_hint(attempt.owner, spec.name, key, delta)
                stored = True
            else:
                hint = StoreHint(attempt.owner, spec.name, key, delta)
                reply = await self._try(attempt.fallback, live[attempt.fallback], hint, Done)
                stored = reply is not None
            hints.record(stored)
        return acks + hints.acks, hints.hinted

    async def _forward(
        self,
        tier: str,
        key: str,
        items: Sequence[tuple[Op | DocOp, str]],
        owners: list[str],
        live: dict[str, str],
    ) -> UpdateResult:
        """Hand the update to an owner. A lone op without a request id travels as
        :class:`Forward` (what every version understands); anything else as
        :class:`ForwardGroup`, so the owner deduplicates the request ids."""
        self.forwarded_updates[tier] += len(items)
        grouped = len(items) > 1 or bool(items[0][1])
        if grouped and len(owners) == 1:  # the usual case: together with its neighbours
            outcome = await self._forwarder(owners[0]).submit(
                ForwardGroup(tier, key, tuple(items)), deadline.WRITE_DEADLINE.get()
            )
            if isinstance(outcome, BaseException):
                raise outcome
            assert isinstance(outcome, UpdateResult)
            return outcome
        message: Forward | ForwardGroup = (
            ForwardGroup(tier, key, tuple(items)) if grouped else Forward(tier, key, items[0][0])
        )
        expect: type[ForwardReply] | type[ForwardGroupReply] = (
            ForwardGroupReply if grouped else ForwardReply
        )
        for owner in owners:
            try:
                reply = await self._ask(owner, live[owner], self._fenced(message), expect)
            except NodeError as exc:
                verdict = coordinator.forward_verdict(exc)
                if verdict is ForwardVerdict.NEXT:
                    continue
                if verdict is ForwardVerdict.ANSWER:
                    raise
                raise ForwardOutcomeUnknown(
                    f"{tier}/{key}: forwarded to {owner}, which may have applied it "
                    f"({type(exc).__name__}); not sent to another owner, do not resend"
                ) from exc
            if isinstance(reply, ForwardGroupReply):
                result = _group_result(reply, owner)
                assert isinstance(result, UpdateResult)
                return result
            return UpdateResult(
                decode(reply.state), list(reply.replicas), list(reply.hinted), owner
            )
        raise NoOwnerReachable(
            f"{tier}/{key}: none of its owners ({', '.join(owners)}) answered; nothing applied"
        )

    def _forwarder(self, owner: str) -> ForwardBatcher:
        """The queue of single updates forwarded to ``owner``: concurrent ones travel in
        one :class:`ForwardMany`, each answered as a lone :class:`ForwardGroup`."""
        forwarder = self._forwarders.get(owner)
        if forwarder is None:

            async def send(groups: tuple[ForwardGroup, ...], due: int) -> list[object]:
                address = self.live().get(owner)  # None: declared dead since, nothing sent
                outcomes = None
                if address is not None:
                    outcomes = await self._forward_many(owner, address, groups, due)
                if outcomes is None:  # nothing applied
                    return [
                        NoOwnerReachable(
                            f"{g.tier}/{g.key}: none of its owners ({owner}) answered; "
                            "nothing applied"
                        )
                        for g in groups
                    ]
                return outcomes

            forwarder = self._forwarders[owner] = ForwardBatcher(send)
        return forwarder

    async def _forward_many(
        self, owner: str, address: str, groups: tuple[ForwardGroup, ...], due: int
    ) -> list[object] | None:
        """Send ``groups`` to ``owner`` to coordinate, in one :class:`ForwardMany` under
        the deadline ``due`` (0: none): one outcome per group (its result, or the
        exception that failed it), or None when provably nothing was applied (another
        owner may be asked)."""
        try:
            reply = await self._ask(
                owner, address, self._fenced(ForwardMany(groups), due), ForwardManyReply
            )
        except NodeError as exc:
            verdict = coordinator.forward_verdict(exc)
            if verdict is ForwardVerdict.NEXT:
                return None
            if verdict is ForwardVerdict.ANSWER:
                return [exc] * len(groups)
            return [
                ForwardOutcomeUnknown(
                    f"{g.tier}/{g.key}: forwarded to {owner}, which may have applied it "
                    f"({type(exc).__name__}); not sent to another owner, do not resend"
                )
                for g in groups
            ]
        if len(reply.results) != len(groups):
            raise ReplicationError(f"{owner} answered {len(reply.results)} of {len(groups)}")
        return [_group_result(r, owner) for r in reply.results]

    # -- reads -------------------------------------------------------------------------

    async def read(self, tier: str, key: str, consistency: int) -> ReadResult:
        started = time.perf_counter()
        try:
            return await self._read(tier, key, consistency)
        finally:
            self._timed(tier, "read", started)

    async def _read(self, tier: str, key: str, consistency: int) -> ReadResult:
        spec = check_tier_key(tier, key)
        live = self.live()
        owners = self.owners(spec, key, live)
        plan = coordinator.plan_read(owners, self.node_id, consistency)
        states: dict[str, CRDTBase | None] = {}
        for owner in plan.order:
            if len(states) >= plan.want:
                break
            if owner == self.node_id:
                try:
                    states[owner] = self.local_state(tier, key)
                except CorruptValueError as exc:
                    self._repair_soon(exc)  # and read the other owners instead
                continue
            reply = await self._try(owner, live[owner], Read(tier, key), ReadReply)
            if reply is not None:
                states[owner] = decode(reply.state) if reply.state is not None else None
        if len(states) < plan.want:
            raise NoOwnerReachable(
                f"{tier}/{key}: {len(states)} of {plan.want} owners answered ({', '.join(owners)})"
            )
        merged = coordinator.merge_states(states.values())
        repaired = 0
        if merged is not None and plan.repair:
            merged_bytes = encode(merged)
            for owner in coordinator.behind(states, merged):
                repaired += 1
                if owner == self.node_id:
                    await self.merge_local(tier, key, merged_bytes)
                else:
                    await self._try(owner, live[owner], Merge(tier, key, merged_bytes), Done)
            self.repaired += repaired
        return ReadResult(merged, list(states), repaired)

    async def scan(self, tier: str, prefix: str, after: str, limit: int) -> tuple[list[str], bool]:
        """Keys under ``prefix`` across the live members (union), in order."""
        started = time.perf_counter()
        try:
            return await self._scan(tier, prefix, after, limit)
        finally:
            self._timed(tier, "read", started)

    async def _scan(self, tier: str, prefix: str, after: str, limit: int) -> tuple[list[str], bool]:
        tier_spec(tier)
        live = self.live()
        keys: set[str] = {k for k, _ in self.store.scan(tier, prefix, after, 0)}
        message = Scan(tier, prefix, after)
        replies = await asyncio.gather(
            *(
                self._try(m, addr, message, ScanReply)
                for m, addr in live.items()
                if m != self.node_id
            )
        )
        for reply in replies:
            if reply is not None:
                keys.update(reply.keys)
        ordered = sorted(keys)
        if limit and len(ordered) > limit:
            return ordered[:limit], True
        return ordered, False

    async def changes(
        self,
        tier: str,
        prefix: str,
        after: dict[str, int],
        limit: int,
        members: Iterable[str] | None = None,
    ) -> dict[str, ChangesReply | None]:
        """One page of every live member's change feed of ``tier`` (keys under
        ``prefix``), each after the seq ``after`` names for it (0 when absent, -1 for
        "from now"); None for a member that did not answer. ``members`` narrows the
        members asked. This node's own feed is read locally."""
        tier_spec(tier)
        live = self.live()
        if members is not None:
            wanted = set(members)
            live = {m: a for m, a in live.items() if m in wanted}

        async def one(member: str, address: str) -> ChangesReply | None:
            since = after.get(member, 0)
            if member == self.node_id:
                return _changes_reply(self.store.changes(tier, prefix, since, limit))
            return await self._try(
                member, address, Changes(tier, prefix, since, limit), ChangesReply
            )

        pages = await asyncio.gather(*(one(m, a) for m, a in sorted(live.items())))
        return dict(zip(sorted(live), pages, strict=True))

    # -- background: hinted handoff and anti-entropy --------------------------------------

    async def hand_off(self) -> None:
        """Merge the hints held for each live peer into it, oldest first, a round's worth
        at a time (``coordinator.HINT_BATCH``), through the peer's merge queue (which
        bounds each message in bytes); delete the ones it made durable.

        Each hint stands alone (merging is a join: order does not matter), so one the
        peer refuses is kept for the next round without holding back the ones after it.
        A live peer that has left hints undelivered for :data:`HANDOFF_REPORT_S` (down
        before gossip noticed is shorter than that; refusing them is not) is logged,
        at most that often."""
        live = self.live()
        targets = coordinator.handoff_targets(live, self.node_id)
        for gone in self._handoff_short.keys() - set(targets):
            del self._handoff_short[gone]  # back later: a new outage, timed anew
        for member in targets:
            hints = self.store.hints_for(member, coordinator.HINT_BATCH)
            if not hints:
                self._handoff_short.pop(member, None)
                continue
            merges = [Merge(h.tier, h.key, h.value) for h in hints]
            oks = await self._merge_many_remote(member, live[member], merges)
            done = [h.id for h, ok in zip(hints, oks, strict=True) if ok]
            if done:
                await self.store.delete_hints(done)
                self.handed_off += len(done)
                log.info("handed off %d hinted writes to %s", len(done), member)
            if len(done) == len(hints):
                self._handoff_short.pop(member, None)
                continue
            self.hints_refused += len(hints) - len(done)
            self._report_handoff(member, hints, oks)

    def _report_handoff(self, member: str, hints: Sequence[Hint], oks: Sequence[bool]) -> None:
        now = self._monotonic()
        since, reported = self._handoff_short.setdefault(member, (now, now))
        if now - since < HANDOFF_REPORT_S or (
            reported > since and now - reported < HANDOFF_REPORT_S
        ):
            return
        self._handoff_short[member] = (since, now)
        kept = [h for h, ok in zip(hints, oks, strict=True) if not ok]
        log.warning(
            "hinted hand-off to %s has left hints undelivered for %.0f s: it took %d of the "
            "%d sent this round; the rest stay here, the first of them %s/%s (unreachable "
            "though gossip has it live, or its log says why it refused them)",
            member, now - since, len(hints) - len(kept), len(hints), kept[0].tier, kept[0].key,
        )  # fmt: skip

    async def anti_entropy_round(self) -> None:
        """One Merkle session per (tier, live peer) over the keys both own, then the
        hand-off of stray copies.

        Each pair of nodes reconciles its own *space*: a Merkle tree of exactly the
        keys placement gives to both of them (``coordinator.pair_keys``), so syncing
        never spreads a key beyond its owners. Sessions are gossip's ``SyncPeer``
        protocol (roots, then only differing subtrees, then only differing keys;
        values are merged both ways, CRDT join). Keys this node holds but does not
        own are handed to their owners (:meth:`_hand_off_strays`).

        A pair whose peer began a session with this node after this node's previous
        round began, served here to its end, is left to it (``sync.ServedSessions``):
        the session merged both ways, so one per pair and interval is enough, and
        under sustained writes a pair runs about half the sessions it did.

        A tier is skipped while it is *settled*: its last round here found nothing to
        do (every session succeeded with equal trees, no key under-replicated, no
        stray) and neither its store version nor the live membership has changed
        since. That keeps an idle cluster idle and loses nothing: if two owners'
        copies differ, at least one of them changed since their last equal session,
        and that one is not settled, so it runs the session that reconciles them (or,
        for one round, leaves the pair to a session the peer began after this
        node's previous round began: see ``sync.ServedSessions``).

        Its duration goes to :attr:`round_seconds` (``/metrics``): under sustained
        writes no tier is settled, and every round brings the pair trees up to date and
        repairs the keys still in flight, which a busy node pays for here.
        """
        started = self._monotonic()
        try:
            await self._anti_entropy_round()
        finally:
            self.round_seconds.observe(self._monotonic() - started)

    async def _anti_entropy_round(self) -> None:
        live = self.live()
        members = tuple(sorted(live.items()))
        pairs = coordinator.sync_pairs(TIERS, live, self.node_id)
        self.divergence.keep_only(live)
        self._served.keep_only(live)
        since = self.rounds  # sessions served since the previous round here began
        self.rounds += 1
        for tier, spec in TIERS.items():
            health = TierHealth(last_round=self._monotonic())
            signature = (self.store.version(tier), members)  # before anything is read
            if self._round.settled.get(tier) == signature:
                self.rounds_skipped += 1
                self._round.health[tier] = health
                continue
            self._round.settled.pop(tier, None)
            failed = False  # a session failed, or one left to the peer may not settle it
            keys = (k for k, _ in self.store.keys_and_digests(tier))
            health.under_replicated += coordinator.under_replicated(spec, keys, live)
            for pair in pairs:
                if pair.tier != tier:
                    continue
                served = self._served.covering(tier, pair.peer, since, members)
                if served is not None:
                    self.sessions_left_to_peers += 1
                    health.under_replicated += served.keys
                    # Settles the tier as a session of this round would: it found the
                    # copies equal, and nothing was written here since it began.
                    failed |= served.version != signature[0]
                    continue
                space = self._space(tier, pair.peer, live)
                try:
                    differing = await self._sync_session(pair, live[pair.peer], space)
                except (ReplicationError, GossipError) as exc:
                    log.info("anti-entropy %s with %s failed: %s", tier, pair.peer, exc)
                    differing, failed = len(space.tree), True
                    self.divergence.forget(tier, pair.peer)
                else:
                    health.divergent += self._check_divergence(tier, pair.peer, space)
                health.under_replicated += differing
            health.under_replicated += await self._hand_off_strays(spec, live)
            self._round.health[tier] = health
            if not failed and health.under_replicated == 0:
                self._round.settled[tier] = signature

    def _check_divergence(self, tier: str, peer: str, space: PairSpace) -> int:
        """Feed a finished session to the invariant check; how many keys failed it."""
        persisting = self.divergence.session(tier, peer, space.found, space.left, space.theirs)
        if persisting:
            shown = ", ".join(persisting[:5]) + (" ..." if len(persisting) > 5 else "")
            log.warning(
                "invariant: %d %s keys still differ from %s after anti-entropy joined "
                "them, both copies unchanged since: %s",
                len(persisting), tier, peer, shown,
            )  # fmt: skip
        return len(persisting)

    async def _hand_off_strays(self, spec: TierSpec, live: dict[str, str]) -> int:
        """Merge this round's stray copies of ``spec``'s tier into their owners and drop
        the ones every owner took; return how many strays are left (under-replicated).

        Bound per round: ``coordinator.STRAY_BATCH`` keys, so at most that many times RF
        merges (coalesced per owner into MergeMany messages) and that many deletes."""
        tier = spec.name
        plan = coordinator.stray_round(
            spec,
            sorted(self._trees(tier, live).strays),  # kept by PairTrees: no full scan
            live,
            self.node_id,
            after=self._stray_cursor.get(tier, ""),
            limit=coordinator.STRAY_BATCH,
        )
        self._stray_cursor[tier] = plan.resume_after
        sent: list[tuple[coordinator.Stray, bytes]] = []
        for stray in plan.batch:
            raw = self.store.get(tier, stray.key)
            if raw is not None:
                sent.append((stray, raw))
        pushes = [(stray, raw, owner) for stray, raw in sent for owner in stray.owners]
        durable = await asyncio.gather(
            *(
                self._merge_remote(owner, live[owner], Merge(tier, stray.key, raw))
                for stray, raw, owner in pushes
            )
        )
        acked: dict[str, set[str]] = {stray.key: set() for stray, _ in sent}
        for (stray, _, owner), ok in zip(pushes, durable, strict=True):
            if ok:
                acked[stray.key].add(owner)
        now_live = self.live()  # placement may have moved while the merges were out
        droppable = [
            (stray, raw)
            for stray, raw in sent
            if coordinator.may_drop_stray(spec, stray.key, now_live, self.node_id, acked[stray.key])
        ]
        await self._writer_ready()
        if any(self._wrote(raw) for _, raw in droppable):
            async with self._writer_lock:
                await self._begin_epoch(f"dropping {tier} copies it wrote to")
        dropped = 0
        for stray, raw in droppable:
            if await self._drop_if_unchanged(tier, stray.key, raw):
                dropped += 1
        if dropped:
            self.strays_handed_off += dropped
            log.info(
                "handed off %d %s copies this node does not own to their owners", dropped, tier
            )
        return plan.total - dropped

    def _wrote(self, raw: bytes) -> bool:
        """Whether the current writer id may occur in the encoded state ``raw``. The
        codec stores ids as plain UTF-8 strings, so a miss is certain and a hit (maybe a
        payload that happens to hold the id) costs at most an unneeded epoch."""
        assert self._writer is not None
        return self._writer.encode() in raw

    async def _drop_if_unchanged(self, tier: str, key: str, handed_off: bytes) -> bool:
        """Delete the local copy if it is still exactly ``handed_off``; whether it is gone."""

        def drop(current: bytes | None) -> bytes | None:
            return None if current == handed_off else current

        try:
            return await self.store.update(tier, key, drop) is None
        except CorruptValueError as exc:
            self._repair_soon(exc)
            return False

    def _space(self, tier: str, peer: str, live: dict[str, str]) -> PairSpace:
        """The keys of ``tier`` this node holds that placement gives to both it
        and ``peer``, as a Merkle-synchronisable store."""
        trees = self._trees(tier, live)
        name = coordinator.space_name(tier, self.node_id, peer)
        return PairSpace(self.store, self.merge_local, tier, name, trees.tree(peer))

    def _trees(self, tier: str, live: Iterable[str]) -> PairTrees:
        """The tier's pair trees (and stray keys), brought up to date."""
        trees = self._pair_trees.get(tier)
        if trees is None:
            trees = self._pair_trees[tier] = PairTrees(self.store, tier, self.node_id)
        spec = TIERS[tier]
        trees.refresh(frozenset(live), lambda key, ids: self._owners(spec, key, ids))
        return trees

    async def _sync_session(self, pair: SyncPair, address: str, space: PairSpace) -> int:
        """Run one session as initiator; return how many keys differed."""
        peer = SyncPeer({space.name: space})
        self._session += 1
        step: SyncMessage | None = peer.begin(space.name, self._session)
        while step is not None:
            message = Sync(pair.tier, pair.pair, step)
            try:
                reply = await self._ask(pair.peer, address, message, SyncReply)
            except NodeError as exc:
                raise ReplicationError(f"sync reply: {exc}") from exc
            await space.flush()
            if reply.step is None:
                break
            step = peer.handle(reply.step)
            await space.flush()
        self.synced_keys += space.merged + space.served
        return space.merged + space.served

    async def _serve_sync(self, message: Sync) -> SyncReply:
        peer = coordinator.sync_partner(
            message.tier, message.pair, message.step.space, self.node_id
        )
        live = self.live()
        members = tuple(sorted(live.items()))
        self._served.begin(
            message.tier,
            peer,
            message.step,
            rounds=self.rounds,
            version=self.store.version(message.tier),  # before the trees are refreshed
            members=members,
        )
        space = self._space(message.tier, peer, live)
        response = SyncPeer({space.name: space}).handle(message.step)
        await space.flush()
        self._served.step(
            message.tier,
            peer,
            message.step,
            response,
            keys=space.merged + space.served,
            members=tuple(sorted(self.live().items())),
        )
        return SyncReply(response)

    async def compact_population(self) -> int:
        """Apply every local population log's retention policy (node/tiers/population.py).

        Archival policies write the entries leaving the detailed log to
        ``archive_dir`` first (durable), then the compacted state is merged
        into the stored one — compaction only adds information, so the join
        is safe against appends that landed meanwhile. Returns keys changed."""
        now = self._clock_ns()
        changed = 0
        for key, _ in list(self.store.keys_and_digests("population")):
            raw = self.store.get("population", key)
            if raw is None:
                continue
            state = decode(raw)
            if not isinstance(state, PopulationLog):
                continue
            step = population.compact(state, key, now)
            if step.archive:
                if self.archive_dir is None:
                    log.warning("no archive directory: keeping %s detailed", key)
                    continue
                subspace = key.partition("/")[0]
                await asyncio.to_thread(
                    write_archive, self.archive_dir, subspace, key, step.archive, now
                )
                self.archived_entries += len(step.archive)
            compacted = encode(PopulationLog(step.state))
            if compacted != raw:
                await self.merge_local("population", key, compacted)
                changed += 1
        if changed:
            log.info("retention compacted %d population logs", changed)
        return changed

    def health(self) -> dict[str, TierHealth]:
        return dict(self._round.health)

    # -- the peer side -------------------------------------------------------------------

    async def on_replica(self, payload: bytes) -> bytes:
        """Serve one Replica RPC (the caller is an authenticated peer): a request frame
        in, a reply frame out (a :class:`Failure` for anything that went wrong)."""
        try:
            request = codec.decode_request(payload)
        except CodecError as exc:
            return codec.encode(Failure.from_exception(exc))
        return codec.encode(await self.handle(request))

    async def handle(self, request: Request) -> Reply:
        """Serve one request; every failure becomes a :class:`Failure` reply."""
        try:
            return await self._serve(request)
        except Exception as exc:
            if not isinstance(exc, _EXPECTED):
                log.warning("replica %s failed", type(request).__name__, exc_info=exc)
            return Failure.from_exception(exc)

    async def _serve(self, request: Request) -> Reply:
        match request:
            case MergeMany(items=items):
                if any(m.tier not in TIERS for m in items):
                    raise InvalidArgument("merge_many: unknown tier")
                return MergeManyDone(tuple(await self.merge_many_local(items)))
            case Merge(tier=tier, key=key, state=state):
                _known_tier(tier)
                await self.merge_local(tier, key, state)
                return Done()
            case StoreHint(target=target, tier=tier, key=key, state=state):
                _known_tier(tier)
                await self.store.add_hint(target, tier, key, state)
                return Done()
            case Read(tier=tier, key=key):
                _known_tier(tier)
                try:
                    return ReadReply(self.store.get_checked(tier, key))
                except CorruptValueError as exc:  # never serve rot; ask me again later
                    self._repair_soon(exc)
                    return ReadReply(None)
            case Observe(tier=tier, key=key):
                _known_tier(tier)
                try:
                    observed = self._observed_here(tier, key)
                except CorruptValueError as exc:  # not "nothing seen": no answer at all
                    raise self._repair_soon(exc) from exc
                return ReadReply(encode(observed) if observed is not None else None)
            case Forward(tier=tier, key=key, op=op):
                _known_tier(tier)
                result = await self.update(tier, key, op, forwarded=True)
                return ForwardReply(
                    encode(result.state), tuple(result.replicas), tuple(result.hinted)
                )
            case ForwardGroup(tier=tier, key=key, items=items):
                _known_tier(tier)
                result = await self.update_group(tier, key, items, forwarded=True)
                return _group_reply(result)
            case Until(deadline_ns=due, request=inner):
                fence = deadline.WRITE_DEADLINE.set(due)
                try:
                    return await self._serve(inner)
                finally:
                    deadline.WRITE_DEADLINE.reset(fence)
            case ForwardMany(groups=groups):
                if any(g.tier not in TIERS for g in groups):
                    raise InvalidArgument("forward_many: unknown tier")
                outcomes = await self._update_groups_here(
                    [(g.tier, g.key, g.items) for g in groups], forwarded=True
                )
                return ForwardManyReply(
                    tuple(
                        _group_reply(o)
                        if isinstance(o, UpdateResult)
                        # as a lone ForwardGroup: repaired now, "nothing applied, retry"
                        else _failure(
                            self._repair_soon(o) if isinstance(o, CorruptValueError) else o
                        )
                        for o in outcomes
                    )
                )
            case Scan(tier=tier, prefix=prefix, after=after):
                _known_tier(tier)
                return ScanReply(tuple(k for k, _ in self.store.scan(tier, prefix, after, 0)))
            case Sync(tier=tier):
                _known_tier(tier)
                return await self._serve_sync(request)
            case Changes(tier=tier, prefix=prefix, after=after, limit=limit):
                _known_tier(tier)
                if not 1 <= limit <= MAX_CHANGES_PAGE or after < -1:
                    raise InvalidArgument(f"changes: limit {limit} or after {after} out of range")
                return _changes_reply(self.store.changes(tier, prefix, after, limit))
        raise InvalidArgument(f"not a replica request: {type(request).__name__}")


MAX_CHANGES_PAGE = 1000  # feed entries one Changes request may ask for


def _group_result(reply: ForwardGroupReply | Failure, owner: str) -> UpdateResult | BaseException:
    if isinstance(reply, Failure):
        return reply.error()
    errors = tuple(InvalidArgument(e) if e else None for e in reply.errors)
    return UpdateResult(
        decode(reply.state),
        list(reply.replicas),
        list(reply.hinted),
        owner,
        reply.duplicates,
        errors,
    )


def _scoped(tier: str, key: str, request_id: str) -> str:
    """The id a request id is remembered under: per key, so the same client id on
    updates of two keys never makes one of them a duplicate."""
    return f"{tier}\x00{key}\x00{request_id}"


def _scoped_ids(tier: str, key: str, items: Sequence[tuple[Op | DocOp, str]]) -> list[str]:
    return [_scoped(tier, key, rid) for _, rid in items if rid]


def _failure(exc: BaseException) -> Failure:
    if not isinstance(exc, _EXPECTED):
        log.warning("a forwarded group failed", exc_info=exc)
    return Failure.from_exception(exc)


def _group_reply(result: UpdateResult) -> ForwardGroupReply:
    return ForwardGroupReply(
        encode(result.state),
        tuple(result.replicas),
        tuple(result.hinted),
        result.duplicates,
        tuple(str(e) if e is not None else "" for e in result.errors),
    )


def _changes_reply(page: ChangePage) -> ChangesReply:
    return ChangesReply(page.feed, tuple(page.entries), page.through, page.trimmed)


def _known_tier(tier: str) -> None:
    if tier not in TIERS:
        raise InvalidArgument(f"unknown tier {tier!r}")


# _STORED: a store update function is handed only the stored copy whose digest
# matched as it was read (CorruptValueError otherwise), so decoding it skips the
# canonical-form check, an encode per write.


# The largest counter a coordinator sends whole (see _outgoing). A counter holds one
# total per writer id that ever coordinated it: a few, so a few dozen bytes.
COUNTER_WHOLE_MAX = 512


def _sent_whole(state: CRDTBase | None, stored: bytes) -> bool:
    """Whether a state goes to the other owners whole: one no bigger than a delta of
    its, to within a few writer ids. A register's delta is the register; a counter's
    is one total, so a counter goes whole up to :data:`COUNTER_WHOLE_MAX` bytes. A
    set, map or log would carry every element for each op."""
    if isinstance(state, LWWRegister):
        return True
    return isinstance(state, PNCounter) and len(stored) <= COUNTER_WHOLE_MAX


def _outgoing(captured: dict[str, Any]) -> tuple[bytes, bytes | None]:
    """What a group applied here sends the other owners: ``(state, base)``.

    A state that goes whole (:func:`_sent_whole`, decided as it was stored) goes as
    stored, with the digest of the copy it was made from: every op joins its delta into
    that copy (``apply_op``), so the new state includes it, and an owner still holding
    that copy stores it as it is. Any other goes as the ops' delta. Every item a
    duplicate: the first attempt may not have reached its quorum (it may still be
    replicating, or have failed below quorum), so "applied" is only answered once the
    current state -- which holds it -- is on the owners: a full-state join, idempotent."""
    if captured["whole"]:
        return captured["stored"], captured["base"]
    delta = captured["delta"]
    return encode(delta if delta is not None else captured["state"]), None


def _joiner(
    tier: str, key: str, incoming: CRDTBase, raw: bytes, base: bytes | None = None
) -> UpdateFn:
    """The store update that joins ``incoming`` (whose canonical bytes are ``raw``)
    into a key's stored copy. A copy whose digest is ``base`` is one ``incoming`` was
    made from and includes (:class:`Merge`): their join is ``incoming``."""

    def join(old: bytes | None) -> bytes:
        if old is None or (base is not None and digest_of(old) == base):
            return raw
        current = decode(old, verified=True)  # _STORED
        if type(current) is not type(incoming):
            raise InvalidArgument(
                f"{tier}/{key}: replica holds {type(current).__name__}, "
                f"received {type(incoming).__name__}"
            )
        return encode(current.merge(incoming))

    return join
