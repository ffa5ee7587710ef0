"""The agent document (node/tiers/agent.py): schema, RFC 7396 merge patch, CRDT
convergence of concurrent writes, and honest causal tokens."""

from __future__ import annotations

import copy
import math
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt import CodecError, GCounter, LWWMap, ORMap, Timestamp
from node.tiers import agent as ad
from node.tiers.agent import AgentNotFound, AgentState
from node.tiers.validation import InvalidArgument


def uid(n: int) -> str:
    return str(uuid.UUID(int=n, version=4))


AGENT = uid(0xDEADBEEF)
MESH = uid(100)
PEER = uid(200)
KEY = "ab" * 32


class _Delete:
    """Marks a field to remove from the valid document (a stable repr keeps test ids
    identical across processes, as pytest-xdist requires)."""

    def __repr__(self) -> str:
        return "DELETE"


DELETE = _Delete()


def base_doc() -> dict[str, Any]:
    return {
        "identity": {
            "agent_id": AGENT,
            "public_key": KEY,
            "generation": 1,
            "creation_timestamp": 1_700_000_000_123_456_789,
        },
        "performance_state": {
            "current_metrics": {"latency": {"p50": 3, "p99": 12.5}, "ok": True},
            "historical_metrics": "eJwLycgsVgCi4vzcVAUA",
            "rubric_scores": [0.5, 1, 0.25],
            "judgement_snapshot_ref": "judgement_snapshots/js-1",
            "job_allocation_ref": "job_resource_ledger/job-1",
        },
        "knowledge_state": {
            "learned_patterns": "AAECAw==",
            "experience_history": [{"event": "born"}],
            # multiples of 1/8: exact in fixed point and in float32
            "capability_vector": [(i % 16) / 8 for i in range(256)],
        },
        "relationship_state": {
            "mesh_memberships": [MESH],
            "communication_history": [],
            "trust_scores": {PEER: 0.75},
        },
    }


def ts(wall: int, logical: int = 0) -> Timestamp:
    return Timestamp(wall, logical)


def created(node: str = "a", wall: int = 10) -> AgentState:
    state, _ = ad.create(None, base_doc(), node, ts(wall))
    return state


