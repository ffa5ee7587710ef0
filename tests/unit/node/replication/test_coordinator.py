"""The replication coordinator's rules (node/replication/coordinator.py), table-driven.

Placement is real rendezvous hashing, so the tables name members through ``rank``: the
live members in placement order for the key, computed once per case. That keeps each
row about the rule, not about which hash wins.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

from crdt import PNCounter
from node.errors import (
    AlreadyExists,
    DeadlineExpired,
    InvalidArgument,
    NodeError,
    NotFound,
    Outcome,
    ReplicationError,
    Unavailable,
)
from node.placement import ranking
from node.replication import coordinator as c
from node.replication.errors import (
    CodecError,
    ForwardOutcomeUnknown,
    NoOwnerReachable,
    NotDelivered,
    NotEnoughReplicas,
    PeerUnreachable,
    RemoteFailure,
)
from node.tiers.mesh import MeshExists, MeshNotFound
from node.tiers.ops import TIERS, TierSpec

POP, AGENT, MESH, METRICS = (TIERS[t] for t in ("population", "agent", "mesh", "metrics"))
KEY = "job_event_log/j-1"
NODES = ["n1", "n2", "n3", "n4", "n5"]


def rank(spec: TierSpec, key: str, live: list[str]) -> list[str]:
    return ranking(c.placement_key(spec.name, key), live)


# --- placement --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "live", "count"),
    [
        (POP, NODES, 2),  # RF 2
        (POP, ["n1"], 1),  # fewer live than RF: all of them
        (METRICS, NODES, 5),  # RF 0: every live member
        (METRICS, ["n1", "n2"], 2),
        (AGENT, NODES[:3], 2),
    ],
)
def test_owners_are_the_first_rf_of_the_ranking(
    spec: TierSpec, live: list[str], count: int
) -> None:
    assert c.owners(spec, KEY, live) == rank(spec, KEY, live)[:count]
    assert c.owners(spec, KEY, list(reversed(live))) == c.owners(spec, KEY, live)


def test_placement_key_separates_tier_and_key() -> None:
    assert c.placement_key("population", KEY) == "population\x00" + KEY
    assert c.owners(POP, KEY, NODES) == ranking("population\x00" + KEY, NODES)[:2]


@pytest.mark.parametrize(
    ("self_pos", "expect_positions"),
    [
        (0, [2, 3, 4]),  # an owner: the non-owners in ranking order
        (1, [2, 3, 4]),
        (2, [2, 3, 4]),  # not an owner: itself first, then the other non-owners
        (4, [4, 2, 3]),
    ],
)
def test_hint_candidates(self_pos: int, expect_positions: list[int]) -> None:
    order = rank(POP, KEY, NODES)
    key_owners = order[:2]
    got = c.hint_candidates(POP, KEY, NODES, key_owners, order[self_pos])
    assert got == [order[i] for i in expect_positions]
    assert not set(got) & set(key_owners)


# --- write plans, acks, verdicts ----------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "live_n", "self_pos", "forwarded", "cluster", "mode", "quorum"),
    [
        (POP, 3, 0, False, 3, c.WriteMode.SYNC, 2),  # owner, W 2
        (POP, 3, 2, False, 3, c.WriteMode.FORWARD, 2),  # not an owner: forward
        (POP, 3, 2, True, 3, c.WriteMode.SYNC, 2),  # forwarded to a non-owner: apply anyway
        (POP, 1, 0, False, 1, c.WriteMode.SYNC, 1),  # W capped by the configured cluster
        (POP, 1, 0, False, 3, c.WriteMode.SYNC, 2),  # not by the live members (hints)
        (AGENT, 3, 0, False, 3, c.WriteMode.BACKUP, 1),  # W 1 with a second owner
        (AGENT, 3, 1, False, 3, c.WriteMode.BACKUP, 1),
        (AGENT, 1, 0, False, 3, c.WriteMode.SYNC, 1),  # alone: nobody to back up to
        (METRICS, 3, 2, False, 3, c.WriteMode.BACKUP, 1),  # RF all: every node is an owner
        (MESH, 3, 1, False, 3, c.WriteMode.SYNC, 2),
    ],
)
def test_plan_write(
    spec: TierSpec,
    live_n: int,
    self_pos: int,
    forwarded: bool,
    cluster: int,
    mode: c.WriteMode,
    quorum: int,
) -> None:
    live = NODES[:live_n]
    self_id = rank(spec, KEY, live)[self_pos]
    plan = c.plan_write(spec, KEY, live, self_id, forwarded=forwarded, cluster_size=cluster)
    assert (plan.mode, plan.quorum) == (mode, quorum)
    assert list(plan.owners) == c.owners(spec, KEY, live)


@pytest.mark.parametrize(
    ("mode", "owners", "quorum", "need"),
    [
        (c.WriteMode.SYNC, ("a", "b"), 2, 1),  # W = N: every acked write is on each owner
        (c.WriteMode.SYNC, ("a", "b", "c"), 2, 2),  # any 2 of 3 meet any 2 of 3
        (c.WriteMode.SYNC, ("a", "b", "c", "d", "e"), 3, 3),
        (c.WriteMode.SYNC, ("a",), 2, 1),  # fewer owners live than W: at least our own
        (c.WriteMode.BACKUP, ("a", "b"), 1, 0),  # "1 + backup": best effort
    ],
)
def test_observe_quorum(mode: c.WriteMode, owners: tuple[str, ...], quorum: int, need: int) -> None:
    assert c.observe_quorum(c.WritePlan(mode, owners, quorum)) == need


@pytest.mark.parametrize(
    ("self_id", "owners", "durable", "acks", "down"),
    [
        ("a", ["a", "b"], {"b": True}, ["a", "b"], []),
        ("a", ["a", "b"], {"b": False}, ["a"], ["b"]),
        ("b", ["a", "b", "c"], {"a": False, "c": True}, ["b", "c"], ["a"]),
        ("x", ["a", "b"], {"a": True, "b": False}, ["a"], ["b"]),  # not an owner: no self ack
        ("a", ["a", "b"], {}, ["a"], ["b"]),  # no answer is not durable
    ],
)
def test_tally(
    self_id: str, owners: list[str], durable: dict[str, bool], acks: list[str], down: list[str]
) -> None:
    assert c.tally(self_id, owners, durable) == (acks, down)


@pytest.mark.parametrize(
    ("down", "candidates", "refuse", "acks", "hinted", "unhinted", "attempts"),
    [
        # one down owner, the first candidate stores it
        (["b"], ["c", "d"], set(), ["c (hint for b)"], ["b"], [], 1),
        # a refusing candidate is skipped
        (["b"], ["c", "d"], {"c"}, ["d (hint for b)"], ["b"], [], 2),
        # two down owners take successive candidates, never the same one
        (["b", "c"], ["d", "e"], set(), ["d (hint for b)", "e (hint for c)"], ["b", "c"], [], 2),
        # a refused candidate is not retried for the next owner
        (
            ["b", "c"],
            ["d", "e", "f"],
            {"d"},
            ["e (hint for b)", "f (hint for c)"],
            ["b", "c"],
            [],
            3,
        ),
        # candidates run out: the rest stay unhinted
        (["b", "c"], ["d"], set(), ["d (hint for b)"], ["b"], ["c"], 1),
        (["b"], ["c"], {"c"}, [], [], ["b"], 1),
        (["b"], [], set(), [], [], ["b"], 0),
        ([], ["c"], set(), [], [], [], 0),
    ],
)
def test_hint_plan(
    down: list[str],
    candidates: list[str],
    refuse: set[str],
    acks: list[str],
    hinted: list[str],
    unhinted: list[str],
    attempts: int,
) -> None:
    plan = c.HintPlan(down, candidates)
    made = 0
    while (attempt := plan.next()) is not None:
        made += 1
        assert attempt.owner in down and attempt.fallback in candidates
        plan.record(attempt.fallback not in refuse)
    assert (plan.acks, plan.hinted, plan.unhinted, made) == (acks, hinted, unhinted, attempts)


def test_hint_plan_wants_each_attempt_recorded() -> None:
    plan = c.HintPlan(["b"], ["c", "d"])
    assert plan.next() == c.HintAttempt("b", "c")
    with pytest.raises(RuntimeError):
        plan.next()
    plan.record(False)
    with pytest.raises(RuntimeError):
        plan.record(True)


@pytest.mark.parametrize(
    ("acks", "quorum", "acknowledged"),
    [
        (["a", "b"], 2, True),
        (["a", "c (hint for b)"], 2, True),  # sloppy quorum: a hint counts
        (["a"], 2, False),
        (["a"], 1, True),
        ([], 1, False),
        (["a", "b", "c"], 2, True),
    ],
)
def test_write_verdict(acks: list[str], quorum: int, acknowledged: bool) -> None:
    assert c.write_acknowledged(acks, quorum) is acknowledged


NEXT, ANSWER, UNKNOWN = c.ForwardVerdict.NEXT, c.ForwardVerdict.ANSWER, c.ForwardVerdict.UNKNOWN


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        # a refusal: every owner would say the same
        (InvalidArgument("bad"), ANSWER),
        (NotFound("gone"), ANSWER),
        (MeshNotFound("gone"), ANSWER),
        (AlreadyExists("there"), ANSWER),
        (MeshExists("there"), ANSWER),
        # applied (below quorum): another owner would apply it a second time
        (NotEnoughReplicas("below quorum"), ANSWER),
        # past its client's deadline: every owner would refuse it (node/deadline.py)
        (DeadlineExpired("late"), ANSWER),
        (RemoteFailure("Newer", Outcome.APPLIED, "x"), ANSWER),
        # provably nothing applied: the next owner
        (NotDelivered("no connection"), NEXT),
        (Unavailable("busy"), NEXT),
        (NoOwnerReachable("none"), NEXT),
        (RemoteFailure("Newer", Outcome.NOT_APPLIED, "x"), NEXT),
        # sent, and no definite answer: it may have been applied
        (PeerUnreachable("timed out after sending"), UNKNOWN),
        (ReplicationError("failed"), UNKNOWN),
        (CodecError("garbled reply"), UNKNOWN),
        (RemoteFailure("Newer", Outcome.UNKNOWN, "x"), UNKNOWN),
        (ForwardOutcomeUnknown("?"), UNKNOWN),
        (NodeError("?"), UNKNOWN),
    ],
)
def test_forward_verdict(error: NodeError, verdict: c.ForwardVerdict) -> None:
    assert c.forward_verdict(error) is verdict


@pytest.mark.parametrize("outcome", list(Outcome))
def test_forwarding_goes_on_only_when_nothing_was_applied(outcome: Outcome) -> None:
    """Over every outcome a peer can report: the next owner is asked exactly when the
    outcome is "not applied" and the answer is not a refusal."""
    verdict = c.forward_verdict(RemoteFailure("Newer", outcome, "x"))
    assert (verdict is NEXT) == (outcome is Outcome.NOT_APPLIED)


# --- reads ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("owners", "self_id", "consistency", "order", "want", "repair"),
    [
        (["a", "b"], "a", c.ONE, ("a", "b"), 1, False),
        (["a", "b"], "b", c.ONE, ("b", "a"), 1, False),  # itself first
        (["a", "b"], "x", c.ONE, ("a", "b"), 1, False),
        (["a", "b"], "a", c.QUORUM, ("a", "b"), 2, True),  # 2 // 2 + 1
        (["a", "b", "c"], "c", c.QUORUM, ("c", "a", "b"), 2, True),
        (["a", "b", "c"], "a", c.ALL, ("a", "b", "c"), 3, True),
        (["a", "b"], "a", 0, ("a", "b"), 1, False),  # unknown level: ONE
        (["a", "b"], "a", 7, ("a", "b"), 1, False),
    ],
)
def test_plan_read(
    owners: list[str],
    self_id: str,
    consistency: int,
    order: tuple[str, ...],
    want: int,
    repair: bool,
) -> None:
    assert c.plan_read(owners, self_id, consistency) == c.ReadPlan(order, want, repair)


def _counter(**counts: int) -> PNCounter:
    state = PNCounter()
    for node, n in counts.items():
        state = state.apply_delta(state.increment(node, n))
    return state


@pytest.mark.parametrize(
    ("states", "value", "stale"),
    [
        ({"a": _counter(a=5), "b": _counter(a=5)}, 5, []),
        ({"a": _counter(a=5), "b": _counter(a=5, b=2)}, 7, ["a"]),
        ({"a": None, "b": _counter(a=5)}, 5, ["a"]),  # a missing copy is behind
        ({"a": _counter(a=1), "b": _counter(b=1), "c": None}, 2, ["a", "b", "c"]),
        ({"a": None, "b": None}, None, None),  # nobody holds it: nothing to repair
    ],
)
def test_merge_and_what_a_read_repairs(
    states: dict[str, PNCounter | None], value: int | None, stale: list[str] | None
) -> None:
    merged = c.merge_states(states.values())
    if value is None:
        assert merged is None
        return
    assert merged is not None and merged.value() == value
    assert c.behind(dict(states), merged) == stale


# --- anti-entropy and hand-off ----------------------------------------------------------


def test_sync_pairs_cover_every_tier_and_live_peer_in_order() -> None:
    pairs = c.sync_pairs(["population", "agent"], ["n2", "n1", "n3"], "n2")
    assert [(p.tier, p.peer, p.pair) for p in pairs] == [
        ("population", "n1", ("n1", "n2")),
        ("population", "n3", ("n2", "n3")),
        ("agent", "n1", ("n1", "n2")),
        ("agent", "n3", ("n2", "n3")),
    ]
    assert pairs[1].space == "population|n2|n3" == c.space_name("population", "n3", "n2")
    assert c.sync_pairs(["population"], ["n1"], "n1") == []


def test_pair_space_holds_exactly_the_keys_both_own() -> None:
    live = ["n1", "n2", "n3"]
    keys = [f"job_event_log/j-{i}" for i in range(300)]
    items = [(k, b"d") for k in keys]
    for a, b in (("n1", "n2"), ("n1", "n3"), ("n2", "n3")):
        got = [k for k, _ in c.pair_keys(POP, items, a, b, live)]
        assert got == [k for k in keys if set(c.owners(POP, k, live)) == {a, b}]
        assert got  # 300 keys over 3 pairs: none is empty
    # after n3 dies, n1 and n2 own every key together: the pair space holds them all
    assert len(c.pair_keys(POP, items, "n1", "n2", ["n1", "n2"])) == 300
    # metrics (RF all): every key is in every pair
    assert len(c.pair_keys(METRICS, items, "n1", "n3", live)) == 300


@pytest.mark.parametrize(
    ("tier", "pair", "space", "self_id", "partner"),
    [
        ("population", ("n1", "n2"), "population|n1|n2", "n1", "n2"),
        ("population", ("n1", "n2"), "population|n1|n2", "n2", "n1"),
        ("population", ("n1", "n2"), "population|n1|n2", "n3", None),  # not a member
        ("agent", ("n1", "n2"), "population|n1|n2", "n1", None),  # other tier's space
        ("population", ("n1", "n2"), "population|n1|n3", "n1", None),  # step/pair disagree
        ("population", ("n1", "n1"), "population|n1|n1", "n1", None),  # with itself
    ],
)
def test_sync_partner(
    tier: str, pair: tuple[str, str], space: str, self_id: str, partner: str | None
) -> None:
    if partner is None:
        with pytest.raises(InvalidArgument):
            c.sync_partner(tier, pair, space, self_id)
    else:
        assert c.sync_partner(tier, pair, space, self_id) == partner


@pytest.mark.parametrize(
    ("spec", "live_n", "keys", "count"),
    [
        (POP, 3, 10, 0),
        (POP, 2, 10, 0),  # RF 2 with 2 live: fully replicated
        (POP, 1, 10, 10),  # one live: every key lacks a copy
        (METRICS, 1, 10, 0),  # RF all never is
        (POP, 1, 0, 0),
    ],
)
def test_under_replicated(spec: TierSpec, live_n: int, keys: int, count: int) -> None:
    live = NODES[:live_n]
    names = [f"job_event_log/j-{i}" for i in range(keys)]
    assert c.under_replicated(spec, iter(names), live) == count
    naive = sum(
        1 for k in names if len(c.owners(spec, k, live)) < c.replication_factor(spec, len(live))
    )
    assert count == naive


def _strays_naive(
    spec: TierSpec, keys: list[str], live: list[str], self_id: str, after: str, limit: int
) -> tuple[list[str], int]:
    """The oracle: every stray, sorted, rotated to start after the cursor, cut at limit."""
    strays = sorted(k for k in keys if self_id not in c.owners(spec, k, live))
    rotated = [k for k in strays if k > after] + [k for k in strays if k <= after]
    return rotated[:limit], len(strays)


STRAY_KEYS = [f"job_event_log/j-{i:03d}" for i in range(60)]


@pytest.mark.parametrize(
    ("spec", "live", "self_id", "after", "limit"),
    [
        (POP, ["n1", "n2", "n3"], "n1", "", 100),  # every stray at once
        (POP, ["n1", "n2", "n3"], "n1", "", 5),  # the first five
        (POP, ["n1", "n2", "n3"], "n2", "job_event_log/j-030", 5),  # after the cursor
        (POP, ["n1", "n2", "n3"], "n3", "job_event_log/j-057", 8),  # wraps to the start
        (POP, ["n1", "n2", "n3"], "n3", "job_event_log/j-999", 8),  # past the end: start
        (POP, NODES, "n4", "job_event_log/j-010", 1),
        (AGENT, NODES, "n5", "", 7),
        (POP, ["n1", "n2"], "n1", "", 10),  # two live, RF 2: it owns everything
        (POP, ["n1"], "n1", "", 10),  # alone
        (POP, ["n2", "n3"], "n1", "", 100),  # not live itself: it owns nothing
    ],
)
def test_stray_round_against_a_naive_oracle(
    spec: TierSpec, live: list[str], self_id: str, after: str, limit: int
) -> None:
    got = c.stray_round(spec, iter(STRAY_KEYS), live, self_id, after=after, limit=limit)
    batch, total = _strays_naive(spec, STRAY_KEYS, live, self_id, after, limit)
    assert [s.key for s in got.batch] == batch
    assert got.total == total
    for stray in got.batch:
        assert list(stray.owners) == c.owners(spec, stray.key, live)
        assert self_id not in stray.owners
    # the cursor: the last key handled, or "" when the batch held every stray
    assert got.resume_after == (batch[-1] if total > len(batch) else "")


def test_stray_rounds_visit_every_stray_in_turn() -> None:
    """Rounds of 3 (none dropped, as when their owners are down) go round the strays:
    each one once before any comes again."""
    live = ["n1", "n2", "n3"]
    strays, total = _strays_naive(POP, STRAY_KEYS, live, "n2", "", len(STRAY_KEYS))
    assert total > 6 and total % 3 != 0
    seen: list[str] = []
    after = ""
    while len(seen) < 2 * total:
        got = c.stray_round(POP, STRAY_KEYS, live, "n2", after=after, limit=3)
        assert len(got.batch) == 3
        seen += [s.key for s in got.batch]
        after = got.resume_after
    assert seen[:total] == strays and seen[total : 2 * total] == strays


def test_stray_round_holds_no_stray_of_an_rf_all_tier() -> None:
    got = c.stray_round(METRICS, STRAY_KEYS, NODES, "n3", limit=5)
    assert got == c.StrayRound((), 0, "")
    with pytest.raises(ValueError):
        c.stray_round(POP, STRAY_KEYS, NODES, "n3", limit=0)


def test_the_default_stray_batch_bounds_a_round() -> None:
    keys = [f"job_event_log/j-{i}" for i in range(2000)]
    got = c.stray_round(POP, keys, NODES, "n1")
    assert got.total > c.STRAY_BATCH == len(got.batch)


@pytest.mark.parametrize(
    ("spec", "live_after", "acked", "drop"),
    [
        (POP, ["n1", "n2", "n3"], {"o0", "o1"}, True),  # every owner confirmed
        (POP, ["n1", "n2", "n3"], {"o0"}, False),  # one owner has not
        (POP, ["n1", "n2", "n3"], set(), False),
        (POP, ["n1", "n2", "n3"], {"o0", "o1", "n9"}, True),  # extra acks do not matter
        # placement moved during the merges and now gives the key to this node
        (POP, ["n1", "n2"], {"n1", "n2"}, False),
        (METRICS, ["n1", "n2", "n3"], {"n1", "n2", "n3"}, False),  # RF all: never a stray
    ],
)
def test_may_drop_stray(spec: TierSpec, live_after: list[str], acked: set[str], drop: bool) -> None:
    """``o0``/``o1`` name the key's owners over n1..n3; this node is the third one."""
    key = KEY
    first = c.owners(POP, key, ["n1", "n2", "n3"])
    self_id = next(n for n in ["n1", "n2", "n3"] if n not in first)
    named = {"o0": first[0], "o1": first[1]}
    acked_ids = {named.get(a, a) for a in acked}
    assert c.may_drop_stray(spec, key, live_after, self_id, acked_ids) is drop


