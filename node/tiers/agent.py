"""The agent tier's document: validation, CRDT representation, merge-patch writes. Pure.

One document per agent (spec ``data_models.agent_data_model``), stored under
the key ``identity.agent_id``. No I/O, no threads, no clock reads: the caller
passes the node id and the HLC timestamp of every write, as ``tier_ops.apply_op``
does for the other tiers.

The document
============

Four sections, all required, nothing else at the top level. Inside a section
the schema is closed too (an unknown field is a typo until the spec says
otherwise); ``[opt]`` marks fields that may be absent::

    identity                      (immutable after creation, except generation)
      agent_id                    canonical lowercase uuid4 string ("8-4-4-4-12", version 4)
      public_key                  ed25519 verification key: the raw 32 bytes of RFC 8032
                                  as 64 lowercase hex characters (format checked only,
                                  not that the bytes decode to a curve point)
      generation                  int, 0 <= g < 2**63; may only grow
      creation_timestamp          int unix nanoseconds, 0 <= t < 2**63
    performance_state
      current_metrics       [opt] object (free-form JSON)
      historical_metrics    [opt] string, standard base64 (the compressed series)
      rubric_scores         [opt] list of finite numbers
      judgement_snapshot_ref[opt] string
      job_allocation_ref    [opt] string
    knowledge_state
      capability_vector           list of exactly 256 finite numbers, |x| <= 2**32; stored
                                  in 2**-24 fixed point, read back as float32 values
                                  (0.1 reads back as 0.10000002384185791)
      learned_patterns      [opt] string, standard base64 (the serialized weights)
      experience_history    [opt] list (free-form JSON items)
    relationship_state
      mesh_memberships      [opt] list of distinct uuid4 strings (mesh ids)
      communication_history [opt] list (free-form JSON items)
      trust_scores          [opt] object: agent_id (uuid4) -> number in [0, 1]

Free-form JSON anywhere: no NaN/Infinity, integers in the signed 64-bit range,
nesting at most 32 deep. Every violation raises
:class:`~node.tiers.validation.InvalidArgument` whose message starts with the dotted
path of the field (``identity.agent_id: ...``, ``performance_state.rubric_scores[2]: ...``).

The CRDT state (``AgentState``)
================================

An :class:`crdt.ORMap` with four fixed keys, each holding one CRDT of the
library, so the replication layer stores, ships, merges and encodes it exactly
like any other state (one codec, ``to_bytes``/``from_bytes``, equal states give
identical bytes). ORMap nests any CRDT type per key; nothing new was registered
in ``crdt/``::

    "fields"      LWWMap   flattened JSON leaves: path -> leaf value
    "capability"  CapabilityVector(256)   knowledge_state.capability_vector
    "generation"  GSet[int]               identity.generation = max of the set
    "clock"       VectorClock             the causal version vector (the token)

*fields*: a path is the JSON-pointer (RFC 6901) of a leaf without the leading
slash (``performance_state/rubric_scores``; ``~`` and ``/`` in keys escaped as
``~0``/``~1``). Objects are flattened, so concurrent writes to different keys
of one object both survive; lists and scalars are leaves (a list is replaced
whole, as in RFC 7396); an empty object is stored as the leaf ``{}`` so it is
not lost. Each leaf is last-writer-wins by ``(hlc, node_id)``; a removed leaf
leaves a tombstone (the price of LWW removes). If concurrent writes make a path
both a leaf and the parent of other leaves (``m/x = 5`` here, ``m/x/y = 1``
there; only possible inside free-form objects), :func:`render` applies the live
leaves oldest first, each one replacing whatever structure is in its way, so
the newest write decides — deterministic on every replica.

*capability*: a patch that sets the vector becomes per-dimension
``CapabilityVector.set`` edits for the dimensions whose float32 value changes,
so concurrent edits of different dimensions commute ("collaborative capability
editing"). Concurrent edits of the *same* dimension add their adjustments
(the CRDT's commutative rule), they do not race: from 0, "set 1.0" here and
"set 2.0" there converge to 3.0. :func:`capability_add` is the plain increment.

*generation*: "may only grow" must also hold across concurrent writes; as an
LWW leaf, a concurrent bump to 2 could overwrite a bump to 3. A grow-only set
whose maximum is the generation keeps the larger one (one int per bump).

*clock*: every write adds one to the writer's entry (each node's contribution
holds only its own entry, so an entry is only as high as that node's writes
that have actually arrived). The causal token of a state is this clock as a
plain ``{writer: writes}`` dict (a writer id is ``<node id>~<epoch>``, see
``node/replication/driver.py``).

Why every write touches all four keys
-------------------------------------

Replication ships deltas and may deliver them out of order (a hint handed off
after a later direct write). A version vector is only an honest causal token if
"entry n at node A" implies "A's writes 1..n are all here". ORMap contributions
are cumulative per writer (a replica's new contribution to a key joins its
previous one), so each write re-issues the writer's contribution to *every*
key, not only the ones it changed: whatever delta of A arrives carries all of
A's earlier effects, and ``clock[A] >= n`` implies them. The cost is that a
delta is as large as the writer's share of the document (for the owner, about
the whole document), not just the changed leaves. Four dots per write.

Writes
======

:func:`create`, :func:`merge_patch`, :func:`capability_set` and
:func:`capability_add` return ``(new_state, delta)`` with
``new_state == state.apply_delta(delta)``; the delta is what replicas merge.
A write never loses to what it has observed: its LWW timestamp is ``hlc``, or,
if the state already holds a timestamp >= ``hlc`` (a peer with a faster
clock), the successor of the largest one (a Lamport floor, as an HLC receive
event would give). Errors: :class:`~node.tiers.validation.InvalidArgument` (bad
document, patch, key, amount, or a key holding another type) and
:class:`AgentNotFound` (patching a document that was never created).
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, TypeAlias, TypeVar

from crdt import (
    CAPABILITY_DIMS,
    QUANTUM_BITS,
    CapabilityVector,
    CodecError,
    CRDTBase,
    CRDTError,
    GSet,
    LWWMap,
    ORMap,
    Timestamp,
    VectorClock,
)
from crdt.capvec import quantize
from node.errors import AlreadyExists, InvalidArgument, NotFound
from node.tiers.validation import as_document_error

__all__ = [
    "CAPABILITY_LIMIT",
    "SECTIONS",
    "AgentNotFound",
    "AgentState",
    "agent_id",
    "apply_merge_patch",
    "capability_add",
    "capability_set",
    "check_agent_key",
    "check_state",
    "check_token",
    "clock",
    "covers",
    "create",
    "decode_state",
    "exists",
    "merge_patch",
    "merge_tokens",
    "render",
    "validate_document",
]

AgentState: TypeAlias = ORMap
"""An agent document's CRDT state: an ORMap with the fixed keys below."""

