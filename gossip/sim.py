"""Deterministic discrete-event simulator: many :class:`~gossip.swim.Swim` nodes, one process.

The real protocol code runs unchanged; only the network and the clock are simulated.
An event queue (a heap ordered by simulated time, ties broken by insertion order)
holds node timer wake-ups (from :meth:`Swim.next_deadline`) and message deliveries.
Every message is encoded with :mod:`gossip.codec` at send time (which gives exact
byte counts) and decoded at delivery. Latency, jitter, loss, partitions and crashes
are drawn from one ``random.Random(seed)``; each node gets its own seeded generator.
The same seed and the same calls give the same run, event for event.

Run the measurement suite from the command line::

    python -m gossip.sim dissemination --sizes 10,100,1000 --runs 5
    python -m gossip.sim detection --n 100 --loss 0,0.05,0.1
    python -m gossip.sim false-positives --n 100 --duration 600 --loss 0,0.05,0.1
    python -m gossip.sim bandwidth --n 1000
    python -m gossip.sim antientropy --keys 10000,1000000 --diffs 1,10,1000

Each prints a Markdown table; ``--help`` on each lists its knobs.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import heapq
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from gossip.antientropy import SyncPeer
from gossip.codec import decode, decode_sync, encode
from gossip.config import GossipConfig
from gossip.merkle import HASH_BYTES, MerkleLayout, MerkleTree
from gossip.messages import MemberMeta, MemberState, PushPull, Status, SyncMessage
from gossip.swim import DeltaEvent, MemberEvent, Outgoing, Swim

__all__ = ["NetConfig", "Sim", "SimNode", "main"]

_TICK, _DELIVER = 0, 1


@dataclass(frozen=True, kw_only=True, slots=True)
class NetConfig:
    """The simulated network."""

    # One-way base latency in seconds, plus a uniform [0, jitter_s) extra per message.
    latency_s: float = 0.001
    jitter_s: float = 0.002
    # Probability that any one message is dropped (independently).
    loss: float = 0.0


@dataclass(slots=True)
class SimNode:
    index: int
    meta: MemberMeta
    swim: Swim
    up: bool = True
    bytes_sent: int = 0
    msgs_sent: int = 0
    bytes_recv: int = 0
    tick_at: float = math.inf


EventHook = Callable[[int, MemberEvent | DeltaEvent, float], None]


class Sim:
    """A cluster of ``n`` simulated nodes named ``n0000``... at addresses ``sim:n0000``...

    With ``bootstrap`` (default) every node starts knowing every other as alive at
    incarnation 0, as a converged cluster would; otherwise call :meth:`join_all`.
    ``on_event(node_index, event, now)`` sees every event any node emits.
    """

    def __init__(
        self,
        n: int,
        *,
        seed: int,
        config: GossipConfig | None = None,
        net: NetConfig | None = None,
        bootstrap: bool = True,
        on_event: EventHook | None = None,
    ) -> None:
        self.config = config or GossipConfig.lan()
        self.net = net or NetConfig()
        self.rng = random.Random(seed)
        self.seed = seed
        self.now = 0.0
        self.on_event = on_event
        self._heap: list[tuple[float, int, int, int, object]] = []
        self._serial = 0
        self._group: dict[int, int] = {}  # node index -> partition group; absent = 0
        self.nodes: list[SimNode] = []
        self._by_addr: dict[str, int] = {}
        self.delivered = 0
        self.dropped = 0
        self.bytes_by_kind: dict[str, int] = {}
        for i in range(n):
            meta = MemberMeta.make(f"n{i:04d}", f"sim:n{i:04d}", version="sim", tiers=("mesh",))
            swim = Swim(self.config, meta, rng=random.Random(seed * 1_000_003 + i), now=0.0)
            self.nodes.append(SimNode(i, meta, swim))
            self._by_addr[meta.address] = i
        if bootstrap:
            metas = [node.meta for node in self.nodes]
            for node in self.nodes:
                node.swim.bootstrap(metas, 0.0)
        for node in self.nodes:
            self._reschedule(node)

    # --- control --------------------------------------------------------------------------

    def join_all(self, seed_index: int = 0) -> None:
        """Every node but ``seed_index`` joins through it, at the current time."""
        seed_addr = self.nodes[seed_index].meta.address
        for node in self.nodes:
            if node.index != seed_index:
                self._send(node, node.swim.join([seed_addr], self.now))
                self._reschedule(node)

    def crash(self, index: int) -> None:
        """Stop node ``index``: no timers, every message to it is lost."""
        self.nodes[index].up = False

    def restart(self, index: int, seed_index: int) -> None:
        """Bring ``index`` back as a fresh process (incarnation 0) joining via a seed."""
        node = self.nodes[index]
        rng = random.Random(self.seed * 1_000_003 + index + 7_919 * int(self.now + 1))
        node.swim = Swim(self.config, node.meta, rng=rng, now=self.now)
        node.up = True
        node.tick_at = math.inf
        self._send(node, node.swim.join([self.nodes[seed_index].meta.address], self.now))
        self._reschedule(node)

    def partition(self, groups: Sequence[Sequence[int]]) -> None:
        """Split the network: nodes in different groups cannot talk (unlisted: group 0)."""
        self._group = {i: g + 1 for g, members in enumerate(groups) for i in members}

    def heal(self) -> None:
        self._group = {}

    def broadcast(self, index: int, key: str, data: bytes) -> None:
        node = self.nodes[index]
        node.swim.broadcast(key, data, self.now)
        self._reschedule(node)

    # --- the event loop -------------------------------------------------------------------------

    def run_until(self, t_end: float, stop: Callable[[], bool] | None = None) -> None:
        """Process events up to simulated time ``t_end`` (or until ``stop()`` is true)."""
        heap = self._heap
        while heap and heap[0][0] <= t_end:
            t, _, kind, idx, payload = heapq.heappop(heap)
            self.now = t
            node = self.nodes[idx]
            if not node.up:
                continue
            if kind == _TICK:
                if t != node.tick_at:
                    continue  # superseded wake-up
                node.tick_at = math.inf
                self._send(node, node.swim.tick(t))
            else:
                assert isinstance(payload, tuple)
                from_addr, raw = payload
                node.bytes_recv += len(raw)
                self.delivered += 1
                self._send(node, node.swim.handle(from_addr, decode(raw), t))
            self._drain(node)
            self._reschedule(node)
            if stop is not None and stop():
                return
        self.now = max(self.now, t_end)

    def _drain(self, node: SimNode) -> None:
        events = node.swim.poll_events()
        if self.on_event is not None:
            for ev in events:
                self.on_event(node.index, ev, self.now)

    def _reschedule(self, node: SimNode) -> None:
        if not node.up:
            return
        due = max(node.swim.next_deadline(), self.now)
        if due < node.tick_at:
            node.tick_at = due
            self._push(due, _TICK, node.index, None)

    def _push(self, t: float, kind: int, idx: int, payload: object) -> None:
        self._serial += 1
        heapq.heappush(self._heap, (t, self._serial, kind, idx, payload))

    def _send(self, node: SimNode, out: list[Outgoing]) -> None:
        net = self.net
        src_group = self._group.get(node.index, 0)
        for o in out:
            raw = encode(o.msg)
            node.bytes_sent += len(raw)
            node.msgs_sent += 1
            kind = type(o.msg).__name__
            self.bytes_by_kind[kind] = self.bytes_by_kind.get(kind, 0) + len(raw)
            dst = self._by_addr.get(o.to)
            if dst is None or self._group.get(dst, 0) != src_group:
                self.dropped += 1
                continue
            if net.loss and self.rng.random() < net.loss:
                self.dropped += 1
                continue
            delay = net.latency_s + net.jitter_s * self.rng.random()
            self._push(self.now + delay, _DELIVER, dst, (node.meta.address, raw))

    # --- inspection -------------------------------------------------------------------------

    def status(self, observer: int, subject: int) -> Status | None:
        return self.nodes[observer].swim.status_of(self.nodes[subject].meta.node_id)

    def converged(self, expect_dead: Sequence[int] = ()) -> bool:
        """Every up node sees every up node alive and every ``expect_dead`` node dead/left."""
        ups = [n for n in self.nodes if n.up]
        gone = set(expect_dead)
        for obs in ups:
            for other in self.nodes:
                st = obs.swim.status_of(other.meta.node_id)
                if other.index in gone:
                    if st not in (Status.DEAD, Status.LEFT, None):
                        return False
                elif other.up and st is not Status.ALIVE:
                    return False
        return True


# ============================== measurements ==============================================


def _quantile_time(times: list[float], n: int, frac: float) -> float:
    need = math.ceil(frac * n)
    if len(times) < need:
        return math.inf
    return sorted(times)[need - 1]


def measure_dissemination(
    n: int, *, seed: int, config: GossipConfig | None = None, net: NetConfig | None = None
) -> dict[str, float]:
    """Time from one node's broadcast until 99% / 99.99% / 100% of ``n`` nodes have it."""
    cfg = config or GossipConfig.lan()
    got: list[float] = []
    start = 2.0

    def hook(_i: int, ev: MemberEvent | DeltaEvent, now: float) -> None:
        if isinstance(ev, DeltaEvent) and ev.key == "probe":
            got.append(now - start)

    sim = Sim(n, seed=seed, config=cfg, net=net, on_event=hook)
    sim.run_until(start)
    sim.broadcast(0, "probe", b"x" * 16)
    got.append(0.0)  # the origin knows at once
    sim.run_until(start + 30.0, stop=lambda: len(got) >= n)
    return {
        "p99": _quantile_time(got, n, 0.99),
        "p9999": _quantile_time(got, n, 0.9999),
        "all": _quantile_time(got, n, 1.0),
    }


