"""Tier ops (node.tiers.ops): a TierUpdateRequest becomes an Op, an Op a delta of the
key's type, a state its API rendering; and everything a request can get wrong."""

from __future__ import annotations

import json
from typing import Any

import pytest

from crdt import EventLog, LWWMap, LWWRegister, ORSet, Timestamp
from node.errors import InvalidArgument
from node.pb import tadpole_pb2 as pb
from node.tiers.ops import MAX_ELEMENTS, Op, apply_op, check_tier_key, op_from_request, render
from node.tiers.population import PopulationLog

T1, T2 = Timestamp(1, 0), Timestamp(2, 0)


def request(**op: Any) -> pb.TierUpdateRequest:
    return pb.TierUpdateRequest(tier="agent", key="k", **op)


# -- requests -> ops ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (request(counter_add=pb.CounterAdd(amount=-3)), Op("counter_add", amount=-3)),
        (
            request(set_add=pb.SetElements(elements=["a", "b"])),
            Op("set_add", elements=("a", "b")),
        ),
        (request(set_remove=pb.SetElements(elements=["a"])), Op("set_remove", elements=("a",))),
        (
            request(register_set=pb.RegisterSet(value_json='{"x": [1, 2]}')),
            Op("register_set", value={"x": [1, 2]}),
        ),
        (
            request(log_append=pb.LogAppend(entry_id="e1", payload_json='"hi"')),
            Op("log_append", value="hi", entry_id="e1"),
        ),
        (
            request(map_set=pb.MapSet(field="f", value_json="7")),
            Op("map_set", field="f", value=7),
        ),
        (
            request(map_set=pb.MapSet(field="f", value_json="not json", remove=True)),
            Op("map_set", field="f", value=None, remove=True),
        ),
    ],
    ids=["counter", "set_add", "set_remove", "register", "log", "map_set", "map_remove"],
)
def test_each_operation_is_decoded(message: pb.TierUpdateRequest, expected: Op) -> None:
    assert op_from_request(message) == expected


def test_a_log_append_without_an_entry_id_gets_a_fresh_one() -> None:
    message = request(log_append=pb.LogAppend(payload_json="1"))
    first, second = op_from_request(message), op_from_request(message)
    assert len(first.entry_id) == 32
    assert first.entry_id != second.entry_id


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (request(), "no operation"),
        (request(counter_add=pb.CounterAdd(amount=0)), "must not be 0"),
        (request(set_add=pb.SetElements()), "at least one element"),
        (
            request(set_remove=pb.SetElements(elements=["e"] * (MAX_ELEMENTS + 1))),
            "the limit is 1000",
        ),
        (request(set_add=pb.SetElements(elements=["a", ""])), "non-empty strings"),
        (request(register_set=pb.RegisterSet(value_json="{")), "value_json is not valid JSON"),
        (request(log_append=pb.LogAppend(payload_json="[")), "payload_json is not valid JSON"),
        (
            request(log_append=pb.LogAppend(entry_id="x" * 129, payload_json="1")),
            "longer than 128",
        ),
        (request(map_set=pb.MapSet(value_json="1")), "field is empty"),
        (request(map_set=pb.MapSet(field="f", value_json="[" * 100_000)), "not valid JSON"),
    ],
    ids=[
        "none",
        "zero",
        "no-elements",
        "too-many",
        "empty-element",
        "register-json",
        "log-json",
        "long-entry-id",
        "no-field",
        "too-deep",
    ],
)
def test_bad_requests_are_refused(message: pb.TierUpdateRequest, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=reason):
        op_from_request(message)


@pytest.mark.parametrize(
    ("tier", "key", "ok"),
    [
        ("population", "worker_journal/w1", True),
        ("population", "worker_journal/", False),
        ("population", "worker_journal", False),
        ("population", "elsewhere/w1", False),
        ("agent", "anything/at/all", True),
        ("agent", "", False),
        ("nosuch", "k", False),
    ],
)
def test_tier_keys(tier: str, key: str, ok: bool) -> None:
    if ok:
        assert check_tier_key(tier, key).name == tier
    else:
        with pytest.raises(InvalidArgument):
            check_tier_key(tier, key)


# -- ops -> deltas -----------------------------------------------------------------