FIELDS: Final = "fields"
CAPABILITY: Final = "capability"
GENERATION: Final = "generation"
CLOCK: Final = "clock"
_KEY_TYPES: Final[dict[str, type[CRDTBase]]] = {
    FIELDS: LWWMap,
    CAPABILITY: CapabilityVector,
    GENERATION: GSet,
    CLOCK: VectorClock,
}

SECTIONS: Final = ("identity", "performance_state", "knowledge_state", "relationship_state")
CAPABILITY_LIMIT: Final = 2.0**32
"""Largest capability magnitude accepted: keeps every edit far inside the CRDT's
fixed-point range (±2**62 quanta of 2**-24 per replica), ~4.3e9 is ample for scores."""

MAX_DEPTH: Final = 32
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_SCALE: Final = 1 << QUANTUM_BITS
_AGENT_ID_PATH: Final = "identity/agent_id"
_CAPABILITY_PATH: Final = "knowledge_state/capability_vector"
_GENERATION_PATH: Final = "identity/generation"
_IMMUTABLE: Final = ("agent_id", "public_key", "creation_timestamp")


class AgentNotFound(NotFound):
    """No agent document exists under the key (maps to NOT_FOUND)."""


class AgentExists(AlreadyExists):
    """A create-only write found a document under the key (maps to ALREADY_EXISTS)."""


# -- validation ------------------------------------------------------------------------


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bad(path: str, problem: str, value: object = None, *, show: bool = True) -> InvalidArgument:
    suffix = f", got {_show(value)}" if show else ""
    return InvalidArgument(f"{path}: {problem}{suffix}")


