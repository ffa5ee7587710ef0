"""Faults (nemeses), scheduled at seeded random times while a workload runs.

Each fault is a function ``fault(nemesis) -> detail`` that injects, holds and
heals one fault, synchronously, in the nemesis thread. The scheduler runs one
fault at a time: wait a seeded gap, pick a fault from the enabled list, run it,
wait until the cluster is healthy again (every node up, one leader with quorum),
repeat until stopped. Every fault leaves the cluster whole, so faults never
stack by accident (a wiped node never meets a second simultaneous failure, which
even a correct Raft cannot survive without a membership change).

Catalogue (``FAULTS``; ``NEEDS_NET`` ones need network namespaces, i.e. root):

==========================  ===========================================================
kill-leader / -follower /   SIGKILL one node, down for 0.5-2.5 s, restart on its data
-random                     dir. kill-leader is also the failover measurement.
kill-all                    SIGKILL every node at once, restart all after 0.5-2 s.
pause                       SIGSTOP the leader or a random node for 0.6-2.5 s (election
                            timeout 0.15-0.30 s, leader step-down 1 s), then SIGCONT.
partition-leader            leader cut from its peers *and* from clients; heal time.
partition-leader-client     leader cut from its peers only: clients still reach the
                            isolated old leader (stale-read bait).
partition-majority          a random minority cut from the majority.
partition-bridge            two halves that cannot talk, one node that sees both.
partition-oneway            one node's RPCs to every peer dropped; it still hears them.
net-drop                    20-50 % of all peer packets dropped at random (nft numgen);
                            TCP retransmits, so this is delay (>= 200 ms RTO) and loss.
clock-skew                  restart one node under libfaketime, wall clock -2 h..+2 h,
                            monotonic untouched; later restart it normally.
lose-unfsynced              power loss: SIGKILL one node, cut raft.journal back to the
                            length recorded at its last fsync (journal shim), delete an
                            unrenamed meta temp file, restart.
torn-tail                   SIGKILL one node, cut the journal's last record at an odd
                            byte offset inside it, restart.
restart-empty               SIGKILL a follower, wipe its data dir, restart; catch-up time.
cpu-hog                     a starved host: 3 busy-loop processes per core for 3-8 s
                            beside the nodes; the detail says how many elections it caused.
slow-disk                   one node's Raft journal fsyncs delayed 50-250 ms each for
                            2-5 s (the chaos preload's fsync seam); elections reported.
==========================  ===========================================================

Clock skew: nothing in the system tier reads the wall clock (consensus and node use
``time.monotonic``; pysyncobj's timers use its ``monotonic`` module), so this fault is
expected to be harmless today; it is here so that the HLC/lease code of later tiers
is covered the day it lands. TLS does read it: a certificate is valid from a day
before it was issued (``node/certs.py``), so a node whose clock is up to a day behind
the CA's still accepts its peers' (the 2 h drawn here are inside that). Message
*delay* without drop would need ``tc netem`` (absent on this kernel) or a TCP proxy;
packet drop plus TCP retransmission is the delay we inject.
"""

from __future__ import annotations

import logging
import os
import random
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.chaos.cluster import ChaosCluster

log = logging.getLogger(__name__)

LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"
JOURNAL_MAGIC = b"TPJOURN1"
_REC = struct.Struct("<II")


