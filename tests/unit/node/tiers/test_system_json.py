"""The system tier as a JSON object (node/tiers/system_json.py): values round-trip,
merge patches plan one guarded transaction, bad patches are refused."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.memory import MemorySystem
from consensus.statemachine import (
    CompareOp,
    CompareTarget,
    DeleteOp,
    Event,
    EventType,
    KeyValue,
    PutOp,
    SystemStateMachine,
    page_events,
)
from node.errors import InvalidArgument
from node.tiers.system_json import (
    MAX_PATCH_KEYS,
    RAW,
    encode_value,
    plan_patch,
    render_value,
    touched_since,
)

JSONS = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.floats(allow_nan=False,
                                                                      allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=4),
    max_leaves=12,
)  # fmt: skip


@given(st.binary(max_size=64))
def test_any_bytes_round_trip_through_the_json_form(raw: bytes) -> None:
    assert encode_value(render_value(raw), "k") == raw or render_value(raw) == json.loads(raw)


@given(JSONS.filter(lambda v: not (isinstance(v, dict) and RAW in v)))
def test_json_values_round_trip(value: object) -> None:
    assert render_value(encode_value(value, "k")) == value


def test_non_json_bytes_are_shown_as_base64_and_stored_back_exactly() -> None:
    raw = b"\xff\x00plain"
    shown = render_value(raw)
    assert shown == {RAW: "/wBwbGFpbg=="}
    assert encode_value(shown, "k") == raw
    assert render_value(b"NaN") == {RAW: "TmFO"}  # not JSON, though Python would parse it


@pytest.mark.parametrize(
    "value",
    [{RAW: "AA==", "x": 1}, {RAW: 5}, {RAW: "not base64!"}, float("nan")],
)
def test_ambiguous_or_unstorable_values_are_refused(value: object) -> None:
    with pytest.raises(InvalidArgument):
        encode_value(value, "k")


def kv(key: str, value: object, mod: int) -> KeyValue:
    return KeyValue(key, json.dumps(value).encode(), 1, mod, 1)


def test_a_patch_becomes_one_guarded_transaction() -> None:
    current = {"a": kv("a", {"x": 1, "y": 2}, 7), "b": kv("b", "old", 3), "c": None, "d": None}
    txn, values = plan_patch({"a": {"y": None, "z": 3}, "b": None, "c": [1], "d": None},
                             current, 1 << 20)  # fmt: skip
    assert values == {"a": {"x": 1, "z": 3}, "b": None, "c": [1], "d": None}
    guards = {(c.key, c.target, c.op, c.number) for c in txn.compares}
    assert guards == {
        ("a", CompareTarget.MOD, CompareOp.EQUAL, 7),
        ("b", CompareTarget.MOD, CompareOp.EQUAL, 3),
        ("c", CompareTarget.VERSION, CompareOp.EQUAL, 0),
        ("d", CompareTarget.VERSION, CompareOp.EQUAL, 0),
    }
    assert set(txn.success) == {
        PutOp("a", b'{"x":1,"z":3}'),
        DeleteOp("b"),
        PutOp("c", b"[1]"),
    }  # deleting the absent "d" needs no operation, only its guard
    assert txn.failure == ()


async def test_the_transaction_applies_only_if_nothing_named_changed() -> None:
    system = MemorySystem()
    sm: SystemStateMachine = system.sm
    await system.txn(plan_patch({"a": 1}, {"a": None}, 100)[0], 1.0)
    seen = {"a": sm.get("a")}
    await system.txn(plan_patch({"a": 2}, {"a": sm.get("a")}, 100)[0], 1.0)  # a writer slips in
    late = await system.txn(plan_patch({"a": 3}, seen, 100)[0], 1.0)
    assert not late.succeeded
    assert render_value(sm.get("a").value) == 2  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "patch",
    [[], {}, "x", {"": 1}, {f"k{i}": 1 for i in range(MAX_PATCH_KEYS + 1)}, {"k": float("inf")}],
)
def test_bad_patches_are_refused(patch: object) -> None:
    with pytest.raises(InvalidArgument):
        plan_patch(patch, {}, 1 << 20)


def test_the_values_of_a_patch_are_bounded_together() -> None:
    with pytest.raises(InvalidArgument, match="limit is 100 bytes"):
        plan_patch({"a": "x" * 60, "b": "y" * 60}, {"a": None, "b": None}, 100)


def test_raw_bytes_are_replaced_not_merged() -> None:
    current = {"a": KeyValue("a", b"\xff", 1, 1, 1)}
    _, values = plan_patch({"a": {"x": 1}}, current, 100)
    assert values == {"a": {"x": 1}}


def test_touched_since_names_the_patched_keys_that_moved() -> None:
    events = [
        Event(EventType.PUT, KeyValue("a", b"1", 5, 5, 1), None),
        Event(EventType.DELETE, KeyValue("b", b"", 0, 6, 0), None),
        Event(EventType.PUT, KeyValue("z", b"1", 6, 6, 1), None),
    ]
    assert touched_since(events, {"b": 1, "a": 2, "c": 3}) == ["a", "b"]


def _events(revisions: list[int]) -> list[Event]:
    return [Event(EventType.PUT, KeyValue(f"k{i}", b"", r, r, 1), None)
            for i, r in enumerate(revisions)]  # fmt: skip


@pytest.mark.parametrize(
    ("revisions", "limit", "kept", "through", "more"),
    [
        ([1, 2, 3], 0, 3, 9, False),
        ([1, 2, 3], 5, 3, 9, False),
        ([1, 2, 3], 3, 3, 9, False),
        ([1, 2, 2, 3], 2, 1, 1, True),  # revision 2 would be split: it waits for the next page
        ([1, 2, 2, 3], 3, 3, 2, True),
        ([4, 4, 4, 5], 2, 3, 4, True),  # one revision larger than the limit is kept whole
        ([4, 4, 4], 2, 3, 9, False),
    ],
)
def test_event_pages_never_split_a_revision(
    revisions: list[int], limit: int, kept: int, through: int, more: bool
) -> None:
    page, upto, cut = page_events(_events(revisions), limit, 9)
    assert len(page) == kept
    assert (upto, cut) == (through, more)
