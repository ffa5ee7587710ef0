"""SWIM membership and failure detection with Lifeguard refinements, as pure logic.

A :class:`Swim` is one node's view of the cluster. It never touches a socket, a clock,
a thread or the global random generator: the driver feeds it time (``now``, float
seconds on any monotonic clock, never decreasing) and incoming messages, and sends what
it returns. That is what lets :mod:`gossip.sim` run thousands of them in one process.

Driver contract (the whole of it)::

    swim = Swim(GossipConfig.lan(), MemberMeta.make(node_id, grpc_addr, ...),
                rng=random.Random(seed), now=clock())
    out = swim.join(seed_addrs, clock())           # and send `out`
    loop:
        sleep until swim.next_deadline() or a message arrives
        out = swim.tick(clock())                    # timers
        out = swim.handle(peer_addr, decode(frame), clock())   # messages
        for o in out: send encode(o.msg) to o.to on RPC o.rpc
        for ev in swim.poll_events(): react (membership change, user delta)

Every method is synchronous and non-reentrant: call them from one thread/task only.
``Outgoing.reply`` marks the (at most one) message that answers the message being
handled; a request/response transport should return it as the RPC response, and the
caller feeds that response to its own :meth:`Swim.handle`. Every other ``Outgoing`` is
a new one-way call whose response, if any, is handled the same way.

Protocol summary (Das et al. 2002; Dadgar et al. 2018):

* each protocol period (``probe_interval_s`` x local health) ping one member, in a
  shuffled round-robin order; no Ack within ``probe_timeout_s`` -> ask
  ``indirect_checks`` members to ping it (PingReq; they Nack if they fail too); no Ack by
  the end of the period -> broadcast ``Suspect``;
* a suspect is declared ``Dead`` when its Lifeguard suspicion timer fires
  (:mod:`gossip.suspicion`); independent suspicions shorten the timer;
* a node that hears it is suspected or dead refutes by bumping its incarnation and
  broadcasting ``Alive``; the highest incarnation wins, and at equal incarnation
  suspect beats alive and dead beats suspect;
* dead and left members are forgotten after ``dead_reap_s``;
* joining is a full-state :class:`PushPull` with a seed; a periodic push-pull with one
  random member (and, every ``reconnect_interval_s``, with one dead member) repairs
  what gossip lost and heals partitions;
* every update (membership or user :class:`Delta`) is piggybacked on Ping/Ack and pushed
  every ``gossip_interval_s`` to ``gossip_fanout`` members by :mod:`gossip.broadcast`.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from gossip.broadcast import BroadcastQueue
from gossip.codec import update_size
from gossip.config import GossipConfig
from gossip.messages import (
    Ack,
    Alive,
    Dead,
    Delta,
    Gossip,
    MemberMeta,
    MemberState,
    Message,
    Nack,
    Ping,
    PingReq,
    PushPull,
    Rpc,
    Status,
    Suspect,
    Update,
    rpc_for,
)
from gossip.suspicion import Suspicion

__all__ = ["DeltaEvent", "MemberEvent", "MemberView", "Outgoing", "Swim"]

log = logging.getLogger(__name__)

_MAX_EVENTS = 100_000
_FRAME_OVERHEAD = 48  # bytes reserved for a frame's fixed fields besides ids/addresses
_NACK_RATIO = 0.8  # a relay Nacks after this fraction of the probe timeout


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to send to address ``to``; ``reply`` marks the answer to a request."""

    to: str
    msg: Message
    reply: bool = False

    @property
    def rpc(self) -> Rpc:
        """The node RPC to carry it on (see :func:`gossip.messages.rpc_for`)."""
        return rpc_for(self.msg)


@dataclass(frozen=True, slots=True)
class MemberView:
    """A read-only snapshot of one member as this node sees it.

    ``last_heard`` is the ``now`` (driver clock) at which this node last received a
    message from or about the member's liveness; for self it is the latest ``now``.
    """

    id: str
    address: str
    status: Status
    incarnation: int
    last_heard: float
    meta: MemberMeta


