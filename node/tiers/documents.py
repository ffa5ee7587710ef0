"""Document operations of the mesh (and agent) tiers, as replicable mutations.

The replication layer applies an update on an owner as
``mutate(state) -> (new state, delta)``. For the generic CRDT ops that is
``tier_ops.apply_op``; for documents it is one of the functions registered
here, looked up by name, so a document update can be forwarded to an owner
as plain data (``DocOp(kind, args)``) and applied there.

Graph queries read mesh documents and the advisory agent -> meshes index
(``node/tiers/mesh.py`` explains why the index is advisory and re-checked).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from crdt import CRDTBase, Timestamp
from node.tiers import agent as agent_doc
from node.tiers import mesh as mesh_doc
from node.tiers.validation import InvalidArgument

Mutator = Callable[[CRDTBase | None, dict[str, Any], str, Timestamp], tuple[CRDTBase, CRDTBase]]


@dataclass(frozen=True)
class DocOp:
    """A document update: ``kind`` names a registered mutator; ``args`` is plain data."""

    kind: str
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def observes(self) -> bool:
        """Whether the update removes what its replica has observed (members of a
        mesh, or the whole mesh); see :attr:`node.tiers.ops.Op.observes`."""
        return self.kind == "mesh_delete" or (
            self.kind == "mesh_members" and bool(self.args.get("remove"))
        )


def _mesh(state: CRDTBase | None) -> mesh_doc.MeshState | None:
    return mesh_doc.as_mesh_state(state)


def _mesh_create(
    state: CRDTBase | None, args: dict[str, Any], node: str, hlc: Timestamp
) -> tuple[CRDTBase, CRDTBase]:
    return mesh_doc.create(args["doc"], node, hlc, prior=_mesh(state))


def _mesh_put(
    state: CRDTBase | None, args: dict[str, Any], node: str, hlc: Timestamp
) -> tuple[CRDTBase, CRDTBase]:
    return mesh_doc.put_fields(_mesh(state), args["doc"], node, hlc)


def _mesh_upsert(
    state: CRDTBase | None, args: dict[str, Any], node: str, hlc: Timestamp
) -> tuple[CRDTBase, CRDTBase]:
    """Create the mesh from ``doc``, or update the fields it names if the mesh is live
    (HTTP ``PUT /state/mesh/{id}``); decided on the owner applying it."""
    current = _mesh(state)
    if mesh_doc.exists(current):
        return mesh_doc.put_fields(current, args["doc"], node, hlc)
    return mesh_doc.create(args["doc"], node, hlc, prior=current)


def _mesh_members(
    state: CRDTBase | None, args: dict[str, Any], node: str, hlc: Timestamp
) -> tuple[CRDTBase, CRDTBase]:
    current = _mesh(state)
    new, delta = current, mesh_doc.MeshState()
    if args.get("add"):
        new, d = mesh_doc.add_members(new, args["add"], node)
        delta = delta.merge(d)
    if args.get("remove"):
        new, d = mesh_doc.remove_members(new, args["remove"])
        delta = delta.merge(d)
    if new is None:
        raise mesh_doc.MeshNotFound("no such mesh")
    return new, delta


def _mesh_delete(
    state: CRDTBase | None, args: dict[str, Any], node: str, hlc: Timestamp
) -> tuple[CRDTBase, CRDTBase]:
    return mesh_doc.delete(_mesh(state), node, hlc)


def _agent_create(
    state: CRDTBase | None, args: dict[str, Any], node: str, hlc: Timestamp
) -> tuple[CRDTBase, CRDTBase]:
    return agent_doc.create(
        state, args["doc"], node, hlc, key=args["key"], only_new=bool(args.get("only_new"))
    )


def _agent_patch(
    state: CRDTBase | None, args: dict[str, Any], node: str, hlc: Timestamp
) -> tuple[CRDTBase, CRDTBase]:
    return agent_doc.merge_patch(state, args["patch"], node, hlc)


def _agent_capability_add(
    state: CRDTBase | None, args: dict[str, Any], node: str, hlc: Timestamp
) -> tuple[CRDTBase, CRDTBase]:
    if not agent_doc.exists(agent_doc.check_state(state)):
        raise agent_doc.AgentNotFound("no such agent")
    amounts = {int(dim): float(v) for dim, v in args["amounts"]}
    return agent_doc.capability_add(state, amounts, node)


MUTATORS: dict[str, Mutator] = {
    "mesh_create": _mesh_create,
    "mesh_put": _mesh_put,
    "mesh_upsert": _mesh_upsert,
    "mesh_members": _mesh_members,
    "mesh_delete": _mesh_delete,
    "agent_create": _agent_create,
    "agent_patch": _agent_patch,
    "agent_capability_add": _agent_capability_add,
}


def apply_doc_op(
    state: CRDTBase | None, op: DocOp, node_id: str, hlc: Timestamp
) -> tuple[CRDTBase, CRDTBase]:
    mutator = MUTATORS.get(op.kind)
    if mutator is None:
        raise InvalidArgument(f"unknown document operation {op.kind!r}")
    return mutator(state, op.args, node_id, hlc)


def member_changes(before: CRDTBase | None, after: CRDTBase | None) -> tuple[list[str], list[str]]:
    """Mesh membership added/removed by an update (for the agent index)."""
    if not isinstance(after, mesh_doc.MeshState):
        return [], []
    previous = before if isinstance(before, mesh_doc.MeshState) else None
    added, removed = mesh_doc.member_changes(previous, after)
    return list(added), list(removed)
