"""One test per SWIM rule, on a hand-driven network of Swim instances."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable

import pytest

from gossip import codec
from gossip.config import GossipConfig
from gossip.messages import (
    Alive,
    Dead,
    Gossip,
    MemberMeta,
    Nack,
    Ping,
    PingReq,
    PushPull,
    Status,
    Suspect,
)
from gossip.swim import DeltaEvent, MemberEvent, Outgoing, Swim

CFG = GossipConfig.lan()


class Net:
    """Synchronous in-memory network: every Outgoing is delivered at once, in order,
    through the codec; ``drop(src, dst, msg)`` decides what gets lost."""

    def __init__(self, names: list[str], cfg: GossipConfig = CFG, bootstrap: bool = True) -> None:
        self.now = 0.0
        self.nodes: dict[str, Swim] = {}
        for i, name in enumerate(names):
            meta = MemberMeta.make(name, f"addr-{name}", version="1", tags={"raft": "follower"})
            self.nodes[name] = Swim(cfg, meta, rng=random.Random(i), now=0.0)
        if bootstrap:
            metas = [s.member(s.node_id).meta for s in self.nodes.values()]  # type: ignore[union-attr]
            for s in self.nodes.values():
                s.bootstrap(metas, 0.0)
        self.down: set[str] = set()
        self.drop: Callable[[str, str, object], bool] = lambda _s, _d, _m: False
        self.sent: list[tuple[str, str, object]] = []

    def deliver(self, src: str, out: list[Outgoing]) -> None:
        queue = [(src, o) for o in out]
        while queue:
            frm, o = queue.pop(0)
            dst = o.to.removeprefix("addr-")
            self.sent.append((frm, dst, o.msg))
            if dst in self.down or self.drop(frm, dst, o.msg):
                continue
            msg = codec.decode(codec.encode(o.msg))
            queue += [(dst, x) for x in self.nodes[dst].handle(f"addr-{frm}", msg, self.now)]

    def run(self, until: float, step: float = 0.05) -> None:
        while self.now < until:
            self.now = round(self.now + step, 6)
            for name, s in self.nodes.items():
                if name not in self.down:
                    self.deliver(name, s.tick(self.now))

    def status(self, observer: str, subject: str) -> Status | None:
        return self.nodes[observer].status_of(subject)


def test_probe_ping_ack_keeps_everyone_alive() -> None:
    net = Net(["a", "b", "c"])
    net.run(10.0)
    assert all(net.status(x, y) is Status.ALIVE for x in "abc" for y in "abc")
    assert any(isinstance(m, Ping) for _, _, m in net.sent)
    assert not any(isinstance(m, PingReq) for _, _, m in net.sent)


def test_probe_then_suspect_then_dead() -> None:
    net = Net(["a", "b", "c"])
    net.down.add("c")
    net.run(3.0)
    assert net.status("a", "c") is Status.SUSPECT
    _lo, hi = CFG.suspicion_bounds_s(3)
    net.run(3.0 + hi + 1.0)
    assert net.status("a", "c") is Status.DEAD
    assert net.status("b", "c") is Status.DEAD
    assert net.nodes["a"].num_live() == 2
    kinds = [e.kind for e in net.nodes["a"].poll_events() if isinstance(e, MemberEvent)]
    assert kinds == ["suspect", "dead"]


def test_failed_probe_sends_indirect_pings_and_raises_local_health() -> None:
    net = Net(["a", "b", "c", "d"])
    net.down.add("d")
    net.run(2.5)
    reqs = [(s, d, m) for s, d, m in net.sent if isinstance(m, PingReq)]
    assert reqs and all(m.target == "d" for _, _, m in reqs)
    assert any(isinstance(m, Nack) for _, _, m in net.sent)  # relays failed too, and said so


def test_missing_acks_and_nacks_lower_local_health() -> None:
    net = Net(["a", "b", "c"])
    net.down |= {"b", "c"}  # a cannot hear anyone: it is probably a itself that is sick
    net.run(2.5)
    a = net.nodes["a"]
    assert a.awareness >= 2
    # probes now run (awareness + 1) times slower
    assert a.next_deadline() - net.now <= CFG.probe_interval_s * (a.awareness + 1)


def test_indirect_probe_success_prevents_suspicion() -> None:
    net = Net(["a", "b", "c"])
    # a cannot reach c directly (either way); b can reach both.
    net.drop = lambda s, d, _m: {s, d} == {"a", "c"}
    net.run(30.0)
    assert net.status("a", "c") is Status.ALIVE
    assert net.status("c", "a") is Status.ALIVE
    assert any(isinstance(m, PingReq) for _, _, m in net.sent)
    assert net.nodes["a"].stats.suspicions_raised == 0


def test_suspected_member_refutes_with_higher_incarnation() -> None:
    net = Net(["a", "b"])
    b = net.nodes["b"]
    assert b.incarnation == 0
    net.deliver("a", [Outgoing("addr-b", Gossip("a", (Suspect("b", 0, "a"),)))])
    assert b.incarnation == 1
    # a itself believed the suspicion only if it applied it; make it do so, then gossip.
    net.nodes["a"].handle("addr-x", Gossip("x", (Suspect("b", 0, "x"),)), 0.0)
    assert net.status("a", "b") is Status.SUSPECT
    net.run(1.0)
    assert net.status("a", "b") is Status.ALIVE
    assert net.nodes["a"].member("b").incarnation == 1  # type: ignore[union-attr]


def test_death_notice_about_self_is_refuted() -> None:
    net = Net(["a", "b"])
    net.nodes["b"].handle("addr-a", Gossip("a", (Dead("b", 0, "a"),)), 0.0)
    assert net.nodes["b"].incarnation == 1
    assert net.status("b", "b") is Status.ALIVE


@pytest.mark.parametrize(
    ("update", "expected"),
    [
        (Alive(MemberMeta.make("b", "addr-b"), 0), Status.SUSPECT),  # equal inc: suspect wins
        (Alive(MemberMeta.make("b", "addr-b"), 3), Status.ALIVE),  # higher inc: alive wins
        (Suspect("b", 1, "c"), Status.SUSPECT),
        (Dead("b", 0, "c"), Status.DEAD),  # dead beats suspect at equal inc
        (Dead("b", 0, "b"), Status.LEFT),
    ],
)
def test_precedence_against_a_suspect(update: object, expected: Status) -> None:
    a = Net(["a", "b"]).nodes["a"]
    a.handle("addr-c", Gossip("c", (Suspect("b", 0, "c"),)), 0.0)
    a.handle("addr-c", Gossip("c", (update,)), 0.0)  # type: ignore[arg-type]
    assert a.status_of("b") is expected


def test_stale_suspect_is_ignored() -> None:
    a = Net(["a", "b"]).nodes["a"]
    a.handle("addr-b", Gossip("b", (Alive(MemberMeta.make("b", "addr-b"), 5),)), 0.0)
    a.handle("addr-c", Gossip("c", (Suspect("b", 4, "c"),)), 0.0)
    assert a.status_of("b") is Status.ALIVE


def _suspected(confirmers: tuple[str, ...]) -> Swim:
    """n0 of a 12-node cluster, told at t=0 that n1 suspects n5 and then that each of
    ``confirmers`` does too; nothing else reaches it."""
    a = Net([f"n{i}" for i in range(12)]).nodes["n0"]
    for src in ("n1", *confirmers):
        a.handle(f"addr-{src}", Gossip(src, (Suspect("n5", 0, src),)), 0.0)
    return a


@pytest.mark.parametrize(
    ("confirmers", "bound"),
    [((), "max"), (("n2",), "one"), (("n2", "n3"), "min"), (("n2", "n3", "n4"), "min")],
)
def test_confirmations_shorten_the_suspicion(confirmers: tuple[str, ...], bound: str) -> None:
    """Unconfirmed, the suspicion fires at the upper bound; each independent
    confirmation shortens it on the log curve, down to the lower bound once
    k = suspicion_mult - 2 = 2 have arrived (more change nothing)."""
    lo, hi = CFG.suspicion_bounds_s(12)
    assert CFG.suspicion_mult - 2 == 2
    timeout = {"max": hi, "one": hi - (hi - lo) * math.log(2) / math.log(3), "min": lo}[bound]
    early = _suspected(confirmers)
    early.tick(timeout - 0.01)
    assert early.status_of("n5") is Status.SUSPECT
    due = _suspected(confirmers)
    due.tick(timeout + 1e-9)
    assert due.status_of("n5") is Status.DEAD


def test_graceful_leave() -> None:
    net = Net(["a", "b", "c"])
    net.deliver("b", net.nodes["b"].leave(1.0))
    net.run(2.0)
    assert net.status("a", "b") is Status.LEFT
    assert net.status("c", "b") is Status.LEFT
    assert net.nodes["b"].left
    # a leaving node does not refute its own departure and stops probing
    before = sum(1 for s, _, m in net.sent if s == "b" and isinstance(m, Ping))
    net.run(6.0)
    after = sum(1 for s, _, m in net.sent if s == "b" and isinstance(m, Ping))
    assert before == after
    assert net.status("a", "b") is Status.LEFT


def test_dead_members_are_reaped() -> None:
    cfg = GossipConfig.local()
    net = Net(["a", "b", "c"], cfg)
    net.down.add("c")
    net.run(cfg.dead_reap_s + 30.0, step=0.1)
    assert net.nodes["a"].status_of("c") is None
    kinds = [e.kind for e in net.nodes["a"].poll_events() if isinstance(e, MemberEvent)]
    assert kinds[-1] == "reap"


def test_join_through_a_seed() -> None:
    net = Net(["a", "b", "c"], bootstrap=False)
    net.deliver("b", net.nodes["b"].join(["addr-a"], 0.0))
    net.deliver("c", net.nodes["c"].join(["addr-a", "addr-c"], 0.0))
    net.run(3.0)
    for x in "abc":
        assert {m.id for m in net.nodes[x].members()} == {"a", "b", "c"}
        assert all(m.status is Status.ALIVE for m in net.nodes[x].members())
    joined = [e for e in net.nodes["c"].poll_events() if isinstance(e, MemberEvent)]
    assert {e.member.id for e in joined if e.kind == "join"} == {"a", "b"}


def test_restarted_node_rejoins_with_higher_incarnation() -> None:
    net = Net(["a", "b", "c"])
    net.down.add("c")
    net.run(60.0, step=0.1)
    assert net.status("a", "c") is Status.DEAD
    net.nodes["c"] = Swim(CFG, MemberMeta.make("c", "addr-c"), rng=random.Random(9), now=net.now)
    net.down.clear()
    net.deliver("c", net.nodes["c"].join(["addr-a"], net.now))
    net.run(net.now + 3.0)
    assert net.nodes["c"].incarnation >= 1
    assert net.status("a", "c") is Status.ALIVE
    assert net.status("b", "c") is Status.ALIVE


def test_meta_changes_are_disseminated() -> None:
    net = Net(["a", "b", "c"])
    net.nodes["a"].set_meta(0.0, tags={"raft": "leader"})
    net.run(1.0)
    for x in "bc":
        view = net.nodes[x].member("a")
        assert view is not None and view.meta.tag_map() == {"raft": "leader"}
        assert view.incarnation == 1
    ev = [e for e in net.nodes["b"].poll_events() if isinstance(e, MemberEvent)]
    assert [e.kind for e in ev] == ["update"]


def test_user_deltas_are_delivered_once_and_newer_wins() -> None:
    net = Net(["a", "b", "c", "d"])
    net.nodes["a"].broadcast("mesh/1", b"v1", 0.0)
    net.nodes["a"].broadcast("mesh/1", b"v2", 0.0)  # supersedes v1 in a's queue
    net.run(2.0)
    for x in "bcd":
        deltas = [e for e in net.nodes[x].poll_events() if isinstance(e, DeltaEvent)]
        assert [(e.key, e.version, e.data) for e in deltas] == [("mesh/1", 2, b"v2")]
    assert net.nodes["a"].poll_events() == []


def test_misdirected_ping_is_not_acked() -> None:
    b = Net(["a", "b"]).nodes["b"]
    assert b.handle("addr-a", Ping(1, "a", "addr-a", "someone-else"), 0.0) == []
    out = b.handle("addr-a", Ping(2, "a", "addr-a", "b"), 0.0)
    assert len(out) == 1 and out[0].reply and out[0].to == "addr-a"


def test_frames_respect_the_size_bound() -> None:
    net = Net(["a", "b", "c"])
    for i in range(200):
        net.nodes["a"].broadcast(f"k{i}", b"x" * 40, 0.0)
    net.run(1.0)
    sizes = [len(codec.encode(m)) for s, _, m in net.sent if isinstance(m, Gossip | Ping)]
    assert sizes and max(sizes) <= CFG.max_message_bytes


def test_next_deadline_always_moves_forward() -> None:
    net = Net(["a", "b", "c"])
    a = net.nodes["a"]
    t = 0.0
    for _ in range(300):
        t = max(a.next_deadline(), t)
        net.now = t
        net.deliver("a", a.tick(t))
        assert a.next_deadline() > t


def test_zero_intervals_disable_push_pull_and_reconnect() -> None:
    cfg = dataclasses.replace(CFG, push_pull_interval_s=0.0, reconnect_interval_s=0.0)
    net = Net(["a", "b"], cfg)
    net.run(5.0)
    assert not any(isinstance(m, PushPull) for _, _, m in net.sent)
    assert net.nodes["a"].next_deadline() > net.now


def test_a_direct_probe_reports_its_round_trip_and_a_relayed_ack_does_not() -> None:
    net = Net(["a", "b", "c"])
    a = net.nodes["a"]
    trips: list[tuple[str, float]] = []
    a.on_round_trip = lambda member, seconds: trips.append((member, seconds))
    t = a.next_deadline()
    while True:  # tick a alone until it pings someone
        pings = [o for o in a.tick(t) if isinstance(o.msg, Ping)]
        if pings:
            break
        t = a.next_deadline()
    ping = pings[0]
    target = ping.to.removeprefix("addr-")
    (ack,) = net.nodes[target].handle("addr-a", ping.msg, t + 0.001)
    a.handle(ack.to, ack.msg, t + 0.004)  # the ack lands 4 ms after the ping left
    assert trips == [(target, pytest.approx(0.004))]


def test_an_ack_relayed_after_a_ping_req_is_no_round_trip() -> None:
    net = Net(["a", "b", "c"])
    net.drop = lambda s, d, _m: {s, d} == {"a", "c"}  # a reaches c only through b
    trips: list[str] = []
    net.nodes["a"].on_round_trip = lambda member, _seconds: trips.append(member)
    net.run(30.0)
    assert net.status("a", "c") is Status.ALIVE  # relayed acks kept c alive
    assert "b" in trips and "c" not in trips
