"""Unit tests for the system tier's state machine and its command codec.

Pure: no cluster, no I/O. The Hypothesis test at the end compares the state
machine against a naive dict model (the oracle) over random command sequences.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.errors import CommandError, CompactedError, ConsensusError, SnapshotError
from consensus.statemachine import (
    COMMAND_FORMAT,
    SNAPSHOT_FORMAT,
    Barrier,
    Batch,
    Command,
    CommandResult,
    Compare,
    CompareOp,
    CompareTarget,
    DeleteOp,
    Event,
    EventType,
    GetOp,
    KeyValue,
    OpResult,
    PutOp,
    SystemStateMachine,
    Txn,
    decode_command,
    decode_entry,
    encode_batch,
    encode_command,
)

EQ, NE, GT, LT = CompareOp.EQUAL, CompareOp.NOT_EQUAL, CompareOp.GREATER, CompareOp.LESS
VERSION, CREATE, MOD, VALUE = (
    CompareTarget.VERSION,
    CompareTarget.CREATE,
    CompareTarget.MOD,
    CompareTarget.VALUE,
)


def put(sm: SystemStateMachine, key: str, value: bytes = b"v") -> CommandResult:
    return sm.apply(Txn(success=(PutOp(key, value),)))


def delete(sm: SystemStateMachine, key: str, *, prefix: bool = False) -> CommandResult:
    return sm.apply(Txn(success=(DeleteOp(key, prefix),)))


def keys_of(kvs: object) -> list[str]:
    return [kv.key for kv in kvs]  # type: ignore[attr-defined]


def all_events(sm: SystemStateMachine) -> list[Event]:
    return sm.events_since(sm.compact_revision + 1, "", prefix=True)


# --- revisions ------------------------------------------------------------


def test_fresh_machine_is_empty_at_revision_zero() -> None:
    sm = SystemStateMachine()
    assert (sm.revision, sm.compact_revision, len(sm)) == (0, 0, 0)
    assert sm.get("k") is None
    assert sm.range("") == ([], False, 0)


def test_every_changing_command_bumps_the_revision_by_one() -> None:
    sm = SystemStateMachine()
    for expected, key in enumerate(["a", "b", "a", "c"], start=1):
        result = put(sm, key)
        assert result.revision == expected == sm.revision
        assert result.succeeded
    assert delete(sm, "a").revision == 5 == sm.revision


def test_put_of_an_identical_value_is_still_a_change() -> None:
    sm = SystemStateMachine()
    put(sm, "k", b"same")
    result = put(sm, "k", b"same")
    assert result.revision == 2
    kv = sm.get("k")
    assert kv is not None and (kv.mod_revision, kv.version) == (2, 2)


def test_all_changes_of_one_txn_share_one_revision() -> None:
    sm = SystemStateMachine()
    put(sm, "gone")
    result = sm.apply(
        Txn(success=(PutOp("a", b"1"), PutOp("b", b"2"), DeleteOp("gone"), PutOp("a", b"3")))
    )
    assert result.revision == 2 == sm.revision
    a, b = sm.get("a"), sm.get("b")
    assert a is not None and b is not None
    assert (a.value, a.create_revision, a.mod_revision, a.version) == (b"3", 2, 2, 2)
    assert (b.create_revision, b.mod_revision, b.version) == (2, 2, 1)
    assert sm.get("gone") is None
    events = sm.events_since(2, "", prefix=True)
    assert [(e.type, e.kv.key, e.kv.mod_revision) for e in events] == [
        (EventType.PUT, "a", 2),
        (EventType.PUT, "b", 2),
        (EventType.DELETE, "gone", 2),
        (EventType.PUT, "a", 2),
    ]


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(Barrier(), id="barrier"),
        pytest.param(Txn(), id="empty-txn"),
        pytest.param(Txn(success=(DeleteOp("absent"),)), id="delete-absent-key"),
        pytest.param(Txn(success=(DeleteOp("zzz/", prefix=True),)), id="delete-empty-prefix-range"),
        pytest.param(Txn(success=(GetOp("k"), GetOp("", prefix=True))), id="reads-only"),
        pytest.param(
            Txn(compares=(Compare("k", VERSION, EQ, 99),), success=(PutOp("k", b"x"),)),
            id="failed-compare-empty-failure-branch",
        ),
    ],
)
def test_commands_that_change_nothing_do_not_bump_the_revision(command: Command) -> None:
    sm = SystemStateMachine()
    put(sm, "k", b"v")
    before = sm.snapshot()
    result = sm.apply(command)
    assert result.revision == 1 == sm.revision
    assert sm.snapshot() == before  # no history event either


def test_a_barrier_result_reports_the_current_revision() -> None:
    sm = SystemStateMachine()
    for key in "abc":
        put(sm, key)
    assert sm.apply(Barrier()) == CommandResult(revision=3, succeeded=True, results=())


# --- create/mod revision and version --------------------------------------


def test_create_mod_and_version_through_put_delete_put() -> None:
    sm = SystemStateMachine()
    first = put(sm, "k", b"1")  # rev 1
    assert first.results == (OpResult(kvs=(KeyValue("k", b"1", 1, 1, 1),), prev=None),)
    put(sm, "other")  # rev 2
    second = put(sm, "k", b"2")  # rev 3
    assert second.results[0].kvs == (KeyValue("k", b"2", 1, 3, 2),)
    assert second.results[0].prev == KeyValue("k", b"1", 1, 1, 1)
    gone = delete(sm, "k")  # rev 4
    assert gone.revision == 4
    assert gone.results == (OpResult(kvs=(KeyValue("k", b"2", 1, 3, 2),)),)
    assert sm.get("k") is None
    again = put(sm, "k", b"3")  # rev 5: a new life, version restarts
    assert again.results[0].prev is None
    assert sm.get("k") == KeyValue("k", b"3", 5, 5, 1)
    assert len(sm) == 2


def test_other_keys_keep_their_revisions() -> None:
    sm = SystemStateMachine()
    put(sm, "a")
    put(sm, "b")
    put(sm, "b")
    assert sm.get("a") == KeyValue("a", b"v", 1, 1, 1)
    assert sm.get("b") == KeyValue("b", b"v", 2, 3, 2)


# --- compare-and-swap -----------------------------------------------------


def _cas_fixture() -> SystemStateMachine:
    """k: value b"m", create_revision 2, mod_revision 4, version 2."""
    sm = SystemStateMachine()
    put(sm, "x")  # 1
    put(sm, "k", b"m")  # 2
    put(sm, "x")  # 3
    put(sm, "k", b"m")  # 4
    assert sm.get("k") == KeyValue("k", b"m", 2, 4, 2)
    return sm


def _run_compare(sm: SystemStateMachine, compare: Compare) -> bool:
    result = sm.apply(
        Txn(
            compares=(compare,),
            success=(PutOp("branch", b"success"),),
            failure=(PutOp("branch", b"failure"),),
        )
    )
    branch = sm.get("branch")
    assert branch is not None
    assert branch.value == (b"success" if result.succeeded else b"failure")
    return result.succeeded


# (target, actual value of key "k" in the fixture)
_NUMERIC = [(VERSION, 2), (CREATE, 2), (MOD, 4)]


@pytest.mark.parametrize(("target", "actual"), _NUMERIC, ids=lambda v: str(v))
@pytest.mark.parametrize(
    ("op", "delta", "expected"),
    [
        # operand = actual + delta
        (EQ, 0, True),
        (EQ, -1, False),
        (EQ, 1, False),
        (NE, 0, False),
        (NE, -1, True),
        (NE, 1, True),
        (GT, -1, True),  # actual > actual-1
        (GT, 0, False),
        (GT, 1, False),
        (LT, 1, True),  # actual < actual+1
        (LT, 0, False),
        (LT, -1, False),
    ],
)
def test_numeric_compare_on_present_key(
    target: CompareTarget, actual: int, op: CompareOp, delta: int, expected: bool
) -> None:
    sm = _cas_fixture()
    assert _run_compare(sm, Compare("k", target, op, number=actual + delta)) is expected


@pytest.mark.parametrize(
    ("op", "operand", "expected"),
    [
        (EQ, b"m", True),
        (EQ, b"l", False),
        (EQ, b"", False),
        (NE, b"m", False),
        (NE, b"n", True),
        (GT, b"l", True),  # b"m" > b"l"
        (GT, b"m", False),
        (GT, b"mm", False),  # a longer string is greater
        (LT, b"n", True),
        (LT, b"mm", True),
        (LT, b"m", False),
        (LT, b"", False),
    ],
)
def test_value_compare_on_present_key(op: CompareOp, operand: bytes, expected: bool) -> None:
    sm = _cas_fixture()
    assert _run_compare(sm, Compare("k", VALUE, op, value=operand)) is expected


@pytest.mark.parametrize("target", [VERSION, CREATE, MOD], ids=str)
@pytest.mark.parametrize(
    ("op", "operand", "expected"),
    [
        (EQ, 0, True),
        (EQ, 1, False),
        (NE, 0, False),
        (NE, 1, True),
        (GT, -1, True),
        (GT, 0, False),
        (LT, 1, True),
        (LT, 0, False),
    ],
)
def test_numeric_compare_on_absent_key_sees_zero(
    target: CompareTarget, op: CompareOp, operand: int, expected: bool
) -> None:
    sm = _cas_fixture()
    assert _run_compare(sm, Compare("absent", target, op, number=operand)) is expected


@pytest.mark.parametrize("op", list(CompareOp), ids=str)
@pytest.mark.parametrize("operand", [b"", b"m", b"\xff" * 8], ids=["empty", "m", "high"])
def test_value_compare_on_absent_key_is_always_false(op: CompareOp, operand: bytes) -> None:
    sm = _cas_fixture()
    assert _run_compare(sm, Compare("absent", VALUE, op, value=operand)) is False


def test_value_compare_on_a_deleted_key_is_false() -> None:
    sm = _cas_fixture()
    delete(sm, "k")
    assert _run_compare(sm, Compare("k", VALUE, NE, value=b"anything")) is False
    assert _run_compare(sm, Compare("k", MOD, EQ, number=0)) is True


def test_compares_are_anded_and_empty_compares_succeed() -> None:
    sm = _cas_fixture()
    ok = Compare("k", VERSION, EQ, 2)
    bad = Compare("k", VALUE, EQ, value=b"not-m")
    assert sm.apply(Txn(compares=(ok, ok))).succeeded
    assert not sm.apply(Txn(compares=(ok, bad))).succeeded
    assert not sm.apply(Txn(compares=(bad, ok))).succeeded
    assert sm.apply(Txn()).succeeded


def test_failure_branch_runs_only_on_failure_and_its_changes_count() -> None:
    sm = _cas_fixture()
    result = sm.apply(
        Txn(
            compares=(Compare("k", MOD, EQ, 3),),  # stale: mod is 4
            success=(PutOp("k", b"new"),),
            failure=(GetOp("k"), PutOp("lost", b"1")),
        )
    )
    assert not result.succeeded
    assert result.revision == 5 == sm.revision
    assert result.results[0] == OpResult(kvs=(KeyValue("k", b"m", 2, 4, 2),))
    assert result.results[1].kvs == (KeyValue("lost", b"1", 5, 5, 1),)
    k = sm.get("k")
    assert k is not None and k.value == b"m"


def test_compare_and_swap_on_mod_revision_lets_exactly_one_writer_win() -> None:
    sm = SystemStateMachine()
    put(sm, "lock", b"free")
    seen = sm.get("lock")
    assert seen is not None

    def attempt(owner: bytes) -> CommandResult:
        return sm.apply(
            Txn(
                compares=(Compare("lock", MOD, EQ, seen.mod_revision),),
                success=(PutOp("lock", owner),),
                failure=(GetOp("lock"),),
            )
        )

    first, second = attempt(b"alice"), attempt(b"bob")
    assert first.succeeded and not second.succeeded
    assert second.results[0].kvs[0].value == b"alice"
    assert second.revision == first.revision == 2


def test_create_if_absent_with_create_revision_zero() -> None:
    sm = SystemStateMachine()
    create = Txn(compares=(Compare("k", CREATE, EQ, 0),), success=(PutOp("k", b"first"),))
    assert sm.apply(create).succeeded
    assert not sm.apply(Txn(compares=create.compares, success=(PutOp("k", b"second"),))).succeeded
    k = sm.get("k")
    assert k is not None and k.value == b"first"


def test_ops_inside_a_txn_see_earlier_ops_of_the_same_txn() -> None:
    sm = SystemStateMachine()
    result = sm.apply(Txn(success=(PutOp("k", b"1"), GetOp("k"), DeleteOp("k"), GetOp("k"))))
    assert result.results[1].kvs == (KeyValue("k", b"1", 1, 1, 1),)
    assert result.results[2].kvs == (KeyValue("k", b"1", 1, 1, 1),)
    assert result.results[3] == OpResult()
    assert sm.get("k") is None and sm.revision == 1


# --- prefix delete and range ----------------------------------------------


def _filled(keys: list[str]) -> SystemStateMachine:
    sm = SystemStateMachine()
    for key in keys:
        put(sm, key, key.encode())
    return sm


def test_prefix_delete_removes_exactly_the_prefix_in_one_revision() -> None:
    sm = _filled(["a/2", "b", "a", "ab", "a/1", "a/1/x"])
    result = delete(sm, "a/", prefix=True)
    assert result.revision == 7 == sm.revision
    assert keys_of(result.results[0].kvs) == ["a/1", "a/1/x", "a/2"]
    assert keys_of(sm.range("")[0]) == ["a", "ab", "b"]
    events = sm.events_since(7, "a/", prefix=True)
    assert [(e.type, e.kv.key, e.prev_kv.value if e.prev_kv else None) for e in events] == [
        (EventType.DELETE, "a/1", b"a/1"),
        (EventType.DELETE, "a/1/x", b"a/1/x"),
        (EventType.DELETE, "a/2", b"a/2"),
    ]


def test_non_prefix_delete_does_not_touch_longer_keys() -> None:
    sm = _filled(["a", "ab"])
    assert keys_of(delete(sm, "a").results[0].kvs) == ["a"]
    assert keys_of(sm.range("")[0]) == ["ab"]


def test_prefix_delete_with_empty_prefix_removes_everything() -> None:
    sm = _filled(["x", "y", "日本"])
    result = delete(sm, "", prefix=True)
    assert result.revision == 4
    assert len(sm) == 0


def test_range_is_sorted_counts_all_and_respects_prefix_boundaries() -> None:
    sm = _filled(["app/3", "apple", "app/1", "ap", "app", "app/2", "b"])
    kvs, more, count = sm.range("app/")
    assert keys_of(kvs) == ["app/1", "app/2", "app/3"]
    assert (more, count) == (False, 3)
    assert keys_of(sm.range("app")[0]) == ["app", "app/1", "app/2", "app/3", "apple"]
    assert sm.range("zzz") == ([], False, 0)
    assert kvs[0] == KeyValue("app/1", b"app/1", 3, 3, 1)


@pytest.mark.parametrize(
    ("limit", "expected_keys", "more"),
    [
        (0, ["p/a", "p/b", "p/c", "p/d"], False),  # 0 = no limit
        (1, ["p/a"], True),
        (3, ["p/a", "p/b", "p/c"], True),
        (4, ["p/a", "p/b", "p/c", "p/d"], False),  # exactly the limit: nothing more
        (10, ["p/a", "p/b", "p/c", "p/d"], False),
    ],
)
def test_range_limit(limit: int, expected_keys: list[str], more: bool) -> None:
    sm = _filled(["p/d", "p/b", "q", "p/a", "p/c"])
    kvs, got_more, count = sm.range("p/", limit=limit)
    assert (keys_of(kvs), got_more, count) == (expected_keys, more, 4)


@pytest.mark.parametrize(
    ("start_after", "limit", "expected_keys", "more"),
    [
        ("p/a", 0, ["p/b", "p/c", "p/d"], False),
        ("p/b", 1, ["p/c"], True),
        ("p/bb", 0, ["p/c", "p/d"], False),  # not a stored key: still positions correctly
        ("p/d", 0, [], False),
        ("a", 2, ["p/a", "p/b"], True),  # before the prefix range
        ("z", 0, [], False),  # after it
    ],
)
def test_range_start_after(
    start_after: str, limit: int, expected_keys: list[str], more: bool
) -> None:
    sm = _filled(["p/d", "p/b", "q", "p/a", "p/c"])
    kvs, got_more, count = sm.range("p/", limit=limit, start_after=start_after)
    assert (keys_of(kvs), got_more) == (expected_keys, more)
    assert count == 4  # total, regardless of paging


UNICODE_KEYS = ["z", "é", "日本/1", "日本/2", "日", "a\U0001f600", "a", "\x7f", "ÿ", "Ā", "\ud7ff"]


def test_range_orders_unicode_keys_by_utf8_bytes() -> None:
    sm = _filled(UNICODE_KEYS)
    got = keys_of(sm.range("")[0])
    assert got == sorted(got, key=lambda k: k.encode("utf-8"))
    assert keys_of(sm.range("日")[0]) == ["日", "日本/1", "日本/2"]
    assert keys_of(sm.range("日本/")[0]) == ["日本/1", "日本/2"]
    assert keys_of(sm.range("a")[0]) == ["a", "a\U0001f600"]


def test_range_paging_visits_every_key_once_in_order() -> None:
    keys = [f"k/{i:03d}" for i in range(23)] + ["k/é", "k/日", "k/\U0001f600", "other"]
    sm = _filled(keys)
    seen: list[str] = []
    cursor, pages = "", 0
    while True:
        kvs, more, count = sm.range("k/", limit=5, start_after=cursor)
        assert count == 26
        seen += keys_of(kvs)
        pages += 1
        if not more:
            break
        cursor = kvs[-1].key
    assert seen == sorted(k for k in keys if k.startswith("k/"))
    assert pages == 6


def test_empty_prefix_ranges_over_every_key() -> None:
    sm = _filled(["b", "a", "日"])
    kvs, more, count = sm.range("", limit=2)
    assert (keys_of(kvs), more, count) == (["a", "b"], True, 3)


@pytest.mark.parametrize("last", ["\U0010ffff", "\U0010ffff\U0010ffff"])
def test_prefix_ending_in_the_highest_code_point_stays_inside_the_prefix(last: str) -> None:
    prefix = "a" + last
    sm = _filled([prefix, prefix + "x", "a", "a\U0010fffe", "b", "c"])
    assert keys_of(sm.range(prefix)[0]) == [prefix, prefix + "x"]
    delete(sm, prefix, prefix=True)
    assert keys_of(sm.range("")[0]) == ["a", "a\U0010fffe", "b", "c"]


def test_prefix_of_only_the_highest_code_point() -> None:
    top = "\U0010ffff"
    sm = _filled(["a", top, top + "x"])
    assert keys_of(sm.range(top)[0]) == [top, top + "x"]


def test_range_sees_keys_added_and_removed_later() -> None:
    sm = _filled(["b"])
    assert keys_of(sm.range("")[0]) == ["b"]
    put(sm, "a")
    put(sm, "c")
    assert keys_of(sm.range("")[0]) == ["a", "b", "c"]
    delete(sm, "b")
    assert keys_of(sm.range("")[0]) == ["a", "c"]


def test_get_op_in_txn_with_prefix_and_limit() -> None:
    sm = _filled(["p/1", "p/2", "p/3", "q"])
    result = sm.apply(Txn(success=(GetOp("p/", prefix=True, limit=2), GetOp("p/"))))
    assert keys_of(result.results[0].kvs) == ["p/1", "p/2"]
    assert result.results[0].more
    assert result.results[1] == OpResult()  # exact key "p/" does not exist


# --- watch history --------------------------------------------------------


def test_events_for_one_key_carry_prev_kv() -> None:
    sm = SystemStateMachine()
    put(sm, "k", b"1")  # 1
    put(sm, "other", b"x")  # 2
    put(sm, "k", b"2")  # 3
    delete(sm, "k")  # 4
    put(sm, "k", b"3")  # 5
    assert sm.events_since(1, "k") == [
        Event(EventType.PUT, KeyValue("k", b"1", 1, 1, 1), None),
        Event(EventType.PUT, KeyValue("k", b"2", 1, 3, 2), KeyValue("k", b"1", 1, 1, 1)),
        Event(EventType.DELETE, KeyValue("k", b"", 0, 4, 0), KeyValue("k", b"2", 1, 3, 2)),
        Event(EventType.PUT, KeyValue("k", b"3", 5, 5, 1), None),
    ]
    assert [e.kv.mod_revision for e in sm.events_since(4, "k")] == [4, 5]
    assert sm.events_since(6, "k") == []
    assert sm.events_since(1, "k/") == []  # exact key, not a prefix


def test_events_by_prefix() -> None:
    sm = SystemStateMachine()
    for key in ["a/1", "b/1", "a/2", "a", "ab"]:
        put(sm, key)
    delete(sm, "a/1")
    got = [(e.type, e.kv.key) for e in sm.events_since(1, "a/", prefix=True)]
    assert got == [
        (EventType.PUT, "a/1"),
        (EventType.PUT, "a/2"),
        (EventType.DELETE, "a/1"),
    ]
    assert len(sm.events_since(1, "", prefix=True)) == 6
    assert [e.kv.key for e in sm.events_since(3, "a", prefix=True)] == ["a/2", "a", "ab", "a/1"]


def test_no_op_commands_leave_no_events() -> None:
    sm = SystemStateMachine()
    put(sm, "k")
    delete(sm, "absent")
    sm.apply(Barrier())
    sm.apply(Txn(success=(GetOp("k"),)))
    assert len(all_events(sm)) == 1


def test_bounded_history_drops_oldest_revisions_and_raises_compacted() -> None:
    sm = SystemStateMachine(history_limit=3)
    for i in range(3):
        put(sm, "k", str(i).encode())
    assert sm.compact_revision == 0
    assert len(sm.events_since(1, "k")) == 3
    put(sm, "k", b"3")  # 4 events > 3: revision 1 goes
    assert sm.compact_revision == 1
    assert [e.kv.mod_revision for e in sm.events_since(2, "k")] == [2, 3, 4]
    with pytest.raises(CompactedError) as info:
        sm.events_since(1, "k")
    assert info.value.compact_revision == 1
    assert isinstance(info.value, ConsensusError)
    assert "2" in str(info.value)  # tells the watcher where it may resume
    # a watch on an untouched key is also refused: the history it would need is gone
    with pytest.raises(CompactedError):
        sm.events_since(1, "never-written")


def test_history_drops_whole_revisions() -> None:
    sm = SystemStateMachine(history_limit=3)
    sm.apply(Txn(success=(PutOp("a", b"1"), PutOp("b", b"1"))))  # rev 1: 2 events
    put(sm, "c")  # rev 2: 3 events in total
    assert sm.compact_revision == 0
    put(sm, "d")  # rev 3: 4 events; dropping one would do, but rev 1 has two
    assert sm.compact_revision == 1
    assert [(e.kv.key, e.kv.mod_revision) for e in all_events(sm)] == [("c", 2), ("d", 3)]


def test_a_revision_larger_than_the_history_is_dropped_whole() -> None:
    sm = SystemStateMachine(history_limit=2)
    put(sm, "x")
    sm.apply(Txn(success=(PutOp("a", b""), PutOp("b", b""), PutOp("c", b""))))  # rev 2
    assert sm.compact_revision == 2
    assert sm.events_since(3, "", prefix=True) == []
    with pytest.raises(CompactedError):
        sm.events_since(2, "a")
    put(sm, "y")
    assert [e.kv.key for e in sm.events_since(3, "", prefix=True)] == ["y"]


def test_compact_revision_only_rises() -> None:
    sm = SystemStateMachine(history_limit=4)
    last = 0
    for i in range(40):
        if i % 7 == 3:
            delete(sm, "k", prefix=True)
        else:
            sm.apply(Txn(success=tuple(PutOp(f"k{j}", b"") for j in range(i % 3 + 1))))
        assert sm.compact_revision >= last
        assert len(all_events(sm)) <= 4
        last = sm.compact_revision
    assert last > 0


# --- snapshot / restore ---------------------------------------------------


def _busy_machine(history_limit: int = 6) -> SystemStateMachine:
    sm = SystemStateMachine(history_limit=history_limit)
    put(sm, "z", b"\x00\xff")
    put(sm, "日本", "値".encode())
    put(sm, "a", b"1")
    put(sm, "a", b"2")
    sm.apply(Txn(success=(PutOp("p/1", b""), PutOp("p/2", b"x"), DeleteOp("z"))))
    put(sm, "z", b"back")
    delete(sm, "p/", prefix=True)
    put(sm, "b", b"b")
    return sm


def _observe(sm: SystemStateMachine) -> tuple[object, ...]:
    return (
        sm.revision,
        sm.compact_revision,
        len(sm),
        sm.range(""),
        sm.range("a", limit=1),
        [sm.get(k) for k in ["a", "z", "日本", "p/1", "missing"]],
        all_events(sm),
        sorted(sm.items(), key=lambda kv: kv.key),
    )


def test_snapshot_round_trip_is_equal_in_behaviour_and_bytes() -> None:
    original = _busy_machine()
    assert original.compact_revision > 0  # the history bound is part of what is restored
    data = original.snapshot()
    restored = SystemStateMachine(history_limit=6)
    restored.restore(data)
    assert restored.snapshot() == data
    assert _observe(restored) == _observe(original)
    with pytest.raises(CompactedError):
        restored.events_since(original.compact_revision)
    follow_up: list[Command] = [
        Txn(compares=(Compare("a", VERSION, EQ, 2),), success=(PutOp("a", b"3"),)),
        Txn(compares=(Compare("z", CREATE, EQ, 6),), success=(DeleteOp("z"),)),
        Txn(success=(PutOp("p/3", b"x"), GetOp("", prefix=True))),
        Barrier(),
    ]
    for command in follow_up:
        assert restored.apply(command) == original.apply(command)
        assert restored.snapshot() == original.snapshot()
    assert _observe(restored) == _observe(original)


def test_snapshot_bytes_do_not_depend_on_insertion_order() -> None:
    one, two = SystemStateMachine(), SystemStateMachine()
    one.apply(Txn(success=(PutOp("a", b"1"), PutOp("b", b"2"))))
    two.apply(Txn(success=(PutOp("b", b"2"), PutOp("a", b"1"))))
    # same keys and values; the histories differ in order, so compare without them
    for sm in (one, two):
        sm.history_limit = 0
        sm.apply(Txn(success=(PutOp("c", b""),)))
    assert one.snapshot() == two.snapshot()


def test_restore_replaces_existing_state() -> None:
    source = SystemStateMachine()
    put(source, "only")
    target = _busy_machine()
    target.restore(source.snapshot())
    assert keys_of(target.range("")[0]) == ["only"]
    assert (target.revision, target.compact_revision) == (1, 0)
    assert target.snapshot() == source.snapshot()


def test_restore_of_an_empty_machine() -> None:
    target = _busy_machine()
    target.restore(SystemStateMachine().snapshot())
    assert _observe(target) == _observe(SystemStateMachine())


def _snapshot_fields() -> list[Any]:
    """A real snapshot, decoded, for the garbage cases to break one field at a time."""
    fields: list[Any] = msgpack.unpackb(_busy_machine().snapshot(), raw=False)
    return fields


def _broken_snapshot(edit: Callable[[list[Any]], object]) -> bytes:
    fields = _snapshot_fields()
    replaced = edit(fields)
    packed: bytes = msgpack.packb(fields if replaced is None else replaced, use_bin_type=True)
    return packed


def _set(path: tuple[int, ...], value: object) -> Callable[[list[Any]], None]:
    def edit(fields: list[Any]) -> None:
        target: Any = fields
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return edit


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xc1", id="reserved-byte"),
        pytest.param(b"not msgpack at all", id="text"),
        pytest.param(msgpack.packb(5), id="not-a-list"),
        pytest.param(_broken_snapshot(lambda f: f[:3]), id="too-short"),
        pytest.param(_broken_snapshot(lambda f: [*f, 0]), id="too-long"),
        pytest.param(_broken_snapshot(_set((0,), SNAPSHOT_FORMAT + 1)), id="newer-format"),
        pytest.param(_broken_snapshot(_set((3,), [[1]])), id="truncated-kv"),
        pytest.param(_broken_snapshot(_set((3,), 5)), id="kvs-not-a-list"),
        pytest.param(_broken_snapshot(_set((1,), "x")), id="revision-not-int"),
        pytest.param(_broken_snapshot(_set((2,), None)), id="compact-not-int"),
        pytest.param(_broken_snapshot(_set((4, 0, 1), 7)), id="bad-event-type"),
        pytest.param(_broken_snapshot(_set((4, 0, 2), ["k"])), id="truncated-event-kv"),
    ],
)
def test_restore_of_garbage_raises_snapshot_error_and_changes_nothing(data: bytes) -> None:
    sm = _busy_machine()
    before = sm.snapshot()
    with pytest.raises(SnapshotError):
        sm.restore(data)
    assert sm.snapshot() == before
    assert sm.get("a") == KeyValue("a", b"2", 3, 4, 2)


def test_truncated_snapshot_is_rejected() -> None:
    data = _busy_machine().snapshot()
    for cut in (1, len(data) // 2, len(data) - 1):
        with pytest.raises(SnapshotError):
            SystemStateMachine().restore(data[:cut])


# --- command codec --------------------------------------------------------

ROUND_TRIP_COMMANDS: list[Command] = [
    Barrier(),
    Txn(),
    Txn(success=(PutOp("k", b""),)),
    Txn(success=(PutOp("日本/\U0001f600", bytes(range(256))),)),
    Txn(success=(DeleteOp("k"), DeleteOp("p/", prefix=True))),
    Txn(failure=(GetOp("k"), GetOp("p/", prefix=True, limit=7))),
    Txn(
        compares=tuple(
            Compare(f"c{t}{o}", t, o, number=t * 10 + o, value=bytes([t, o]))
            for t in CompareTarget
            for o in CompareOp
        ),
        success=(PutOp("a", b"1"), DeleteOp("b", prefix=True), GetOp("c")),
        failure=(GetOp("a", prefix=True),),
    ),
    Txn(compares=(Compare("big", MOD, GT, number=2**62),)),
    Txn(compares=(Compare("neg", VERSION, LT, number=-1),)),
]


@pytest.mark.parametrize("command", ROUND_TRIP_COMMANDS, ids=range(len(ROUND_TRIP_COMMANDS)))
def test_command_round_trip(command: Command) -> None:
    data = encode_command(command)
    decoded = decode_command(data)
    assert decoded == command
    assert type(decoded) is type(command)
    assert encode_command(decoded) == data


def test_decoded_enums_are_enums() -> None:
    decoded = decode_command(encode_command(ROUND_TRIP_COMMANDS[6]))
    assert isinstance(decoded, Txn)
    assert all(
        type(c.target) is CompareTarget and type(c.op) is CompareOp for c in decoded.compares
    )


# A real encoded transaction, decoded: [format, tag, [compares, success, failure, ...]].
_VALID_TXN = Txn(
    compares=(Compare("k", VERSION, EQ, 1, b""),),
    success=(PutOp("k", b"v"), GetOp("p/", True, 3)),
)


def _broken_command(edit: Callable[[list[Any]], object]) -> bytes:
    fields: list[Any] = msgpack.unpackb(encode_command(_VALID_TXN), raw=False)
    replaced = edit(fields)
    packed: bytes = msgpack.packb(fields if replaced is None else replaced, use_bin_type=True)
    return packed


@pytest.mark.parametrize(
    ("data", "words"),
    [
        pytest.param(b"", "undecodable", id="empty"),
        pytest.param(b"\xc1\xc1", "undecodable", id="garbage"),
        pytest.param(_broken_command(lambda f: f[:2]), "undecodable", id="two-fields"),
        pytest.param(msgpack.packb(7), "undecodable", id="not-a-list"),
        pytest.param(
            _broken_command(_set((0,), COMMAND_FORMAT + 1)),
            f"format {COMMAND_FORMAT + 1}",
            id="newer-version",
        ),
        pytest.param(
            _broken_command(_set((0,), COMMAND_FORMAT - 1)),
            f"format {COMMAND_FORMAT - 1}",
            id="older-version",
        ),
        pytest.param(_broken_command(_set((1,), 99)), "tag 99", id="unknown-tag"),
        pytest.param(_broken_command(_set((2,), None)), "malformed", id="txn-without-body"),
        pytest.param(_broken_command(_set((2,), [[], []])), "malformed", id="txn-body-short"),
        pytest.param(_broken_command(_set((2, 1, 0, 0), 9)), "kind 9", id="bad-op"),
        pytest.param(_broken_command(_set((2, 1, 0), [])), "malformed", id="empty-op"),
        pytest.param(_broken_command(_set((2, 1, 0), [0, "k"])), "malformed", id="short-put"),
        pytest.param(_broken_command(_set((2, 1, 0, 1), b"k")), "string", id="bytes-key"),
        pytest.param(_broken_command(_set((2, 1, 0, 2), "v")), "bytes", id="str-value"),
        pytest.param(_broken_command(_set((2, 1, 1, 3), True)), "integer", id="bool-limit"),
        pytest.param(_broken_command(_set((2, 0, 0, 1), 9)), "malformed", id="bad-target"),
        pytest.param(_broken_command(_set((2, 0, 0, 2), 9)), "malformed", id="bad-op-code"),
        pytest.param(
            _broken_command(_set((2, 0, 0), ["k", 0, 0, 1])), "malformed", id="short-compare"
        ),
        pytest.param(_broken_command(_set((2, 0, 0, 3), "1")), "integer", id="str-number"),
        pytest.param(_broken_command(_set((2, 0, 0, 4), "v")), "bytes", id="str-compare-value"),
    ],
)
def test_decode_rejects_garbage_with_command_error(data: bytes, words: str) -> None:
    with pytest.raises(CommandError) as info:
        decode_command(data)
    assert words in str(info.value)
    assert isinstance(info.value, ConsensusError)


def test_decode_rejects_every_truncation_of_a_real_command() -> None:
    data = encode_command(ROUND_TRIP_COMMANDS[6])
    for cut in range(len(data)):
        with pytest.raises(CommandError):
            decode_command(data[:cut])


# --- batch entries ----------------------------------------------------------


def test_a_batch_entry_decodes_to_its_commands_in_order() -> None:
    entry = decode_entry(encode_batch([encode_command(c) for c in ROUND_TRIP_COMMANDS]))
    assert entry == Batch(tuple(ROUND_TRIP_COMMANDS))
    # A plain command is still a plain command.
    assert decode_entry(encode_command(ROUND_TRIP_COMMANDS[6])) == ROUND_TRIP_COMMANDS[6]


def test_a_batch_is_exactly_the_msgpack_list_of_its_commands() -> None:
    payloads = [encode_command(c) for c in ROUND_TRIP_COMMANDS[:20]]
    raw = msgpack.unpackb(encode_batch(payloads), raw=False)
    assert raw[:2] == [COMMAND_FORMAT, 3]
    assert raw[2] == [msgpack.unpackb(p, raw=False) for p in payloads]


def test_a_malformed_command_in_a_batch_fails_alone() -> None:
    good = encode_command(_VALID_TXN)
    bad_tag = _broken_command(_set((1,), 99))
    bad_op = _broken_command(_set((2, 1, 0, 0), 9))
    entry = decode_entry(encode_batch([good, bad_tag, msgpack.packb(7), bad_op, good]))
    assert isinstance(entry, Batch)
    first, tag_error, shape_error, op_error, last = entry.commands
    assert first == last == _VALID_TXN
    assert isinstance(tag_error, CommandError) and "tag 99" in str(tag_error)
    assert isinstance(shape_error, CommandError) and "batch" in str(shape_error)
    assert isinstance(op_error, CommandError) and "kind 9" in str(op_error)


def test_a_batch_is_not_a_command_and_a_broken_batch_is_refused() -> None:
    batch = encode_batch([encode_command(_VALID_TXN)])
    with pytest.raises(CommandError, match="tag 3"):
        decode_command(batch)
    with pytest.raises(CommandError, match="malformed batch"):
        decode_entry(msgpack.packb([COMMAND_FORMAT, 3, 5]))
    for cut in range(len(batch)):
        with pytest.raises(CommandError):
            decode_entry(batch[:cut])


# --- model test -----------------------------------------------------------

KEYS = ["a", "a/1", "a/2", "ab", "b", "é", "日"]
PREFIXES = ["", "a", "a/", "b", "日", "x"]
VALUES = [b"", b"0", b"1", b"\xff"]


@dataclass
class Model:
    """The oracle: a plain dict and a revision counter, no indexes, no history bound."""

    revision: int = 0
    data: dict[str, tuple[bytes, int, int, int]] = field(default_factory=dict)
    events: list[tuple[int, Event]] = field(default_factory=list)

    def kv(self, key: str) -> KeyValue | None:
        if key not in self.data:
            return None
        return KeyValue(key, *self.data[key])

    def compare(self, c: Compare) -> bool:
        kv = self.kv(c.key)
        if c.target is CompareTarget.VALUE:
            if kv is None:
                return False
            actual: int | bytes = kv.value
            operand: int | bytes = c.value
        else:
            actual = 0 if kv is None else kv.version
            if kv is not None and c.target is CompareTarget.CREATE:
                actual = kv.create_revision
            if kv is not None and c.target is CompareTarget.MOD:
                actual = kv.mod_revision
            operand = c.number
        return {
            CompareOp.EQUAL: actual == operand,
            CompareOp.NOT_EQUAL: actual != operand,
            CompareOp.GREATER: actual > operand,  # type: ignore[operator]
            CompareOp.LESS: actual < operand,  # type: ignore[operator]
        }[c.op]

    def apply(self, command: Command) -> CommandResult:
        if isinstance(command, Barrier):
            return CommandResult(self.revision)
        ok = all(self.compare(c) for c in command.compares)
        rev = self.revision + 1
        changed = False
        results = []
        for op in command.success if ok else command.failure:
            if isinstance(op, PutOp):
                prev = self.kv(op.key)
                if prev is None:
                    self.data[op.key] = (op.value, rev, rev, 1)
                else:
                    self.data[op.key] = (op.value, prev.create_revision, rev, prev.version + 1)
                new = self.kv(op.key)
                assert new is not None
                self.events.append((rev, Event(EventType.PUT, new, prev)))
                results.append(OpResult(kvs=(new,), prev=prev))
                changed = True
            elif isinstance(op, DeleteOp):
                doomed = sorted(
                    k for k in self.data if (k.startswith(op.key) if op.prefix else k == op.key)
                )
                gone = []
                for k in doomed:
                    prev = self.kv(k)
                    assert prev is not None
                    del self.data[k]
                    gone.append(prev)
                    tomb = KeyValue(k, b"", 0, rev, 0)
                    self.events.append((rev, Event(EventType.DELETE, tomb, prev)))
                changed = changed or bool(gone)
                results.append(OpResult(kvs=tuple(gone)))
            else:
                if op.prefix:
                    found = sorted(k for k in self.data if k.startswith(op.key))
                    limited = found[: op.limit] if op.limit else found
                    kvs = tuple(self.kv(k) for k in limited)
                    more = len(limited) < len(found)
                    results.append(OpResult(kvs=kvs, more=more))  # type: ignore[arg-type]
                else:
                    kv = self.kv(op.key)
                    results.append(OpResult(kvs=(kv,) if kv else ()))
        if changed:
            self.revision = rev
        return CommandResult(self.revision, ok, tuple(results))


keys = st.sampled_from(KEYS)
values = st.sampled_from(VALUES)
put_ops = st.builds(PutOp, keys, values)
delete_ops = st.one_of(
    st.builds(DeleteOp, keys), st.builds(DeleteOp, st.sampled_from(PREFIXES), st.just(True))
)
get_ops = st.one_of(
    st.builds(GetOp, keys),
    st.builds(GetOp, st.sampled_from(PREFIXES), st.just(True), st.integers(0, 3)),
)
txn_ops = st.one_of(put_ops, delete_ops, get_ops)
compares = st.builds(
    Compare,
    keys,
    st.sampled_from(list(CompareTarget)),
    st.sampled_from(list(CompareOp)),
    st.integers(0, 6),
    values,
)
txns = st.builds(
    Txn,
    st.lists(compares, max_size=2).map(tuple),
    st.lists(txn_ops, max_size=4).map(tuple),
    st.lists(txn_ops, max_size=3).map(tuple),
)
commands: st.SearchStrategy[Command] = st.one_of(
    put_ops.map(lambda op: Txn(success=(op,))),
    delete_ops.map(lambda op: Txn(success=(op,))),
    txns,
    st.just(Barrier()),
)


def _check_against_model(sm: SystemStateMachine, model: Model, limit: int) -> None:
    assert sm.revision == model.revision
    expected = sorted((model.kv(k) for k in model.data), key=lambda kv: kv.key.encode())  # type: ignore[union-attr]
    assert sm.range("") == (expected, False, len(expected))
    for key in KEYS:
        assert sm.get(key) == model.kv(key)
    compact = sm.compact_revision
    kept = [e for rev, e in model.events if rev > compact]
    assert all_events(sm) == kept
    assert len(kept) <= limit
    if compact:
        # dropping was needed: with revision `compact` the history would not fit
        assert sum(1 for rev, _ in model.events if rev >= compact) > limit
        with pytest.raises(CompactedError):
            sm.events_since(compact)


@settings(derandomize=True, deadline=None, max_examples=300)
@given(
    steps=st.lists(commands, max_size=30),
    restore_at=st.integers(0, 30),
    limit=st.sampled_from([3, 8, 1000]),
)
def test_state_machine_agrees_with_a_dict_model(
    steps: list[Command], restore_at: int, limit: int
) -> None:
    sm = SystemStateMachine(history_limit=limit)
    model = Model()
    for i, command in enumerate(steps):
        if i == restore_at:
            data = sm.snapshot()
            sm = SystemStateMachine(history_limit=limit)
            sm.restore(data)
            assert sm.snapshot() == data
        assert decode_command(encode_command(command)) == command
        assert sm.apply(command) == model.apply(command)
        _check_against_model(sm, model, limit)


# --- request ids (exactly-once writes) ----------------------------------------


def _write(key: str, value: bytes, request_id: str) -> Txn:
    return Txn(success=(PutOp(key, value),), request_id=request_id)


def test_a_repeated_request_id_returns_the_first_result_and_changes_nothing() -> None:
    sm = SystemStateMachine()
    first = sm.apply(_write("k", b"1", "req-1"))
    put(sm, "other")
    before = sm.snapshot()
    again = sm.apply(_write("k", b"1", "req-1"))
    assert again == first
    assert again.revision == 1  # the first application's revision, not the current one
    assert sm.snapshot() == before
    k = sm.get("k")
    assert k is not None and k.version == 1


def test_the_replayed_result_is_the_recorded_one_even_for_a_changed_body() -> None:
    sm = SystemStateMachine()
    first = sm.apply(
        Txn(
            compares=(Compare("k", VERSION, EQ, 5),),
            success=(PutOp("k", b"won"),),
            failure=(PutOp("k", b"lost"),),
            request_id="cas-1",
        )
    )
    assert not first.succeeded
    assert sm.apply(_write("k", b"other", "cas-1")) == first
    k = sm.get("k")
    assert k is not None and k.value == b"lost"


def test_distinct_or_empty_request_ids_are_applied_every_time() -> None:
    sm = SystemStateMachine()
    sm.apply(_write("k", b"1", "a"))
    sm.apply(_write("k", b"1", "b"))
    sm.apply(_write("k", b"1", ""))
    sm.apply(_write("k", b"1", ""))
    k = sm.get("k")
    assert k is not None and k.version == 4 and sm.revision == 4


def test_request_ids_survive_snapshot_and_restore() -> None:
    sm = SystemStateMachine()
    first = sm.apply(_write("k", b"1", "req-1"))
    sm.apply(Txn(success=(DeleteOp("k"), GetOp("", prefix=True, limit=1)), request_id="req-2"))
    restored = SystemStateMachine()
    restored.restore(sm.snapshot())
    assert restored.snapshot() == sm.snapshot()
    assert restored.apply(_write("k", b"1", "req-1")) == first
    assert restored.get("k") is None and restored.revision == 2


def test_oldest_request_ids_are_forgotten_beyond_the_limit() -> None:
    sm = SystemStateMachine(dedup_limit=2)
    for rid in ("r1", "r2", "r3"):
        sm.apply(_write(rid, b"", rid))
    assert sm.apply(_write("r3", b"", "r3")).revision == 3  # still remembered
    assert sm.apply(_write("r1", b"", "r1")).revision == 4  # forgotten: applied again


def test_request_id_round_trips_through_the_codec() -> None:
    command = _write("k", b"v", "client-7/42")
    assert decode_command(encode_command(command)) == command


def _dedup_entry(sm_edit: Callable[[list[Any]], None]) -> bytes:
    sm = SystemStateMachine()
    sm.apply(_write("k", b"1", "req-1"))
    fields: list[Any] = msgpack.unpackb(sm.snapshot(), raw=False)
    sm_edit(fields)
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return packed


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(_dedup_entry(_set((5, 0, 0), b"req-1")), id="request-id-not-a-string"),
        pytest.param(_dedup_entry(_set((5, 0, 1, 0), "1")), id="result-revision-not-int"),
        pytest.param(_dedup_entry(_set((5, 0, 1), [1])), id="result-truncated"),
        pytest.param(_dedup_entry(_set((5,), 3)), id="dedup-not-a-list"),
        pytest.param(
            _dedup_entry(lambda fields: fields[5].append(fields[5][0])), id="request-id-twice"
        ),
    ],
)
def test_restore_of_a_malformed_request_id_table_raises_snapshot_error(data: bytes) -> None:
    sm = _busy_machine()
    before = sm.snapshot()
    with pytest.raises(SnapshotError):
        sm.restore(data)
    assert sm.snapshot() == before


def test_streamed_snapshot_equals_the_whole_and_copy_is_independent() -> None:
    sm = SystemStateMachine(history_limit=5)
    for i in range(40):
        sm.apply(Txn(success=(PutOp(f"k{i % 7}", str(i).encode()),), request_id=f"r{i}"))
    whole = sm.snapshot()
    assert b"".join(sm.snapshot_chunks(items_per_chunk=3)) == whole
    copy = sm.copy()
    sm.apply(Txn(success=(PutOp("new", b"x"),)))
    assert copy.snapshot() == whole  # the copy did not see the later write
    restored = SystemStateMachine(history_limit=5)
    restored.restore(whole)
    assert restored.snapshot() == whole


def test_a_kept_result_does_not_store_the_current_value_a_second_time() -> None:
    sm = SystemStateMachine(history_limit=1)  # the history keeps the last revision only
    values = [f"<{i:03d}>".encode() * 40 for i in range(50)]  # none inside another
    firsts = [sm.apply(_write(f"k{i}", v, f"req-{i}")) for i, v in enumerate(values)]
    overwritten = sm.apply(_write("k0", b"newer" * 40, "req-over"))
    data = sm.snapshot()
    # Each value once (the state). k0's first value is no longer current: its kept
    # result holds it in full, and so do the overwrite's kept result and its history
    # event (as the previous value); the newer value is in the state and that event.
    assert all(data.count(v) == 1 for v in values[1:])
    assert data.count(values[0]) == 3 and data.count(b"newer" * 40) == 2
    restored = SystemStateMachine(history_limit=1)
    restored.restore(data)
    assert restored.snapshot() == data
    for i, v in enumerate(values):  # every resend answers exactly as the first time
        assert restored.apply(_write(f"k{i}", v, f"req-{i}")) == firsts[i]
    assert restored.apply(_write("k0", b"newer" * 40, "req-over")) == overwritten
    # The kept result shares the restored state's object instead of a copy of it.
    kept = restored.apply(_write("k7", values[7], "req-7")).results[0].kvs[0]
    assert kept is restored.get("k7")


def test_a_format_2_snapshot_is_still_read_and_an_unknown_format_refused() -> None:
    sm = SystemStateMachine()
    first = sm.apply(_write("k", b"v" * 64, "req-1"))
    fields: list[Any] = msgpack.unpackb(sm.snapshot(), raw=False)
    kept = fields[5][0][1][2][0][0]
    assert kept == ["k"]  # format 3: the current value by its key
    fields[0], fields[5][0][1][2][0][0] = 2, [["k", b"v" * 64, 1, 1, 1]]  # as format 2 wrote it
    old = SystemStateMachine()
    old.restore(msgpack.packb(fields, use_bin_type=True))
    assert old.apply(_write("k", b"v" * 64, "req-1")) == first
    fields[0] = 4
    with pytest.raises(SnapshotError, match="format 4"):
        SystemStateMachine().restore(msgpack.packb(fields, use_bin_type=True))


def test_a_kept_result_naming_a_key_the_state_lacks_is_a_malformed_snapshot() -> None:
    sm = SystemStateMachine()
    sm.apply(_write("k", b"v", "req-1"))
    fields: list[Any] = msgpack.unpackb(sm.snapshot(), raw=False)
    fields[5][0][1][2][0][0] = ["gone"]
    target = _busy_machine()
    before = target.snapshot()
    with pytest.raises(SnapshotError, match="gone"):
        target.restore(msgpack.packb(fields, use_bin_type=True))
    assert target.snapshot() == before


def test_every_kind_of_kept_result_replays_exactly_also_after_a_restore() -> None:
    sm = SystemStateMachine()
    sm.apply(Txn(success=(PutOp("old", b"0"),)))
    when_v1 = Compare("old", CompareTarget.VERSION, CompareOp.EQUAL, 1)
    commands = [
        _write("new", b"1", "put-new"),  # kept as its key-value
        _write("old", b"2", "put-over"),  # kept with the value it replaced
        Txn(compares=(when_v1,), success=(PutOp("c", b"3"),), request_id="cas-won"),
        Txn(
            compares=(when_v1,),
            success=(PutOp("c", b"4"),),
            failure=(PutOp("f", b"5"),),
            request_id="cas-lost",
        ),
        Txn(success=(PutOp("a", b"6"), PutOp("b", b"7")), request_id="two-puts"),
        Txn(success=(GetOp("new"),), request_id="get"),
        Txn(success=(DeleteOp("a"),), request_id="delete"),
        Txn(success=(PutOp("new", b"8"),), request_id="put-again"),
    ]
    firsts = [sm.apply(c) for c in commands]
    restored = SystemStateMachine()
    restored.restore(sm.snapshot())
    assert restored.snapshot() == sm.snapshot()
    for machine in (sm, restored):
        revision = machine.revision
        assert [machine.apply(c) for c in commands] == firsts
        assert machine.revision == revision  # and nothing was applied again


def test_the_request_table_stays_small() -> None:
    # Beside the ids themselves (and the key-values the state holds anyway), a kept
    # lone put costs a table entry, not a result object graph.
    import gc
    import tracemalloc

    ids = [f"req-{i:08d}-0123456789ab" for i in range(20_000)]
    sm = SystemStateMachine()
    commands = [_write(f"k{i}", b"v", rid) for i, rid in enumerate(ids)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for command in commands:
            sm.apply(command)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
        states = sum(sys.getsizeof(kv) + sys.getsizeof(kv.key) for kv in sm.items())
    finally:
        tracemalloc.stop()
    per_write = (grown - states) / len(ids)
    assert per_write < 140, per_write  # an OrderedDict of full results took about 330