@dataclass
class Event:
    """One injected fault. Times are ``time.monotonic_ns()`` like the history's."""

    fault: str
    node: str
    start_ns: int
    end_ns: int = 0
    detail: str = ""
    # Measurements, when the fault yields one (seconds).
    failover_s: float | None = None  # filled in later from the history (kill-leader)
    first_ok_s: float | None = None  # likewise, every fault: start -> first ack write
    heal_s: float | None = None
    catchup_s: float | None = None
    healthy_again_s: float | None = None  # end of fault -> cluster healthy

    def to_json(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class Nemesis:
    cluster: ChaosCluster
    faults: list[str]
    rng: random.Random
    gap_s: tuple[float, float] = (0.5, 2.0)
    events: list[Event] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    # -- scheduler -------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="nemesis", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to stop; the fault in progress is healed first."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while not self._sleep(self.rng.uniform(*self.gap_s)):
            name = self.rng.choice(self.faults)
            try:
                event = self.run_fault(name)
            except Exception as exc:  # keep going; the run reports it
                log.exception("fault %s failed", name)
                self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
                self._repair()
                continue
            log.info("fault %s on %s done: %s", name, event.node, event.detail)

    def run_fault(self, name: str) -> Event:
        event = FAULTS[name](self)
        event.end_ns = event.end_ns or time.monotonic_ns()
        self.events.append(event)
        t = time.monotonic()
        try:
            self.cluster.wait_healthy(60.0)
        except TimeoutError:
            self.errors.append(f"{name}: cluster not healthy 60 s after the fault ended")
            self._repair()
            self.cluster.wait_healthy(60.0)
        event.healthy_again_s = time.monotonic() - t
        return event

    def _repair(self) -> None:
        net = self.cluster.net
        if net is not None:
            net.heal()
        self.cluster.node_env.clear()
        self.cluster.revive_all()

    def _sleep(self, seconds: float) -> bool:
        """Sleep; True if asked to stop meanwhile (faults still heal before returning)."""
        return self._stop.wait(seconds)

    def hold(self, low: float, high: float) -> None:
        # Faults are not cut short by stop(): the hold is part of the seeded schedule.
        time.sleep(self.rng.uniform(low, high))

    # -- targets ---------------------------------------------------------------

    def leader(self) -> str:
        return self.cluster.wait_leader(30.0)

    def pick(self, role: str) -> str:
        leader = self.leader()
        if role == "leader":
            return leader
        if role == "follower":
            return self.rng.choice(self.cluster.followers(leader))
        return self.rng.choice(self.cluster.node_ids)


# -- process faults ---------------------------------------------------------------


def _kill(role: str) -> Callable[[Nemesis], Event]:
    def fault(n: Nemesis) -> Event:
        node = n.pick(role)
        ev = Event(f"kill-{role}", node, time.monotonic_ns())
        n.cluster.kill(node)
        n.hold(0.5, 2.5)
        n.cluster.start_node(node)
        return ev

    return fault


def kill_all(n: Nemesis) -> Event:
    ev = Event("kill-all", "*", time.monotonic_ns())
    n.cluster.kill_all()
    n.hold(0.5, 2.0)
    for node in n.cluster.node_ids:
        n.cluster.start_node(node)
    return ev


def pause(n: Nemesis) -> Event:
    node = n.pick(n.rng.choice(["leader", "random"]))
    ev = Event("pause", node, time.monotonic_ns())
    n.cluster.pause(node)
    try:
        n.hold(0.6, 2.5)
    finally:
        n.cluster.resume(node)
    return ev


# -- network faults ----------------------------------------------------------------


def _cut(a: list[str], b: list[str]) -> list[tuple[str, str]]:
    return [(x, y) for x in a for y in b] + [(y, x) for x in a for y in b]


def _partition(
    n: Nemesis, name: str, node: str, pairs: list[tuple[str, str]], **kw: object
) -> Event:
    net = n.cluster.net
    assert net is not None, "network faults need namespaces"
    ev = Event(name, node, time.monotonic_ns())
    net.block(pairs, **kw)  # type: ignore[arg-type]
    try:
        n.hold(1.5, 4.0)
    finally:
        net.heal()
    ev.end_ns = time.monotonic_ns()
    ev.heal_s = _time_to_heal(n.cluster)
    return ev


def _time_to_heal(cluster: ChaosCluster, timeout: float = 60.0) -> float | None:
    """Heal -> every node answers, all agree on one leader with quorum, and every node
    has applied what the leader had committed at the moment of healing."""
    t0 = time.monotonic()
    target: int | None = None
    while time.monotonic() - t0 < timeout:
        leader = cluster.healthy()
        if leader is not None:
            if target is None:
                st = cluster.status(leader)
                target = st.commit_index if st is not None else None
            statuses = [cluster.status(x) for x in cluster.node_ids]
            if target is not None and all(
                s is not None and s.applied_index >= target for s in statuses
            ):
                return time.monotonic() - t0
        time.sleep(0.02)
    return None


def partition_leader(n: Nemesis) -> Event:
    leader = n.leader()
    others = n.cluster.followers(leader)
    return _partition(n, "partition-leader", leader, _cut([leader], others), client_from=[leader])


def partition_leader_client(n: Nemesis) -> Event:
    leader = n.leader()
    others = n.cluster.followers(leader)
    return _partition(n, "partition-leader-client", leader, _cut([leader], others))


def partition_majority(n: Nemesis) -> Event:
    nodes = list(n.cluster.node_ids)
    n.rng.shuffle(nodes)
    k = (len(nodes) - 1) // 2
    minority, majority = nodes[:k], nodes[k:]
    return _partition(n, "partition-majority", ",".join(minority), _cut(minority, majority))


def partition_bridge(n: Nemesis) -> Event:
    nodes = list(n.cluster.node_ids)
    n.rng.shuffle(nodes)
    bridge, rest = nodes[0], nodes[1:]
    half = len(rest) // 2
    return _partition(n, "partition-bridge", bridge, _cut(rest[:half], rest[half:]))


def partition_oneway(n: Nemesis) -> Event:
    node = n.rng.choice(n.cluster.node_ids)
    pairs = [(node, other) for other in n.cluster.node_ids if other != node]
    return _partition(n, "partition-oneway", node, pairs)


def net_drop(n: Nemesis) -> Event:
    net = n.cluster.net
    assert net is not None
    percent = n.rng.randint(20, 50)
    ev = Event("net-drop", "*", time.monotonic_ns(), detail=f"{percent}% of peer packets")
    net.drop_random(percent)
    try:
        n.hold(2.0, 5.0)
    finally:
        net.heal()
    ev.end_ns = time.monotonic_ns()
    ev.heal_s = _time_to_heal(n.cluster)
    return ev


# -- clock -------------------------------------------------------------------------


def clock_skew(n: Nemesis) -> Event:
    node = n.rng.choice(n.cluster.node_ids)
    offset = n.rng.choice([-1, 1]) * n.rng.randint(30, 7200)
    ev = Event("clock-skew", node, time.monotonic_ns(), detail=f"wall clock {offset:+d} s")
    n.cluster.node_env[node] = {
        "LD_PRELOAD": LIBFAKETIME,
        "FAKETIME": f"{offset:+d}",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    try:
        n.cluster.restart(node)
        n.cluster.wait_healthy(30.0)
        n.hold(3.0, 6.0)
    finally:
        n.cluster.node_env.pop(node, None)
        n.cluster.restart(node)
    return ev


# -- storage -----------------------------------------------------------------------


def _records(data: bytes) -> list[tuple[int, int]]:
    """(offset, total length) of every intact journal record."""
    out: list[tuple[int, int]] = []
    pos = len(JOURNAL_MAGIC)
    while pos + _REC.size <= len(data):
        length, _crc = _REC.unpack_from(data, pos)
        if pos + _REC.size + length > len(data):
            break
        out.append((pos, _REC.size + length))
        pos += _REC.size + length
    return out


def lose_unfsynced(n: Nemesis) -> Event:
    node = n.pick(n.rng.choice(["leader", "random"]))
    ev = Event("lose-unfsynced", node, time.monotonic_ns())
    n.cluster.kill(node)
    path = n.cluster.journal_path(node)
    dropped = 0
    try:
        with open(path + ".chaos-fsynced") as f:
            synced = int(f.read().strip())
    except (OSError, ValueError):
        synced = None
    if synced is not None and os.path.exists(path):
        size = os.path.getsize(path)
        if size > synced:
            os.truncate(path, synced)
            dropped = size - synced
    tmp = path + ".meta.tmp"
    if os.path.exists(tmp):  # written, never fsynced nor renamed: gone after power loss
        os.unlink(tmp)
    ev.detail = f"dropped {dropped} unfsynced journal bytes (fsynced length {synced})"
    n.hold(0.2, 1.0)
    n.cluster.start_node(node)
    return ev


def torn_tail(n: Nemesis) -> Event:
    node = n.pick("random")
    ev = Event("torn-tail", node, time.monotonic_ns())
    n.cluster.kill(node)
    path = n.cluster.journal_path(node)
    with open(path, "rb") as f:
        data = f.read()
    recs = _records(data)
    if recs:
        start, length = recs[-1]
        cut = start + n.rng.randrange(1, length, 2) if length > 1 else start
        os.truncate(path, cut)
        ev.detail = f"last record [{start}, {start + length}) cut at {cut}"
    else:
        ev.detail = "journal empty; nothing to tear"
    n.hold(0.2, 1.0)
    n.cluster.start_node(node)
    # The torn record may have been fsynced and acknowledged (the disk "lied"); Raft
    # tolerates that on one node only while a majority still holds the entry, so the
    # fault ends when the node has caught up again, before any other fault starts.
    _wait_caught_up(n, node, ev)
    return ev


def restart_empty(n: Nemesis) -> Event:
    node = n.pick("follower")
    ev = Event("restart-empty", node, time.monotonic_ns())
    n.cluster.kill(node)
    n.hold(0.2, 1.0)
    n.cluster.restart(node, wipe=True)
    wiped_at = time.monotonic()
    ev.catchup_s = _wait_caught_up(n, node, ev)
    _wait_tiers_whole(n, ev, wiped_at)
    return ev


def _wait_tiers_whole(n: Nemesis, ev: Event, since: float, timeout: float = 90.0) -> None:
    """Wait until every node has completed two anti-entropy rounds of every CRDT tier
    after ``since`` and no hint is pending anywhere.

    A wiped node held one of RF copies of its keys; until anti-entropy has copied them
    back, wiping the *other* owner too would be an RF-fold failure, which the tiers do
    not promise to survive. So, like the Raft catch-up above, the fault is over only
    when the cluster is whole again (faults never stack). Two rounds, because a node's
    first round to finish after ``since`` may have started before it; the second began
    after the wiped node was back, and synced every key it shares with each peer.
    (Not "under-replicated 0": under the workload's writes a round almost always sees
    a key in flight, which that count includes.)"""
    deadline = time.monotonic() + timeout
    rounds: dict[tuple[str, str], set[int]] = {}  # (node, tier) -> round end times (0.1 s)
    missing: list[str] = []  # what the last look found not whole
    while time.monotonic() < deadline:
        now = time.monotonic()
        missing = []
        for node in n.cluster.node_ids:
            st = n.cluster.status(node)
            if st is None or not st.tiers:
                missing.append(f"{node}: no tier status")
                continue
            for tier in st.tiers:
                seen = rounds.setdefault((node, tier.tier), set())
                ended = now - tier.last_sync_age_s
                new = not any(abs(ended * 10 - t) <= 2 for t in seen)
                if tier.last_sync_age_s >= 0 and ended > since and new:
                    seen.add(round(ended * 10))
                if len(seen) < 2 or tier.hints_pending:
                    missing.append(
                        f"{node} {tier.tier}: {len(seen)} rounds since, last "
                        f"{tier.last_sync_age_s:.1f} s ago, hints pending {tier.hints_pending}, "
                        f"under-replicated {tier.under_replicated}"
                    )
        if not missing:
            ev.detail += f"; tiers whole after {time.monotonic() - since:.1f} s"
            return
        time.sleep(0.5)
    ev.detail += f"; tiers not whole within {timeout:g} s"
    n.errors.append(
        f"{ev.fault}: CRDT tiers not re-synced within {timeout:g} s ({'; '.join(missing)})"
    )


def _wait_caught_up(n: Nemesis, node: str, ev: Event, timeout: float = 120.0) -> float | None:
    """Seconds from now until ``node`` has applied what the others' leader had
    committed when we started waiting."""
    t0 = time.monotonic()
    target: int | None = None
    while time.monotonic() - t0 < timeout:
        if target is None:
            leader = n.cluster.leader([x for x in n.cluster.node_ids if x != node])
            st = n.cluster.status(leader) if leader else None
            target = st.commit_index if st is not None else None
        mine = n.cluster.status(node)
        if target is not None and mine is not None and mine.applied_index >= target:
            ev.detail += f"; caught up to commit index {target}"
            return time.monotonic() - t0
        time.sleep(0.02)
    ev.detail += f"; did not catch up within {timeout:g} s"
    n.errors.append(f"{ev.fault}: {node} did not catch up within {timeout:g} s")
    return None


# -- starvation -----------------------------------------------------------------------


def _max_term(cluster: ChaosCluster) -> int:
    terms = [st.term for node in cluster.node_ids if (st := cluster.status(node)) is not None]
    return max(terms, default=0)


def cpu_hog(n: Nemesis) -> Event:
    hogs = 3 * (os.cpu_count() or 2)
    ev = Event("cpu-hog", "*", time.monotonic_ns())
    term = _max_term(n.cluster)
    procs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
        for _ in range(hogs)
    ]
    try:
        n.hold(3.0, 8.0)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    ev.end_ns = time.monotonic_ns()
    ev.detail = f"{hogs} busy loops; elections {_max_term(n.cluster) - term}"
    return ev


SLOW_FSYNC_FILE = "chaos-slow-fsync"  # read by tests/chaos/preload/sitecustomize.py


def slow_disk(n: Nemesis) -> Event:
    node = n.pick(n.rng.choice(["leader", "random"]))
    delay_s = n.rng.uniform(0.05, 0.25)
    ev = Event("slow-disk", node, time.monotonic_ns())
    term = _max_term(n.cluster)
    flag = os.path.join(n.cluster.data_dir(node), SLOW_FSYNC_FILE)
    with open(flag, "w") as f:
        f.write(f"{delay_s:.3f}\n")
    try:
        n.hold(2.0, 5.0)
    finally:
        os.unlink(flag)
    ev.end_ns = time.monotonic_ns()
    ev.detail = f"fsync +{delay_s * 1000:.0f} ms; elections {_max_term(n.cluster) - term}"
    return ev


FAULTS: dict[str, Callable[[Nemesis], Event]] = {
    "kill-leader": _kill("leader"),
    "kill-follower": _kill("follower"),
    "kill-random": _kill("random"),
    "kill-all": kill_all,
    "pause": pause,
    "partition-leader": partition_leader,
    "partition-leader-client": partition_leader_client,
    "partition-majority": partition_majority,
    "partition-bridge": partition_bridge,
    "partition-oneway": partition_oneway,
    "net-drop": net_drop,
    "clock-skew": clock_skew,
    "lose-unfsynced": lose_unfsynced,
    "torn-tail": torn_tail,
    "restart-empty": restart_empty,
    "cpu-hog": cpu_hog,
    "slow-disk": slow_disk,
}

NEEDS_NET = frozenset(f for f in FAULTS if f.startswith("partition-") or f == "net-drop")


def unavailable_faults(faults: list[str], *, have_net: bool) -> dict[str, str]:
    """Faults that cannot run here, with the reason (reported as skipped)."""
    out: dict[str, str] = {}
    for f in faults:
        if f not in FAULTS:
            raise ValueError(f"unknown fault {f!r}; known: {', '.join(FAULTS)}")
        if f in NEEDS_NET and not have_net:
            out[f] = "needs network namespaces and nftables (run as root)"
        if f == "clock-skew" and not os.path.exists(LIBFAKETIME):
            out[f] = f"libfaketime not installed ({LIBFAKETIME}; as root: make system-deps)"
    return out