def test_a_stray_waits_for_an_owner_that_joined_meanwhile() -> None:
    """Placement moved while the merges were out: a member that joined now owns the
    key and has not confirmed it, so the copy stays."""
    old, new = ["n1", "n2", "n3"], ["n1", "n2", "n3", "n4"]
    key = next(
        k
        for k in (f"job_event_log/j-{i}" for i in range(1000))
        if "n4" in c.owners(POP, k, new) and "n3" not in c.owners(POP, k, new)
        and "n3" not in c.owners(POP, k, old)
    )  # fmt: skip
    acked = c.owners(POP, key, old)
    assert c.may_drop_stray(POP, key, old, "n3", acked)
    assert not c.may_drop_stray(POP, key, new, "n3", acked)
    assert c.may_drop_stray(POP, key, new, "n3", [*acked, "n4"])


def test_a_stray_is_never_dropped_by_an_owner() -> None:
    live = ["n1", "n2", "n3"]
    for i in range(100):
        key = f"job_event_log/j-{i}"
        for node in live:
            owns = node in c.owners(POP, key, live)
            assert not (owns and c.may_drop_stray(POP, key, live, node, live))


def test_handoff_targets_are_the_live_peers() -> None:
    assert c.handoff_targets(["n3", "n1", "n2"], "n1") == ["n3", "n2"]
    assert c.handoff_targets(["n1"], "n1") == []


# --- the layer ----------------------------------------------------------------------------

PURE = ("coordinator", "messages", "codec", "errors")  # node.placement: pure-cores (import-linter)
IO_MODULES = {"asyncio", "grpc", "socket", "sqlite3", "threading", "time", "node.pb", "node.peer"}


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_no_io(module: str) -> None:
    path = pathlib.Path(c.__file__).with_name(f"{module}.py")
    imported: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    bad = {m for m in imported for io in IO_MODULES if m == io or m.startswith(io + ".")}
    assert not bad, f"node/replication/{module}.py imports {sorted(bad)}"


def test_the_owner_cache_answers_as_placement_and_starts_over_when_live_changes() -> None:
    cache = c.OwnerCache(limit=50)
    spec = TIERS["population"]
    for live in (["n1", "n2", "n3"], ["n1", "n3"], ["n1", "n2", "n3", "n4"]):
        for i in range(120):  # past the limit: the cache starts over and stays right
            key = f"k{i}"
            assert cache(spec, key, live) == c.owners(spec, key, live)
            assert cache(spec, key, reversed(live)) == c.owners(spec, key, live)