def with_(doc: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node = out
    for p in parents:
        node = node[p]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return out


def vector(**dims: float) -> list[float]:
    v = [(i % 16) / 8 for i in range(256)]
    for name, value in dims.items():
        v[int(name[1:])] = value
    return v


def same_bytes(x: AgentState, y: AgentState) -> None:
    assert x == y
    assert x.to_bytes() == y.to_bytes()


# -- validation -------------------------------------------------------------------------


def test_a_valid_document_round_trips_through_the_crdt() -> None:
    state, delta = ad.create(None, base_doc(), "a", ts(10), key=AGENT)
    assert ad.render(state) == base_doc()
    assert ORMap().apply_delta(delta) == state
    assert ad.exists(state) and ad.agent_id(state) == AGENT
    assert ad.render(ORMap()) == {} and not ad.exists(ORMap()) and ad.agent_id(ORMap()) is None


def test_optional_fields_and_empty_sections_are_kept() -> None:
    doc = base_doc()
    doc["performance_state"] = {}
    doc["relationship_state"] = {"trust_scores": {}}
    doc["knowledge_state"] = {"capability_vector": [0] * 256}
    state, _ = ad.create(None, doc, "a", ts(1))
    rendered = ad.render(state)
    assert rendered["performance_state"] == {}
    assert rendered["relationship_state"] == {"trust_scores": {}}
    assert rendered["knowledge_state"] == {"capability_vector": [0.0] * 256}


BAD_FIELDS: list[tuple[str, object, str]] = [
    ("identity.agent_id", "not-a-uuid", "identity.agent_id: must be a canonical lowercase uuid4"),
    ("identity.agent_id", "a8098c1a-f86e-11da-bd1a-00112444be1e", "identity.agent_id: must be"),
    ("identity.agent_id", AGENT.upper(), "identity.agent_id: must be"),
    ("identity.agent_id", AGENT.replace("-", ""), "identity.agent_id: must be"),
    ("identity.agent_id", 7, "identity.agent_id: must be"),
    ("identity.agent_id", DELETE, "identity.agent_id: field is required"),
    ("identity.public_key", "ab" * 31, "identity.public_key: must be an ed25519 key"),
    ("identity.public_key", "AB" * 32, "identity.public_key: must be an ed25519 key"),
    ("identity.public_key", "zz" * 32, "identity.public_key: must be an ed25519 key"),
    ("identity.public_key", DELETE, "identity.public_key: field is required"),
    ("identity.generation", -1, "identity.generation: must be an integer in 0..2**63-1"),
    ("identity.generation", 1.0, "identity.generation: must be an integer"),
    ("identity.generation", True, "identity.generation: must be an integer"),
    ("identity.generation", "1", "identity.generation: must be an integer"),
    ("identity.creation_timestamp", -5, "identity.creation_timestamp: must be an integer"),
    ("identity.creation_timestamp", 2**63, "identity.creation_timestamp: must be an integer"),
    ("identity.creation_timestamp", 1.7e18, "identity.creation_timestamp: must be an integer"),
    ("identity.name", "x", "identity.name: unknown field"),
    ("performance_state", [], "performance_state: must be an object"),
    ("performance_state.current_metrics", [], "performance_state.current_metrics: must be an obj"),
    ("performance_state.current_metrics", {"x": math.nan}, "performance_state.current_metrics.x:"),
    ("performance_state.current_metrics", {"x": 2**64}, "performance_state.current_metrics.x:"),
    ("performance_state.historical_metrics", "%%", "performance_state.historical_metrics: must"),
    ("performance_state.rubric_scores", "x", "performance_state.rubric_scores: must be a list"),
    ("performance_state.rubric_scores", [1, "a"], "performance_state.rubric_scores[1]: must be"),
    ("performance_state.rubric_scores", [math.inf], "performance_state.rubric_scores[0]: must"),
    ("performance_state.rubric_scores", [True], "performance_state.rubric_scores[0]: must"),
    ("performance_state.judgement_snapshot_ref", 3, "performance_state.judgement_snapshot_ref:"),
    ("performance_state.job_allocation_ref", None, "performance_state.job_allocation_ref: must"),
    ("knowledge_state.capability_vector", [0.0] * 255, "capability_vector: must be a list of exac"),
    ("knowledge_state.capability_vector", [0.0] * 257, "got length 257"),
    ("knowledge_state.capability_vector", {"0": 1}, "knowledge_state.capability_vector: must be"),
    ("knowledge_state.capability_vector", vector(d7="x"), "knowledge_state.capability_vector[7]:"),  # type: ignore[arg-type]
    ("knowledge_state.capability_vector", vector(d9=math.nan), "capability_vector[9]: must be"),
    ("knowledge_state.capability_vector", vector(d0=2.0**33), "capability_vector[0]: must be"),
    ("knowledge_state.capability_vector", DELETE, "capability_vector: field is required"),
    ("knowledge_state.learned_patterns", "not base64!", "knowledge_state.learned_patterns: must"),
    ("knowledge_state.learned_patterns", "é", "knowledge_state.learned_patterns: must be"),
    ("knowledge_state.learned_patterns", 5, "knowledge_state.learned_patterns: must be"),
    ("knowledge_state.experience_history", {}, "knowledge_state.experience_history: must be a l"),
    ("knowledge_state.experience_history", [2**70], "knowledge_state.experience_history[0]:"),
    ("relationship_state.mesh_memberships", "x", "relationship_state.mesh_memberships: must be"),
    ("relationship_state.mesh_memberships", ["m"], "relationship_state.mesh_memberships[0]:"),
    ("relationship_state.mesh_memberships", [MESH, MESH], "mesh_memberships[1]: duplicate"),
    ("relationship_state.communication_history", "x", "relationship_state.communication_histo"),
    ("relationship_state.trust_scores", [], "relationship_state.trust_scores: must be an object"),
    ("relationship_state.trust_scores", {"p": 0.5}, "relationship_state.trust_scores key: must"),
    ("relationship_state.trust_scores", {PEER: 1.5}, f"relationship_state.trust_scores.{PEER}:"),
    ("relationship_state.trust_scores", {PEER: -0.1}, "must be a number in [0, 1]"),
    ("relationship_state.trust_scores", {PEER: True}, "must be a number in [0, 1]"),
    ("relationship_state", DELETE, "relationship_state: section is required"),
    ("extra", {}, "extra: unknown section"),
]


@pytest.mark.parametrize(
    ("path", "value", "message"), BAD_FIELDS, ids=[f"{p}={v!r}"[:60] for p, v, _ in BAD_FIELDS]
)
def test_invalid_documents_are_rejected_naming_the_field(
    path: str, value: object, message: str
) -> None:
    doc = with_(base_doc(), path, value)
    with pytest.raises(InvalidArgument) as info:
        ad.validate_document(doc)
    assert message in str(info.value)
    with pytest.raises(InvalidArgument):
        ad.create(None, doc, "a", ts(1))


def test_non_objects_and_deep_nesting_are_rejected() -> None:
    with pytest.raises(InvalidArgument, match="document: must be a JSON object"):
        ad.validate_document([base_doc()])
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(40):
        node["d"] = {}
        node = node["d"]
    doc = with_(base_doc(), "performance_state.current_metrics", deep)
    with pytest.raises(
        InvalidArgument, match=r"performance_state\.current_metrics\.d.*nested more"
    ):
        ad.validate_document(doc)


def test_the_key_is_the_agent_id() -> None:
    ad.check_agent_key(AGENT)
    with pytest.raises(InvalidArgument, match="key: must be a canonical lowercase uuid4"):
        ad.check_agent_key("agent-1")
    with pytest.raises(InvalidArgument, match=r"is not the document's identity\.agent_id"):
        ad.create(None, base_doc(), "a", ts(1), key=uid(2))


def test_a_key_holding_another_type_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="holds a GCounter, not an agent document"):
        ad.create(GCounter(), base_doc(), "a", ts(1))
    foreign = ORMap().apply_delta(ORMap().update("a", "x", lambda m: m, LWWMap()))
    with pytest.raises(InvalidArgument, match="not an agent document"):
        ad.merge_patch(foreign, {}, "a", ts(1))


# -- RFC 7396 ---------------------------------------------------------------------------

RFC7396_APPENDIX_A: list[tuple[Any, Any, Any]] = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "result"), RFC7396_APPENDIX_A)
def test_rfc7396_appendix_a(target: Any, patch: Any, result: Any) -> None:
    before = copy.deepcopy(target)
    assert ad.apply_merge_patch(target, patch) == result
    assert target == before


def _metrics(doc: dict[str, Any]) -> Any:
    return doc["performance_state"]["current_metrics"]


# (patch, where to look in the rendered document, what it must be there)
SCHEMA_PATCHES: list[tuple[str, dict[str, Any], Any, Any]] = [
    (
        "replace a member",
        {"performance_state": {"judgement_snapshot_ref": "judgement_snapshots/js-2"}},
        lambda d: d["performance_state"]["judgement_snapshot_ref"],
        "judgement_snapshots/js-2",
    ),
    (
        "add a member",
        {"performance_state": {"current_metrics": {"cpu": 0.5}}},
        _metrics,
        {"latency": {"p50": 3, "p99": 12.5}, "ok": True, "cpu": 0.5},
    ),
    (
        "null removes a member",
        {"performance_state": {"job_allocation_ref": None}},
        lambda d: "job_allocation_ref" in d["performance_state"],
        False,
    ),
    (
        "null removes a subtree",
        {"performance_state": {"current_metrics": {"latency": None}}},
        _metrics,
        {"ok": True},
    ),
    (
        "objects merge recursively",
        {"performance_state": {"current_metrics": {"latency": {"p99": 9, "p50": None}}}},
        _metrics,
        {"latency": {"p99": 9}, "ok": True},
    ),
    (
        "arrays replace",
        {"performance_state": {"rubric_scores": [1]}},
        lambda d: d["performance_state"]["rubric_scores"],
        [1],
    ),
    (
        "an array replaces an object",
        {"performance_state": {"current_metrics": {"latency": [1, 2]}}},
        _metrics,
        {"latency": [1, 2], "ok": True},
    ),
    (
        "an object replaces a scalar",
        {"performance_state": {"current_metrics": {"ok": {"since": 5}}}},
        _metrics,
        {"latency": {"p50": 3, "p99": 12.5}, "ok": {"since": 5}},
    ),
    (
        "nulls inside a new object leave it empty",
        {"performance_state": {"current_metrics": {"a": {"bb": {"ccc": None}}}}},
        lambda d: _metrics(d)["a"],
        {"bb": {}},
    ),
    (
        "remove a key of an object of scores",
        {"relationship_state": {"trust_scores": {PEER: None, uid(201): 0}}},
        lambda d: d["relationship_state"]["trust_scores"],
        {uid(201): 0},
    ),
    (
        "empty patch changes nothing",
        {},
        lambda d: d,
        base_doc(),
    ),
    (
        "capability vector replaced whole",
        {"knowledge_state": {"capability_vector": vector(d3=-2.5, d255=100.0)}},
        lambda d: d["knowledge_state"]["capability_vector"],
        vector(d3=-2.5, d255=100.0),
    ),
]


@pytest.mark.parametrize(
    ("patch", "where", "expected"),
    [case[1:] for case in SCHEMA_PATCHES],
    ids=[case[0] for case in SCHEMA_PATCHES],
)
def test_merge_patch_on_the_document(patch: dict[str, Any], where: Any, expected: Any) -> None:
    state = created()
    new, delta = ad.merge_patch(state, patch, "a", ts(20))
    rendered = ad.render(new)
    assert where(rendered) == expected
    assert rendered == ad.apply_merge_patch(ad.render(state), patch)
    assert state.apply_delta(delta) == new


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"identity": None}, "identity: section is required"),
        ({"knowledge_state": None}, "knowledge_state: section is required"),
        ({"knowledge_state": {"capability_vector": None}}, "capability_vector: field is required"),
        ({"knowledge_state": {"capability_vector": [1.0]}}, "capability_vector: must be a list"),
        ({"performance_state": {"rubric_scores": ["x"]}}, "performance_state.rubric_scores[0]"),
        ({"performance_state": "x"}, "performance_state: must be an object"),
        ({"agents": {}}, "agents: unknown section"),
        ([1], "patch: must be a JSON object"),
    ],
)
def test_patches_with_an_invalid_result_are_rejected(patch: Any, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        ad.merge_patch(created(), patch, "a", ts(20))
    assert message in str(info.value)


def test_patching_a_missing_document() -> None:
    with pytest.raises(AgentNotFound):
        ad.merge_patch(None, {}, "a", ts(1))
    with pytest.raises(AgentNotFound):
        ad.capability_add(ORMap(), {0: 1.0}, "a")


# -- identity -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("agent_id", uid(9)), ("public_key", "cd" * 32), ("creation_timestamp", 5)],
)
def test_identity_is_immutable(field: str, value: object) -> None:
    state = created()
    with pytest.raises(InvalidArgument, match=f"identity.{field}: immutable after creation"):
        ad.merge_patch(state, {"identity": {field: value}}, "a", ts(20))
    if field != "agent_id":
        with pytest.raises(InvalidArgument, match=f"identity.{field}: immutable"):
            ad.create(state, with_(base_doc(), f"identity.{field}", value), "a", ts(20))


def test_generation_may_only_grow() -> None:
    state = created()
    with pytest.raises(InvalidArgument, match=r"identity.generation: may only grow \(1 -> 0\)"):
        ad.merge_patch(state, {"identity": {"generation": 0}}, "a", ts(20))
    state, _ = ad.merge_patch(state, {"identity": {"generation": 4}}, "a", ts(20))
    assert ad.render(state)["identity"]["generation"] == 4
    state, _ = ad.merge_patch(state, {"identity": {"generation": 4}}, "a", ts(21))
    assert ad.render(state)["identity"]["generation"] == 4


def test_create_on_an_existing_document() -> None:
    state = created()
    other = with_(base_doc(), "identity.agent_id", uid(9))
    with pytest.raises(InvalidArgument, match=r"identity\.agent_id: the key already holds agent"):
        ad.create(state, other, "a", ts(20))
    replacement = with_(base_doc(), "performance_state", {"rubric_scores": [2]})
    state, _ = ad.create(state, replacement, "a", ts(20))
    assert ad.render(state) == replacement


# -- concurrency ------------------------------------------------------------------------


def fork() -> tuple[AgentState, AgentState]:
    """Replica a created the document; replica b received it."""
    base = created("a", 10)
    return base, ORMap().merge(base)


def converge(a: AgentState, b: AgentState) -> AgentState:
    ab, ba = a.merge(b), b.merge(a)
    same_bytes(ab, ba)
    return ab


def test_concurrent_patches_to_different_fields_both_survive() -> None:
    a, b = fork()
    a, da = ad.merge_patch(a, {"performance_state": {"current_metrics": {"x": 1}}}, "a", ts(20))
    b, db = ad.merge_patch(b, {"performance_state": {"rubric_scores": [9]}}, "b", ts(19))
    merged = converge(a, b)
    same_bytes(merged, a.apply_delta(db))
    same_bytes(merged, b.apply_delta(da))
    doc = ad.render(merged)
    assert _metrics(doc)["x"] == 1 and _metrics(doc)["ok"] is True
    assert doc["performance_state"]["rubric_scores"] == [9]
    assert ad.clock(merged) == {"a": 2, "b": 1}


@pytest.mark.parametrize(
    ("wall_a", "wall_b", "winner"),
    [(30, 25, "from-a"), (25, 30, "from-b"), (30, 30, "from-b")],  # tie: larger node id
)
def test_concurrent_writes_to_one_field_are_last_writer_wins(
    wall_a: int, wall_b: int, winner: str
) -> None:
    a, b = fork()
    a, _ = ad.merge_patch(
        a, {"performance_state": {"job_allocation_ref": "from-a"}}, "a", ts(wall_a)
    )
    b, _ = ad.merge_patch(
        b, {"performance_state": {"job_allocation_ref": "from-b"}}, "b", ts(wall_b)
    )
    assert ad.render(converge(a, b))["performance_state"]["job_allocation_ref"] == winner


def test_concurrent_remove_and_update_of_one_field() -> None:
    a, b = fork()
    a, _ = ad.merge_patch(a, {"performance_state": {"job_allocation_ref": None}}, "a", ts(30))
    b, _ = ad.merge_patch(b, {"performance_state": {"job_allocation_ref": "j"}}, "b", ts(29))
    assert "job_allocation_ref" not in ad.render(converge(a, b))["performance_state"]


def test_concurrent_capability_edits_of_different_dims_commute() -> None:
    a, b = fork()
    a, _ = ad.capability_set(a, {0: 1.5}, "a")
    patch = {"knowledge_state": {"capability_vector": vector(d1=-3.0)}}
    b, db = ad.merge_patch(b, patch, "b", ts(11))
    merged = converge(a, b)
    same_bytes(merged, a.apply_delta(db))
    assert ad.render(merged)["knowledge_state"]["capability_vector"] == vector(d0=1.5, d1=-3.0)


def test_concurrent_sets_of_one_dimension_add_their_adjustments() -> None:
    a, b = fork()  # dim 0 starts at 0.0
    a, _ = ad.capability_set(a, {0: 1.0}, "a")
    b, _ = ad.capability_set(b, {0: 2.0}, "b")
    assert ad.render(converge(a, b))["knowledge_state"]["capability_vector"][0] == 3.0


def test_capability_add_commutes_and_counts_every_add() -> None:
    a, b = fork()  # dim 3 starts at 0.375
    a, _ = ad.capability_add(a, {3: 0.25, 4: -1.0}, "a")
    b, db = ad.capability_add(b, {3: 0.5}, "b")
    b, db2 = ad.capability_add(b, {3: 0.5}, "b")
    merged = converge(a, b)
    same_bytes(merged, a.apply_delta(db2).apply_delta(db))
    vec = ad.render(merged)["knowledge_state"]["capability_vector"]
    assert vec[3] == 0.375 + 0.25 + 1.0 and vec[4] == 0.5 - 1.0
    assert ad.clock(merged) == {"a": 2, "b": 2}


@pytest.mark.parametrize(
    "bad",
    [{}, {256: 1.0}, {-1: 1.0}, {True: 1.0}, {"3": 1.0}, {0: math.inf}, {0: 2.0**40}, {0: "1"}],
)
def test_bad_capability_edits(bad: Any) -> None:
    with pytest.raises(InvalidArgument, match="amounts"):
        ad.capability_add(created(), bad, "a")


def test_concurrent_generation_bumps_keep_the_larger() -> None:
    a, b = fork()
    a, _ = ad.merge_patch(a, {"identity": {"generation": 3}}, "a", ts(20))
    b, _ = ad.merge_patch(b, {"identity": {"generation": 2}}, "b", ts(30))  # newer, smaller
    assert ad.render(converge(a, b))["identity"]["generation"] == 3


@pytest.mark.parametrize(("wall_leaf", "wall_tree"), [(30, 20), (20, 30)])
def test_leaf_versus_object_races_are_decided_by_the_newest_write(
    wall_leaf: int, wall_tree: int
) -> None:
    a, b = fork()
    a, _ = ad.merge_patch(
        a, {"performance_state": {"current_metrics": {"x": 5}}}, "a", ts(wall_leaf)
    )
    b, _ = ad.merge_patch(
        b, {"performance_state": {"current_metrics": {"x": {"y": 1}}}}, "b", ts(wall_tree)
    )
    merged = converge(a, b)
    x = _metrics(ad.render(merged))["x"]
    assert x == (5 if wall_leaf > wall_tree else {"y": 1})
    ad.validate_document(ad.render(merged))
    # a later write sees the hidden leaves too: nothing resurfaces
    merged, _ = ad.merge_patch(
        merged, {"performance_state": {"current_metrics": {"x": {"c": 2}}}}, "a", ts(40)
    )
    expected = {"c": 2} if wall_leaf > wall_tree else {"y": 1, "c": 2}  # RFC 7396 merges
    assert _metrics(ad.render(merged))["x"] == expected


def test_a_write_with_a_stale_clock_still_wins_over_what_it_has_seen() -> None:
    a, b = fork()
    a, _ = ad.merge_patch(a, {"performance_state": {"job_allocation_ref": "new"}}, "a", ts(10**9))
    b = b.merge(a)  # b's own clock is far behind a's
    b, _ = ad.merge_patch(b, {"performance_state": {"job_allocation_ref": "newer"}}, "b", ts(50))
    assert ad.render(converge(a, b))["performance_state"]["job_allocation_ref"] == "newer"


# -- causal tokens ------------------------------------------------------------------------


def test_every_write_advances_the_writers_entry() -> None:
    state, _ = ad.create(None, base_doc(), "a", ts(1))
    assert ad.clock(state) == {"a": 1}
    state, _ = ad.merge_patch(state, {}, "a", ts(2))
    state, _ = ad.capability_add(state, {0: 1.0}, "b")
    state, _ = ad.capability_set(state, {0: 1.0}, "b")
    assert ad.clock(state) == {"a": 2, "b": 2}


def test_covers() -> None:
    old = created()
    new, _ = ad.merge_patch(old, {}, "b", ts(20))
    assert ad.covers(new, ad.clock(new)) and ad.covers(new, ad.clock(old))
    assert ad.covers(new, {}) and ad.covers(ORMap(), {"a": 0})
    assert not ad.covers(old, ad.clock(new))
    assert not ad.covers(new, {"c": 1})
    assert ad.merge_tokens({"a": 3, "b": 1}, {"b": 2, "c": 1}) == {"a": 3, "b": 2, "c": 1}


@pytest.mark.parametrize(
    ("token", "message"),
    [([1], "token: must be an object"), ({"": 1}, "token: node ids"), ({"a": -1}, "token.a:")],
)
def test_bad_tokens(token: Any, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        ad.check_token(token)
    assert message in str(info.value)


def test_a_token_stays_honest_when_deltas_arrive_out_of_order() -> None:
    """A hint handed off after a later write: the later delta alone covers the earlier one."""
    s1, d1 = ad.create(None, base_doc(), "a", ts(1))
    s2, d2 = ad.merge_patch(s1, {"performance_state": {"job_allocation_ref": "j2"}}, "a", ts(2))
    s3, d3 = ad.capability_add(s2, {5: 2.0}, "a")  # touches no field
    late = ORMap().apply_delta(d3)
    assert ad.covers(late, ad.clock(s3))
    assert ad.render(late) == ad.render(s3)
    late = late.apply_delta(d2).apply_delta(d1)
    assert ad.render(late) == ad.render(s3)
    same_bytes(late.merge(s3), s3.merge(late))


# -- codec ------------------------------------------------------------------------------


def test_bytes_round_trip_through_the_crdt_codec() -> None:
    state, delta = ad.merge_patch(created(), {"identity": {"generation": 2}}, "b", ts(30))
    for s in (state, delta, ORMap()):
        data = s.to_bytes()
        back = ad.decode_state(data)
        assert back == s and back.to_bytes() == data
    assert ad.render(ad.decode_state(state.to_bytes())) == ad.render(state)


def test_decoding_refuses_what_is_not_an_agent_state() -> None:
    with pytest.raises(CodecError):
        ad.decode_state(GCounter().to_bytes())
    foreign = ORMap().apply_delta(ORMap().update("a", "x", lambda m: m, LWWMap()))
    with pytest.raises(CodecError, match="not an agent document"):
        ad.decode_state(foreign.to_bytes())
    with pytest.raises(CodecError):
        ad.decode_state(created().to_bytes()[:-1])


# -- random concurrent histories ----------------------------------------------------------

NODES = ("a", "b", "c")

ops = st.one_of(
    st.tuples(
        st.just("field"),
        st.sampled_from(["job_allocation_ref", "judgement_snapshot_ref"]),
        st.one_of(st.none(), st.sampled_from(["x", "y", "z"])),
    ),
    st.tuples(
        st.just("metric"),
        st.sampled_from(["m", "n"]),
        st.one_of(
            st.none(),
            st.integers(0, 3),
            st.fixed_dictionaries({"k": st.integers(0, 3)}),
            st.fixed_dictionaries({"j": st.none()}),
        ),
    ),
    st.tuples(st.just("scores"), st.lists(st.integers(0, 5), max_size=3), st.none()),
    st.tuples(st.just("trust"), st.sampled_from([uid(201), uid(202)]), st.none() | st.just(0.5)),
    st.tuples(st.just("generation"), st.integers(1, 4), st.none()),
    st.tuples(st.just("cap_set"), st.integers(0, 3), st.sampled_from([-1.0, 0.0, 0.5, 2.0])),
    st.tuples(st.just("cap_add"), st.integers(0, 3), st.sampled_from([-0.25, 1.0])),
    st.tuples(st.just("cap_patch"), st.integers(0, 3), st.sampled_from([-1.0, 4.0])),
)

steps = st.lists(
    st.tuples(
        st.sampled_from(["op", "op", "deliver", "newest", "sync"]),
        st.integers(0, 2),
        ops,
        st.integers(0, 1000),
    ),
    min_size=1,
    max_size=25,
)


def _apply(state: AgentState, node: str, op: Any, wall: int) -> tuple[AgentState, AgentState]:
    kind, x, y = op
    if kind == "field":
        return ad.merge_patch(state, {"performance_state": {x: y}}, node, ts(wall))
    if kind == "metric":
        return ad.merge_patch(
            state, {"performance_state": {"current_metrics": {x: y}}}, node, ts(wall)
        )
    if kind == "scores":
        return ad.merge_patch(state, {"performance_state": {"rubric_scores": x}}, node, ts(wall))
    if kind == "trust":
        return ad.merge_patch(
            state, {"relationship_state": {"trust_scores": {x: y}}}, node, ts(wall)
        )
    if kind == "generation":
        current = ad.render(state)["identity"]["generation"]
        patch = {"identity": {"generation": max(current, x)}}
        return ad.merge_patch(state, patch, node, ts(wall))
    if kind == "cap_set":
        return ad.capability_set(state, {x: y}, node)
    if kind == "cap_add":
        return ad.capability_add(state, {x: y}, node)
    vec = ad.render(state)["knowledge_state"]["capability_vector"]
    vec[x] = y
    return ad.merge_patch(state, {"knowledge_state": {"capability_vector": vec}}, node, ts(wall))


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(steps)
def test_random_histories_converge_with_honest_tokens(history: list[Any]) -> None:
    base = created("a", 1)
    replicas = [base, ORMap().merge(base), ORMap().merge(base)]
    inbox: list[tuple[int, AgentState]] = []
    written: list[AgentState] = [base]  # writer's state right after each write
    for action, who, op, pick in history:
        if action == "op":
            new, delta = _apply(replicas[who], NODES[who], op, 10 + pick % 20)
            assert replicas[who].apply_delta(delta) == new
            replicas[who] = new
            written.append(new)
            inbox += [(peer, delta) for peer in range(3) if peer != who]
        elif action in ("deliver", "newest") and inbox:
            # any order, the rest stay queued; "newest" overtakes everything before it
            peer, delta = inbox.pop(-1 if action == "newest" else pick % len(inbox))
            replicas[peer] = replicas[peer].apply_delta(delta)
        elif action == "sync":
            other = (who + 1 + pick % 2) % 3
            replicas[who] = replicas[who].merge(replicas[other])
        for r in replicas:
            doc = ad.render(r)
            ad.validate_document(doc)
            for w in written:  # a covered token means every write it names is here
                if ad.covers(r, ad.clock(w)):
                    assert ad.render(r.merge(w)) == doc
    final = replicas[0].merge(replicas[1]).merge(replicas[2])
    for r in replicas:
        for delta in [d for _, d in inbox]:
            r = r.apply_delta(delta)
        assert ad.render(r.merge(final)) == ad.render(final)
        same_bytes(r.merge(final), final.merge(r))
    assert all(ad.covers(final, ad.clock(w)) for w in written)