@dataclass(frozen=True, slots=True)
class MemberEvent:
    """A membership transition: ``kind`` is one of ``join``, ``update`` (meta changed),
    ``alive`` (was suspect/dead/left), ``suspect``, ``dead``, ``left``, ``reap``."""

    kind: str
    member: MemberView


@dataclass(frozen=True, slots=True)
class DeltaEvent:
    """A user delta received for the first time (``origin`` published it)."""

    key: str
    version: int
    origin: str
    data: bytes


@dataclass(slots=True)
class _Member:
    meta: MemberMeta
    incarnation: int
    status: Status
    since: float  # when status last changed
    last_heard: float


@dataclass(slots=True)
class _Probe:
    seq: int
    target: str
    timeout_at: float
    period_end: float
    started: float = 0.0
    acked: bool = False
    indirect_sent: bool = False
    expected_nacks: int = 0
    nacks: int = 0


@dataclass(slots=True)
class _Relay:
    requester: str
    requester_addr: str
    seq: int
    target: str
    nack_at: float


@dataclass(slots=True)
class _Stats:
    """Counters for measurement; cheap, always on."""

    suspicions_raised: int = 0  # this node's probes that ended in a Suspect
    refutations: int = 0
    deaths_declared: int = 0  # suspicion timers of this node that fired (Dead sent)


