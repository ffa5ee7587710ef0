"""Mesh documents of the mesh tier: validation, CRDT state, rendering, graph queries. Pure.

No I/O, no clock reads: time arrives as a :class:`crdt.Timestamp` (the caller's
HLC), node ids as arguments. The wiring layer (replication, API) stores the
states, ships the deltas and fetches what the graph helpers need.

Document (spec ``data_models.mesh_data_model``)::

    {"topology":          {"mesh_id", "member_agents", "formation_timestamp", "topology_hash"},
     "performance_data":  {"collective_metrics", "emergence_indicators",
                           "communication_efficiency"},
     "capability_fusion": {"fused_capabilities", "fusion_history", "synergy_matrix"}}

``topology_hash`` is computed by :func:`render` (a Merkle root over the member
set) and refused on input. Unknown sections and fields are refused.

CRDT representation — why a wrapper and not ``ORMap``
-----------------------------------------------------
One value per mesh, under key ``mesh_id``: a :class:`MeshState`, the product of
three lattices joined component-wise (a product of join-semilattices is one):

* ``members``   — :class:`crdt.ORSet` of agent ids: add-wins, so a concurrent
  join and leave of one agent resolve the same way on every replica;
* ``fields``    — :class:`crdt.LWWMap` keyed by field path
  (``"topology.formation_timestamp"``, ``"performance_data.collective_metrics"``,
  ...): each field is last-writer-wins by ``(hlc, node_id)``;
* ``lifecycle`` — :class:`crdt.LWWRegister` holding the "deleted" flag.

``crdt.ORMap`` can nest different types under fixed keys, but was not used:
each ORMap update ships the writing node's whole *contribution* to a key (every
member that node ever added, so O(members) per join/leave), and a member a node
added stays in its contribution after another node removes it, so the state
grows with every agent that ever joined. The wrapper's deltas are as small as
the nested deltas (one dot per joining agent) and the OR-set keeps its
no-tombstone property. It is registered with the crdt codec under
``MESH_STATE_TAG`` (64; application types outside ``crdt/`` take tags from 64
up, so ``crdt`` can keep appending below) and carries its own schema version
in the body, so replication, read repair, hints and anti-entropy handle it like
any other CRDT (``crdt.decode`` / ``merge``) once this module is imported.

Delete and re-create
--------------------
:func:`delete` writes ``deleted=True`` into ``lifecycle`` and removes every
member it has observed; :func:`create` over a deleted (or absent) state writes
``deleted=False``, every field, and the new member list (again removing the
members it observed). The flag is LWW, so replicas converge on whichever of
delete / re-create carries the greater ``(hlc, node_id)``; a field update that
is concurrent with a delete does not resurrect the mesh. Every LWW write here
uses a timestamp strictly greater than every timestamp already in the state it
was computed from (:func:`_after`), so a re-create applied where the delete is
visible wins even if the local clock lags the deleting node's. Members added
concurrently with a delete (not observed by it) survive in the OR-set
(add-wins) and reappear if the mesh is re-created without observing them.
Deleted states keep their fields and causal context (a tombstone); nothing
here collects them.

Agent -> meshes index
---------------------
Graph queries need "meshes of an agent". The index is a second CRDT kind in
the mesh tier: :data:`AgentMeshes` (an ORSet of mesh ids) under
``agent/<agent_id>`` (:func:`index_key`; mesh keys are bare uuids, so the
two key spaces never collide). When a mesh's membership changes, the wiring
layer applies :func:`index_deltas` to those keys with
:func:`node.tiers.ops.apply_op`. These are *separate keys* updated by separate
writes, so the index and the mesh documents converge independently and may
disagree for a while (or, if a coordinator dies between the two writes, until
the next write of that mesh re-asserts its members — call
``index_deltas(mesh_id, members(state), [])`` after any mesh write to heal).
Hence the index is **advisory**: a query reads the agent's index, fetches
those meshes, and keeps only meshes whose document is live and still lists the
agent (:func:`confirmed_meshes`, :func:`neighbours`). A stale entry (agent
removed, mesh deleted, mesh missing) is dropped from answers; a missing entry
(index write not yet applied) makes a query miss that mesh until it lands.

Errors
------
Bad input raises :class:`node.tiers.validation.InvalidArgument` naming the field
(maps to INVALID_ARGUMENT). Operations on a mesh that is absent or deleted
raise :class:`MeshNotFound` (NOT_FOUND); :func:`create` over a live mesh raises
:class:`MeshExists` (ALREADY_EXISTS)::

    node.errors.NotFound       ── MeshNotFound   the mesh is absent or deleted
    node.errors.AlreadyExists  ── MeshExists     create over a live mesh; use put_fields
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Self, TypeAlias

from crdt import CausalContext, CodecError, CRDTBase, Element, LWWMap, LWWRegister, ORSet, Timestamp
from crdt.codec import from_wire_tagged, register, to_wire_tagged
from gossip.merkle import MerkleLayout, MerkleTree
from node.errors import AlreadyExists, InvalidArgument, NotFound
from node.tiers.ops import Op
from node.tiers.validation import as_document_error

__all__ = [
    "EMPTY_TOPOLOGY_HASH",
    "FIELD_PATHS",
    "MAX_MEMBERS",
    "MESH_STATE_TAG",
    "AgentMeshes",
    "MeshExists",
    "MeshNotFound",
    "MeshState",
    "add_members",
    "as_mesh_state",
    "confirmed_meshes",
    "create",
    "delete",
    "exists",
    "index_deltas",
    "index_key",
    "member_changes",
    "members",
    "members_of",
    "mesh_id_of",
    "meshes_of",
    "neighbours",
    "page",
    "put_fields",
    "remove_members",
    "render",
    "topology_hash",
    "validate_document",
]

MAX_MEMBERS: Final = 10_000
"""Most agents one document may list. Enforced on every local write; concurrent
joins on different replicas can push a merged mesh past it (soft limit)."""

MESH_STATE_TAG: Final = 64
"""crdt codec type tag of :class:`MeshState` (append-only; >= 64 is outside crdt/)."""

_SCHEMA_VERSION: Final = 1
"""Version of MeshState's wire body, so its layout can change without a new tag."""