def measure_detection(
    n: int, *, seed: int, loss: float, config: GossipConfig | None = None
) -> dict[str, float]:
    """Crash one node; time until the first suspicion and until every live node says dead."""
    cfg = config or GossipConfig.lan()
    crash_at = 5.0
    victim = n // 2
    vid = f"n{victim:04d}"
    first_suspect = math.inf
    dead_seen: set[int] = set()

    def hook(i: int, ev: MemberEvent | DeltaEvent, now: float) -> None:
        nonlocal first_suspect
        if isinstance(ev, MemberEvent) and ev.member.id == vid and now >= crash_at:
            if ev.kind == "suspect":
                first_suspect = min(first_suspect, now - crash_at)
            elif ev.kind == "dead":
                dead_seen.add(i)

    sim = Sim(n, seed=seed, config=cfg, net=NetConfig(loss=loss), on_event=hook)
    sim.run_until(crash_at)
    sim.crash(victim)
    sim.run_until(crash_at + 300.0, stop=lambda: len(dead_seen) >= n - 1)
    all_dead = sim.now - crash_at if len(dead_seen) >= n - 1 else math.inf
    return {"first_suspect": first_suspect, "all_dead": all_dead}


def measure_false_positives(
    n: int, *, seed: int, loss: float, duration_s: float, config: GossipConfig | None = None
) -> dict[str, float]:
    """Run a healthy cluster under loss; count suspicions and deaths of live nodes."""
    cfg = config or GossipConfig.lan()
    counts = {"suspect": 0, "dead": 0}

    def hook(_i: int, ev: MemberEvent | DeltaEvent, _now: float) -> None:
        if isinstance(ev, MemberEvent) and ev.kind in counts:
            counts[ev.kind] += 1

    sim = Sim(n, seed=seed, config=cfg, net=NetConfig(loss=loss), on_event=hook)
    sim.run_until(duration_s)
    node_hours = n * duration_s / 3600.0
    raised = sum(node.swim.stats.suspicions_raised for node in sim.nodes)
    refutes = sum(node.swim.stats.refutations for node in sim.nodes)
    declared = sum(node.swim.stats.deaths_declared for node in sim.nodes)
    return {
        "raised_per_node_hour": raised / node_hours,
        "suspect_views_per_node_hour": counts["suspect"] / node_hours,
        "refutations": float(refutes),
        "false_dead": float(declared),
        "false_dead_views": float(counts["dead"]),
        "node_hours": node_hours,
    }