def _is_number(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return _INT64_MIN <= value <= _INT64_MAX
    return isinstance(value, float) and math.isfinite(value)


def _check_json(value: object, path: str, depth: int = 0) -> None:
    """Plain JSON as ``json.loads`` makes it, finite, 64-bit ints, bounded depth."""
    if depth > MAX_DEPTH:
        raise _bad(path, f"nested more than {MAX_DEPTH} levels deep", show=False)
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int | float):
        if not _is_number(value):
            raise _bad(path, "numbers must be finite and integers fit in 64 bits", value)
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{path}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _bad(path, "object keys must be strings", key)
            _check_json(item, f"{path}.{key}", depth + 1)
        return
    raise _bad(path, f"not a JSON value ({type(value).__name__})", show=False)


def _uuid4(value: object, path: str) -> None:
    problem = "must be a canonical lowercase uuid4 string"
    if not isinstance(value, str):
        raise _bad(path, problem, value)
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        raise _bad(path, problem, value) from None
    if parsed.version != 4 or str(parsed) != value:
        raise _bad(path, problem, value)


def _public_key(value: object, path: str) -> None:
    if (
        not isinstance(value, str)
        or len(value) != 64
        or any(c not in "0123456789abcdef" for c in value)
    ):
        raise _bad(path, "must be an ed25519 key: 32 bytes as 64 lowercase hex characters", value)