def test_set_add_then_remove_leaves_the_rest() -> None:
    state, delta = apply_op(None, Op("set_add", elements=("a", "b", "c")), "n1", T1)
    assert isinstance(delta, ORSet) and delta.value() == {"a", "b", "c"}
    state, delta = apply_op(state, Op("set_remove", elements=("a", "c")), "n1", T2)
    assert state.value() == {"b"}
    # the delta carries the removals: merged into a replica that saw the adds, it removes
    replica, _ = apply_op(None, Op("set_add", elements=("a", "b", "c")), "n1", T1)
    assert replica.merge(delta).value() == {"b"}


def test_a_register_keeps_the_later_assignment() -> None:
    state, _ = apply_op(None, Op("register_set", value={"v": 1}), "n1", T2)
    older, _ = apply_op(None, Op("register_set", value={"v": 0}), "n2", T1)
    assert isinstance(state, LWWRegister)
    assert state.merge(older).value() == {"v": 1}


@pytest.mark.parametrize(("tier", "kind"), [("population", PopulationLog), ("agent", EventLog)])
def test_log_appends_use_the_tiers_log_type(tier: str, kind: type) -> None:
    op = Op("log_append", value={"n": 1}, entry_id="e1")
    state, delta = apply_op(None, op, "n1", T1, tier=tier)
    assert type(state) is kind and type(delta) is kind
    again, _ = apply_op(state, op, "n1", T1, tier=tier)
    assert again == state  # the entry id deduplicates


def test_map_fields_are_set_and_removed() -> None:
    state, _ = apply_op(None, Op("map_set", field="a", value=1), "n1", T1)
    state, _ = apply_op(state, Op("map_set", field="b", value=[2]), "n1", T1)
    state, _ = apply_op(state, Op("map_set", field="a", remove=True), "n1", T2)
    assert isinstance(state, LWWMap)
    assert state.value() == {"b": [2]}


@pytest.mark.parametrize(
    ("first", "then", "message"),
    [
        (
            Op("counter_add", amount=1),
            Op("set_add", elements=("a",)),
            r"the key holds an? pncounter; set_add applies to an? orset",
        ),
        (
            Op("set_add", elements=("a",)),
            Op("map_set", field="f", value=1),
            r"the key holds an? orset; map_set applies to an? lwwmap",
        ),
        (
            Op("log_append", value=1, entry_id="e"),
            Op("register_set", value=1),
            r"the key holds an? eventlog; register_set applies to an? lwwregister",
        ),
    ],
)
def test_an_op_of_another_type_is_refused_by_name(first: Op, then: Op, message: str) -> None:
    state, _ = apply_op(None, first, "n1", T1)
    with pytest.raises(InvalidArgument, match=message):
        apply_op(state, then, "n1", T2)


def test_a_population_log_refuses_an_agent_log_append_type() -> None:
    state, _ = apply_op(None, Op("log_append", value=1, entry_id="e"), "n1", T1, tier="agent")
    refusal = r"holds an? eventlog; log_append applies to an? population_log"
    with pytest.raises(InvalidArgument, match=refusal):
        apply_op(state, Op("log_append", value=2, entry_id="f"), "n1", T2, tier="population")


# -- rendering ---------------------------------------------------------------------


def test_rendering_names_the_type_and_gives_canonical_json() -> None:
    counter, _ = apply_op(None, Op("counter_add", amount=-2), "n1", T1)
    assert render(counter) == ("pncounter", "-2")
    members, _ = apply_op(None, Op("set_add", elements=("b", "a")), "n1", T1)
    assert render(members) == ("orset", '["a", "b"]')
    fields, _ = apply_op(None, Op("map_set", field="z", value={"b": 1, "a": 2}), "n1", T1)
    assert render(fields) == ("lwwmap", '{"z": {"a": 2, "b": 1}}')


def test_an_event_log_renders_entries_in_hlc_order() -> None:
    state, _ = apply_op(None, Op("log_append", value="late", entry_id="e2"), "n2", T2)
    state, _ = apply_op(state, Op("log_append", value="early", entry_id="e1"), "n1", T1)
    name, text = render(state)
    assert name == "eventlog"
    assert json.loads(text) == [
        {"hlc": [1, 0], "node": "n1", "entry_id": "e1", "payload": "early"},
        {"hlc": [2, 0], "node": "n2", "entry_id": "e2", "payload": "late"},
    ]


def test_a_population_log_renders_entries_and_summaries() -> None:
    state, _ = apply_op(
        None, Op("log_append", value={"a": 1}, entry_id="e1"), "n1", T1, tier="population"
    )
    name, text = render(state)
    assert name == "population_log"
    assert json.loads(text) == {
        "entries": [{"hlc": [1, 0], "node": "n1", "entry_id": "e1", "payload": {"a": 1}}],
        "summaries": [],
    }
