"""The chaos checkers checked: hand-built histories, a simulated-execution oracle,
and round trips of the history format. Pure, deterministic, no sleeps."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.chaos.checkers import (
    check_counter,
    check_counter_history,
    check_log_history,
    check_lost_writes,
    check_sessions,
    check_set_history,
    summarise,
    with_final_reads,
)
from tests.chaos.history import History, Op, Outcome, Value
from tests.chaos.linearizability import Verdict, check_key, check_linearizable

# -- tiny DSL: W(process, value, start, end), R(...), C(process, expected, new, ...) --


def W(p: int, v: Value, s: int, e: int | None, o: Outcome = "ok", key: str = "k") -> Op:
    return Op(process=p, kind="write", key=key, value=v, invoke_ns=s, complete_ns=e, outcome=o)


def R(p: int, v: Value, s: int, e: int | None, o: Outcome = "ok", key: str = "k") -> Op:
    return Op(process=p, kind="read", key=key, value=v, invoke_ns=s, complete_ns=e, outcome=o)


def C(
    p: int, exp: Value, new: Value, s: int, e: int | None, o: Outcome = "ok", key: str = "k"
) -> Op:
    return Op(
        process=p,
        kind="cas",
        key=key,
        value=new,
        expected=exp,
        invoke_ns=s,
        complete_ns=e,
        outcome=o,
    )


def A(p: int | str, delta: int, s: int, e: int | None, o: Outcome = "ok", key: str = "n") -> Op:
    return Op(process=p, kind="add", key=key, value=delta, invoke_ns=s, complete_ns=e, outcome=o)


LINEARIZABLE: dict[str, list[Op]] = {
    "empty": [],
    "read of absent key": [R(1, None, 0, 5)],
    "sequential": [W(1, 1, 0, 10), R(2, 1, 20, 30), W(2, 2, 40, 50), R(1, 2, 60, 70)],
    "concurrent writes read as 1 then 2": [
        W(1, 1, 0, 100), W(2, 2, 0, 100), R(3, 1, 10, 20), R(3, 2, 30, 40),
    ],
    "concurrent writes read as 2 then 1": [
        W(1, 1, 0, 100), W(2, 2, 0, 100), R(3, 2, 10, 20), R(3, 1, 30, 40),
    ],
    "read overlapping a write sees old value": [W(1, 1, 0, 10), W(1, 2, 20, 60), R(2, 1, 30, 40)],
    "read overlapping a write sees new value": [W(1, 1, 0, 10), W(1, 2, 20, 60), R(2, 2, 30, 40)],
    "unknown write that later appears": [
        W(1, 1, 0, 10), W(2, 2, 20, None, "unknown"), R(3, 1, 30, 40), R(3, 2, 500, 510),
    ],
    "unknown write that never appears": [
        W(1, 1, 0, 10), W(2, 2, 20, 25, "unknown"), R(3, 1, 30, 40), R(3, 1, 500, 510),
    ],
    "unknown write taking effect long after its client gave up": [
        W(1, 2, 0, 5, "unknown"), W(2, 3, 10, 20), R(3, 3, 30, 40), R(3, 2, 50, 60),
    ],
    "failed write is ignored": [W(1, 1, 0, 10), W(2, 2, 20, 30, "fail"), R(3, 1, 40, 50)],
    "failed and unknown reads constrain nothing": [
        W(1, 1, 0, 10), R(2, 99, 20, 30, "fail"), R(2, 98, 40, None, "unknown"),
    ],
    "cas success chain": [
        W(1, 0, 0, 5), C(1, 0, 1, 10, 15), C(2, 1, 2, 20, 25), C(3, 2, 3, 30, 35),
        R(1, 3, 40, 45),
    ],
    "cas from absent": [C(1, None, 1, 0, 5), R(2, 1, 10, 15)],
    "cas failure recorded as fail leaves value": [
        W(1, 0, 0, 5), C(2, 7, 8, 10, 15, "fail"), R(3, 0, 20, 25),
    ],
    "concurrent cas race, one wins": [
        W(1, 0, 0, 5), C(1, 0, 1, 10, 50), C(2, 0, 2, 10, 50, "fail"), R(3, 1, 60, 70),
    ],
    "unknown cas that took effect": [
        W(1, 0, 0, 5), C(2, 0, 1, 10, None, "unknown"), R(3, 1, 100, 110),
    ],
    "unknown cas that did not": [
        W(1, 0, 0, 5), C(2, 0, 1, 10, None, "unknown"), R(3, 0, 100, 110),
    ],
    "two keys independent": [
        W(1, 1, 0, 10, key="a"), W(1, 1, 0, 10, key="b"), R(2, 1, 20, 30, key="a"),
        R(2, None, 5, 30, key="c"),
    ],
}  # fmt: skip

NOT_LINEARIZABLE: dict[str, list[Op]] = {
    "stale read after a completed write": [W(1, 1, 0, 10), W(2, 2, 20, 30), R(3, 1, 40, 50)],
    "read of a value never written": [W(1, 1, 0, 10), R(2, 5, 20, 30)],
    "read of a failed write's value": [W(1, 1, 0, 10, "fail"), R(2, 1, 20, 30)],
    "lost write (reads absent afterwards)": [W(1, 1, 0, 10), R(2, None, 20, 30)],
    "double cas success from the same expected value": [
        W(1, 0, 0, 5), C(1, 0, 1, 10, 20), C(2, 0, 2, 10, 20),
    ],
    "double cas success, sequential": [W(1, 0, 0, 5), C(1, 0, 1, 10, 15), C(2, 0, 2, 20, 25)],
    "read going back in time across two clients": [
        W(1, 1, 0, 10), W(1, 2, 20, 100), R(2, 2, 30, 40), R(3, 1, 50, 60),
    ],
    "unknown write cannot act before its invocation": [
        W(1, 1, 0, 10), R(2, 2, 20, 30), W(3, 2, 40, None, "unknown"),
    ],
    "cas ok with wrong expected": [W(1, 0, 0, 5), C(1, 3, 4, 10, 15)],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(LINEARIZABLE))
def test_linearizable_histories_pass(name: str) -> None:
    ops = LINEARIZABLE[name]
    result = check_linearizable(random.Random(name).sample(ops, len(ops)))  # order-free
    assert result.verdict is Verdict.OK, result.explain()


@pytest.mark.parametrize("name", sorted(NOT_LINEARIZABLE))
def test_non_linearizable_histories_fail(name: str) -> None:
    ops = NOT_LINEARIZABLE[name]
    result = check_linearizable(random.Random(name).sample(ops, len(ops)))
    assert result.verdict is Verdict.VIOLATION
    assert len(result.violations) == 1
    assert "cannot linearize" in result.explain()


def test_violation_names_key_op_and_prefix() -> None:
    stale = R(3, 1, 40, 50)
    history = [W(1, 1, 0, 10), W(2, 2, 20, 30), stale, W(1, 9, 0, 10, key="other")]
    (violation,) = check_linearizable(history).violations
    assert violation.key == "k"
    assert violation.op == stale
    assert violation.prefix == (history[0], history[1])
    assert violation.state == 2


def test_violation_on_one_key_wins_over_unknown_on_another() -> None:
    bad = NOT_LINEARIZABLE["stale read after a completed write"]
    # Many fully concurrent writes, read back in some order: a big search space.
    busy = [W(p, p, 0, 1000, key="busy") for p in range(12)]
    busy += [R(99, None, 2000, 2001, key="busy")]  # impossible: forces exhaustion
    result = check_linearizable(bad + busy, max_states=50)
    assert result.verdict is Verdict.VIOLATION
    assert result.unknown_keys == ("busy",)
    only_busy = check_linearizable(busy, max_states=50)
    assert only_busy.verdict is Verdict.UNKNOWN
    assert not only_busy.ok


def test_non_register_op_is_rejected() -> None:
    with pytest.raises(ValueError, match="not a register op"):
        check_key("n", [A(1, 1, 0, 5)])


# -- simulated real executions -------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One planned op; the simulator decides values and outcomes by executing it."""

    client: int
    kind: str  # read | write | cas
    key: int
    choice: int  # cas expected: 0 current, 1 absent, 2 an older value, 3 never written
    gap: int  # idle time before invocation
    lin: int  # invocation -> linearization point
    tail: int  # linearization point -> completion
    fate: str  # ok | fail | unknown_applied | unknown_lost


