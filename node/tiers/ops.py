"""What the CRDT tiers are, and how one update becomes a CRDT delta. Pure.

Tiers (spec ``hierarchical_state_model``; ``../shared/DESIGN.md`` §1):

=========== ==== ============ ===============================================
tier        RF   write quorum notes
=========== ==== ============ ===============================================
population  2    2 (sloppy)   keys ``<subspace>/<id>``, the spec's six subspaces
agent       2    1            owner + asynchronous backup
mesh        2    2 (sloppy)
metrics     all  1            every node holds every key
=========== ==== ============ ===============================================

"Sloppy" (Dynamo): when an owner is down, a live fallback node stores the
update as a *hint* for it, and that counts toward the quorum; the hint is
handed off when the owner is back.

Every key holds one CRDT; the first update fixes its type. An update is
applied by an *owner* of the key, with that owner's node id as the replica
id, which yields a delta; the delta is what replicas receive and merge.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from crdt import (
    CRDTBase,
    CRDTError,
    EventLog,
    LWWMap,
    LWWRegister,
    ORSet,
    PNCounter,
    Timestamp,
)
from node.tiers.population import PopulationLog
from node.tiers.validation import InvalidArgument, check_key

POPULATION_SUBSPACES = (
    "judgement_snapshots",
    "egg_revision_history",
    "job_resource_ledger",
    "job_event_log",
    "worker_journal",
    "tadpole_activity_log",
)


@dataclass(frozen=True, slots=True)
class TierSpec:
    name: str
    rf: int  # 0 = every live node
    write_quorum: int  # acknowledgements (durable, hints included) before "ok"


TIERS: dict[str, TierSpec] = {
    "population": TierSpec("population", rf=2, write_quorum=2),
    "agent": TierSpec("agent", rf=2, write_quorum=1),
    "mesh": TierSpec("mesh", rf=2, write_quorum=2),
    "metrics": TierSpec("metrics", rf=0, write_quorum=1),
}


def tier_spec(tier: str) -> TierSpec:
    spec = TIERS.get(tier)
    if spec is None:
        known = ", ".join(TIERS)
        raise InvalidArgument(f"unknown tier {tier!r}: the Tiers API serves {known}")
    return spec


def check_tier_key(tier: str, key: str) -> TierSpec:
    spec = tier_spec(tier)
    check_key(key)
    if tier == "population":
        subspace, sep, rest = key.partition("/")
        if not sep or not rest or subspace not in POPULATION_SUBSPACES:
            raise InvalidArgument(
                f"population key {key!r} must be <subspace>/<id> with subspace one of "
                + ", ".join(POPULATION_SUBSPACES)
            )
    return spec


# -- updates -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Op:
    """One update, decoded and validated from the API request."""

    kind: str  # counter_add | set_add | set_remove | register_set | log_append | map_set
    amount: int = 0
    elements: tuple[str, ...] = ()
    value: Any = None
    entry_id: str = ""
    field: str = ""
    remove: bool = False

    @property
    def observes(self) -> bool:
        """Whether the update acts on what its replica has observed (an OR-set remove
        takes away the adds it has seen), so it must first see every acknowledged one."""
        return self.kind == "set_remove"


_KIND_TYPE = {
    "counter_add": PNCounter,
    "set_add": ORSet,
    "set_remove": ORSet,
    "register_set": LWWRegister,
    "log_append": EventLog,
    "map_set": LWWMap,
}

TYPE_NAMES: dict[type[CRDTBase], str] = {
    PopulationLog: "population_log",
    PNCounter: "pncounter",
    ORSet: "orset",
    LWWRegister: "lwwregister",
    EventLog: "eventlog",
    LWWMap: "lwwmap",
}

MAX_ELEMENTS = 1000


def parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidArgument(f"{what} is not valid JSON: {exc}") from exc


def op_from_request(request: Any) -> Op:
    """Validate the ``op`` oneof of a TierUpdateRequest."""
    which = request.WhichOneof("op")
    if which is None:
        raise InvalidArgument("update has no operation set")
    body = getattr(request, which)
    if which == "counter_add":
        return make_op(which, amount=int(body.amount))
    if which in ("set_add", "set_remove"):
        return make_op(which, elements=tuple(body.elements))
    if which == "register_set":
        return make_op(which, value=parse_json(body.value_json, "value_json"))
    if which == "log_append":
        payload = parse_json(body.payload_json, "payload_json")
        return make_op(which, value=payload, entry_id=body.entry_id)
    value = None if body.remove else parse_json(body.value_json, "value_json")
    return make_op("map_set", field=body.field, value=value, remove=body.remove)


# The JSON form of an update (HTTP API): {"op": KIND, ...fields}; fields per kind.
JSON_OP_FIELDS: dict[str, frozenset[str]] = {
    "counter_add": frozenset({"amount"}),
    "set_add": frozenset({"elements"}),
    "set_remove": frozenset({"elements"}),
    "register_set": frozenset({"value"}),
    "log_append": frozenset({"payload", "entry_id"}),
    "map_set": frozenset({"field", "value", "remove"}),
}


def op_from_json(body: Any) -> Op:
    """Validate the JSON form of an update: ``{"op": "counter_add", "amount": 5}``,
    ``{"op": "set_add", "elements": [...]}``, ``{"op": "register_set", "value": ...}``,
    ``{"op": "log_append", "payload": ..., "entry_id": "..."}``,
    ``{"op": "map_set", "field": "f", "value": ...}`` or ``{..., "remove": true}``.
    Unknown fields are refused (a typo must not be silently ignored)."""
    if not isinstance(body, dict):
        raise InvalidArgument('the update must be a JSON object with an "op" field')
    kind = body.get("op")
    if not isinstance(kind, str) or kind not in JSON_OP_FIELDS:
        raise InvalidArgument(f"op must be one of {', '.join(JSON_OP_FIELDS)}, not {kind!r}")
    allowed = JSON_OP_FIELDS[kind]
    unknown = sorted(set(body) - allowed - {"op"})
    if unknown:
        raise InvalidArgument(
            f"{kind} takes {', '.join(sorted(allowed))}; unknown field(s): {', '.join(unknown)}"
        )
    if kind == "counter_add":
        amount = body.get("amount")
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise InvalidArgument("counter_add amount must be an integer")
        if not COUNTER_MIN <= amount <= COUNTER_MAX:
            raise InvalidArgument("counter_add amount must fit in a signed 64-bit integer")
        return make_op(kind, amount=amount)
    if kind in ("set_add", "set_remove"):
        elements = body.get("elements")
        if not isinstance(elements, list) or not all(isinstance(e, str) for e in elements):
            raise InvalidArgument(f"{kind} elements must be a list of strings")
        return make_op(kind, elements=tuple(elements))
    if kind == "register_set":
        if "value" not in body:
            raise InvalidArgument("register_set needs a value")
        return make_op(kind, value=body["value"])
    if kind == "log_append":
        if "payload" not in body:
            raise InvalidArgument("log_append needs a payload")
        entry_id = body.get("entry_id", "")
        if not isinstance(entry_id, str):
            raise InvalidArgument("log_append entry_id must be a string")
        return make_op(kind, value=body["payload"], entry_id=entry_id)
    field_name, remove = body.get("field"), body.get("remove", False)
    if not isinstance(field_name, str):
        raise InvalidArgument("map_set field must be a string")
    if not isinstance(remove, bool):
        raise InvalidArgument("map_set remove must be true or false")
    if not remove and "value" not in body:
        raise InvalidArgument("map_set needs a value (or remove: true)")
    return make_op(kind, field=field_name, value=None if remove else body["value"], remove=remove)


def make_op(
    kind: str,
    *,
    amount: int = 0,
    elements: tuple[str, ...] = (),
    value: Any = None,
    entry_id: str = "",
    field: str = "",
    remove: bool = False,
) -> Op:
    """The checks every update passes, whichever API it came through."""
    if kind == "counter_add":
        if amount == 0:
            raise InvalidArgument("counter_add amount must not be 0")
        return Op(kind, amount=amount)
    if kind in ("set_add", "set_remove"):
        if not elements:
            raise InvalidArgument(f"{kind} needs at least one element")
        if len(elements) > MAX_ELEMENTS:
            raise InvalidArgument(f"{kind} has {len(elements)} elements; the limit is 1000")
        if any(not e for e in elements):
            raise InvalidArgument(f"{kind}: elements must be non-empty strings")
        return Op(kind, elements=elements)
    if kind == "register_set":
        return Op(kind, value=value)
    if kind == "log_append":
        entry_id = entry_id or uuid.uuid4().hex
        if len(entry_id) > 128:
            raise InvalidArgument("log_append entry_id is longer than 128 characters")
        return Op(kind, value=value, entry_id=entry_id)
    if kind == "map_set":
        if not field:
            raise InvalidArgument("map_set field is empty")
        return Op(kind, field=field, value=value, remove=remove)
    raise InvalidArgument(f"unknown update {kind!r}")


def apply_op(
    state: CRDTBase | None, op: Op, node_id: str, hlc: Timestamp, *, tier: str = ""
) -> tuple[CRDTBase, CRDTBase]:
    """(new state, delta) of applying ``op`` at replica ``node_id``.

    Event logs in the population tier are :class:`PopulationLog` (retention
    policies apply); elsewhere plain :class:`crdt.EventLog`. Raises
    InvalidArgument when the key holds another type or the value does not fit
    the type."""
    wanted: type[CRDTBase] = _KIND_TYPE[op.kind]
    if op.kind == "log_append" and tier == "population":
        wanted = PopulationLog
    if state is None:
        state = wanted()
    elif not isinstance(state, wanted):
        have = TYPE_NAMES.get(type(state), type(state).__name__)
        raise InvalidArgument(
            f"the key holds {_article(have)}; {op.kind} applies to {_article(TYPE_NAMES[wanted])}"
        )
    try:
        delta = _delta(state, op, node_id, hlc)
    except CRDTError as exc:
        raise InvalidArgument(f"{op.kind}: {exc}") from exc
    return state.apply_delta(delta), delta


# A PN-counter's value is a signed 64-bit integer, as clients read it (JSON numbers that
# int64 holds exactly only up to 2**63 - 1) and as the codec stores each node's
# contribution (msgpack integers stop at 2**64 - 1). An add that would take the value, or
# this node's running total of increments or decrements, outside that range is refused.
# The check is made on the coordinating owner's state: concurrent adds on different owners
# near a limit can still pass it together; the value is then outside the range until an
# add brings it back (reads keep working - Python integers do not overflow).
COUNTER_MIN, COUNTER_MAX = -(2**63), 2**63 - 1
REPLICA_TOTAL_MAX = 2**64 - 1  # the codec's largest integer


def _check_counter_add(state: PNCounter, node_id: str, amount: int) -> None:
    result = state.value() + amount
    if not COUNTER_MIN <= result <= COUNTER_MAX:
        raise InvalidArgument(
            f"counter_add {amount} would take the counter from {state.value()} to {result}, "
            f"outside its range [{COUNTER_MIN}, {COUNTER_MAX}]"
        )
    side = state.incs if amount > 0 else state.decs
    if side.get(node_id, 0) + abs(amount) > REPLICA_TOTAL_MAX:
        raise InvalidArgument(
            f"counter_add {amount}: this replica's running total of "
            f"{'increments' if amount > 0 else 'decrements'} would pass {REPLICA_TOTAL_MAX}"
        )


def _delta(state: CRDTBase, op: Op, node_id: str, hlc: Timestamp) -> CRDTBase:
    if isinstance(state, PNCounter):
        _check_counter_add(state, node_id, op.amount)
        if op.amount > 0:
            return state.increment(node_id, op.amount)
        return state.decrement(node_id, -op.amount)
    if isinstance(state, ORSet):
        if op.kind == "set_add":
            return state.add_all(node_id, op.elements)
        delta = ORSet()
        for element in op.elements:
            delta = delta.merge(state.remove(element))
        return delta
    if isinstance(state, LWWRegister):
        return state.assign(op.value, hlc, node_id)
    if isinstance(state, EventLog | PopulationLog):
        return state.append(hlc, node_id, op.entry_id, op.value)
    assert isinstance(state, LWWMap)
    if op.remove:
        return state.remove(op.field, hlc, node_id)
    return state.put(op.field, op.value, hlc, node_id)


# -- rendering -------------------------------------------------------------------


def render(state: CRDTBase) -> tuple[str, str]:
    """(type name, JSON text) of a state's value, for the API."""
    name = TYPE_NAMES.get(type(state), type(state).__name__.lower())
    value: Any = state.value()
    if isinstance(state, ORSet):
        value = sorted(value, key=lambda e: (type(e).__name__, e))
    elif isinstance(state, EventLog):
        value = [
            {
                "hlc": [e.hlc.wall_ns, e.hlc.logical],
                "node": e.node_id,
                "entry_id": e.entry_id,
                "payload": e.payload(),
            }
            for e in value
        ]
    return name, json.dumps(value, sort_keys=True, default=_json_default)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, frozenset | set | tuple):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun
