"""Mesh documents (node/tiers/mesh.py): validation, convergence, topology hash, index, paging."""

from __future__ import annotations

import copy
import json
import random
import uuid
from typing import Any

import pytest

import crdt
from crdt import CodecError, ORSet, Timestamp
from node.tiers import mesh as md
from node.tiers.mesh import MeshExists, MeshNotFound, MeshState
from node.tiers.ops import apply_op
from node.tiers.validation import InvalidArgument

RNG_SEED = 20240611


def ids(n: int, seed: int = 1) -> list[str]:
    """``n`` deterministic canonical uuid4 strings."""
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)]


MESH, MESH2, MESH3 = ids(3, seed=99)
A, B, C, D, E = ids(5)


def ts(wall: int, logical: int = 0) -> Timestamp:
    return Timestamp(wall, logical)


def full_doc(**topology: Any) -> dict[str, Any]:
    return {
        "topology": {
            "mesh_id": MESH,
            "member_agents": [A, B],
            "formation_timestamp": 1_700_000_000_000_000_000,
            **topology,
        },
        "performance_data": {
            "collective_metrics": {"throughput": 3.5, "tags": ["x"]},
            "emergence_indicators": [0.1, 2, -3.5],
            "communication_efficiency": {"bandwidth": 0.75},
        },
        "capability_fusion": {
            "fused_capabilities": [1.0, 0.5],
            "fusion_history": [{"at": 1, "what": "merge"}],
            "synergy_matrix": [[1, 0.5], [0.5, 1]],
        },
    }


def made(doc: dict[str, Any] | None = None, node: str = "n1", at: int = 10) -> MeshState:
    state, _ = md.create(doc if doc is not None else full_doc(), node, ts(at))
    return state


def with_field(path: str, value: Any) -> dict[str, Any]:
    doc = full_doc()
    section, name = path.split(".", 1)
    doc.setdefault(section, {})[name] = value
    return doc


# --- validation ---------------------------------------------------------------------------


def test_full_document_is_valid_and_flattened_by_path() -> None:
    flat = md.validate_document(full_doc())
    assert set(flat) == set(md.FIELD_PATHS)
    assert flat["topology.member_agents"] == [A, B]


def test_json_text_round_trip_validates() -> None:
    assert md.validate_document(json.loads(json.dumps(full_doc())))[md.MESH_ID_PATH] == MESH


BAD = [
    ("not-object", [1], "document"),
    ("unknown-section", {**full_doc(), "extra": {}}, "extra: unknown section"),
    ("section-not-object", {"topology": []}, "topology: must be an object"),
    ("unknown-field", with_field("topology.colour", 1), "topology.colour: unknown field"),
    ("hash-refused", with_field("topology.topology_hash", "ab"), "topology.topology_hash"),
    ("missing-mesh-id", {"performance_data": {}}, "topology.mesh_id: is required"),
    ("mesh-id-uppercase", with_field("topology.mesh_id", MESH.upper()), "topology.mesh_id"),
    ("mesh-id-uuid1", with_field("topology.mesh_id", str(uuid.uuid1())), "topology.mesh_id"),
    ("mesh-id-int", with_field("topology.mesh_id", 7), "topology.mesh_id"),
    ("mesh-id-hex", with_field("topology.mesh_id", MESH.replace("-", "")), "topology.mesh_id"),
    ("members-not-list", with_field("topology.member_agents", A), "topology.member_agents"),
    ("member-bad", with_field("topology.member_agents", [A, "x"]), r"member_agents\[1\]"),
    ("member-dup", with_field("topology.member_agents", [A, B, A]), r"\[2\]: duplicate"),
    (
        "members-too-many",
        with_field("topology.member_agents", ids(md.MAX_MEMBERS + 1, seed=5)),
        "limit is 10000",
    ),
    ("ts-float", with_field("topology.formation_timestamp", 1.5), "formation_timestamp"),
    ("ts-bool", with_field("topology.formation_timestamp", True), "formation_timestamp"),
    ("ts-negative", with_field("topology.formation_timestamp", -1), "formation_timestamp"),
    ("ts-huge", with_field("topology.formation_timestamp", 2**63), "formation_timestamp"),
    ("metrics-list", with_field("performance_data.collective_metrics", []), "collective_metrics"),
    (
        "metrics-nan",
        with_field("performance_data.collective_metrics", {"x": float("nan")}),
        r"collective_metrics\.x: must be a finite",
    ),
    (
        "metrics-bigint",
        with_field("performance_data.collective_metrics", {"x": 2**70}),
        "64 bits",
    ),
    (
        "indicators-str",
        with_field("performance_data.emergence_indicators", [1, "2"]),
        r"emergence_indicators\[1\]: must be a number",
    ),
    (
        "indicators-bool",
        with_field("performance_data.emergence_indicators", [True]),
        r"emergence_indicators\[0\]",
    ),
    (
        "indicators-inf",
        with_field("performance_data.emergence_indicators", [float("inf")]),
        "finite",
    ),
    (
        "efficiency-str",
        with_field("performance_data.communication_efficiency", "fast"),
        "communication_efficiency: must be an object",
    ),
    (
        "fused-object",
        with_field("capability_fusion.fused_capabilities", {"a": 1}),
        "fused_capabilities",
    ),
    ("history-object", with_field("capability_fusion.fusion_history", {}), "fusion_history"),
    ("matrix-flat", with_field("capability_fusion.synergy_matrix", [1, 2]), r"matrix\[0\]"),
    (
        "matrix-cell",
        with_field("capability_fusion.synergy_matrix", [[1], [None]]),
        r"synergy_matrix\[1\]\[0\]: must be a number",
    ),
]


@pytest.mark.parametrize(("doc", "match"), [pytest.param(d, m, id=i) for i, d, m in BAD])
def test_bad_documents_are_refused_naming_the_field(doc: Any, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        md.validate_document(doc)
    with pytest.raises(InvalidArgument, match=match):
        md.create(doc, "n1", ts(1))


def test_partial_document_needs_a_field() -> None:
    with pytest.raises(InvalidArgument, match="names no field"):
        md.validate_document({}, partial=True)
    assert md.validate_document({"capability_fusion": {"fusion_history": []}}, partial=True) == {
        "capability_fusion.fusion_history": []
    }


def test_create_fills_defaults_and_formation_time_from_hlc() -> None:
    state, delta = md.create({"topology": {"mesh_id": MESH}}, "n1", ts(42))
    assert state == delta
    doc = md.render(state)
    assert doc["topology"] == {
        "mesh_id": MESH,
        "member_agents": [],
        "formation_timestamp": 42,
        "topology_hash": md.EMPTY_TOPOLOGY_HASH,
    }
    assert doc["performance_data"]["collective_metrics"] == {}
    assert doc["capability_fusion"]["synergy_matrix"] == []


def test_render_returns_the_document_with_sorted_members() -> None:
    doc = full_doc()
    doc["topology"]["member_agents"] = [C, A, B]
    out = md.render(made(doc))
    assert out["topology"]["member_agents"] == sorted([A, B, C])
    del out["topology"]["topology_hash"]
    expect = copy.deepcopy(doc)
    expect["topology"]["member_agents"] = sorted([A, B, C])
    assert out == expect


# --- operations -----------------------------------------------------------------------------


def test_put_fields_replaces_only_named_fields() -> None:
    state = made()
    state, delta = md.put_fields(
        state, {"performance_data": {"emergence_indicators": [9]}}, "n1", ts(20)
    )
    assert delta.members == ORSet()
    doc = md.render(state)
    assert doc["performance_data"]["emergence_indicators"] == [9]
    assert (
        doc["performance_data"]["collective_metrics"]
        == full_doc()["performance_data"]["collective_metrics"]
    )


def test_put_fields_member_list_replaces_membership() -> None:
    state, _ = md.put_fields(made(), {"topology": {"member_agents": [B, C]}}, "n1", ts(20))
    assert md.members(state) == sorted([B, C])


def test_put_fields_cannot_change_mesh_id() -> None:
    with pytest.raises(InvalidArgument, match=r"topology\.mesh_id: cannot change"):
        md.put_fields(made(), {"topology": {"mesh_id": MESH2}}, "n1", ts(20))
    state, _ = md.put_fields(made(), {"topology": {"mesh_id": MESH}}, "n1", ts(20))
    assert md.mesh_id_of(state) == MESH


def test_add_and_remove_members() -> None:
    state, delta = md.add_members(made(), [C, C, D], "n1")
    assert len(delta.members) == 2 and delta.fields == crdt.LWWMap()
    assert md.members(state) == sorted([A, B, C, D])
    state, _ = md.remove_members(state, [A, E])  # E is not a member: no-op
    assert md.members(state) == sorted([B, C, D])


@pytest.mark.parametrize(
    ("agents", "match"),
    [([], "at least one"), (["nope"], r"agent_ids\[0\]"), ([A.upper()], "uuid4")],
)
def test_member_ops_validate_ids(agents: list[str], match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        md.add_members(made(), agents, "n1")
    with pytest.raises(InvalidArgument, match=match):
        md.remove_members(made(), agents)


def test_add_members_enforces_the_cap() -> None:
    many = ids(md.MAX_MEMBERS, seed=7)
    doc = full_doc(member_agents=many)
    state = made(doc)
    with pytest.raises(InvalidArgument, match="would have 10001"):
        md.add_members(state, [A], "n1")
    state, _ = md.add_members(state, [many[0]], "n1")  # re-adding does not grow it
    assert len(md.members(state)) == md.MAX_MEMBERS


def test_ops_on_absent_or_deleted_mesh_raise_not_found() -> None:
    deleted, _ = md.delete(made(), "n1", ts(20))
    for state in (None, MeshState(), deleted):
        with pytest.raises(MeshNotFound):
            md.add_members(state, [A], "n1")
        with pytest.raises(MeshNotFound):
            md.remove_members(state, [A])
        with pytest.raises(MeshNotFound):
            md.put_fields(state, {"capability_fusion": {"fusion_history": []}}, "n1", ts(30))
        with pytest.raises(MeshNotFound):
            md.delete(state, "n1", ts(30))
        with pytest.raises(MeshNotFound):
            md.render(state)
        assert md.members(state) == [] and not md.exists(state)
        assert state is None or state.value() is None


def test_create_over_live_mesh_raises_exists() -> None:
    with pytest.raises(MeshExists):
        md.create(full_doc(), "n1", ts(20), prior=made())


def test_create_over_another_meshs_state_is_refused() -> None:
    deleted, _ = md.delete(made(), "n1", ts(20))
    doc = full_doc(mesh_id=MESH2)
    with pytest.raises(InvalidArgument, match="does not match"):
        md.create(doc, "n1", ts(30), prior=deleted)


def test_as_mesh_state_rejects_other_types() -> None:
    assert md.as_mesh_state(None) is None
    with pytest.raises(InvalidArgument, match="not a mesh document"):
        md.as_mesh_state(ORSet())


# --- codec ------------------------------------------------------------------------------------


def test_state_and_delta_round_trip_through_the_crdt_codec() -> None:
    state, _ = md.add_members(made(), [C], "n1")
    _, delta = md.remove_members(state, [A])
    for value in (state, delta, MeshState()):
        data = value.to_bytes()
        assert crdt.decode(data) == value
        assert MeshState.from_bytes(data).to_bytes() == data


def test_codec_refuses_unknown_schema_version() -> None:
    wire = made()._to_wire()
    wire[0] = 2
    with pytest.raises(CodecError, match="schema version"):
        MeshState._from_wire(wire)
    with pytest.raises(CodecError):
        MeshState._from_wire([1, 2])


def test_member_delta_is_small() -> None:
    state = made(full_doc(member_agents=ids(1000, seed=3)))
    _, delta = md.add_members(state, [A], "n2")
    assert len(delta.to_bytes()) < 200 < len(state.to_bytes()) // 100


# --- convergence --------------------------------------------------------------------------------


def exchange(*deltas: MeshState, base: MeshState, seed: int) -> MeshState:
    order = list(deltas)
    random.Random(seed).shuffle(order)
    state = base
    for d in order:
        state = state.merge(d)
    return state


def test_concurrent_add_and_remove_of_one_member_converge_add_wins() -> None:
    base = made()  # A and B are members on both replicas
    r1, d1 = md.remove_members(base, [A])  # replica n1: A leaves
    r2, d2 = md.add_members(base, [A], "n2")  # replica n2, concurrently: A (re)joins
    assert A not in md.members(r1) and A in md.members(r2)
    r1, r2 = r1.merge(d2), r2.merge(d1)
    assert r1.to_bytes() == r2.to_bytes()
    assert md.members(r1) == sorted([A, B])


def test_concurrent_join_and_leave_of_a_new_member_converge() -> None:
    base = made()
    r1, d1 = md.add_members(base, [C], "n1")
    r1, d1b = md.remove_members(r1, [C])  # n1: C joins then leaves
    r2, d2 = md.add_members(base, [C], "n2")  # n2: C joins concurrently
    r1, r2 = r1.merge(d2), r2.merge(d1).merge(d1b)
    assert r1.to_bytes() == r2.to_bytes()
    assert C in md.members(r1)  # n2's add was never observed by n1's remove


def test_random_op_histories_converge_byte_identically() -> None:
    rng = random.Random(RNG_SEED)
    pool = ids(12, seed=11)
    base, create_delta = md.create(full_doc(member_agents=pool[:4]), "n0", ts(10))
    nodes = ["n1", "n2", "n3"]
    replicas = dict.fromkeys(nodes, base)
    deltas: list[MeshState] = [create_delta]
    clock = 100
    for _ in range(300):
        node = rng.choice(nodes)
        state = replicas[node]
        clock += rng.randrange(1, 5)
        roll = rng.random()
        if roll < 0.4:
            state, delta = md.add_members(state, rng.sample(pool, rng.randrange(1, 4)), node)
        elif roll < 0.75:
            state, delta = md.remove_members(state, rng.sample(pool, rng.randrange(1, 4)))
        else:
            patch = {"performance_data": {"emergence_indicators": [clock, rng.random()]}}
            state, delta = md.put_fields(state, patch, node, ts(clock))
        replicas[node] = state
        deltas.append(delta)
        if rng.random() < 0.2:  # partial gossip of one delta
            other = rng.choice(nodes)
            replicas[other] = replicas[other].merge(rng.choice(deltas))
    finals = [exchange(*deltas, base=replicas[n], seed=i) for i, n in enumerate(nodes)]
    oracle = exchange(*deltas, base=MeshState(), seed=99)
    assert {f.to_bytes() for f in finals} == {oracle.to_bytes()}
    # merge laws on the final states
    a, b = replicas["n1"], replicas["n2"]
    assert a.merge(b) == b.merge(a)
    assert a.merge(a) == a
    assert a.merge(b).merge(replicas["n3"]) == a.merge(b.merge(replicas["n3"]))


# --- topology hash ---------------------------------------------------------------------------


def test_topology_hash_is_independent_of_insertion_order() -> None:
    agents = ids(50, seed=4)
    hashes = set()
    for seed in range(5):
        order = list(agents)
        random.Random(seed).shuffle(order)
        state = made(full_doc(member_agents=order[:20]), node=f"n{seed}")
        state, _ = md.add_members(state, order[20:], f"n{seed}")
        hashes.add(md.render(state)["topology"]["topology_hash"])
    assert hashes == {md.topology_hash(agents)}
    assert len(md.topology_hash(agents)) == 32


def test_topology_hash_changes_with_membership() -> None:
    state = made()
    h0 = md.render(state)["topology"]["topology_hash"]
    added, _ = md.add_members(state, [C], "n1")
    h1 = md.render(added)["topology"]["topology_hash"]
    removed, _ = md.remove_members(added, [C])
    h2 = md.render(removed)["topology"]["topology_hash"]
    assert h0 != h1 and h2 == h0
    assert md.topology_hash([A]) != md.topology_hash([B])
    assert md.topology_hash([]) == md.EMPTY_TOPOLOGY_HASH != md.topology_hash([A])


def test_empty_topology_hash_is_fixed() -> None:
    # A constant: changing the layout or digest changes every stored hash.
    assert md.topology_hash(iter(())) == md.EMPTY_TOPOLOGY_HASH
    assert md.EMPTY_TOPOLOGY_HASH == "b1c043f1349483de21723de6f637e682"


# --- delete and re-create --------------------------------------------------------------------


def test_delete_converges_over_a_concurrent_update() -> None:
    base = made()
    r1, d1 = md.delete(base, "n1", ts(20))
    r2, d2 = md.put_fields(base, {"capability_fusion": {"fusion_history": ["late"]}}, "n2", ts(30))
    r2b, d2b = md.add_members(r2, [C], "n2")
    r1 = r1.merge(d2).merge(d2b)
    r2 = r2b.merge(d1)
    assert r1.to_bytes() == r2.to_bytes()
    assert not md.exists(r1)  # a newer field write does not resurrect the mesh
    assert md.members(r1) == []


def test_recreate_with_newer_hlc_wins_everywhere() -> None:
    base = made()
    r1, d_del = md.delete(base, "n1", ts(20))
    doc = full_doc(member_agents=[C])
    doc["capability_fusion"] = {"fusion_history": ["second life"]}
    r1, d_new = md.create(doc, "n1", ts(30), prior=r1)
    r2 = base.merge(d_new).merge(d_del)  # n2 receives them out of order
    assert r1.to_bytes() == r2.to_bytes()
    out = md.render(r2)
    assert out["topology"]["member_agents"] == [C]  # old members gone
    assert out["capability_fusion"] == {
        "fused_capabilities": [],
        "fusion_history": ["second life"],
        "synergy_matrix": [],
    }


def test_recreate_wins_even_when_local_clock_lags_the_delete() -> None:
    r1, _ = md.delete(made(), "n1", ts(1_000))
    r1, delta = md.create(full_doc(), "n2", ts(5), prior=r1)  # n2's clock is behind
    assert md.exists(r1)
    lifecycle_ts = delta.lifecycle.timestamp
    assert lifecycle_ts is not None and lifecycle_ts > ts(1_000)


def test_concurrent_delete_and_recreate_resolve_by_lww() -> None:
    base = made()
    deleted, d_del = md.delete(base, "n1", ts(20))
    # n2 saw n1's delete and re-created at t=30; n3, concurrently, deleted the original
    # at t=25 without seeing either. The greatest lifecycle write (the re-create) wins.
    r2, d_new = md.create(full_doc(), "n2", ts(30), prior=deleted)
    _, d_old_del = md.delete(base, "n3", ts(25))
    states = [
        base.merge(d_del).merge(d_new).merge(d_old_del),
        base.merge(d_old_del).merge(d_new).merge(d_del),
        r2.merge(d_old_del),
    ]
    assert len({s.to_bytes() for s in states}) == 1
    assert md.exists(states[0])


# --- index and graph queries -------------------------------------------------------------------


def test_index_deltas_describe_adds_and_removes() -> None:
    ops = md.index_deltas(MESH, added=[A, B], removed=[C])
    assert list(ops) == sorted([A, B, C])
    assert ops[A].kind == "set_add" and ops[A].elements == (MESH,)
    assert ops[C].kind == "set_remove"
    with pytest.raises(InvalidArgument, match="both added"):
        md.index_deltas(MESH, [A], [A])
    with pytest.raises(InvalidArgument, match="mesh_id"):
        md.index_deltas("m", [A], [])
    assert md.index_key(A) == f"agent/{A}"


def test_index_ops_apply_with_tier_ops_and_meshes_of_reads_them() -> None:
    before = made()
    after, _ = md.add_members(before, [C], "n1")
    added, removed = md.member_changes(None, after)
    assert added == sorted([A, B, C]) and removed == []
    index: dict[str, crdt.CRDTBase | None] = {}
    for mesh_id in (MESH, MESH2):
        for agent, op in md.index_deltas(mesh_id, added, removed).items():
            index[agent], _ = apply_op(index.get(agent), op, "n1", ts(1))
    gone, _ = md.remove_members(after, [A])
    assert md.member_changes(after, gone) == ([], [A])
    for agent, op in md.index_deltas(MESH, *md.member_changes(after, gone)).items():
        index[agent], _ = apply_op(index.get(agent), op, "n1", ts(2))
    assert md.meshes_of(index[A]) == [MESH2]
    assert md.meshes_of(index[B]) == sorted([MESH, MESH2])
    assert md.meshes_of(None) == []
    with pytest.raises(InvalidArgument, match="not an orset"):
        md.meshes_of(made())


def test_members_of_a_fetched_state() -> None:
    assert md.members_of(made()) == sorted([A, B])
    assert md.members_of(None) == []
    with pytest.raises(InvalidArgument):
        md.members_of(ORSet())


def test_neighbours_recheck_drops_stale_index_entries() -> None:
    m1 = made(full_doc(member_agents=[A, B]))
    m2 = made(full_doc(mesh_id=MESH2, member_agents=[A, C]))
    m2, _ = md.remove_members(m2, [A])  # A left MESH2; the index still lists it
    m3 = made(full_doc(mesh_id=MESH3, member_agents=[A, D]))
    m3, _ = md.delete(m3, "n1", ts(50))  # MESH3 deleted; the index still lists it
    missing = ids(1, seed=1234)[0]  # listed in the index, document not found
    index = [MESH, MESH2, MESH3, missing, MESH]
    docs: dict[str, MeshState | None] = {MESH: m1, MESH2: m2, MESH3: m3, missing: None}
    assert md.confirmed_meshes(A, index, docs) == [MESH]
    assert md.neighbours(A, index, docs) == [B]
    assert md.neighbours(C, [MESH2], docs) == []  # alone in MESH2 now


def test_neighbours_union_over_meshes_sorted_without_self() -> None:
    m1 = made(full_doc(member_agents=[A, D, B]))
    m2 = made(full_doc(mesh_id=MESH2, member_agents=[E, A, B]))
    docs: dict[str, MeshState | None] = {MESH: m1, MESH2: m2}
    assert md.neighbours(A, [MESH2, MESH], docs) == sorted([B, D, E])
    assert md.neighbours(A, [], docs) == []


PAGE_ITEMS = ["a/1", "a/2", "a/3", "b/1", "b/2", "c"]


@pytest.mark.parametrize(
    ("limit", "start_after", "prefix", "want", "more"),
    [
        (0, "", "", PAGE_ITEMS, False),
        (2, "", "", ["a/1", "a/2"], True),
        (2, "a/2", "", ["a/3", "b/1"], True),
        (10, "b/1", "", ["b/2", "c"], False),
        (0, "", "b/", ["b/1", "b/2"], False),
        (1, "", "b/", ["b/1"], True),
        (1, "b/1", "b/", ["b/2"], False),
        (3, "", "a/", ["a/1", "a/2", "a/3"], False),
        (0, "a", "", PAGE_ITEMS, False),
        (0, "zzz", "", [], False),
        (0, "", "d", [], False),
        (0, "a/9", "a/", [], False),
    ],
)
def test_page(limit: int, start_after: str, prefix: str, want: list[str], more: bool) -> None:
    shuffled = [*reversed(PAGE_ITEMS), "a/1"]
    assert md.page(shuffled, limit, start_after, prefix) == (want, more)


def test_page_walks_everything_once() -> None:
    items = ids(95, seed=8)
    seen: list[str] = []
    after, more = "", True
    while more:
        got, more = md.page(items, 10, after)
        seen += got
        after = got[-1] if got else after
    assert seen == sorted(items)


def test_page_refuses_negative_limit() -> None:
    with pytest.raises(InvalidArgument, match="negative"):
        md.page(PAGE_ITEMS, -1, "")


def test_concurrent_creates_of_one_mesh_converge() -> None:
    doc1 = full_doc(member_agents=[A])
    doc2 = full_doc(member_agents=[B], formation_timestamp=7)
    r1, d1 = md.create(doc1, "n1", ts(10))
    r2, d2 = md.create(doc2, "n2", ts(10))
    r1, r2 = r1.merge(d2), r2.merge(d1)
    assert r1.to_bytes() == r2.to_bytes()
    out = md.render(r1)
    assert out["topology"]["member_agents"] == sorted([A, B])  # both joins kept
    assert out["topology"]["formation_timestamp"] == 7  # equal hlc: node id "n2" breaks the tie