def measure_bandwidth(
    n: int,
    *,
    seed: int,
    warmup_s: float,
    window_s: float,
    delta_rate_hz: float,
    config: GossipConfig | None = None,
) -> dict[str, float]:
    """Bytes/s sent per node at steady state; optionally each node publishes a 32-byte
    delta (its own metrics slot) ``delta_rate_hz`` times per second."""
    cfg = config or GossipConfig.lan()
    sim = Sim(n, seed=seed, config=cfg)
    rng = random.Random(seed)
    if delta_rate_hz > 0:
        period = 1.0 / delta_rate_hz
        next_pub = [rng.random() * period for _ in range(n)]
    t = 0.0
    step = 0.05
    before: list[int] = []
    msgs_before = 0
    kinds_before: dict[str, int] = {}
    end = warmup_s + window_s
    while t < end:
        t = min(end, t + step)
        if delta_rate_hz > 0:
            for i in range(n):
                if next_pub[i] <= t:
                    next_pub[i] += period
                    sim.broadcast(i, f"metrics/{i}", rng.randbytes(32))
        sim.run_until(t)
        if not before and t >= warmup_s:
            before = [node.bytes_sent for node in sim.nodes]
            msgs_before = sum(node.msgs_sent for node in sim.nodes)
            kinds_before = dict(sim.bytes_by_kind)
    per_node = [(node.bytes_sent - b) / window_s for node, b in zip(sim.nodes, before, strict=True)]
    msgs = (sum(node.msgs_sent for node in sim.nodes) - msgs_before) / window_s / n

    def rate(*kinds: str) -> float:
        total = sum(sim.bytes_by_kind.get(k, 0) - kinds_before.get(k, 0) for k in kinds)
        return total / window_s / n

    # Push-pull fires once per scaled interval per node (plus the reply it triggers);
    # a short window over- or under-samples it, so also give its long-run average.
    views = sim.nodes[0].swim.members()
    states = tuple(MemberState(v.meta, v.incarnation, v.status) for v in views)
    pp_frame = len(encode(PushPull(views[0].id, views[0].address, False, False, states)))
    pp_amortized = 2 * pp_frame / cfg.push_pull_scaled_s(n)
    probe = rate("Ping", "Ack", "PingReq", "Nack")
    gossip = rate("Gossip")
    return {
        "mean_Bps": statistics.fmean(per_node),
        "max_Bps": max(per_node),
        "msgs_per_s": msgs,
        "probe_Bps": probe,
        "gossip_Bps": gossip,
        "push_pull_window_Bps": rate("PushPull"),
        "push_pull_amortized_Bps": pp_amortized,
        "steady_Bps": probe + gossip + pp_amortized,
    }