INDEX_PREFIX: Final = "agent/"

MEMBERS_PATH: Final = "topology.member_agents"
MESH_ID_PATH: Final = "topology.mesh_id"
FORMATION_PATH: Final = "topology.formation_timestamp"

_MAX_DEPTH = 32
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
_UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


# --- errors ---------------------------------------------------------------------------


class MeshNotFound(NotFound):
    """The mesh does not exist here: never created, or deleted."""


class MeshExists(AlreadyExists):
    """``create`` on a mesh that is live; change it with ``put_fields``."""


# --- validation -----------------------------------------------------------------------


def _fail(path: str, problem: str) -> InvalidArgument:
    return InvalidArgument(f"{path}: {problem}")


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _check_uuid4(value: object, path: str) -> str:
    if not isinstance(value, str) or not _UUID4.fullmatch(value):
        shown = repr(value) if isinstance(value, str) else _type_name(value)
        raise _fail(path, f"must be a canonical lowercase uuid4, got {shown}")
    return value


def _check_number(value: object, path: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(path, f"must be a number, got {_type_name(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(path, f"must be a finite number, got {value}")
    if isinstance(value, int) and not _INT_MIN <= value <= _INT_MAX:
        raise _fail(path, "integer does not fit in 64 bits")
    return value


def _check_numbers(value: object, path: str) -> list[int | float]:
    if not isinstance(value, list):
        raise _fail(path, f"must be an array of numbers, got {_type_name(value)}")
    return [_check_number(item, f"{path}[{i}]") for i, item in enumerate(value)]


def _check_json(value: object, path: str, depth: int = 0) -> Any:
    """Any JSON value that the CRDT payload codec stores exactly (finite, 64-bit, shallow)."""
    if depth > _MAX_DEPTH:
        raise _fail(path, f"nested more than {_MAX_DEPTH} levels deep")
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return _check_number(value, path)
    if isinstance(value, list):
        return [_check_json(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _fail(path, "object keys must be strings")
            out[key] = _check_json(item, f"{path}.{key}", depth + 1)
        return out
    raise _fail(path, f"is not a JSON value ({type(value).__name__})")


def _check_object(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(path, f"must be an object, got {_type_name(value)}")
    checked: dict[str, Any] = _check_json(value, path)
    return checked


def _check_list(value: object, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(path, f"must be an array, got {_type_name(value)}")
    checked: list[Any] = _check_json(value, path)
    return checked


def _check_matrix(value: object, path: str) -> list[list[int | float]]:
    if not isinstance(value, list):
        raise _fail(path, f"must be an array of arrays of numbers, got {_type_name(value)}")
    return [_check_numbers(row, f"{path}[{i}]") for i, row in enumerate(value)]


def _check_timestamp(value: object, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, f"must be an integer (unix nanoseconds), got {_type_name(value)}")
    if not 0 <= value < 2**63:
        raise _fail(path, f"must be in [0, 2**63) unix nanoseconds, got {value}")
    return value


def _check_agent_ids(value: object, path: str) -> list[str]:
    if not isinstance(value, list):
        raise _fail(path, f"must be an array of agent ids, got {_type_name(value)}")
    if len(value) > MAX_MEMBERS:
        raise _fail(path, f"has {len(value)} agents; the limit is {MAX_MEMBERS}")
    seen: set[str] = set()
    for i, item in enumerate(value):
        agent = _check_uuid4(item, f"{path}[{i}]")
        if agent in seen:
            raise _fail(f"{path}[{i}]", f"duplicate agent id {agent}")
        seen.add(agent)
    return list(value)


_Check: TypeAlias = Callable[[object, str], Any]

_FIELDS: Final[dict[str, dict[str, _Check]]] = {
    "topology": {
        "mesh_id": _check_uuid4,
        "member_agents": _check_agent_ids,
        "formation_timestamp": _check_timestamp,
    },
    "performance_data": {
        "collective_metrics": _check_object,
        "emergence_indicators": _check_numbers,
        "communication_efficiency": _check_object,
    },
    "capability_fusion": {
        "fused_capabilities": _check_numbers,
        "fusion_history": _check_list,
        "synergy_matrix": _check_matrix,
    },
}

FIELD_PATHS: Final[tuple[str, ...]] = tuple(
    f"{section}.{name}" for section, names in _FIELDS.items() for name in names
)
"""Every settable field, as ``section.name``."""

_DEFAULTS: Final[dict[str, Any]] = {
    "performance_data.collective_metrics": {},
    "performance_data.emergence_indicators": [],
    "performance_data.communication_efficiency": {},
    "capability_fusion.fused_capabilities": [],
    "capability_fusion.fusion_history": [],
    "capability_fusion.synergy_matrix": [],
}


def validate_document(doc: object, *, partial: bool = False) -> dict[str, Any]:
    """Check a ``json.loads``'ed mesh document; return its fields flattened by path.

    ``partial=False`` (create): ``topology.mesh_id`` is required; other fields
    may be left out (defaults apply in :func:`create`). ``partial=True``
    (update): any non-empty subset of fields.

    Raises:
        InvalidDocument: the message starts with the offending field's path.
    """
    with as_document_error():
        return _validate_document(doc, partial)


def _validate_document(doc: object, partial: bool) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise _fail("document", f"must be a JSON object, got {_type_name(doc)}")
    flat: dict[str, Any] = {}
    for section, body in doc.items():
        known = _FIELDS.get(section)
        if known is None:
            raise _fail(str(section), f"unknown section; a mesh document has {', '.join(_FIELDS)}")
        if not isinstance(body, dict):
            raise _fail(section, f"must be an object, got {_type_name(body)}")
        for name, value in body.items():
            path = f"{section}.{name}"
            if path == "topology.topology_hash":
                raise _fail(path, "is computed from the members and cannot be set")
            check = known.get(name)
            if check is None:
                raise _fail(path, f"unknown field; {section} has {', '.join(known)}")
            flat[path] = check(value, path)
    if not partial and MESH_ID_PATH not in flat:
        raise _fail(MESH_ID_PATH, "is required")
    if partial and not flat:
        raise _fail("document", "names no field to update")
    return flat


def _check_ids(agent_ids: Iterable[str], what: str) -> list[str]:
    ids = list(agent_ids)
    if not ids:
        raise _fail(what, "needs at least one agent id")
    if len(ids) > MAX_MEMBERS:
        raise _fail(what, f"has {len(ids)} agents; the limit is {MAX_MEMBERS}")
    return list(dict.fromkeys(_check_uuid4(a, f"{what}[{i}]") for i, a in enumerate(ids)))


# --- the CRDT ---------------------------------------------------------------------------


@register
@dataclass(frozen=True, slots=True)
class MeshState(CRDTBase):
    """One mesh: OR-set of members x LWW map of fields x LWW deleted flag.

    Joined component-wise; deltas are MeshStates with only the touched parts.
    See the module docstring for why this is not an ``ORMap``.
    """

    _TAG = MESH_STATE_TAG
    members: ORSet = field(default_factory=ORSet)
    fields: LWWMap = field(default_factory=LWWMap)
    lifecycle: LWWRegister = field(default_factory=LWWRegister)

    __hash__ = CRDTBase.__hash__

    def value(self) -> dict[str, Any] | None:
        """The rendered document, or None when absent or deleted."""
        return render(self) if exists(self) else None

    def merge(self, other: MeshState) -> MeshState:
        return MeshState(
            self.members.merge(other.members),
            self.fields.merge(other.fields),
            self.lifecycle.merge(other.lifecycle),
        )

    def _to_wire(self) -> Any:
        return [
            _SCHEMA_VERSION,
            to_wire_tagged(self.members),
            to_wire_tagged(self.fields),
            to_wire_tagged(self.lifecycle),
        ]

    @classmethod
    def _from_wire(cls, obj: Any) -> Self:
        if not isinstance(obj, list) or len(obj) != 4:
            raise CodecError("mesh state must be [version, members, fields, lifecycle]")
        version, members_wire, fields_wire, lifecycle_wire = obj
        if version != _SCHEMA_VERSION:
            raise CodecError(
                f"mesh state schema version {version!r}; this build reads {_SCHEMA_VERSION}"
            )
        parts = (
            from_wire_tagged(members_wire),
            from_wire_tagged(fields_wire),
            from_wire_tagged(lifecycle_wire),
        )
        members_, fields_, lifecycle_ = parts
        if not (
            isinstance(members_, ORSet)
            and isinstance(fields_, LWWMap)
            and isinstance(lifecycle_, LWWRegister)
        ):
            raise CodecError("mesh state parts must be ORSet, LWWMap, LWWRegister")
        return cls(members_, fields_, lifecycle_)


AgentMeshes: TypeAlias = ORSet
"""The index kind: the ids of the meshes an agent belongs to, at ``agent/<agent_id>``."""


def as_mesh_state(state: CRDTBase | None) -> MeshState | None:
    """``state`` typed as a MeshState; InvalidArgument if the key holds another type."""
    if state is None or isinstance(state, MeshState):
        return state
    raise InvalidArgument(f"the key holds a {type(state).__name__}, not a mesh document")


def exists(state: MeshState | None) -> bool:
    """True iff the mesh was created and its latest lifecycle write is not a delete."""
    return state is not None and state.lifecycle.is_set and state.lifecycle.value() is False


def mesh_id_of(state: MeshState) -> str | None:
    """The mesh id recorded by the last create (also kept after a delete)."""
    mesh_id = state.fields.get(MESH_ID_PATH)
    return mesh_id if isinstance(mesh_id, str) else None


def _live(state: MeshState | None) -> MeshState:
    if state is None or not exists(state):
        raise MeshNotFound("the mesh does not exist (never created, or deleted)")
    return state


def _after(state: MeshState | None, hlc: Timestamp) -> Timestamp:
    """``hlc``, or the least timestamp above every LWW timestamp in ``state`` if greater."""
    if not isinstance(hlc, Timestamp):
        raise InvalidArgument("hlc must be a crdt.Timestamp")
    if state is None:
        return hlc
    top = max(
        (ts for ts, _node, _blob in state.fields.entries.values()),
        default=Timestamp(0, 0),
    )
    if state.lifecycle.timestamp is not None:
        top = max(top, state.lifecycle.timestamp)
    return hlc if hlc > top else Timestamp(top.wall_ns, top.logical + 1)


def _replace_members(members: ORSet, node_id: str, agent_ids: list[str]) -> ORSet:
    """Delta making the membership exactly ``agent_ids`` (as far as observed here).

    Listed agents get fresh dots (so the list also wins over concurrent removes);
    observed members not listed are removed."""
    keep = set(agent_ids)
    gone = [element for element in members.entries if element not in keep]
    return members.add_all(node_id, agent_ids).merge(_remove_delta(members, gone))


def _remove_delta(members: ORSet, agent_ids: Iterable[Element]) -> ORSet:
    """One OR-set delta removing the observed adds of every agent (``remove`` for many)."""
    dots = [dot for agent in agent_ids for dot in members.entries.get(agent, ())]
    return ORSet(CausalContext.of(dots), {})


# --- operations (each returns (new_state, delta)) ------------------------------------------


def create(
    doc: object, node_id: str, hlc: Timestamp, prior: MeshState | None = None
) -> tuple[MeshState, MeshState]:
    """Create the mesh ``doc`` describes, or re-create it over a deleted ``prior``.

    ``prior`` must be the replica's current state of the key (None if absent):
    new OR-set dots are numbered after the ones it holds, and a re-create
    removes the members it observed. Fields left out of ``doc`` get their
    defaults (empty object / array); ``formation_timestamp`` defaults to
    ``hlc.wall_ns``.

    Raises:
        InvalidArgument: bad document, or ``prior`` belongs to another mesh id.
        MeshExists: ``prior`` is live.
    """
    flat = validate_document(doc)
    mesh_id = flat[MESH_ID_PATH]
    base = prior if prior is not None else MeshState()
    if exists(prior):
        raise MeshExists(
            f"mesh {mesh_id} exists; update it instead (Put without create, tadpole mesh set)"
        )
    recorded = mesh_id_of(base)
    if recorded is not None and recorded != mesh_id:
        raise _fail(MESH_ID_PATH, f"{mesh_id} does not match the stored mesh {recorded}")
    ts = _after(prior, hlc)
    values = {**_DEFAULTS, FORMATION_PATH: hlc.wall_ns, **flat}
    agent_ids: list[str] = values.pop(MEMBERS_PATH, [])
    fields_delta = LWWMap()
    for path in sorted(values):
        fields_delta = fields_delta.merge(base.fields.put(path, values[path], ts, node_id))
    delta = MeshState(
        _replace_members(base.members, node_id, agent_ids),
        fields_delta,
        base.lifecycle.assign(False, ts, node_id),
    )
    return base.merge(delta), delta


def put_fields(
    state: MeshState | None, partial_doc: object, node_id: str, hlc: Timestamp
) -> tuple[MeshState, MeshState]:
    """Replace the fields ``partial_doc`` names (LWW per field).

    ``topology.member_agents``, if given, makes the membership exactly that
    list: observed members not listed are removed, listed ones (re-)added.
    ``topology.mesh_id`` may be given only if unchanged.

    Raises:
        InvalidArgument: bad document or a changed mesh id.
        MeshNotFound: the mesh is absent or deleted.
    """
    flat = validate_document(partial_doc, partial=True)
    live = _live(state)
    mesh_id = flat.pop(MESH_ID_PATH, None)
    if mesh_id is not None and mesh_id != mesh_id_of(live):
        raise _fail(MESH_ID_PATH, f"cannot change the mesh id (is {mesh_id_of(live)})")
    agent_ids: list[str] | None = flat.pop(MEMBERS_PATH, None)
    ts = _after(live, hlc)
    fields_delta = LWWMap()
    for path in sorted(flat):
        fields_delta = fields_delta.merge(live.fields.put(path, flat[path], ts, node_id))
    members_delta = (
        ORSet() if agent_ids is None else _replace_members(live.members, node_id, agent_ids)
    )
    delta = MeshState(members_delta, fields_delta)
    return live.merge(delta), delta


def add_members(
    state: MeshState | None, agent_ids: Iterable[str], node_id: str
) -> tuple[MeshState, MeshState]:
    """Add agents (a fresh dot each: wins over a concurrent remove of the same agent).

    Raises:
        InvalidArgument: empty list, bad id, or the mesh would exceed MAX_MEMBERS.
        MeshNotFound: the mesh is absent or deleted.
    """
    ids = _check_ids(agent_ids, "agent_ids")
    live = _live(state)
    total = len(live.members.value() | set(ids))
    if total > MAX_MEMBERS:
        raise _fail(MEMBERS_PATH, f"would have {total} agents; the limit is {MAX_MEMBERS}")
    delta = MeshState(members=live.members.add_all(node_id, ids))
    return live.merge(delta), delta


def remove_members(
    state: MeshState | None, agent_ids: Iterable[str]
) -> tuple[MeshState, MeshState]:
    """Remove the adds of these agents observed here (agents not present: no-op).

    Raises:
        InvalidArgument: empty list or bad id.
        MeshNotFound: the mesh is absent or deleted.
    """
    ids = _check_ids(agent_ids, "agent_ids")
    live = _live(state)
    delta = MeshState(members=_remove_delta(live.members, ids))
    return live.merge(delta), delta


def delete(state: MeshState | None, node_id: str, hlc: Timestamp) -> tuple[MeshState, MeshState]:
    """Tombstone the mesh: LWW ``deleted=True`` and remove every observed member.

    Raises:
        MeshNotFound: the mesh is absent or already deleted.
    """
    live = _live(state)
    ts = _after(live, hlc)
    delta = MeshState(
        members=live.members.clear(), lifecycle=live.lifecycle.assign(True, ts, node_id)
    )
    return live.merge(delta), delta


# --- reading ------------------------------------------------------------------------------

_TOPOLOGY_LAYOUT: Final = MerkleLayout(branching=16, depth=2)
"""Fixed for every replica and every mesh size (changing it changes every hash).
256 buckets: ~40 agents per bucket at MAX_MEMBERS."""

_MEMBER_DIGEST: Final = b"member"


def topology_hash(agent_ids: Iterable[str]) -> str:
    """Hex Merkle root (gossip.merkle) over a member set; independent of order.

    Leaf sums are additive (see gossip.merkle), fine for honest replicas, not a
    commitment against an adversary who picks agent ids."""
    tree = MerkleTree(_TOPOLOGY_LAYOUT)
    for agent in agent_ids:
        tree.set(agent, _MEMBER_DIGEST)
    return tree.root().hex()


EMPTY_TOPOLOGY_HASH: Final = topology_hash(())
"""The topology hash of a mesh with no members."""


def members(state: MeshState | None) -> list[str]:
    """Sorted member agent ids; [] when absent or deleted."""
    if not exists(state):
        return []
    assert state is not None
    return sorted(str(agent) for agent in state.members.value())


def render(state: MeshState | None) -> dict[str, Any]:
    """The document as the API returns it (members sorted, topology_hash computed).

    Raises:
        MeshNotFound: the mesh is absent or deleted.
    """
    live = _live(state)
    agents = members(live)
    values = live.fields.value()
    doc: dict[str, dict[str, Any]] = {section: {} for section in _FIELDS}
    for path in FIELD_PATHS:
        section, name = path.split(".", 1)
        if path == MEMBERS_PATH:
            doc[section][name] = agents
        else:
            doc[section][name] = values.get(path, _DEFAULTS.get(path))
    doc["topology"]["topology_hash"] = topology_hash(agents)
    return doc


# --- the agent -> meshes index ----------------------------------------------------------------


def index_key(agent_id: str) -> str:
    """Mesh-tier key of an agent's :data:`AgentMeshes` index entry."""
    return INDEX_PREFIX + _check_uuid4(agent_id, "agent_id")


def member_changes(
    before: MeshState | None, after: MeshState | None
) -> tuple[list[str], list[str]]:
    """``(added, removed)`` visible members between two states (absent/deleted = none)."""
    old, new = set(members(before)), set(members(after))
    return sorted(new - old), sorted(old - new)


def index_deltas(mesh_id: str, added: Iterable[str], removed: Iterable[str]) -> dict[str, Op]:
    """Index updates for a membership change: ``{agent_id: Op}``.

    Apply each with ``node.tiers.ops.apply_op`` to key ``index_key(agent_id)``
    (an :data:`AgentMeshes` ORSet). See the module docstring for why the index
    may lag and how queries cope.

    Raises:
        InvalidArgument: a bad id, or one agent both added and removed.
    """
    _check_uuid4(mesh_id, "mesh_id")
    add = {_check_uuid4(a, "added") for a in added}
    remove = {_check_uuid4(a, "removed") for a in removed}
    both = add & remove
    if both:
        raise InvalidArgument(f"agent {min(both)} is both added to and removed from {mesh_id}")
    ops = {a: Op("set_add", elements=(mesh_id,)) for a in add}
    ops.update({a: Op("set_remove", elements=(mesh_id,)) for a in remove})
    return dict(sorted(ops.items()))


def meshes_of(agent_index_state: CRDTBase | None) -> list[str]:
    """Sorted mesh ids in an agent's index entry (advisory: see :func:`confirmed_meshes`).

    Raises:
        InvalidArgument: the index key holds something other than an ORSet.
    """
    if agent_index_state is None:
        return []
    if not isinstance(agent_index_state, ORSet):
        raise InvalidArgument(
            f"the index key holds a {type(agent_index_state).__name__}, not an orset"
        )
    return sorted(str(mesh) for mesh in agent_index_state.value())


def members_of(mesh_state: CRDTBase | None) -> list[str]:
    """Sorted members of a fetched mesh state; [] when absent or deleted."""
    return members(as_mesh_state(mesh_state))


def confirmed_meshes(
    agent_id: str, meshes_of_agent: Iterable[str], mesh_docs: Mapping[str, MeshState | None]
) -> list[str]:
    """The index's meshes that are live and really list ``agent_id``, sorted.

    ``mesh_docs`` maps mesh id to its fetched state; a mesh missing from it is
    treated as absent (its index entry is stale or the read failed)."""
    confirmed = set()
    for mesh_id in meshes_of_agent:
        state = mesh_docs.get(mesh_id)
        if exists(state):
            assert state is not None
            if agent_id in state.members:
                confirmed.add(mesh_id)
    return sorted(confirmed)


def neighbours(
    agent_id: str, meshes_of_agent: Iterable[str], mesh_docs: Mapping[str, MeshState | None]
) -> list[str]:
    """Agents sharing at least one confirmed mesh with ``agent_id`` (itself excluded), sorted."""
    found: set[str] = set()
    for mesh_id in confirmed_meshes(agent_id, meshes_of_agent, mesh_docs):
        state = mesh_docs[mesh_id]
        assert state is not None
        found.update(str(agent) for agent in state.members.value())
    found.discard(agent_id)
    return sorted(found)


def page(
    items: Iterable[str], limit: int = 0, start_after: str = "", prefix: str = ""
) -> tuple[list[str], bool]:
    """One page of ``items`` in code-point order, like the store's ``scan``.

    Keeps items starting with ``prefix`` and sorting strictly after
    ``start_after`` (empty: from the start); at most ``limit`` (0: no limit).
    ``more`` is True when items were left out; ask for the next page with
    ``start_after`` = the last item returned.

    Raises:
        InvalidArgument: negative limit.
    """
    if limit < 0:
        raise InvalidArgument(f"limit {limit} is negative")
    ordered = sorted(set(items))
    lo = bisect.bisect_right(ordered, start_after) if start_after else 0
    if prefix:
        lo = max(lo, bisect.bisect_left(ordered, prefix))
    selected: list[str] = []
    for item in ordered[lo:]:
        if not item.startswith(prefix):
            break
        if limit and len(selected) == limit:
            return selected, True
        selected.append(item)
    return selected, False
