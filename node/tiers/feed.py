"""How a CRDT tier's change-feed entry reads in the API: the key's value as a
document, an index entry or a plain CRDT value. Pure."""

from __future__ import annotations

import json
from typing import Any

from crdt import CodecError, CRDTBase, decode
from node.errors import InvalidArgument
from node.tiers import agent as agent_doc
from node.tiers import mesh as mesh_doc
from node.tiers.ops import render

__all__ = ["change_value"]


def change_value(tier: str, key: str, state: bytes | None) -> tuple[str, Any]:
    """``(kind, value)`` of ``key``'s state as a feed entry shows it: ``agent`` /
    ``mesh`` documents (value None when absent or deleted), ``mesh_index`` (the
    agent -> meshes index: the mesh ids listed), else the CRDT's type and value.
    A state this node cannot decode is ``("undecodable", None)``, never an error."""
    if state is None:
        return "deleted", None
    try:
        decoded = decode(state)
    except CodecError:
        return "undecodable", None
    if not isinstance(decoded, CRDTBase):
        return "undecodable", None
    if tier == "agent":
        try:
            agent = agent_doc.check_state(decoded)
        except InvalidArgument:
            return "undecodable", None
        return "agent", agent_doc.render(agent) if agent_doc.exists(agent) else None
    if tier == "mesh":
        if key.startswith(mesh_doc.INDEX_PREFIX):
            return "mesh_index", mesh_doc.meshes_of(decoded)
        mesh = mesh_doc.as_mesh_state(decoded)
        return "mesh", mesh_doc.render(mesh) if mesh_doc.exists(mesh) else None
    kind, value_json = render(decoded)
    return kind, json.loads(value_json)