class SyntheticStore:
    """A memory-light :class:`SyncStore`: values are derived from digests, so a 10^6-key
    tree needs no value storage. value = digest * 6 (96 bytes); merge = keep larger."""

    def __init__(self, tree: MerkleTree) -> None:
        self._tree = tree

    @property
    def tree(self) -> MerkleTree:
        return self._tree

    def get_values(self, keys: Sequence[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for k in keys:
            d = self._tree.digest(k)
            if d is not None:
                out[k] = d * 6
        return out

    def merge_values(self, values: Mapping[str, bytes]) -> None:
        for k, v in values.items():
            theirs = v[:HASH_BYTES]
            mine = self._tree.digest(k)
            if mine is None or theirs > mine:
                self._tree.set(k, theirs)


def _digest(i: int, salt: bytes = b"") -> bytes:
    return hashlib.blake2b(i.to_bytes(8, "big") + salt, digest_size=HASH_BYTES).digest()


def measure_antientropy(n_keys: int, diffs: Sequence[int], *, seed: int) -> list[dict[str, float]]:
    """Reconcile two replicas differing in ``d`` keys (a third each: changed, only-left,
    only-right) and count bytes and round trips; compare with full-state exchange."""
    layout = MerkleLayout.for_size(n_keys)
    base = MerkleTree.from_items(((f"key/{i:08d}", _digest(i)) for i in range(n_keys)), layout)
    key_bytes = len(f"key/{0:08d}")
    # A full exchange ships every (key, digest) pair one way and every (key, value) for
    # keys that differ; the cheapest honest baseline is one way of (key, digest) pairs,
    # the naive one is one way of all (key, value) pairs.
    full_digests = n_keys * (key_bytes + 1 + HASH_BYTES + 2)
    full_values = n_keys * (key_bytes + 1 + 6 * HASH_BYTES + 2)
    rng = random.Random(seed)
    rows = []
    for d in diffs:
        left, right = base.copy(), base.copy()
        picked = rng.sample(range(n_keys), d)
        for j, i in enumerate(picked):
            key = f"key/{i:08d}"
            if j % 3 == 0:
                left.set(key, _digest(i, b"new"))
            elif j % 3 == 1:
                right.delete(key)
            else:
                left.delete(key)
        a, b = SyntheticStore(left), SyntheticStore(right)
        pa, pb = SyncPeer({"s": a}), SyncPeer({"s": b})
        msg: SyncMessage | None = pa.begin("s", 1)
        sender, nbytes, nmsgs = pb, 0, 0
        t0 = time.perf_counter()
        while msg is not None:
            raw = encode(msg)
            nbytes += len(raw)
            nmsgs += 1
            msg = sender.handle(decode_sync(raw))
            sender = pa if sender is pb else pb
        elapsed = time.perf_counter() - t0
        if left.root() != right.root():
            raise AssertionError(f"anti-entropy did not converge for d={d}")
        rows.append(
            {
                "n": n_keys,
                "d": d,
                "depth": layout.depth,
                "bytes": nbytes,
                "messages": nmsgs,
                "round_trips": math.ceil(nmsgs / 2),
                "full_digests": full_digests,
                "full_values": full_values,
                "cpu_s": elapsed,
            }
        )
    return rows


# ============================== CLI ===========================================================


def _fmt_s(x: float) -> str:
    return "∞" if math.isinf(x) else f"{x:.2f}"


def _cfg(args: argparse.Namespace) -> GossipConfig:
    presets = {"local": GossipConfig.local, "lan": GossipConfig.lan, "wan": GossipConfig.wan}
    cfg = presets[args.preset]()
    if args.interval is not None:
        cfg = dataclasses.replace(cfg, gossip_interval_s=args.interval)
    return cfg


def _cmd_dissemination(args: argparse.Namespace) -> None:
    cfg = _cfg(args)
    iv = cfg.gossip_interval_s
    print(
        f"### Dissemination (gossip interval {iv * 1000:.0f} ms, fanout {cfg.gossip_fanout}, "
        f"retransmit_mult {cfg.retransmit_mult}, loss {args.loss:.0%}, {args.runs} runs per N, "
        "median [max])\n"
    )
    print("| N | 99% (s) | 99% (intervals) | 99.99% (s) | 99.99% (intervals) | 100% (s) | wall s |")
    print("|---|---|---|---|---|---|---|")
    for n in [int(x) for x in args.sizes.split(",")]:
        t0 = time.perf_counter()
        net = NetConfig(loss=args.loss)
        runs = [
            measure_dissemination(n, seed=args.seed + r, config=cfg, net=net)
            for r in range(args.runs)
        ]
        wall = time.perf_counter() - t0
        cols = []
        for key in ("p99", "p9999"):
            vals = [r[key] for r in runs]
            med, mx = statistics.median(vals), max(vals)
            cols += [f"{_fmt_s(med)} [{_fmt_s(mx)}]", f"{med / iv:.1f} [{mx / iv:.1f}]"]
        alls = [r["all"] for r in runs]
        cols.append(f"{_fmt_s(statistics.median(alls))} [{_fmt_s(max(alls))}]")
        print(f"| {n} | " + " | ".join(cols) + f" | {wall:.1f} |", flush=True)


def _cmd_detection(args: argparse.Namespace) -> None:
    cfg = _cfg(args)
    lo, hi = cfg.suspicion_bounds_s(args.n)
    print(
        f"### Failure detection (N={args.n}, probe {cfg.probe_interval_s}s / timeout "
        f"{cfg.probe_timeout_s}s, suspicion {lo:.1f}-{hi:.1f}s, {args.runs} runs, "
        "median [max])\n"
    )
    print("| loss | first suspicion (s) | all members mark dead (s) |")
    print("|---|---|---|")
    for loss in [float(x) for x in args.loss.split(",")]:
        runs = [
            measure_detection(args.n, seed=args.seed + r, loss=loss, config=cfg)
            for r in range(args.runs)
        ]
        fs = [r["first_suspect"] for r in runs]
        ad = [r["all_dead"] for r in runs]
        print(
            f"| {loss:.0%} | {_fmt_s(statistics.median(fs))} [{_fmt_s(max(fs))}] | "
            f"{_fmt_s(statistics.median(ad))} [{_fmt_s(max(ad))}] |",
            flush=True,
        )


def _cmd_false_positives(args: argparse.Namespace) -> None:
    cfg = _cfg(args)
    print(
        f"### False positives (N={args.n}, {args.duration:.0f} simulated s per loss rate, "
        "no node actually fails)\n"
    )
    print(
        "| loss | suspicions raised / node-hour | suspect views / node-hour | refutations "
        "| false dead declarations | node-hours |"
    )
    print("|---|---|---|---|---|---|")
    for loss in [float(x) for x in args.loss.split(",")]:
        r = measure_false_positives(
            args.n, seed=args.seed, loss=loss, duration_s=args.duration, config=cfg
        )
        print(
            f"| {loss:.0%} | {r['raised_per_node_hour']:.2f} | "
            f"{r['suspect_views_per_node_hour']:.2f} | {r['refutations']:.0f} | "
            f"{r['false_dead']:.0f} | {r['node_hours']:.1f} |",
            flush=True,
        )


def _cmd_bandwidth(args: argparse.Namespace) -> None:
    cfg = _cfg(args)
    print(
        f"### Steady-state bandwidth per node (N={args.n}, {args.window:.0f} s window after "
        f"{args.warmup:.0f} s warm-up, bytes of encoded frames sent)\n"
    )
    print(
        "| load | probes B/s | gossip B/s | push-pull B/s (in window) | push-pull B/s "
        "(long-run) | steady total B/s | max node B/s (in window) | msgs/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for rate in [float(x) for x in args.rates.split(",")]:
        r = measure_bandwidth(
            args.n,
            seed=args.seed,
            warmup_s=args.warmup,
            window_s=args.window,
            delta_rate_hz=rate,
            config=cfg,
        )
        label = "idle (probes + push-pull)" if rate == 0 else f"{rate:g} delta/node/s (32 B)"
        print(
            f"| {label} | {r['probe_Bps']:.0f} | {r['gossip_Bps']:.0f} | "
            f"{r['push_pull_window_Bps']:.0f} | {r['push_pull_amortized_Bps']:.0f} | "
            f"{r['steady_Bps']:.0f} | {r['max_Bps']:.0f} | {r['msgs_per_s']:.1f} |",
            flush=True,
        )


def _cmd_antientropy(args: argparse.Namespace) -> None:
    print("### Anti-entropy (Merkle, branching 16; bytes = all encoded Sync frames both ways)\n")
    print(
        "| keys n | diffs d | depth | bytes | round trips | full (key,digest) dump | "
        "full (key,value) dump | cpu s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    diffs = [int(x) for x in args.diffs.split(",")]
    for n in [int(x) for x in args.keys.split(",")]:
        for r in measure_antientropy(n, diffs, seed=args.seed):
            print(
                f"| {r['n']:,} | {r['d']:,} | {r['depth']} | {r['bytes']:,.0f} "
                f"({r['bytes'] / 1024:.1f} KiB) | {r['round_trips']} | "
                f"{r['full_digests'] / 1024:,.0f} KiB | {r['full_values'] / 1024:,.0f} KiB | "
                f"{r['cpu_s']:.2f} |",
                flush=True,
            )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m gossip.sim``."""
    p = argparse.ArgumentParser(prog="python -m gossip.sim", description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--preset", choices=("local", "lan", "wan"), default="lan")
    p.add_argument("--interval", type=float, default=None, help="override gossip_interval_s")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dissemination", help="time for one update to reach 99%% / 99.99%%")
    d.add_argument("--sizes", default="10,100,1000")
    d.add_argument("--runs", type=int, default=5)
    d.add_argument("--loss", type=float, default=0.0, help="message loss probability")
    d.set_defaults(fn=_cmd_dissemination)
    f = sub.add_parser("detection", help="time until all members mark a crashed node dead")
    f.add_argument("--n", type=int, default=100)
    f.add_argument("--loss", default="0,0.05,0.1")
    f.add_argument("--runs", type=int, default=5)
    f.set_defaults(fn=_cmd_detection)
    fp = sub.add_parser("false-positives", help="suspicions of healthy nodes per node-hour")
    fp.add_argument("--n", type=int, default=100)
    fp.add_argument("--loss", default="0,0.05,0.1")
    fp.add_argument("--duration", type=float, default=600.0, help="simulated seconds")
    fp.set_defaults(fn=_cmd_false_positives)
    b = sub.add_parser("bandwidth", help="per-node bytes/s at steady state")
    b.add_argument("--n", type=int, default=1000)
    b.add_argument("--warmup", type=float, default=5.0)
    b.add_argument("--window", type=float, default=20.0)
    b.add_argument("--rates", default="0,0.1,1", help="deltas per node per second")
    b.set_defaults(fn=_cmd_bandwidth)
    a = sub.add_parser("antientropy", help="bytes and round trips to reconcile d diffs")
    a.add_argument("--keys", default="10000")
    a.add_argument("--diffs", default="1,10,1000")
    a.set_defaults(fn=_cmd_antientropy)
    args = p.parse_args(argv)
    args.fn(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