def simulate(
    specs: Sequence[Spec], *, sequential: bool = False
) -> tuple[list[Op], dict[str, Value]]:
    """Run ``specs`` against a dict in linearization-point order; return the history
    and the dict's final contents.

    Each client issues one op at a time. An unknown op's client gives up after
    ``tail`` but the op itself may still apply later (at invoke + 3*lin), as a real
    timed-out request can. ``sequential`` puts every op on one timeline, so no two
    ops overlap (unknown ones excepted).
    """
    free_at: dict[int, int] = {}
    planned: list[tuple[int, int, Spec, int, int]] = []
    for seq, s in enumerate(specs):
        lane = 0 if sequential else s.client
        invoke = free_at.get(lane, 0) + s.gap + 1
        if s.fate.startswith("unknown"):
            lin, complete = invoke + 3 * s.lin, invoke + s.tail
        else:
            lin = invoke + s.lin
            complete = lin + s.tail
        free_at[lane] = complete
        planned.append((lin, seq, s, invoke, complete))

    state: dict[str, Value] = {}
    held: dict[str, list[Value]] = {}
    fresh = itertools.count(1)
    ops: list[Op] = []
    for _lin, _seq, s, invoke, complete in sorted(planned, key=lambda t: (t[0], t[1])):
        key = f"k{s.key}"
        cur = state.get(key)
        past = held.setdefault(key, [None])
        outcome: Outcome
        expected: Value = None
        if s.kind == "read":
            outcome = {"ok": "ok", "fail": "fail"}.get(s.fate, "unknown")  # type: ignore[assignment]
            value = cur if outcome == "ok" else None
        else:
            value = next(fresh)
            if s.kind == "cas":
                expected = [cur, None, past[len(past) // 2], -1][s.choice]
            applies = s.fate in ("ok", "unknown_applied") and (s.kind == "write" or cur == expected)
            if applies:
                state[key] = value
                past.append(value)
            unknown = s.fate.startswith("unknown")
            outcome = "unknown" if unknown else "ok" if applies else "fail"
        ops.append(
            Op(
                process=s.client,
                kind=s.kind,  # type: ignore[arg-type]
                key=key,
                value=value,
                expected=expected,
                invoke_ns=invoke,
                complete_ns=complete,
                outcome=outcome,
            )
        )
    return ops, state


def random_specs(
    rng: random.Random, n: int, *, clients: int, keys: int, unknown_rate: float = 0.02
) -> list[Spec]:
    """Specs for the timing test and benchmarks (hypothesis draws its own)."""

    def fate() -> str:
        x = rng.random()
        if x < unknown_rate:
            return rng.choice(["unknown_applied", "unknown_lost"])
        return "fail" if x < unknown_rate + 0.02 else "ok"

    return [
        Spec(
            client=rng.randrange(clients),
            kind=rng.choice(["read", "read", "write", "cas"]),
            key=rng.randrange(keys),
            choice=rng.choice([0, 0, 0, 1, 2, 3]),
            gap=rng.randrange(50),
            lin=rng.randrange(100),
            tail=rng.randrange(100),
            fate=fate(),
        )
        for _ in range(n)
    ]


def spec_strategy(fates: Sequence[str], *, clients: int, keys: int = 3) -> st.SearchStrategy[Spec]:
    return st.builds(
        Spec,
        client=st.integers(0, clients - 1),
        kind=st.sampled_from(["read", "write", "cas"]),
        key=st.integers(0, keys - 1),
        choice=st.integers(0, 3),
        gap=st.integers(0, 20),
        lin=st.integers(0, 40),
        tail=st.integers(0, 40),
        fate=st.sampled_from(fates),
    )


ALL_FATES = ["ok", "ok", "ok", "fail", "unknown_applied", "unknown_lost"]


@settings(derandomize=True, max_examples=300, deadline=None)
@given(
    specs=st.lists(spec_strategy(ALL_FATES, clients=5), max_size=40),
    sequential=st.booleans(),
)
def test_real_executions_are_linearizable(specs: list[Spec], sequential: bool) -> None:
    ops, final = simulate(specs, sequential=sequential)
    result = check_linearizable(ops)
    assert result.verdict is Verdict.OK, result.explain()
    # The store's final contents are consistent with the history, too.
    assert check_lost_writes(ops, final).ok
    assert check_linearizable(with_final_reads(ops, final)).ok


@settings(
    derandomize=True, max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    specs=st.lists(
        spec_strategy(["ok", "ok", "ok", "fail"], clients=3, keys=2), min_size=3, max_size=40
    ),
    data=st.data(),
)
def test_stale_read_in_sequential_history_is_caught(specs: list[Spec], data: st.DataObject) -> None:
    ops = sorted(simulate(specs, sequential=True)[0], key=lambda o: o.invoke_ns)
    held: dict[str, list[Value]] = {}
    candidates: list[tuple[int, list[Value]]] = []
    for i, op in enumerate(ops):
        past = held.setdefault(op.key, [None])
        if op.outcome != "ok":
            continue
        if op.kind == "read":
            stale = [v for v in past if v != op.value]
            if stale:
                candidates.append((i, stale))
        else:
            past.append(op.value)
    if not candidates:
        return  # nothing to mutate; the first property covers the unmutated case
    i, stale = data.draw(st.sampled_from(candidates))
    value = data.draw(st.sampled_from(stale))
    old = ops[i]
    ops[i] = R(old.process, value, old.invoke_ns, old.complete_ns, key=old.key)  # type: ignore[arg-type]
    result = check_linearizable(ops)
    assert result.verdict is Verdict.VIOLATION
    (violation,) = result.violations
    assert violation.op == ops[i]


def _brute_force_linearizable(ops: Sequence[Op]) -> bool:
    """Naive oracle: try every subset of unknown writes/cas and every order."""
    kept = [o for o in ops if o.outcome != "fail" and (o.kind != "read" or o.outcome == "ok")]
    oks = [o for o in kept if o.outcome == "ok"]
    unknowns = [o for o in kept if o.outcome == "unknown"]
    for r in range(len(unknowns) + 1):
        for chosen in itertools.combinations(unknowns, r):
            for order in itertools.permutations([*oks, *chosen]):
                if any(
                    later.end_ns < earlier.invoke_ns
                    for i, earlier in enumerate(order)
                    for later in order[i + 1 :]
                ):
                    continue  # real-time order broken
                value: Value = None
                for o in order:
                    if o.kind == "read" and o.value != value:
                        break
                    if o.kind == "cas" and o.expected != value:
                        break
                    if o.kind != "read":
                        value = o.value
                else:
                    return True
    return False


_small_value = st.sampled_from([None, 1, 2])


@st.composite
def small_ops(draw: st.DrawFn) -> Op:
    start = draw(st.integers(0, 30))
    outcome: Outcome = draw(st.sampled_from(["ok", "ok", "ok", "fail", "unknown"]))
    return Op(
        process=draw(st.integers(0, 3)),
        kind=draw(st.sampled_from(["read", "read", "write", "cas"])),
        key="k",
        value=draw(_small_value),
        expected=draw(_small_value),
        invoke_ns=start,
        complete_ns=start + draw(st.integers(0, 30)),
        outcome=outcome,
    )


@settings(derandomize=True, max_examples=400, deadline=None)
@given(st.lists(small_ops(), max_size=6))
def test_matches_brute_force_oracle(ops: list[Op]) -> None:
    """Random small histories, linearizable or not, classified as the oracle does."""
    expected = Verdict.OK if _brute_force_linearizable(ops) else Verdict.VIOLATION
    assert check_linearizable(ops).verdict is expected


def test_two_thousand_ops_eight_clients_five_keys() -> None:
    ops, _ = simulate(random_specs(random.Random(6), 2000, clients=8, keys=5))
    result = check_linearizable(ops)
    assert result.verdict is Verdict.OK, result.explain()
    assert sum(k.states for k in result.keys) < 20 * len(ops)  # memoisation keeps it near-linear


# -- lost writes ---------------------------------------------------------------------


def test_lost_write_detected() -> None:
    history = [W(1, 1, 0, 10), W(2, 2, 20, 30)]
    result = check_lost_writes(history, {"k": 1})
    assert [w.op for w in result.lost] == [history[1]]
    assert not result.ok


def test_overlapping_writes_either_may_win() -> None:
    history = [W(1, 1, 0, 30), W(2, 2, 20, 40)]
    assert check_lost_writes(history, {"k": 1}).ok
    assert check_lost_writes(history, {"k": 2}).ok


def test_unknown_write_invoked_earlier_may_overwrite() -> None:
    history = [W(1, 1, 0, 5, "unknown"), W(2, 2, 20, 30)]
    assert check_lost_writes(history, {"k": 1}).ok


def test_failed_write_does_not_excuse_and_is_not_required() -> None:
    history = [W(1, 1, 0, 10), W(2, 2, 20, 30, "fail")]
    assert check_lost_writes(history, {"k": 1}).ok
    assert not check_lost_writes(history, {"k": 2}).ok  # 2 never written: unexplained
    assert check_lost_writes(history, {"k": 2}).unexplained == (("k", 2),)


def test_value_out_of_nowhere_is_unexplained() -> None:
    assert check_lost_writes([], {"k": 4}).unexplained == (("k", 4),)
    assert check_lost_writes([], {"k": None}).ok


def test_missing_key_in_read_back_counts_as_absent() -> None:
    result = check_lost_writes([W(1, 1, 0, 10)], {})
    assert [w.final for w in result.lost] == [None]


def test_successful_cas_is_an_acknowledged_write() -> None:
    history = [W(1, 0, 0, 5), C(1, 0, 1, 10, 15)]
    assert check_lost_writes(history, {"k": 1}).ok
    assert [w.op for w in check_lost_writes(history, {"k": 0}).lost] == [history[1]]


def test_final_reads_make_linearizability_exact() -> None:
    # The simple rule accepts this (w2 overlaps w3), the exact check does not: the
    # only way for 1 to survive is nothing after it, but 3 was acknowledged after 2.
    history = [W(1, 1, 0, 10), W(2, 2, 20, 40), W(3, 3, 30, 50), R(4, 3, 60, 70)]
    assert check_lost_writes(history, {"k": 2}).ok
    assert not check_linearizable(with_final_reads(history, {"k": 2})).ok
    assert check_linearizable(with_final_reads(history, {"k": 3})).ok


# -- counters ------------------------------------------------------------------------


def _oracle(final: int, acked: list[int], unknown: list[int]) -> bool:
    target = final - sum(acked)
    return any(
        sum(c) == target
        for r in range(len(unknown) + 1)
        for c in itertools.combinations(unknown, r)
    )


@settings(derandomize=True, max_examples=300, deadline=None)
@given(
    acked=st.lists(st.integers(-5, 5), max_size=6),
    unknown=st.lists(st.integers(-6, 9), max_size=9),
    final=st.integers(-40, 60),
)
def test_counter_matches_subset_sum_oracle(
    acked: list[int], unknown: list[int], final: int
) -> None:
    result = check_counter(final, acked, unknown)
    assert result.verdict is (Verdict.OK if _oracle(final, acked, unknown) else Verdict.VIOLATION)


@pytest.mark.parametrize(
    ("final", "unknown", "verdict"),
    [
        (100_000 + 70_000, [1] * 100_000, Verdict.OK),
        (100_000 + 100_001, [1] * 100_000, Verdict.VIOLATION),  # range test
        (100_000 + 7, [2] * 50_000, Verdict.VIOLATION),  # parity
        (100_000 + 8, [2] * 50_000 + [3] * 10, Verdict.OK),
        (100_000 + 5, [10**9, 10**9 + 1], Verdict.UNKNOWN),  # span beyond the bitset
        (100_000 + 5 * 10**9, [10**9] * 3, Verdict.VIOLATION),
    ],
)
def test_counter_large_counts(final: int, unknown: list[int], verdict: Verdict) -> None:
    assert check_counter(final, [1] * 100_000, unknown).verdict is verdict


def test_counter_from_history() -> None:
    history = [A(1, 5, 0, 10), A(2, 3, 0, 10, "unknown"), A(3, 4, 0, 10, "fail"), A(1, 1, 20, 30)]
    assert check_counter_history(history, "n", 6).ok
    assert check_counter_history(history, "n", 9).ok
    assert not check_counter_history(history, "n", 10).ok


# -- history container and summary ---------------------------------------------------


def _crdt(p: int, kind: str, element: str, o: Outcome, key: str = "s") -> Op:
    end = None if o == "unknown" else 1
    return Op(process=p, kind=kind, key=key, value=element, invoke_ns=0, complete_ns=end, outcome=o)  # type: ignore[arg-type]


SET_HISTORY = [
    _crdt(1, "sadd", "kept", "ok"),
    _crdt(1, "sadd", "removed", "ok"),
    _crdt(1, "srem", "removed", "ok"),
    _crdt(1, "sadd", "remove-failed", "ok"),
    _crdt(1, "srem", "remove-failed", "fail"),
    _crdt(1, "sadd", "remove-unknown", "ok"),
    _crdt(1, "srem", "remove-unknown", "unknown"),
    _crdt(1, "sadd", "add-failed", "fail"),
    _crdt(1, "sadd", "add-unknown", "unknown"),
    _crdt(1, "sadd", "other key", "ok", key="t"),
]


@pytest.mark.parametrize(
    ("final", "problem"),
    [
        ({"kept", "remove-failed"}, None),
        ({"kept", "remove-failed", "remove-unknown", "add-unknown"}, None),
        ({"remove-failed"}, "'kept' missing (add ok)"),
        ({"kept", "remove-failed", "removed"}, "'removed' present (add ok, remove ok)"),
        ({"kept"}, "'remove-failed' missing (add ok, remove fail)"),
        ({"kept", "remove-failed", "add-failed"}, "'add-failed' present (add fail)"),
        ({"kept", "remove-failed", "zzz"}, "'zzz' present but never added"),
        ({"kept", "remove-failed", "other key"}, "'other key' present but never added"),
    ],
)
def test_set_history(final: set[str], problem: str | None) -> None:
    result = check_set_history(SET_HISTORY, "s", final)
    assert result.ok == (problem is None)
    if problem is not None:
        assert problem in result.detail


LOG_HISTORY = [
    _crdt(1, "lappend", "a", "ok", key="l"),
    _crdt(1, "lappend", "b", "fail", key="l"),
    _crdt(1, "lappend", "c", "unknown", key="l"),
]


@pytest.mark.parametrize(
    ("final", "problem"),
    [
        (["a"], None),
        (["c", "a"], None),
        ([], "'a' missing (acknowledged)"),
        (["a", "b"], "'b' present (its append failed"),
        (["a", "a"], "'a' 2 times"),
        (["a", "x"], "'x' present but never appended"),
    ],
)
def test_log_history(final: list[str], problem: str | None) -> None:
    result = check_log_history(LOG_HISTORY, "l", final)
    assert result.ok == (problem is None)
    if problem is not None:
        assert problem in result.detail


def test_collection_ops_need_a_str_value() -> None:
    with pytest.raises(ValueError, match="sadd needs"):
        _crdt(1, "sadd", 3, "ok")  # type: ignore[arg-type]


def _s(kind: str, value: int | None, at: int, o: Outcome = "ok", p: int = 1) -> Op:
    return Op(
        process=p,
        kind=kind,
        key="agent-1",
        value=value,
        invoke_ns=at,
        complete_ns=at + 1,
        outcome=o,
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ops", "problem"),
    [
        ([_s("dread", 0, 0), _s("dpatch", 1, 10), _s("dread", 1, 20)], None),
        ([_s("dpatch", 1, 10), _s("dpatch", 2, 20, "unknown"), _s("dread", 2, 30)], None),
        ([_s("dpatch", 1, 10), _s("dpatch", 2, 20, "unknown"), _s("dread", 1, 30)], None),
        ([_s("dpatch", 1, 10), _s("dread", 0, 20)], "read 0 at 20: after its write of 1"),
        (
            [_s("dpatch", 1, 10, "unknown"), _s("dread", 1, 20), _s("dread", 0, 30)],
            "read 0 at 30: after reading 1",
        ),
        ([_s("dpatch", 1, 10, "fail"), _s("dread", 1, 20)], "a number whose write failed"),
        ([_s("dread", 7, 20)], "never happened"),
        ([_s("dread", -1, 20)], "absent after its create was acknowledged"),
        ([_s("dpatch", 1, 10), _s("dread", 0, 20, "fail")], None),  # a refusal is fine
        # Another session's writes do not count for this one.
        ([_s("dpatch", 1, 10, p=2), _s("dread", 0, 20)], None),
    ],
)
def test_sessions(ops: list[Op], problem: str | None) -> None:
    problems = check_sessions(ops)
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0], problems


def test_summary_counts_session_violations() -> None:
    bad = check_sessions([_s("dpatch", 1, 10), _s("dread", 0, 20)])
    summary = summarise([], sessions=bad)
    assert summary.crdt_violations == 1 and not summary.clean
    assert "session: p1 agent-1 read 0" in summary.format()


def test_jsonl_round_trip(tmp_path: Path) -> None:
    ops = [*LINEARIZABLE["unknown cas that took effect"], A("c7", -2, 3, 4), R(1, "x", 5, 9)]
    history = History(ops)
    assert History.loads(history.dumps()).ops == history.ops
    path = tmp_path / "history.jsonl"
    history.save(path)
    assert History.load(path).ops == history.ops
    with pytest.raises(ValueError, match="unsupported"):
        History.loads('{"format": "tadpole-chaos-history", "version": 99}\n')
    with pytest.raises(ValueError, match="malformed"):
        History.loads('{"kind": "read"}\n')


def test_op_validation() -> None:
    with pytest.raises(ValueError, match="complete_ns"):
        W(1, 1, 10, None)
    with pytest.raises(ValueError, match="before"):
        W(1, 1, 10, 5)
    with pytest.raises(ValueError, match="delta"):
        Op(process=1, kind="add", key="n", value="x", invoke_ns=0, complete_ns=1, outcome="ok")
    assert W(1, 1, 0, 5, "unknown").end_ns == float("inf")


async def test_invoke_complete_from_tasks_and_close() -> None:
    ticks = itertools.count()
    history = History(clock=lambda: next(ticks))

    async def client(p: int) -> None:
        for i in range(5):
            pending = history.invoke(p, "write", "k", value=p * 10 + i)
            await asyncio.sleep(0)
            history.complete(pending, "ok")
        history.invoke(p, "read", "k")  # left in flight

    await asyncio.gather(*(client(p) for p in range(4)))
    assert len(history) == 20 and history.pending_count == 4
    closed = history.close()
    assert [op.outcome for op in closed] == ["unknown"] * 4
    assert history.pending_count == 0 and len(history) == 24
    assert all(op.invoke_ns <= (op.complete_ns or 0) for op in history)
    assert check_linearizable(history).ok
    assert sorted(history.by_key()) == ["k"]


def test_summary_counts_and_explains() -> None:
    ops = NOT_LINEARIZABLE["stale read after a completed write"] + [W(9, 5, 0, 5, "unknown")]
    lin = check_linearizable(ops)
    lost = check_lost_writes(ops, {"k": 2})
    counter = check_counter(3, [1], [1])
    collection = check_log_history(LOG_HISTORY, "l", [])
    summary = summarise(
        ops, linearizability=lin, lost_writes=lost, counters=[counter], collections=[collection]
    )
    assert summary.ops == 4
    assert summary.by_outcome == {"ok": 3, "unknown": 1}
    assert summary.violations == 1 and summary.lost_writes == 0
    assert summary.crdt_violations == 2
    assert not summary.clean
    text = summary.format()
    assert "violations=1" in text and "cannot linearize" in text
    assert "collection: l: 'a' missing" in text
    good = LINEARIZABLE["sequential"]
    assert summarise(good, linearizability=check_linearizable(good)).clean


def test_a_failed_runs_report_carries_each_nodes_last_warnings(tmp_path: Path) -> None:
    from tests.chaos.runner import node_warnings

    (tmp_path / "n1").mkdir()
    (tmp_path / "n2").mkdir()
    (tmp_path / "n1" / "data").mkdir()
    lines = [f"2026-12-07 10:00:{i:02d},000 WARNING node.x: warning {i}\n" for i in range(12)]
    (tmp_path / "n1" / "node.log").write_text(
        "2026-12-07 09:59:59,000 INFO node.x: started\n"
        + "".join(lines)
        + "2026-12-07 10:01:00,000 ERROR node.y: failed\nTraceback (most recent call last):\n"
    )
    (tmp_path / "n2" / "node.log").write_text("2026-12-07 10:00:00,000 INFO node.x: quiet\n")
    got = node_warnings(str(tmp_path), last=3)
    assert list(got) == ["n1"]
    assert got["n1"] == [
        "2026-12-07 10:00:10,000 WARNING node.x: warning 10",
        "2026-12-07 10:00:11,000 WARNING node.x: warning 11",
        "2026-12-07 10:01:00,000 ERROR node.y: failed",
    ]