def _int63(value: object, path: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _INT64_MAX:
        raise _bad(path, "must be an integer in 0..2**63-1", value)


def _string(value: object, path: str) -> None:
    if not isinstance(value, str):
        raise _bad(path, "must be a string", value)


def _base64(value: object, path: str) -> None:
    if not isinstance(value, str):
        raise _bad(path, "must be a base64 string", value)
    try:
        base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise _bad(path, "must be standard base64 (A-Z a-z 0-9 + /, padded)", value) from None


def _object(value: object, path: str) -> None:
    if not isinstance(value, dict):
        raise _bad(path, "must be an object", value)
    _check_json(value, path, 2)


def _list(value: object, path: str) -> None:
    if not isinstance(value, list):
        raise _bad(path, "must be a list", value)
    _check_json(value, path, 2)


def _number_list(value: object, path: str) -> None:
    if not isinstance(value, list):
        raise _bad(path, "must be a list of numbers", value)
    for i, item in enumerate(value):
        if not _is_number(item):
            raise _bad(f"{path}[{i}]", "must be a finite number", item)


def _capability_vector(value: object, path: str) -> None:
    if not isinstance(value, list) or len(value) != CAPABILITY_DIMS:
        got = f"length {len(value)}" if isinstance(value, list) else _show(value)
        problem = f"must be a list of exactly {CAPABILITY_DIMS} numbers, got {got}"
        raise _bad(path, problem, show=False)
    for i, item in enumerate(value):
        if not _is_number(item) or abs(item) > CAPABILITY_LIMIT:
            raise _bad(f"{path}[{i}]", "must be a finite number with |x| <= 2**32", item)


def _uuid4_list(value: object, path: str) -> None:
    if not isinstance(value, list):
        raise _bad(path, "must be a list of uuid4 strings", value)
    seen: set[str] = set()
    for i, item in enumerate(value):
        _uuid4(item, f"{path}[{i}]")
        assert isinstance(item, str)
        if item in seen:
            raise _bad(f"{path}[{i}]", "duplicate mesh id", item)
        seen.add(item)


def _trust_scores(value: object, path: str) -> None:
    if not isinstance(value, dict):
        raise _bad(path, "must be an object of agent_id -> number in [0, 1]", value)
    for peer, score in value.items():
        _uuid4(peer, f"{path} key")
        if not _is_number(score) or not 0 <= score <= 1:
            raise _bad(f"{path}.{peer}", "must be a number in [0, 1]", score)


_Check: TypeAlias = Callable[[object, str], None]

# section -> field -> (required, check); written as data so the table is the schema.
_SCHEMA: Final[dict[str, dict[str, tuple[bool, _Check]]]] = {
    "identity": {
        "agent_id": (True, _uuid4),
        "public_key": (True, _public_key),
        "generation": (True, _int63),
        "creation_timestamp": (True, _int63),
    },
    "performance_state": {
        "current_metrics": (False, _object),
        "historical_metrics": (False, _base64),
        "rubric_scores": (False, _number_list),
        "judgement_snapshot_ref": (False, _string),
        "job_allocation_ref": (False, _string),
    },
    "knowledge_state": {
        "learned_patterns": (False, _base64),
        "experience_history": (False, _list),
        "capability_vector": (True, _capability_vector),
    },
    "relationship_state": {
        "mesh_memberships": (False, _uuid4_list),
        "communication_history": (False, _list),
        "trust_scores": (False, _trust_scores),
    },
}


def validate_document(doc: object) -> None:
    """Check a whole agent document (see the module docstring for the schema).

    Raises:
        InvalidDocument: naming the first offending field by its dotted path.
    """
    with as_document_error():
        _validate_document(doc)


def _validate_document(doc: object) -> None:
    if not isinstance(doc, dict):
        raise _bad("document", "must be a JSON object", doc)
    for section in doc:
        if section not in _SCHEMA:
            raise _bad(
                str(section), "unknown section (expected " + ", ".join(SECTIONS) + ")", show=False
            )
    for section, fields in _SCHEMA.items():
        if section not in doc:
            raise _bad(section, "section is required", show=False)
        body = doc[section]
        if not isinstance(body, dict):
            raise _bad(section, "must be an object", body)
        for name in body:
            if name not in fields:
                known = ", ".join(fields)
                raise _bad(f"{section}.{name}", f"unknown field (expected {known})", show=False)
        for name, (required, check) in fields.items():
            path = f"{section}.{name}"
            if name not in body:
                if required:
                    raise _bad(path, "field is required", show=False)
                continue
            check(body[name], path)


def check_agent_key(key: str) -> None:
    """The key of an agent document is its ``identity.agent_id``: a canonical uuid4."""
    _uuid4(key, "key")


def _check_identity_change(old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    before, after = old["identity"], new["identity"]
    for name in _IMMUTABLE:
        if before[name] != after[name]:
            raise InvalidArgument(
                f"identity.{name}: immutable after creation "
                f"({_show(before[name])} -> {_show(after[name])})"
            )
    if after["generation"] < before["generation"]:
        raise InvalidArgument(
            f"identity.generation: may only grow ({before['generation']} -> {after['generation']})"
        )


# -- RFC 7396 ------------------------------------------------------------------------


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 §2 MergePatch(target, patch): a new value; the arguments are not changed.

    A non-object patch replaces the target; in an object patch ``null`` removes a
    member and any other value is merged recursively (arrays replace).
    """
    if not isinstance(patch, dict):
        return _copy(patch)
    result: dict[str, Any] = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


# -- flattening ------------------------------------------------------------------------


def _escape(segment: str) -> str:
    return segment.replace("~", "~0").replace("/", "~1")


def _unescape(segment: str) -> str:
    return segment.replace("~1", "/").replace("~0", "~")


def _flatten(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``path -> leaf`` of a valid document, minus the paths kept in other CRDTs."""
    out: dict[str, Any] = {}

    def walk(obj: Mapping[str, Any], prefix: str) -> None:
        if not obj and prefix:
            out[prefix] = {}
        for key, value in obj.items():
            path = f"{prefix}/{_escape(key)}" if prefix else _escape(key)
            if path in (_CAPABILITY_PATH, _GENERATION_PATH):
                continue
            if isinstance(value, dict):
                walk(value, path)
            else:
                out[path] = value

    walk(doc, "")
    return out


def _insert(root: dict[str, Any], path: str, value: Any) -> None:
    segments = [_unescape(s) for s in path.split("/")]
    node = root
    for segment in segments[:-1]:
        child = node.get(segment)
        if not isinstance(child, dict):
            child = {}
            node[segment] = child
        node = child
    last = segments[-1]
    if value == {} and isinstance(node.get(last), dict):
        return  # an empty-object marker never hides members written beside it
    node[last] = value


def _same(a: Any, b: Any) -> bool:
    """JSON equality that also tells 1, 1.0 and True apart (and 0.0 from -0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return bool(a == b)


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    return value


# -- state access ----------------------------------------------------------------------

N = TypeVar("N", bound=CRDTBase)


def _nested(state: ORMap, key: str, empty: N) -> N:
    value = state.get(key)
    if value is None:
        return empty
    assert type(value) is type(empty)
    return value


def _fields(state: ORMap) -> LWWMap:
    return _nested(state, FIELDS, LWWMap())


def _capability(state: ORMap) -> CapabilityVector:
    return _nested(state, CAPABILITY, CapabilityVector())


def _generations(state: ORMap) -> GSet:
    return _nested(state, GENERATION, GSet())


def _clock(state: ORMap) -> VectorClock:
    return _nested(state, CLOCK, VectorClock())


def check_state(state: CRDTBase | None) -> AgentState:
    """The stored state as an agent state (``None`` -> empty).

    Raises:
        InvalidArgument: the key holds another CRDT type, or an ORMap that is
            not shaped like an agent document.
    """
    if state is None:
        return ORMap()
    if not isinstance(state, ORMap):
        raise InvalidArgument(f"the key holds a {type(state).__name__}, not an agent document")
    for key, contributions in state.entries.items():
        wanted = _KEY_TYPES.get(key)
        if wanted is None or any(type(c) is not wanted for c in contributions.values()):
            raise InvalidArgument(f"the key holds an ORMap that is not an agent document ({key!r})")
        for c in contributions.values():
            if isinstance(c, CapabilityVector) and c.dims != CAPABILITY_DIMS:
                raise InvalidArgument(f"agent capability vector has {c.dims} dimensions")
    return state


def decode_state(data: bytes) -> AgentState:
    """Decode bytes from ``to_bytes()`` of an agent state.

    Raises:
        CodecError: not valid crdt bytes, or not an agent state's shape.
    """
    state = ORMap.from_bytes(data)
    try:
        return check_state(state)
    except InvalidArgument as exc:
        raise CodecError(str(exc)) from exc


def exists(state: AgentState) -> bool:
    """Whether a document has been created in ``state``."""
    return _AGENT_ID_PATH in _fields(state)


def agent_id(state: AgentState) -> str | None:
    """The document's ``identity.agent_id``, or None if there is no document."""
    value = _fields(state).get(_AGENT_ID_PATH)
    return value if isinstance(value, str) else None


def render(state: AgentState) -> dict[str, Any]:
    """The JSON document held by ``state`` (``{}`` if none was created).

    Object keys come out sorted; the capability vector is 256 float32 values.
    """
    fields = _fields(state)
    if _AGENT_ID_PATH not in fields:
        return {}
    doc: dict[str, Any] = {}
    live = sorted(
        (ts, node, path) for path, (ts, node, blob) in fields.entries.items() if blob is not None
    )
    for _ts, _node, path in live:
        _insert(doc, path, fields.get(path))
    generation = max((g for g in _generations(state).value() if isinstance(g, int)), default=None)
    if generation is not None:
        doc.setdefault("identity", {})["generation"] = generation
    knowledge = doc.setdefault("knowledge_state", {})
    knowledge["capability_vector"] = list(_capability(state).value())
    result: dict[str, Any] = _sorted(doc)
    return result


# -- causal tokens ---------------------------------------------------------------------


def clock(state: AgentState) -> dict[str, int]:
    """The causal token of ``state``: ``{writer id: writes by that writer seen here}``."""
    return dict(sorted(_clock(state).value().items()))


def check_token(token: object) -> dict[str, int]:
    """Validate a client-supplied causal token (a JSON object of node id -> count)."""
    if not isinstance(token, dict):
        raise _bad("token", "must be an object of node id -> count", token)
    for node, count in token.items():
        if not isinstance(node, str) or not node:
            raise _bad("token", "node ids must be non-empty strings", node)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise _bad(f"token.{node}", "must be an integer >= 0", count)
    return dict(token)


def covers(state: AgentState, token: Mapping[str, int]) -> bool:
    """True iff ``state`` includes every write named by ``token`` (entrywise >=)."""
    vc = _clock(state)
    return all(vc.get(node) >= count for node, count in check_token(dict(token)).items())


def merge_tokens(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    """Entrywise max: the token of a session that has seen both."""
    out = dict(a)
    for node, count in b.items():
        out[node] = max(out.get(node, 0), count)
    return dict(sorted(out.items()))


# -- writes ----------------------------------------------------------------------------


def _write_timestamp(fields: LWWMap, hlc: Timestamp) -> Timestamp:
    newest = max((ts for ts, _node, _blob in fields.entries.values()), default=None)
    if newest is None or hlc > newest:
        return hlc
    return Timestamp(newest.wall_ns, newest.logical + 1)


def _fields_delta(fields: LWWMap, doc: Mapping[str, Any], node_id: str, ts: Timestamp) -> LWWMap:
    """Puts and tombstones that make the live leaves exactly ``_flatten(doc)``.

    Diffed against *every* live leaf, including ones a newer structural write
    hides in :func:`render`, so nothing hidden can resurface later.
    """
    target = _flatten(doc)
    entries: dict[str, Any] = {}
    for path in sorted(fields.keys() - target.keys()):
        entries.update(fields.remove(path, ts, node_id).entries)
    for path, value in sorted(target.items()):
        if path not in fields or not _same(fields.get(path), value):
            entries.update(fields.put(path, value, ts, node_id).entries)
    return LWWMap(entries)


def _capability_delta(
    cap: CapabilityVector, node_id: str, targets: Mapping[int, float]
) -> CapabilityVector:
    """One edit moving each listed dimension to its target (``set`` semantics)."""
    totals = cap.totals()
    exact: dict[int, float] = {}
    slow: list[tuple[int, float]] = []
    for dim, target in sorted(targets.items()):
        diff = quantize(target) - totals[dim]
        amount = diff / _SCALE
        if round(amount * _SCALE) == diff:
            exact[dim] = amount
        else:  # beyond float's 53 bits: let the CRDT do the integer arithmetic
            slow.append((dim, target))
    delta = cap.add_many(node_id, exact) if exact else CapabilityVector()
    current = cap.apply_delta(delta)
    for dim, target in slow:
        step = current.set(node_id, dim, target)
        current = current.apply_delta(step)
        delta = delta.merge(step)
    return delta


def _changed_dims(cap: CapabilityVector, vector: Iterable[float]) -> dict[int, float]:
    """Dimensions to edit: unchanged when the exact fixed-point total or the float32
    reading already matches (so sending back a rendered vector edits nothing)."""
    now, totals = cap.value(), cap.totals()
    out: dict[int, float] = {}
    for dim, target in enumerate(vector):
        if quantize(target) != totals[dim] and _float32(target) != now[dim]:
            out[dim] = float(target)
    return out


def _float32(x: float) -> float:
    value: float = struct.unpack("<f", struct.pack("<f", x))[0]
    return value


def _const(delta: N) -> Callable[[N], N]:
    return lambda _current: delta


def _commit(
    state: ORMap,
    node_id: str,
    fields: LWWMap | None = None,
    capability: CapabilityVector | None = None,
    generation: GSet | None = None,
) -> tuple[ORMap, ORMap]:
    """Apply one write: every key is touched (see "Why every write touches all four keys")."""
    current, delta = state, ORMap()

    def step(key: str, nested: N, empty: N) -> None:
        nonlocal current, delta
        d = current.update(node_id, key, _const(nested), empty)
        current = current.apply_delta(d)
        delta = delta.merge(d)

    step(FIELDS, fields if fields is not None else LWWMap(), LWWMap())
    step(
        CAPABILITY, capability if capability is not None else CapabilityVector(), CapabilityVector()
    )
    step(GENERATION, generation if generation is not None else GSet(), GSet())
    step(CLOCK, VectorClock({node_id: _clock(current).get(node_id) + 1}), VectorClock())
    return current, delta


def _write(
    state: ORMap, doc: Mapping[str, Any], node_id: str, hlc: Timestamp
) -> tuple[ORMap, ORMap]:
    if not isinstance(node_id, str) or not node_id:
        raise InvalidArgument("node_id must be a non-empty string")
    if not isinstance(hlc, Timestamp):
        raise InvalidArgument("hlc must be a crdt.Timestamp")
    try:
        fields = _fields(state)
        f_delta = _fields_delta(fields, doc, node_id, _write_timestamp(fields, hlc))
        cap = _capability(state)
        c_delta = _capability_delta(
            cap, node_id, _changed_dims(cap, doc["knowledge_state"]["capability_vector"])
        )
        generation = doc["identity"]["generation"]
        known = _generations(state).value()
        g_delta = GSet().add(generation) if generation not in known else GSet()
        return _commit(state, node_id, f_delta, c_delta, g_delta)
    except CRDTError as exc:
        raise InvalidArgument(f"agent document write: {exc}") from exc


def create(
    state: CRDTBase | None,
    doc: Any,
    node_id: str,
    hlc: Timestamp,
    *,
    key: str | None = None,
    only_new: bool = False,
) -> tuple[AgentState, AgentState]:
    """Write a whole document (create, or replace an existing one: PUT semantics).

    ``key``, when given, must be the document's ``identity.agent_id``. Replacing
    keeps the identity rules: agent_id, public_key and creation_timestamp
    unchanged, generation not smaller. ``only_new`` refuses to replace (HTTP
    ``If-None-Match: *``); it is judged on the applying owner's copy (the API reads
    every live owner first), so only two truly concurrent create-only writes through
    different owners can both pass.

    Raises:
        AgentExists: ``only_new`` and a document is already under the key.
        InvalidArgument: invalid document, key mismatch, another agent's
            document already under the key, or an identity change.
    """
    agent_state = check_state(state)
    validate_document(doc)
    if only_new and exists(agent_state):
        raise AgentExists("an agent document already exists under this key")
    new_id = doc["identity"]["agent_id"]
    if key is not None:
        check_agent_key(key)
        if key != new_id:
            raise InvalidArgument(f"key {key!r} is not the document's identity.agent_id {new_id!r}")
    if exists(agent_state):
        current = render(agent_state)
        if current["identity"]["agent_id"] != new_id:
            raise InvalidArgument(
                f"identity.agent_id: the key already holds agent "
                f"{current['identity']['agent_id']!r}, not {new_id!r}"
            )
        _check_identity_change(current, doc)
    return _write(agent_state, doc, node_id, hlc)


def merge_patch(
    state: CRDTBase | None, patch: Any, node_id: str, hlc: Timestamp
) -> tuple[AgentState, AgentState]:
    """Apply an RFC 7396 JSON merge patch to the document.

    The *result* must be a valid document with an unchanged identity (generation
    may grow). Setting ``knowledge_state.capability_vector`` becomes per-dimension
    capability edits for the dimensions that change.

    Raises:
        AgentNotFound: no document under the key yet (create it first).
        InvalidArgument: the patch is not an object, or the result is invalid.
    """
    agent_state = check_state(state)
    if not exists(agent_state):
        raise AgentNotFound("no agent document under this key; create it first")
    if not isinstance(patch, dict):
        raise _bad("patch", "must be a JSON object", patch)
    current = render(agent_state)
    new = apply_merge_patch(current, patch)
    validate_document(new)
    _check_identity_change(current, new)
    return _write(agent_state, new, node_id, hlc)


def _dim_map(values: object, what: str) -> dict[int, float]:
    if not isinstance(values, Mapping) or not values:
        raise _bad(what, "must be a non-empty mapping of dimension -> number", values)
    out: dict[int, float] = {}
    for dim, amount in values.items():
        if isinstance(dim, bool) or not isinstance(dim, int) or not 0 <= dim < CAPABILITY_DIMS:
            raise _bad(f"{what} dimension", f"must be an integer in 0..{CAPABILITY_DIMS - 1}", dim)
        if not _is_number(amount) or abs(amount) > CAPABILITY_LIMIT:
            raise _bad(f"{what}[{dim}]", "must be a finite number with |x| <= 2**32", amount)
        out[dim] = float(amount)
    return out


def _capability_write(
    state: CRDTBase | None,
    node_id: str,
    edit: Callable[[CapabilityVector], CapabilityVector],
) -> tuple[AgentState, AgentState]:
    agent_state = check_state(state)
    if not exists(agent_state):
        raise AgentNotFound("no agent document under this key; create it first")
    if not isinstance(node_id, str) or not node_id:
        raise InvalidArgument("node_id must be a non-empty string")
    try:
        return _commit(agent_state, node_id, capability=edit(_capability(agent_state)))
    except CRDTError as exc:
        raise InvalidArgument(f"capability edit: {exc}") from exc


def capability_add(
    state: CRDTBase | None, amounts: Mapping[int, float], node_id: str
) -> tuple[AgentState, AgentState]:
    """Add ``amounts[dim]`` to each listed dimension: commutative, concurrent adds sum.

    Raises:
        AgentNotFound: no document under the key.
        InvalidArgument: empty mapping, a dimension outside 0..255, a bad amount,
            or a total beyond the CRDT's fixed-point range.
    """
    checked = _dim_map(amounts, "amounts")
    return _capability_write(state, node_id, lambda cap: cap.add_many(node_id, checked))


def capability_set(
    state: CRDTBase | None, targets: Mapping[int, float], node_id: str
) -> tuple[AgentState, AgentState]:
    """Move each listed dimension to ``targets[dim]`` as seen here (``CapabilityVector.set``).

    Concurrent sets of one dimension add their adjustments (module docstring).
    Same errors as :func:`capability_add`.
    """
    checked = _dim_map(targets, "targets")
    return _capability_write(state, node_id, lambda cap: _capability_delta(cap, node_id, checked))