class Swim:
    """One node's SWIM state machine. See the module docstring for the driver contract."""

    def __init__(
        self,
        config: GossipConfig,
        meta: MemberMeta,
        *,
        rng: random.Random,
        now: float,
        incarnation: int = 0,
    ) -> None:
        self.config = config
        self._rng = rng
        self._me = meta.node_id
        self._inc = incarnation
        self._left = False
        self._now = now
        self._members: dict[str, _Member] = {
            self._me: _Member(meta, incarnation, Status.ALIVE, now, now)
        }
        self._peers: list[str] = []  # every member but self, any status
        self._peer_pos: dict[str, int] = {}
        self._n_live = 1  # alive + suspect, self included
        self._dead: dict[str, None] = {}  # dead/left members awaiting reap
        self._queue = BroadcastQueue()
        self._seq = 0
        self._probe: _Probe | None = None
        self._probe_order: list[str] = []
        self._probe_idx = 0
        self._relays: dict[int, _Relay] = {}
        self._suspicions: dict[str, Suspicion] = {}
        self._awareness = 0
        self._seeds: tuple[str, ...] = ()
        self._delta_seen: dict[str, tuple[int, str, float]] = {}
        self._delta_versions: dict[str, int] = {}
        self._events: list[MemberEvent | DeltaEvent] = []
        self.stats = _Stats()
        # Called with (member, seconds) when a direct probe's ack arrives: the
        # ping-to-ack round trip (an ack relayed after a PingReq is not one).
        self.on_round_trip: Callable[[str, float], None] | None = None
        phase = rng.random()
        self._next_gossip = now + phase * config.gossip_interval_s
        self._next_probe = now + phase * config.probe_interval_s
        self._next_push_pull = self._after(now, config.push_pull_interval_s * (0.5 + phase))
        self._next_reconnect = self._after(now, config.reconnect_interval_s * (0.5 + phase))

    # --- read side ---------------------------------------------------------------------

    @property
    def node_id(self) -> str:
        return self._me

    @property
    def incarnation(self) -> int:
        return self._inc

    @property
    def awareness(self) -> int:
        """Lifeguard local health score: 0 is healthy; timeouts scale by (score + 1)."""
        return self._awareness

    @property
    def left(self) -> bool:
        return self._left

    def num_live(self) -> int:
        """Members alive or suspect, self included (the ``n`` of every formula)."""
        return self._n_live

    def _view(self, m: _Member) -> MemberView:
        heard = self._now if m.meta.node_id == self._me else m.last_heard
        return MemberView(m.meta.node_id, m.meta.address, m.status, m.incarnation, heard, m.meta)

    def members(self) -> list[MemberView]:
        """Every member this node knows (self included), sorted by id."""
        return [self._view(self._members[k]) for k in sorted(self._members)]

    def member(self, node_id: str) -> MemberView | None:
        m = self._members.get(node_id)
        return None if m is None else self._view(m)

    def status_of(self, node_id: str) -> Status | None:
        m = self._members.get(node_id)
        return None if m is None else m.status

    def poll_events(self) -> list[MemberEvent | DeltaEvent]:
        """Drain membership and delta events in the order they happened.

        The driver should call this after every ``tick``/``handle``; if it never does,
        the oldest events are dropped beyond 100 000 (with a warning).
        """
        out, self._events = self._events, []
        return out

    def next_deadline(self) -> float:
        """Earliest ``now`` at which :meth:`tick` has timer work; call it again after
        every ``tick``/``handle``/``broadcast`` since those can move it earlier."""
        t = min(self._next_push_pull, self._next_reconnect)
        if not self._left:
            t = min(t, self._next_probe)
        if len(self._queue):
            t = min(t, self._gossip_due())
        p = self._probe
        if p is not None:
            t = min(t, p.period_end if p.indirect_sent else p.timeout_at)
        for r in self._relays.values():
            t = min(t, r.nack_at)
        for s in self._suspicions.values():
            t = min(t, s.deadline())
        reap = self.config.dead_reap_s
        for k in self._dead:
            t = min(t, self._members[k].since + reap)
        return t

    @staticmethod
    def _after(now: float, delay: float) -> float:
        """``now + delay``, or never when the interval is configured as 0 (disabled)."""
        return now + delay if delay > 0 else math.inf

    def _gossip_due(self) -> float:
        """Next gossip round at or after the last ``now``, keeping this node's phase."""
        due, now = self._next_gossip, self._now
        if due < now:
            step = self.config.gossip_interval_s
            due += step * math.ceil((now - due) / step)
        return due

    # --- commands ------------------------------------------------------------------------

    def bootstrap(self, metas: Iterable[MemberMeta], now: float) -> None:
        """Add members as alive at incarnation 0 without gossiping about them.

        For static clusters and simulations that start fully connected; a real node
        joins with :meth:`join` instead.
        """
        self._now = now
        for meta in metas:
            if meta.node_id != self._me and meta.node_id not in self._members:
                self._add(meta, 0, now)

    def join(self, seeds: Sequence[str], now: float) -> list[Outgoing]:
        """Start joining through ``seeds`` (addresses); own address is skipped.

        Seeds are remembered and retried whenever this node finds itself alone.
        """
        self._now = now
        my_addr = self._members[self._me].meta.address
        self._seeds = tuple(s for s in seeds if s != my_addr)
        # Announce ourselves too, not only through the seed: members that joined before
        # us learn about us from our own gossip once the seed's reply tells us who they are.
        me = self._members[self._me]
        self._enqueue(Alive(me.meta, self._inc))
        return [Outgoing(s, self._push_pull_msg(join=True, reply=False)) for s in self._seeds]

    def leave(self, now: float) -> list[Outgoing]:
        """Leave gracefully: broadcast our own departure and stop probing.

        Keep calling :meth:`tick` for a few gossip intervals (~retransmit limit / fanout
        rounds) before shutting down so the news spreads; probes are answered meanwhile.
        """
        self._now = now
        if self._left:
            return []
        self._left = True
        log.info("node %s is leaving at incarnation %d", self._me, self._inc)
        d = Dead(self._me, self._inc, self._me)
        me = self._members[self._me]
        self._set_status(me, Status.LEFT, now)
        self._enqueue(d)
        self._probe = None
        return self._gossip_round(now)

    def set_meta(
        self,
        now: float,
        *,
        version: str | None = None,
        tiers: Sequence[str] | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        """Change what this node advertises (e.g. its Raft role); gossiped as ``Alive``
        at a bumped incarnation."""
        self._now = now
        old = self._members[self._me].meta
        meta = MemberMeta.make(
            old.node_id,
            old.address,
            version=old.version if version is None else version,
            tiers=old.tiers if tiers is None else tuple(tiers),
            tags=old.tag_map() if tags is None else tags,
        )
        self._inc += 1
        me = self._members[self._me]
        me.meta, me.incarnation = meta, self._inc
        self._enqueue(Alive(meta, self._inc))

    def broadcast(self, key: str, data: bytes, now: float) -> int:
        """Disseminate an opaque user delta in slot ``key``; returns its version.

        A newer delta in the same slot (from any node) supersedes this one in every
        queue and suppresses its delivery where it has not arrived yet, so put one
        logical value per key (e.g. ``"metrics/<node>"``). Receivers get a
        :class:`DeltaEvent`; the publisher does not. Delivery is best effort and may
        duplicate after ``delta_seen_ttl_s``: make deltas idempotent (CRDT deltas are).
        """
        self._now = now
        seen = self._delta_seen.get(key)
        version = max(self._delta_versions.get(key, 0), seen[0] if seen else 0) + 1
        self._delta_versions[key] = version
        d = Delta(key, version, self._me, data)
        self._mark_seen(d, now)
        self._enqueue(d)
        return version

    # --- timers ----------------------------------------------------------------------------

    def tick(self, now: float) -> list[Outgoing]:
        """Run every timer due at ``now``; returns messages to send (never replies)."""
        self._now = now
        out: list[Outgoing] = []
        self._tick_probe(now, out)
        self._tick_relays(now, out)
        self._tick_suspicions(now)
        self._tick_reap(now)
        if now >= self._next_gossip:
            if len(self._queue):
                out += self._gossip_round(now)
            step = self.config.gossip_interval_s
            self._next_gossip += step * (math.floor((now - self._next_gossip) / step) + 1)
        if now >= self._next_push_pull:
            self._next_push_pull = self._after(now, self.config.push_pull_scaled_s(self._n_live))
            if not self._left:
                target = self._pick_one(lambda m: m.status is Status.ALIVE)
                if target is not None:
                    out.append(Outgoing(target.meta.address, self._push_pull_msg(False, False)))
        if now >= self._next_reconnect:
            self._next_reconnect = self._after(now, self.config.reconnect_interval_s)
            if not self._left:
                out += self._reconnect()
        self._prune_deltas(now)
        return out

    def _tick_probe(self, now: float, out: list[Outgoing]) -> None:
        p = self._probe
        if p is not None and not p.acked:
            if not p.indirect_sent and now >= p.timeout_at:
                p.indirect_sent = True
                target = self._members.get(p.target)
                if target is not None and target.status in (Status.ALIVE, Status.SUSPECT):
                    relays = self._pick(
                        self.config.indirect_checks,
                        lambda m: m.status is Status.ALIVE and m.meta.node_id != p.target,
                    )
                    p.expected_nacks = len(relays)
                    my_addr = self._members[self._me].meta.address
                    for r in relays:
                        req = PingReq(p.seq, self._me, my_addr, p.target, target.meta.address)
                        out.append(Outgoing(r.meta.address, req))
            if now >= p.period_end:
                self._probe = None
                self._probe_failed(p, now)
        elif p is not None and now >= p.period_end:
            self._probe = None
        if self._probe is None and not self._left and now >= self._next_probe:
            self._start_probe(now, out)

    def _start_probe(self, now: float, out: list[Outgoing]) -> None:
        scale = self._awareness + 1
        self._next_probe = now + self.config.probe_interval_s * scale
        target = self._next_probe_target()
        if target is None:
            return
        self._seq += 1
        self._probe = _Probe(
            self._seq,
            target.meta.node_id,
            timeout_at=now + self.config.probe_timeout_s * scale,
            period_end=self._next_probe,
            started=now,
        )
        first: list[Update] = []
        if target.status is Status.SUSPECT:  # Lifeguard "buddy system": tell it directly
            first.append(Suspect(target.meta.node_id, target.incarnation, self._me))
        ping = Ping(
            self._seq,
            self._me,
            self._members[self._me].meta.address,
            target.meta.node_id,
            self._piggyback(target.meta.node_id, target.meta.address, first),
        )
        out.append(Outgoing(target.meta.address, ping))

    def _next_probe_target(self) -> _Member | None:
        for _ in range(2):
            while self._probe_idx < len(self._probe_order):
                node = self._probe_order[self._probe_idx]
                self._probe_idx += 1
                m = self._members.get(node)
                if m is not None and m.status in (Status.ALIVE, Status.SUSPECT):
                    return m
            self._probe_order = list(self._peers)
            self._rng.shuffle(self._probe_order)
            self._probe_idx = 0
        return None

    def _probe_failed(self, p: _Probe, now: float) -> None:
        delta = 1 + max(0, p.expected_nacks - p.nacks)
        self._set_awareness(self._awareness + delta)
        m = self._members.get(p.target)
        if m is None or m.status is not Status.ALIVE:
            return
        self.stats.suspicions_raised += 1
        self._apply_suspect(Suspect(p.target, m.incarnation, self._me), now)

    def _tick_relays(self, now: float, out: list[Outgoing]) -> None:
        if not self._relays:
            return
        for seq in [s for s, r in self._relays.items() if now >= r.nack_at]:
            r = self._relays.pop(seq)
            out.append(Outgoing(r.requester_addr, Nack(r.seq, self._me)))

    def _tick_suspicions(self, now: float) -> None:
        if not self._suspicions:
            return
        for node in [k for k, s in self._suspicions.items() if now >= s.deadline()]:
            s = self._suspicions.pop(node)
            m = self._members.get(node)
            if m is None or m.status is not Status.SUSPECT or m.incarnation != s.incarnation:
                continue
            self.stats.deaths_declared += 1
            self._apply_dead(Dead(node, m.incarnation, self._me), now)

    def _tick_reap(self, now: float) -> None:
        if not self._dead:
            return
        reap = self.config.dead_reap_s
        for node in [k for k in self._dead if now >= self._members[k].since + reap]:
            m = self._members.pop(node)
            del self._dead[node]
            self._remove_peer(node)
            log.info("member %s was reaped after %s", node, m.status.value)
            self._emit(MemberEvent("reap", self._view(m)))

    def _reconnect(self) -> list[Outgoing]:
        dead = [self._members[k] for k in self._dead if self._members[k].status is Status.DEAD]
        if dead:
            m = dead[self._rng.randrange(len(dead))]
            return [Outgoing(m.meta.address, self._push_pull_msg(False, False))]
        if self._n_live <= 1 and self._seeds:
            seed = self._seeds[self._rng.randrange(len(self._seeds))]
            return [Outgoing(seed, self._push_pull_msg(True, False))]
        return []

    # --- messages ----------------------------------------------------------------------------

    def handle(self, from_addr: str, msg: Message, now: float) -> list[Outgoing]:
        """Process one received message.

        ``from_addr`` is where a reply goes when the message does not name its sender's
        address (Ack/Nack/Gossip); it is otherwise informational. Anti-entropy messages
        are not SWIM's business: they raise ``TypeError``. Never raises on protocol
        content (stale, unknown or misdirected messages are ignored).
        """
        self._now = now
        if isinstance(msg, Ping):
            return self._on_ping(msg, now)
        if isinstance(msg, Ack):
            return self._on_ack(msg, now)
        if isinstance(msg, Nack):
            if self._probe is not None and self._probe.seq == msg.seq:
                self._probe.nacks += 1
            return []
        if isinstance(msg, PingReq):
            return self._on_ping_req(msg, now)
        if isinstance(msg, Gossip):
            self._heard(msg.src, now)
            self._apply_all(msg.updates, now)
            return []
        if isinstance(msg, PushPull):
            return self._on_push_pull(from_addr, msg, now)
        raise TypeError(f"Swim cannot handle {type(msg).__name__}")

    def _on_ping(self, msg: Ping, now: float) -> list[Outgoing]:
        self._heard(msg.src, now)
        self._apply_all(msg.updates, now)
        if msg.target != self._me:
            return []  # meant for a previous owner of this address
        ack = Ack(msg.seq, self._me, self._piggyback(msg.src, msg.src_addr))
        return [Outgoing(msg.src_addr, ack, reply=True)]

    def _on_ack(self, msg: Ack, now: float) -> list[Outgoing]:
        self._heard(msg.src, now)
        self._apply_all(msg.updates, now)
        relay = self._relays.get(msg.seq)
        if relay is not None and msg.src == relay.target:
            del self._relays[msg.seq]
            return [Outgoing(relay.requester_addr, Ack(relay.seq, relay.target))]
        p = self._probe
        if p is not None and p.seq == msg.seq and msg.src == p.target and not p.acked:
            p.acked = True
            if self.on_round_trip is not None and not p.indirect_sent:
                self.on_round_trip(p.target, now - p.started)
            self._probe = None  # done; the next probe waits for _next_probe
            self._set_awareness(self._awareness - 1)
        return []

    def _on_ping_req(self, msg: PingReq, now: float) -> list[Outgoing]:
        self._heard(msg.src, now)
        self._apply_all(msg.updates, now)
        self._seq += 1
        self._relays[self._seq] = _Relay(
            msg.src,
            msg.src_addr,
            msg.seq,
            msg.target,
            now + self.config.probe_timeout_s * _NACK_RATIO,
        )
        my_addr = self._members[self._me].meta.address
        ping = Ping(
            self._seq, self._me, my_addr, msg.target, self._piggyback(msg.target, msg.target_addr)
        )
        return [Outgoing(msg.target_addr, ping)]

    def _on_push_pull(self, from_addr: str, msg: PushPull, now: float) -> list[Outgoing]:
        self._heard(msg.src, now)
        for st in msg.states:
            node = st.meta.node_id
            if st.status in (Status.ALIVE, Status.SUSPECT):
                self._apply_alive(Alive(st.meta, st.incarnation), now)
                if st.status is Status.SUSPECT:
                    self._apply_suspect(Suspect(node, st.incarnation, msg.src), now)
            elif node in self._members:
                src = node if st.status is Status.LEFT else msg.src
                self._apply_dead(Dead(node, st.incarnation, src), now)
        if msg.reply:
            return []
        reply = self._push_pull_msg(join=msg.join, reply=True)
        return [Outgoing(msg.src_addr or from_addr, reply, reply=True)]

    # --- applying updates -----------------------------------------------------------------------

    def _apply_all(self, updates: Sequence[Update], now: float) -> None:
        for u in updates:
            if isinstance(u, Alive):
                self._apply_alive(u, now)
            elif isinstance(u, Suspect):
                self._apply_suspect(u, now)
            elif isinstance(u, Dead):
                self._apply_dead(u, now)
            else:
                self._apply_delta(u, now)

    def _apply_alive(self, a: Alive, now: float) -> None:
        node = a.meta.node_id
        if node == self._me:
            me = self._members[self._me]
            if self._left:
                return
            if a.incarnation > self._inc or (a.incarnation == self._inc and a.meta != me.meta):
                self._refute(a.incarnation, now, "a stale alive")
            return
        m = self._members.get(node)
        if m is None:
            self._add(a.meta, a.incarnation, now)
            self._enqueue(a)
            self._emit(MemberEvent("join", self._view(self._members[node])))
            return
        if a.incarnation <= m.incarnation:
            return
        old_status, old_meta = m.status, m.meta
        m.incarnation, m.meta = a.incarnation, a.meta
        m.last_heard = max(m.last_heard, now)
        self._suspicions.pop(node, None)
        self._enqueue(a)
        if old_status is not Status.ALIVE:
            self._set_status(m, Status.ALIVE, now)
            self._transition(m, old_status, a.meta.node_id)
            self._emit(MemberEvent("alive", self._view(m)))
        elif old_meta != a.meta:
            self._emit(MemberEvent("update", self._view(m)))

    def _apply_suspect(self, s: Suspect, now: float) -> None:
        m = self._members.get(s.node)
        if m is None or s.incarnation < m.incarnation:
            return
        if m.status in (Status.DEAD, Status.LEFT):
            return
        if s.node == self._me:
            if not self._left:
                self._refute(s.incarnation, now, f"suspicion by {s.src}")
            return
        if m.status is Status.SUSPECT:
            susp = self._suspicions.get(s.node)
            if susp is not None and susp.confirm(s.src):
                self._enqueue(s)
            return
        m.incarnation = s.incarnation
        self._set_status(m, Status.SUSPECT, now)
        n = self._n_live
        lo, hi = self.config.suspicion_bounds_s(n)
        k = self.config.suspicion_mult - 2
        if n - 2 < k:
            k = 0
        self._suspicions[s.node] = Suspicion(
            incarnation=s.incarnation, start=now, min_s=lo, max_s=hi, k=k, first_src=s.src
        )
        self._enqueue(s)
        self._transition(m, Status.ALIVE, s.src)
        self._emit(MemberEvent("suspect", self._view(m)))

    def _apply_dead(self, d: Dead, now: float) -> None:
        m = self._members.get(d.node)
        if m is None or d.incarnation < m.incarnation:
            return
        if m.status in (Status.DEAD, Status.LEFT):
            return
        if d.node == self._me:
            if not self._left:
                self._refute(d.incarnation, now, f"death notice by {d.src}")
            return
        old = m.status
        m.incarnation = d.incarnation
        new = Status.LEFT if d.src == d.node else Status.DEAD
        self._set_status(m, new, now)
        self._suspicions.pop(d.node, None)
        self._enqueue(d)
        self._transition(m, old, d.src)
        self._emit(MemberEvent(new.value, self._view(m)))

    def _apply_delta(self, d: Delta, now: float) -> None:
        seen = self._delta_seen.get(d.key)
        if seen is not None and (d.version, d.origin) <= (seen[0], seen[1]):
            return
        self._mark_seen(d, now)
        self._enqueue(d)
        self._emit(DeltaEvent(d.key, d.version, d.origin, d.data))

    def _mark_seen(self, d: Delta, now: float) -> None:
        self._delta_seen.pop(d.key, None)  # re-insert at the end: dict stays ordered by time
        self._delta_seen[d.key] = (d.version, d.origin, now)

    def _prune_deltas(self, now: float) -> None:
        horizon = now - self.config.delta_seen_ttl_s
        while self._delta_seen:
            key = next(iter(self._delta_seen))
            if self._delta_seen[key][2] > horizon:
                break
            del self._delta_seen[key]

    def _refute(self, incarnation: int, now: float, why: str) -> None:
        self._inc = max(self._inc, incarnation) + 1
        me = self._members[self._me]
        me.incarnation = self._inc
        self.stats.refutations += 1
        self._set_awareness(self._awareness + 1)
        log.info("node %s refuted %s at incarnation %d", self._me, why, self._inc)
        self._enqueue(Alive(me.meta, self._inc))

    # --- bookkeeping ---------------------------------------------------------------------------

    def _add(self, meta: MemberMeta, incarnation: int, now: float) -> None:
        self._members[meta.node_id] = _Member(meta, incarnation, Status.ALIVE, now, now)
        self._peer_pos[meta.node_id] = len(self._peers)
        self._peers.append(meta.node_id)
        self._n_live += 1
        # Lifeguard/SWIM: a newcomer goes to a random slot of the current probe round.
        pos = self._rng.randint(self._probe_idx, len(self._probe_order))
        self._probe_order.insert(pos, meta.node_id)

    def _remove_peer(self, node: str) -> None:
        pos = self._peer_pos.pop(node)
        last = self._peers.pop()
        if last != node:
            self._peers[pos] = last
            self._peer_pos[last] = pos

    def _set_status(self, m: _Member, new: Status, now: float) -> None:
        live_before = m.status in (Status.ALIVE, Status.SUSPECT)
        live_after = new in (Status.ALIVE, Status.SUSPECT)
        self._n_live += int(live_after) - int(live_before)
        node = m.meta.node_id
        if live_after:
            self._dead.pop(node, None)
        elif node != self._me:
            self._dead[node] = None
        m.status = new
        m.since = now

    def _transition(self, m: _Member, old: Status, by: str) -> None:
        log.info(
            "member %s became %s at incarnation %d (was %s, by %s)",
            m.meta.node_id,
            m.status.value,
            m.incarnation,
            old.value,
            by,
        )

    def _heard(self, node: str, now: float) -> None:
        m = self._members.get(node)
        if m is not None:
            m.last_heard = now

    def _emit(self, ev: MemberEvent | DeltaEvent) -> None:
        if len(self._events) >= _MAX_EVENTS:
            log.warning("node %s dropped unpolled gossip events", self._me)
            del self._events[: _MAX_EVENTS // 2]
        self._events.append(ev)

    def _set_awareness(self, score: int) -> None:
        score = max(0, min(score, self.config.awareness_max - 1))
        if score != self._awareness:
            log.debug("node %s local health score %d", self._me, score)
        self._awareness = score

    def _enqueue(self, u: Update) -> None:
        key = ("d\0" + u.key) if isinstance(u, Delta) else ("m\0" + u.node)
        self._queue.queue(key, u, update_size(u))

    def _piggyback(
        self, dst: str, dst_addr: str, first: list[Update] | None = None
    ) -> tuple[Update, ...]:
        budget = self.config.max_message_bytes - _FRAME_OVERHEAD - 2 * len(self._me) - len(dst)
        budget -= len(dst_addr) + len(self._members[self._me].meta.address)
        ups = list(first or ())
        for u in ups:
            budget -= update_size(u)
        ups += self._queue.take(budget, self.config.retransmit_limit(self._n_live))
        return tuple(ups)

    def _gossip_round(self, now: float) -> list[Outgoing]:
        horizon = now - self.config.gossip_to_dead_s

        def ok(m: _Member) -> bool:
            return m.status in (Status.ALIVE, Status.SUSPECT) or (
                m.status is Status.DEAD and m.since >= horizon
            )

        out: list[Outgoing] = []
        for m in self._pick(self.config.gossip_fanout, ok):
            ups = self._piggyback(m.meta.node_id, m.meta.address)
            if not ups:
                break
            out.append(Outgoing(m.meta.address, Gossip(self._me, ups)))
        return out

    def _push_pull_msg(self, join: bool, reply: bool) -> PushPull:
        states = tuple(MemberState(m.meta, m.incarnation, m.status) for m in self._members.values())
        return PushPull(self._me, self._members[self._me].meta.address, join, reply, states)

    def _pick_one(self, accept: Callable[[_Member], bool]) -> _Member | None:
        got = self._pick(1, accept)
        return got[0] if got else None

    def _pick(self, k: int, accept: Callable[[_Member], bool]) -> list[_Member]:
        """Up to ``k`` distinct random peers satisfying ``accept`` (never self)."""
        peers = self._peers
        if k <= 0 or not peers:
            return []
        if len(peers) <= 4 * k + 8:
            pool = [self._members[p] for p in peers if accept(self._members[p])]
            return pool if len(pool) <= k else self._rng.sample(pool, k)
        chosen: dict[str, _Member] = {}
        for _ in range(8 * k):
            node = peers[self._rng.randrange(len(peers))]
            if node in chosen:
                continue
            m = self._members[node]
            if accept(m):
                chosen[node] = m
                if len(chosen) == k:
                    return list(chosen.values())
        pool = [self._members[p] for p in peers if p not in chosen and accept(self._members[p])]
        rest = k - len(chosen)
        extra = pool if len(pool) <= rest else self._rng.sample(pool, rest)
        return [*chosen.values(), *extra]
