"""Replication of the CRDT tiers: placement, quorum writes, hints, repair.

One :class:`Replication` per node coordinates requests for the population,
agent, mesh and metrics tiers (``node/tiers/ops.py`` says what they are).

Write path (any node coordinates)::

    owners = rendezvous(tier/key, live members)[:RF]
    not an owner?  -> forward to the first owner that answers
    an owner:      apply the op locally -> (state, delta); durable (TierStore, group commit)
                   send the delta to the other owners (merge + fsync, then ack)
                   owner down? a live fallback stores it as a *hint* (durable) for it
                   ack when write_quorum copies (hints included) are durable

Read path: ONE asks one owner (itself first); QUORUM/ALL merge the owners'
states and send the merged state to any owner that was behind (read repair).

Background:

* hinted handoff — every second, hints for members that are alive again are
  merged into them and deleted;
* anti-entropy — every few seconds, for every live peer, a Merkle session
  (gossip's ``SyncPeer``) over the keys both nodes own: equal roots end it at
  once; otherwise only differing subtrees are descended and only differing
  keys are exchanged, then merged both ways. This is also how RF is
  restored: when a member dies, placement over the live members names a new
  owner for each of its keys, and the next round copies the keys there.

Everything a replica receives is a CRDT state (a delta is a small state), and
merging is idempotent, so duplicates and retries are harmless.

Peer messages travel on the authenticated ``Peer.Replica`` RPC as msgpack.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import msgpack

from crdt import CRDTBase, CRDTError, HybridLogicalClock, decode, encode
from gossip.antientropy import SyncPeer
from gossip.codec import decode_sync
from gossip.codec import encode as encode_sync
from gossip.errors import GossipError
from gossip.merkle import MerkleLayout, MerkleTree
from gossip.messages import SyncMessage
from node.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    ReplicationError,
    ReplicationIncomplete,
    Unavailable,
)
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc
from node.peer.gossip import GossipDriver, auth_metadata
from node.replication.placement import ranking
from node.replication.store import TierStore, digest_of
from node.tiers import mesh as mesh_doc
from node.tiers import population
from node.tiers.documents import DocOp, apply_doc_op, member_changes
from node.tiers.ops import TIERS, Op, TierSpec, apply_op, check_tier_key, render, tier_spec
from node.tiers.population import PopulationLog
from node.tiers.retention import write_archive

log = logging.getLogger(__name__)

ONE, QUORUM, ALL = 1, 2, 3


class NotEnoughReplicas(ReplicationIncomplete):
    """The update is durable somewhere but fewer than the write quorum
    acknowledged it. It will converge; resending would apply it twice."""


class NoOwnerReachable(Unavailable):
    """No owner of the key answered; nothing was applied."""


@dataclass
class UpdateResult:
    state: CRDTBase  # the key's state on the coordinating owner after the update
    replicas: list[str]
    hinted: list[str]
    coordinator: str

    @property
    def value(self) -> tuple[str, str]:
        return render(self.state)


@dataclass
class ReadResult:
    state: CRDTBase | None
    replicas: list[str]
    repaired: int


@dataclass
class TierHealth:
    under_replicated: int = 0
    last_round: float = -1.0


@dataclass
class _Round:
    """What the last anti-entropy round found, per tier."""

    health: dict[str, TierHealth] = field(default_factory=dict)


class Replication:
    def __init__(
        self,
        *,
        node_id: str,
        store: TierStore,
        gossip: GossipDriver,
        token: str,
        anti_entropy_interval_s: float = 3.0,
        handoff_interval_s: float = 1.0,
        call_timeout_s: float = 2.0,
        clock_ns: Callable[[], int] = time.time_ns,
        archive_dir: str | None = None,
        compaction_interval_s: float = 3600.0,
        cluster_size: int = 3,
    ) -> None:
        self.node_id = node_id
        self.store = store
        self.gossip = gossip
        self._metadata = auth_metadata(token)
        self._ae_interval = anti_entropy_interval_s
        self._handoff_interval = handoff_interval_s
        self._timeout = call_timeout_s
        self._clock_ns = clock_ns
        self.archive_dir = archive_dir
        # Configured members (not live ones): a write quorum larger than the
        # whole cluster (RF 2 on a single-node deployment) is capped to it;
        # one above the *live* members is not — that is what hints are for.
        self._cluster_size = cluster_size
        self._compaction_interval = compaction_interval_s
        self.archived_entries = 0
        self._hlc = HybridLogicalClock()
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._round = _Round()
        self.handed_off = 0
        self.repaired = 0
        self.synced_keys = 0
        self._session = 0
        self._batchers: dict[str, _MergeBatcher] = {}
        self._pending_tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle -------------------------------------------------------------

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

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pending_tasks:  # let asynchronous backup copies finish briefly
            await asyncio.wait(set(self._pending_tasks), timeout=self._timeout)
        for channel in self._channels.values():
            await channel.close()

    async def _every(self, interval: float, job: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("replication background job %s failed", job.__name__)

    # -- membership and placement ------------------------------------------------

    def live(self) -> dict[str, str]:
        """Live members (alive or suspect) -> address; always includes self."""
        members = {m.id: m.address for m in self.gossip.members()
                   if str(m.status) in ("alive", "suspect")}  # fmt: skip
        members.setdefault(self.node_id, self.gossip.address)
        return members

    def owners(self, spec: TierSpec, key: str, live: Iterable[str]) -> list[str]:
        ids = list(live)
        rf = len(ids) if spec.rf == 0 else spec.rf
        return ranking(_placement_key(spec.name, key), ids)[:rf]

    # -- peer calls ------------------------------------------------------------------

    def _stub(self, address: str) -> Any:
        channel = self._channels.get(address)
        if channel is None:
            channel = grpc.aio.insecure_channel(address)
            self._channels[address] = channel
        return pb_grpc.PeerStub(channel)

    async def _call(self, address: str, message: dict[str, Any]) -> dict[str, Any] | None:
        """One Replica RPC; None when the peer could not be reached or refused."""
        request = pb.PeerMessage(
            from_id=self.node_id, payload=msgpack.packb(message, use_bin_type=True)
        )
        try:
            response = await self._stub(address).Replica(
                request, metadata=self._metadata, timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            log.debug("replica %s to %s failed: %s", message.get("op"), address, exc.code().name)
            return None
        reply: dict[str, Any] = msgpack.unpackb(response.payload, raw=False)
        return reply

    async def _merge_remote(self, address: str, tier: str, key: str, state: bytes) -> bool:
        """Merge ``state`` into a peer's copy, durably. Concurrent merges to one
        peer are coalesced: while one batch is in flight the next gathers, and
        goes as a single call whose items the peer commits together."""
        batcher = self._batchers.get(address)
        if batcher is None:
            batcher = self._batchers[address] = _MergeBatcher(self, address)
        return await batcher.submit(tier, key, state)

    # -- local state -------------------------------------------------------------------

    async def merge_local(self, tier: str, key: str, state_bytes: bytes) -> bytes | None:
        """Join ``state_bytes`` into the local copy; durable on return."""
        incoming = decode(state_bytes)

        def join(old: bytes | None) -> bytes:
            if old is None:
                return encode(incoming)
            current = decode(old)
            if type(current) is not type(incoming):
                raise InvalidArgument(
                    f"{tier}/{key}: replica holds {type(current).__name__}, "
                    f"received {type(incoming).__name__}"
                )
            return encode(current.merge(incoming))

        return await self.store.update(tier, key, join)

    def local_state(self, tier: str, key: str) -> CRDTBase | None:
        raw = self.store.get(tier, key)
        return decode(raw) if raw is not None else None

    # -- writes ---------------------------------------------------------------------------

    async def update(
        self, tier: str, key: str, op: Op | DocOp, *, forwarded: bool = False
    ) -> UpdateResult:
        spec = check_tier_key(tier, key)
        live = self.live()
        owners = self.owners(spec, key, live)
        if self.node_id not in owners and not forwarded:
            return await self._forward(tier, key, op, owners, live)
        captured: dict[str, CRDTBase | None] = {}

        def mutate(old: bytes | None) -> bytes:
            state = decode(old) if old is not None else None
            hlc = self._hlc.now(self._clock_ns())
            if isinstance(op, DocOp):
                new, delta = apply_doc_op(state, op, self.node_id, hlc)
            else:
                new, delta = apply_op(state, op, self.node_id, hlc, tier=tier)
            captured["before"], captured["state"], captured["delta"] = state, new, delta
            return encode(new)

        await self.store.update(tier, key, mutate)
        state, delta_state = captured["state"], captured["delta"]
        assert state is not None and delta_state is not None
        quorum = min(spec.write_quorum, self._cluster_size)
        if quorum <= 1 and len(owners) > 1:
            # "1 + backup": acknowledged once durable here; the other owners
            # (the backup) get it asynchronously, hinted if they are down.
            self._background(self._replicate(spec, key, encode(delta_state), owners, live))
            return UpdateResult(state, [self.node_id], [], self.node_id)
        acks, hinted = await self._replicate(spec, key, encode(delta_state), owners, live)
        result = UpdateResult(state, acks, hinted, self.node_id)
        if len(acks) < quorum:
            raise NotEnoughReplicas(
                f"{tier}/{key}: the update is durable on {', '.join(acks)} but reached "
                f"{len(acks)} of the {quorum} required replicas; it will "
                "converge when the owners are back (resending would apply it twice)"
            )
        if isinstance(op, DocOp) and tier == "mesh":
            await self._update_mesh_index(key, captured["before"], state)
        return result

    def _background(self, work: Any) -> None:
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
        results = await asyncio.gather(
            *(
                self.update("mesh", mesh_doc.index_key(agent), index_op)
                for agent, index_op in updates.items()
            ),
            return_exceptions=True,
        )
        for agent, outcome in zip(updates, results, strict=True):
            if isinstance(outcome, BaseException):
                log.warning("mesh index for agent %s not updated: %s", agent, outcome)

    async def _replicate(
        self, spec: TierSpec, key: str, delta: bytes, owners: list[str], live: dict[str, str]
    ) -> tuple[list[str], list[str]]:
        others = [o for o in owners if o != self.node_id]
        replies = await asyncio.gather(
            *(self._merge_remote(live[o], spec.name, key, delta) for o in others)
        )
        acks = [self.node_id] if self.node_id in owners else []
        down = []
        for owner, ok in zip(others, replies, strict=True):
            if ok:
                acks.append(owner)
            else:
                down.append(owner)
        hinted: list[str] = []
        if not down:
            return acks, hinted
        fallbacks = [
            m for m in ranking(_placement_key(spec.name, key), live)
            if m not in owners
        ]  # fmt: skip
        if self.node_id not in owners:
            fallbacks.insert(0, self.node_id)
        for owner in down:
            while fallbacks:
                fallback = fallbacks.pop(0)
                if fallback == self.node_id:
                    await self.store.add_hint(owner, spec.name, key, delta)
                    stored = True
                else:
                    reply = await self._call(
                        live[fallback],
                        {"op": "hint", "target": owner, "tier": spec.name, "key": key,
                         "state": delta},
                    )  # fmt: skip
                    stored = reply is not None and bool(reply.get("ok"))
                if stored:
                    acks.append(f"{fallback} (hint for {owner})")
                    hinted.append(owner)
                    break
        return acks, hinted

    async def _forward(
        self, tier: str, key: str, op: Op | DocOp, owners: list[str], live: dict[str, str]
    ) -> UpdateResult:
        message = {"op": "update", "tier": tier, "key": key, "update": _op_wire(op)}
        for owner in owners:
            reply = await self._call(live[owner], message)
            if reply is None:
                continue
            if "error" in reply and reply.get("kind") not in ("not_found", "exists"):
                if reply.get("kind") == "invalid":
                    raise InvalidArgument(reply["error"])
                if reply.get("kind") == "incomplete":
                    raise NotEnoughReplicas(reply["error"])
                continue
            if reply.get("kind") == "not_found":
                raise NotFound(reply["error"])
            if reply.get("kind") == "exists":
                raise AlreadyExists(reply["error"])
            return UpdateResult(decode(reply["state"]), reply["replicas"], reply["hinted"], owner)
        raise NoOwnerReachable(
            f"{tier}/{key}: none of its owners ({', '.join(owners)}) answered; nothing applied"
        )

    # -- reads -------------------------------------------------------------------------------

    async def read(self, tier: str, key: str, consistency: int) -> ReadResult:
        spec = check_tier_key(tier, key)
        live = self.live()
        owners = self.owners(spec, key, live)
        want = {ONE: 1, QUORUM: len(owners) // 2 + 1, ALL: len(owners)}.get(consistency, 1)
        order = sorted(owners, key=lambda o: o != self.node_id)
        states: dict[str, CRDTBase | None] = {}
        for owner in order:
            if len(states) >= want:
                break
            if owner == self.node_id:
                states[owner] = self.local_state(tier, key)
                continue
            reply = await self._call(live[owner], {"op": "read", "tier": tier, "key": key})
            if reply is not None and "error" not in reply:
                raw = reply.get("state")
                states[owner] = decode(raw) if raw is not None else None
        if len(states) < want:
            raise NoOwnerReachable(
                f"{tier}/{key}: {len(states)} of {want} owners answered ({', '.join(owners)})"
            )
        merged: CRDTBase | None = None
        for state in states.values():
            if state is None:
                continue
            merged = state if merged is None else merged.merge(state)
        repaired = 0
        if merged is not None and consistency in (QUORUM, ALL):
            merged_bytes = encode(merged)
            for owner, state in states.items():
                if state is not None and encode(state) == merged_bytes:
                    continue
                repaired += 1
                if owner == self.node_id:
                    await self.merge_local(tier, key, merged_bytes)
                else:
                    await self._call(
                        live[owner],
                        {"op": "merge", "tier": tier, "key": key, "state": merged_bytes},
                    )
            self.repaired += repaired
        return ReadResult(merged, list(states), repaired)

    async def scan(self, tier: str, prefix: str, after: str, limit: int) -> tuple[list[str], bool]:
        """Keys under ``prefix`` across the live members (union), in order."""
        tier_spec(tier)
        live = self.live()
        keys: set[str] = {k for k, _ in self.store.scan(tier, prefix, after, 0)}
        message = {"op": "scan", "tier": tier, "prefix": prefix, "after": after}
        replies = await asyncio.gather(
            *(self._call(addr, message) for m, addr in live.items() if m != self.node_id)
        )
        for reply in replies:
            if reply is not None:
                keys.update(reply.get("keys", []))
        ordered = sorted(keys)
        if limit and len(ordered) > limit:
            return ordered[:limit], True
        return ordered, False

    # -- background: hinted handoff and anti-entropy ------------------------------------------

    async def hand_off(self) -> None:
        live = self.live()
        for member, address in live.items():
            if member == self.node_id:
                continue
            hints = self.store.hints_for(member, 256)
            if not hints:
                continue
            done = []
            for hint in hints:
                message = {"op": "merge", "tier": hint.tier, "key": hint.key, "state": hint.value}
                reply = await self._call(address, message)
                if reply is None or not reply.get("ok"):
                    break
                done.append(hint.id)
            if done:
                await self.store.delete_hints(done)
                self.handed_off += len(done)
                log.info("handed off %d hinted writes to %s", len(done), member)

    async def anti_entropy_round(self) -> None:
        """One Merkle session per (tier, live peer) over the keys both own.

        Each pair of nodes reconciles its own *space* ``tier|a|b``: a Merkle
        tree of exactly the keys placement gives to both of them, so syncing
        never spreads a key beyond its owners. Sessions are gossip's
        ``SyncPeer`` protocol (roots, then only differing subtrees, then only
        differing keys; values are merged both ways, CRDT join).
        """
        live = self.live()
        for tier, spec in TIERS.items():
            health = TierHealth(last_round=time.monotonic())
            rf = len(live) if spec.rf == 0 else spec.rf
            for key, _ in self.store.keys_and_digests(tier):
                if len(self.owners(spec, key, live)) < rf:
                    health.under_replicated += 1
            for peer, address in live.items():
                if peer == self.node_id:
                    continue
                space = self._space(tier, peer, live)
                try:
                    differing = await self._sync_session(space, address)
                except (ReplicationError, GossipError) as exc:
                    log.info("anti-entropy %s with %s failed: %s", tier, peer, exc)
                    differing = len(space.tree)
                health.under_replicated += differing
            self._round.health[tier] = health

    def _space(self, tier: str, peer: str, live: dict[str, str]) -> _PairSpace:
        """The keys of ``tier`` this node holds that placement gives to both it
        and ``peer``, as a Merkle-synchronisable store."""
        spec = TIERS[tier]
        items = [
            (key, digest)
            for key, digest in self.store.keys_and_digests(tier)
            if {self.node_id, peer} <= set(self.owners(spec, key, live))
        ]
        return _PairSpace(self, tier, _space_name(tier, self.node_id, peer), items)

    async def _sync_session(self, space: _PairSpace, address: str) -> int:
        """Run one session as initiator; return how many keys differed."""
        peer = SyncPeer({space.name: space})
        self._session += 1
        msg: SyncMessage | None = peer.begin(space.name, self._session)
        while msg is not None:
            reply = await self._call(
                address, {"op": "sync", "tier": space.tier, "payload": encode_sync(msg)}
            )
            if reply is None or "error" in reply:
                raise ReplicationError(f"sync reply: {reply and reply.get('error')}")
            await space.flush()
            if not reply["payload"]:
                break
            msg = peer.handle(decode_sync(reply["payload"]))
            await space.flush()
        self.synced_keys += space.merged + space.served
        return space.merged + space.served

    async def _serve_sync(self, tier: str, payload: bytes) -> bytes:
        msg = decode_sync(payload)
        parts = msg.space.split("|")
        if len(parts) != 3 or parts[0] != tier or self.node_id not in parts[1:]:
            raise InvalidArgument(f"anti-entropy space {msg.space!r} is not shared with this node")
        peer = parts[2] if parts[1] == self.node_id else parts[1]
        space = self._space(tier, peer, self.live())
        response = SyncPeer({space.name: space}).handle(msg)
        await space.flush()
        return encode_sync(response) if response is not None else b""

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

    # -- the peer side ------------------------------------------------------------------------

    async def on_replica(self, payload: bytes) -> bytes:
        """Serve one Replica RPC (the caller is an authenticated peer)."""
        try:
            message = msgpack.unpackb(payload, raw=False)
            reply = await self._serve(message)
        except InvalidArgument as exc:
            reply = {"error": str(exc), "kind": "invalid"}
        except NotEnoughReplicas as exc:
            reply = {"error": str(exc), "kind": "incomplete"}
        except NotFound as exc:
            reply = {"error": str(exc), "kind": "not_found"}
        except AlreadyExists as exc:
            reply = {"error": str(exc), "kind": "exists"}
        except (ReplicationError, GossipError, CRDTError, ValueError, KeyError, TypeError) as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}", "kind": "failed"}
        packed: bytes = msgpack.packb(reply, use_bin_type=True)
        return packed

    async def _serve(self, message: dict[str, Any]) -> dict[str, Any]:
        op = message["op"]
        tier = message.get("tier", "")
        if op == "merge_many":
            if any(t not in TIERS for t, _, _ in message["items"]):
                raise InvalidArgument("merge_many: unknown tier")
            tier = next(iter(TIERS))
        if tier not in TIERS:
            raise InvalidArgument(f"unknown tier {tier!r}")
        if op == "merge":
            await self.merge_local(tier, message["key"], message["state"])
            return {"ok": True}
        if op == "merge_many":
            results = await asyncio.gather(
                *(self.merge_local(t, k, v) for t, k, v in message["items"]),
                return_exceptions=True,
            )
            return {"ok": [not isinstance(r, BaseException) for r in results]}
        if op == "hint":
            await self.store.add_hint(message["target"], tier, message["key"], message["state"])
            return {"ok": True}
        if op == "read":
            return {"state": self.store.get(tier, message["key"])}
        if op == "update":
            result = await self.update(
                tier, message["key"], _op_from_wire(message["update"]), forwarded=True
            )
            return {
                "state": encode(result.state),
                "replicas": result.replicas,
                "hinted": result.hinted,
            }
        if op == "scan":
            pairs = self.store.scan(tier, message.get("prefix", ""), message.get("after", ""), 0)
            return {"keys": [k for k, _ in pairs]}
        if op == "sync":
            return {"payload": await self._serve_sync(tier, message["payload"])}
        raise InvalidArgument(f"unknown replica operation {op!r}")


class _MergeBatcher:
    """Coalesces merges bound for one peer into ``merge_many`` calls."""

    MAX_ITEMS = 256

    def __init__(self, replication: Replication, address: str) -> None:
        self._r = replication
        self._address = address
        self._queue: list[tuple[str, str, bytes, asyncio.Future[bool]]] = []
        self._running = False

    async def submit(self, tier: str, key: str, state: bytes) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append((tier, key, state, future))
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self.MAX_ITEMS], self._queue[self.MAX_ITEMS :]
                reply = await self._r._call(
                    self._address,
                    {"op": "merge_many", "items": [(t, k, v) for t, k, v, _ in batch]},
                )
                oks = reply.get("ok") if reply is not None else None
                for i, (_, _, _, future) in enumerate(batch):
                    ok = isinstance(oks, list) and i < len(oks) and bool(oks[i])
                    if not future.done():
                        future.set_result(ok)
        finally:
            self._running = False
            for *_, future in self._queue:
                if not future.done():
                    future.set_result(False)
            self._queue.clear()


MERKLE_LAYOUT = MerkleLayout(branching=16, depth=3)  # 4096 buckets; same on every node


def _space_name(tier: str, a: str, b: str) -> str:
    first, second = sorted((a, b))
    return f"{tier}|{first}|{second}"


class _PairSpace:
    """gossip's ``SyncStore`` over one tier's keys co-owned by two nodes.

    ``merge_values`` is synchronous in the protocol; the merges it receives
    are queued and made durable by :meth:`flush`, which the session driver
    awaits after every protocol step (before the next message is sent).
    """

    def __init__(
        self, replication: Replication, tier: str, name: str, items: list[tuple[str, bytes]]
    ) -> None:
        self._r = replication
        self.tier = tier
        self.name = name
        self._tree = MerkleTree.from_items(items, MERKLE_LAYOUT)
        self._pending: dict[str, bytes] = {}
        self.merged = 0
        self.served = 0

    @property
    def tree(self) -> MerkleTree:
        return self._tree

    def get_values(self, keys: Sequence[str]) -> dict[str, bytes]:
        values = {}
        for key in keys:
            raw = self._r.store.get(self.tier, key)
            if raw is not None:
                values[key] = raw
        self.served += len(values)
        return values

    def merge_values(self, values: Mapping[str, bytes]) -> None:
        self._pending.update(values)

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for key, value in pending.items():
            merged = await self._r.merge_local(self.tier, key, value)
            if merged is not None:
                self._tree.set(key, digest_of(merged))
            self.merged += 1


def _placement_key(tier: str, key: str) -> str:
    return f"{tier}\x00{key}"


def _op_wire(op: Op | DocOp) -> list[Any]:
    if isinstance(op, DocOp):
        return ["doc", op.kind, op.args]
    return [op.kind, op.amount, list(op.elements), op.value, op.entry_id, op.field, op.remove]


def _op_from_wire(raw: list[Any]) -> Op | DocOp:
    if raw[0] == "doc":
        return DocOp(str(raw[1]), dict(raw[2]))
    kind, amount, elements, value, entry_id, fld, remove = raw
    return Op(str(kind), int(amount), tuple(elements), value, str(entry_id), str(fld), bool(remove))
