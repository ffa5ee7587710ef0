"""The job / worker / tadpole lifecycle over the system tier (docs/ledger.md#lifecycle).

The cluster is the system of record. Every lifecycle call is one system-tier
transaction that changes the records it touches **and** appends one outbox event
holding the ledger rows the change produces; the exporter (:mod:`node.ledger.export`)
later applies those rows to SQL. Both commit together or not at all, so the ledger can
lag but never disagree.

This module is the pure half: no I/O, no clock, no randomness. An operation is a
function of a :class:`Tx` (the records it reads, the time and the event id, all given)
that reads records, checks, and writes. The driver (:mod:`node.ledger.service`) runs
it against values it read, commits the writes with a compare on every record read
(optimistic concurrency, as etcd's STM), and runs it again on a conflict. A read of a
record the driver did not fetch raises :class:`NeedKeys`; the driver fetches it and
runs the operation again. So two concurrent assignments can't both take a pool's last
units: the second one's compare on the pool fails, and its rerun sees the pool full.

Keys (all under :data:`PREFIX`, values JSON):

=====================================  =================================================
``pools/<name>``                       capacity and units in use, per resource
``jobs/<job_id>``                      the job, its open allocation, its live units
``workers/<id>``, ``tadpoles/<id>``    a unit (worker or tadpole) with its TTL
``allocations/<id>``                   an open allocation (deleted on release)
``expiry/<ms>/<kind>/<id>``            a live unit's expiry, in time order (the sweeper)
``outbox/<event_id>``                  an event: the ledger rows of one change
=====================================  =================================================
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from node.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

__all__ = [
    "JOB_TRANSITIONS",
    "OUTBOX",
    "PREFIX",
    "RESOURCES",
    "UNIT_KINDS",
    "NeedKeys",
    "Tx",
    "assign_job",
    "expiry_key",
    "finish_job",
    "record_attribute",
    "record_event",
    "record_tadpole_metrics",
    "retire",
    "set_pool",
    "spawn",
    "start_job",
    "sweep_one",
]

PREFIX = "/tadpole/ledger/"
OUTBOX = PREFIX + "outbox/"
EXPIRY = PREFIX + "expiry/"
RESOURCES = ("compute_units", "memory_mb", "bandwidth_mbps", "thread_count")
UNIT_KINDS = ("worker", "tadpole")
WORKER_TYPES = ("tadpole", "quest_worker", "supervisor")

# Job status: assigned -> running -> completed | failed (failed also from assigned).
JOB_TRANSITIONS: dict[str, tuple[str, ...]] = {
    "assigned": ("running", "completed", "failed"),
    "running": ("completed", "failed"),
    "completed": (),
    "failed": (),
}
UNIT_ENDS = ("retired", "expired", "failed")

MAX_UNITS = (1 << 31) - 1  # per resource and pool: the ledger's INTEGER columns
MAX_TTL_S = 30 * 86_400
MAX_TEXT = 4096
MAX_JSON = 16 * 1024
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]*")
# Ids are at most 120 characters: an allocation id (``<job id>#<n>``,
# ``<kind>:<unit id>``) must still fit the ledger's 128. Shorter where the column is.
MAX_ID = 120
MAX_POOL = 64  # resource_allocations.pool


class NeedKeys(Exception):
    """The operation read records the driver has not fetched; fetch them and rerun."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        super().__init__(", ".join(keys))
        self.keys = keys


@dataclass
class Tx:
    """One run of an operation: the records it may read (``fetched``: key -> JSON
    object, or None for an absent key), the time (epoch seconds) and the id of the
    outbox event it may append. What it writes and emits is collected here."""

    fetched: Mapping[str, dict[str, Any] | None]
    now: float
    event_id: str
    writes: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    rows: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    read_keys: set[str] = field(default_factory=set)

    def get(self, key: str) -> dict[str, Any] | None:
        if key in self.writes:
            return self.writes[key]
        if key not in self.fetched:
            raise NeedKeys((key,))
        self.read_keys.add(key)
        value = self.fetched[key]
        return None if value is None else json.loads(json.dumps(value))

    def need(self, *keys: str) -> None:
        """Ask for several records at once (one round trip instead of one each)."""
        missing = tuple(k for k in keys if k not in self.fetched and k not in self.writes)
        if missing:
            raise NeedKeys(missing)

    def put(self, key: str, value: dict[str, Any]) -> None:
        self.writes[key] = value

    def delete(self, key: str) -> None:
        self.writes[key] = None

    def emit(self, table: str, row: dict[str, Any]) -> None:
        self.rows.append((table, row))

    def event(self) -> dict[str, Any] | None:
        """The outbox event of this change (None when nothing is exported)."""
        if not self.rows:
            return None
        return {
            "id": self.event_id,
            "at": self.now,
            "rows": [{"table": t, "row": r} for t, r in self.rows],
        }


# --- input checks -------------------------------------------------------------------


def check_id(value: Any, what: str, max_len: int = MAX_ID) -> str:
    if not isinstance(value, str) or len(value) > max_len or not _ID.fullmatch(value):
        raise InvalidArgument(
            f"{what} must be 1-{max_len} characters of letters, digits and . _ : @ -, "
            f"starting with a letter or digit (got {_shown(value)})"
        )
    return value


def check_resources(value: Any, what: str = "resources") -> dict[str, int]:
    """``{resource: whole units >= 0}``; a missing resource is 0, an unknown one is
    refused by name."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} must be an object of {', '.join(RESOURCES)}")
    unknown = sorted(set(value) - set(RESOURCES))
    if unknown:
        raise InvalidArgument(
            f"{what}: unknown resource {unknown[0]!r} (known: {', '.join(RESOURCES)})"
        )
    out = {}
    for name in RESOURCES:
        units = value.get(name, 0)
        if not isinstance(units, int) or isinstance(units, bool):
            raise InvalidArgument(f"{what}.{name} must be a whole number (got {_shown(units)})")
        if units < 0 or units > MAX_UNITS:
            raise InvalidArgument(f"{what}.{name} must be between 0 and {MAX_UNITS} (got {units})")
        out[name] = units
    return out


def check_text(
    value: Any, what: str, *, required: bool = False, max_len: int = MAX_TEXT
) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise InvalidArgument(f"{what} must be a {'non-empty ' if required else ''}string")
    if len(value) > max_len:
        raise InvalidArgument(f"{what} is {len(value)} characters; at most {max_len}")
    if "\x00" in value:
        raise InvalidArgument(f"{what} must not contain NUL characters")
    return value


def check_json(value: Any, what: str) -> Any:
    """A JSON object (or None) of at most :data:`MAX_JSON` bytes encoded."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} must be a JSON object")
    size = json_size(value, what)
    if size > MAX_JSON:
        raise InvalidArgument(f"{what} is {size} bytes of JSON; at most {MAX_JSON}")
    return value


def check_number(
    value: Any, what: str, lo: float | None = None, hi: float | None = None
) -> float | None:
    if value is None:
        return None
    try:
        finite = not isinstance(value, bool) and isinstance(value, int | float)
        finite = finite and math.isfinite(value)
    except OverflowError:  # an integer beyond any float
        finite = False
    if not finite:
        raise InvalidArgument(f"{what} must be a finite number (got {_shown(value)})")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise InvalidArgument(f"{what} must be between {lo} and {hi} (got {value})")
    return float(value)


def json_size(value: Any, what: str) -> int:
    """Bytes of ``value`` as compact JSON; InvalidArgument for what a database's JSON
    can't hold (NaN, infinities, NUL characters)."""
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (ValueError, TypeError):
        raise InvalidArgument(f"{what} must be JSON without NaN or infinities") from None
    if "\\u0000" in text:
        raise InvalidArgument(f"{what} must not contain NUL characters")
    return len(text)


def check_ttl(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_TTL_S:
        raise InvalidArgument(f"ttl_seconds must be a whole number from 1 to {MAX_TTL_S}")
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --- keys ---------------------------------------------------------------------------


def pool_key(name: str) -> str:
    return f"{PREFIX}pools/{name}"


def job_key(job_id: str) -> str:
    return f"{PREFIX}jobs/{job_id}"


def unit_key(kind: str, unit_id: str) -> str:
    return f"{PREFIX}{kind}s/{unit_id}"


def allocation_key(allocation_id: str) -> str:
    return f"{PREFIX}allocations/{allocation_id}"


def expiry_key(expiry_at: float, kind: str, unit_id: str) -> str:
    """Sorted by time: zero-padded milliseconds since the epoch."""
    return f"{EXPIRY}{round(expiry_at * 1000):015d}/{kind}/{unit_id}"


def parse_expiry_key(key: str) -> tuple[float, str, str]:
    """(expiry, kind, unit id) of an expiry entry; InvalidArgument (a ValueError) for
    a key that is not one."""
    try:
        ms, kind, unit_id = key[len(EXPIRY) :].split("/", 2)
        return int(ms) / 1000, kind, unit_id
    except ValueError:
        raise InvalidArgument(f"{key!r} is not an expiry entry") from None


# --- pools and allocations ----------------------------------------------------------


def set_pool(tx: Tx, name: str, capacity: Any) -> dict[str, Any]:
    """Create a pool or change its capacity. A capacity below what is in use is
    refused, naming both."""
    check_id(name, "pool", MAX_POOL)
    cap = check_resources(capacity, "capacity")
    pool = tx.get(pool_key(name))
    in_use = pool["in_use"] if pool else dict.fromkeys(RESOURCES, 0)
    for res in RESOURCES:
        if cap[res] < in_use[res]:
            raise FailedPrecondition(
                f"pool {name!r} has {in_use[res]} {res} in use; its capacity can't be {cap[res]}"
            )
    record = {"name": name, "capacity": cap, "in_use": in_use}
    tx.put(pool_key(name), record)
    return record


def _take(tx: Tx, pool_name: str, units: dict[str, int], allocation_id: str, job_id: str) -> None:
    pool = tx.get(pool_key(pool_name))
    if pool is None:
        raise FailedPrecondition(
            f"no resource pool {pool_name!r}: create it with tadpole pool set {pool_name}"
        )
    for res in RESOURCES:
        free = pool["capacity"][res] - pool["in_use"][res]
        if units[res] > free:
            raise FailedPrecondition(
                f"pool {pool_name!r} has {free} {res} free of {pool['capacity'][res]}; "
                f"{units[res]} asked"
            )
    for res in RESOURCES:
        pool["in_use"][res] += units[res]
    tx.put(pool_key(pool_name), pool)
    allocation = {
        "allocation_id": allocation_id,
        "job_id": job_id,
        "pool": pool_name,
        **units,
        "allocated_at": tx.now,
    }
    tx.put(allocation_key(allocation_id), allocation)
    tx.emit("resource_allocations", {**allocation, "released_at": None})


def _release(tx: Tx, allocation_id: str | None) -> None:
    """Give an allocation's units back, once: a released allocation's record is gone,
    so a second release finds nothing and does nothing."""
    if not allocation_id:
        return
    allocation = tx.get(allocation_key(allocation_id))
    if allocation is None:
        return
    pool = tx.get(pool_key(allocation["pool"]))
    if pool is not None:
        for res in RESOURCES:
            pool["in_use"][res] = max(0, pool["in_use"][res] - allocation[res])
        tx.put(pool_key(allocation["pool"]), pool)
    tx.delete(allocation_key(allocation_id))
    tx.emit("resource_allocations", {**allocation, "released_at": tx.now})


# --- jobs ---------------------------------------------------------------------------


def _job(tx: Tx, job_id: str) -> dict[str, Any]:
    check_id(job_id, "job_id")
    job = tx.get(job_key(job_id))
    if job is None:
        raise NotFound(f"no job {job_id!r}")
    return job


def _job_row(job: dict[str, Any]) -> dict[str, Any]:
    return {
        k: job.get(k)
        for k in (
            "job_id",
            "objective",
            "status",
            "reward_signal",
            "requested_resources",
            "metadata",
            "spawned_at",
            "started_at",
            "completed_at",
        )
    }


def assign_job(
    tx: Tx,
    job_id: str,
    *,
    objective: Any = None,
    reward_signal: Any = None,
    resources: Any = None,
    metadata: Any = None,
    pool: Any = None,
) -> dict[str, Any]:
    """Create a job and allocate what it asks from ``pool`` (default ``default``), or
    update a live one (the spec: every assign_job upserts; what is left out is kept).
    A changed request re-allocates: the old units go back and the new ones are taken
    in the same transaction, so a job never holds both and never neither. Assigning
    an identical job again changes nothing."""
    check_id(job_id, "job_id")
    if pool is not None:
        check_id(pool, "pool", MAX_POOL)
    objective = check_text(objective, "objective")
    reward = check_number(reward_signal, "reward_signal")
    units = None if resources is None else check_resources(resources)
    metadata = check_json(metadata, "metadata")
    job = tx.get(job_key(job_id))
    if job is None:
        job = {
            "job_id": job_id,
            "objective": objective,
            "status": "assigned",
            "reward_signal": reward,
            "requested_resources": units or check_resources(None),
            "metadata": metadata,
            "pool": pool or "default",
            "spawned_at": tx.now,
            "started_at": None,
            "completed_at": None,
            "allocation_id": None,
            "allocations": 0,
            "units": [],
            "ttl_expirations": 0,
        }
        tx.emit("jobs", _job_row(job))  # the allocation's row references the job's
        _allocate_job(tx, job)
        tx.put(job_key(job_id), job)
        return job
    if not JOB_TRANSITIONS[job["status"]]:
        raise FailedPrecondition(f"job {job_id!r} is {job['status']}; it can't be assigned again")
    changed = False
    for name, value in (
        ("objective", objective),
        ("reward_signal", reward),
        ("metadata", metadata),
    ):
        if value is not None and job[name] != value:
            job[name] = value
            changed = True
    units = job["requested_resources"] if units is None else units
    pool = job["pool"] if pool is None else pool
    if units != job["requested_resources"] or pool != job["pool"]:
        _release(tx, job["allocation_id"])
        job["requested_resources"] = units
        job["pool"] = pool
        _allocate_job(tx, job)
        changed = True
    if changed:
        tx.emit("jobs", _job_row(job))
        tx.put(job_key(job_id), job)
    return job


def _allocate_job(tx: Tx, job: dict[str, Any]) -> None:
    job["allocations"] += 1
    allocation_id = f"{job['job_id']}#{job['allocations']}"
    _take(tx, job["pool"], job["requested_resources"], allocation_id, job["job_id"])
    job["allocation_id"] = allocation_id


def _transition(job: dict[str, Any], target: str) -> bool:
    """True to go on; False when the job is already there (a resend: no change)."""
    current = job["status"]
    if current == target:
        return False
    if target not in JOB_TRANSITIONS[current]:
        raise FailedPrecondition(
            f"job {job['job_id']!r} is {current}; it can't become {target}"
            + (
                f" (from {current}: {', '.join(JOB_TRANSITIONS[current])})"
                if JOB_TRANSITIONS[current]
                else ""
            )
        )
    job["status"] = target
    return True


def start_job(tx: Tx, job_id: str) -> dict[str, Any]:
    job = _job(tx, job_id)
    if _transition(job, "running"):
        job["started_at"] = tx.now
        tx.emit("jobs", _job_row(job))
        tx.put(job_key(job_id), job)
    return job


def finish_job(
    tx: Tx,
    job_id: str,
    outcome: str,
    *,
    efficiency: Any = None,
    details: Any = None,
) -> dict[str, Any]:
    """Complete or fail a job: its live units are retired, every allocation of it is
    released, and its metrics are recorded (latency from assignment, the caller's
    efficiency, how many of its units expired by TTL)."""
    if outcome not in ("completed", "failed"):
        raise InvalidArgument(f"outcome must be completed or failed (got {_shown(outcome)})")
    efficiency = check_number(efficiency, "efficiency", 0.0, 1.0)
    details = check_json(details, "details")
    job = _job(tx, job_id)
    if not _transition(job, outcome):
        return job
    tx.need(*(unit_key(kind, uid) for kind, uid in job["units"]))
    for kind, uid in list(job["units"]):
        _end_unit(tx, kind, uid, "retired" if outcome == "completed" else "failed", job)
    _release(tx, job["allocation_id"])
    job["allocation_id"] = None
    job["completed_at"] = tx.now
    tx.emit("jobs", _job_row(job))
    tx.emit(
        "job_metrics",
        {
            "job_id": job_id,
            "recorded_at": tx.now,
            "latency_ms": round((tx.now - job["spawned_at"]) * 1000, 3),
            "efficiency": efficiency,
            "ttl_expirations": job["ttl_expirations"],
            "details": {**(details or {}), "outcome": outcome},
        },
    )
    tx.put(job_key(job_id), job)
    return job


# --- workers and tadpoles -----------------------------------------------------------


def _check_kind(kind: str) -> None:
    if kind not in UNIT_KINDS:
        raise InvalidArgument(f"kind must be worker or tadpole (got {_shown(kind)})")


def spawn(
    tx: Tx,
    kind: str,
    unit_id: str,
    job_id: str,
    ttl_seconds: Any,
    *,
    resources: Any = None,
    worker_type: Any = "tadpole",
    specialization: Any = None,
    worker_id: Any = None,
    protocol: Any = None,
    metadata: Any = None,
) -> dict[str, Any]:
    """Spawn a worker or tadpole for a live job, with a TTL and optionally its own
    allocation from the job's pool. Spawning the same unit again with the same
    arguments returns it unchanged; different arguments are ALREADY_EXISTS."""
    _check_kind(kind)
    check_id(unit_id, f"{kind}_id")
    ttl = check_ttl(ttl_seconds)
    units = check_resources(resources)
    metadata = check_json(metadata, "metadata")
    specialization = check_text(specialization, "specialization")
    protocol = check_text(protocol, "communication_protocol")
    if kind == "worker" and worker_type not in WORKER_TYPES:
        raise InvalidArgument(
            f"worker_type must be one of {', '.join(WORKER_TYPES)} (got {_shown(worker_type)})"
        )
    if worker_id is not None:
        check_id(worker_id, "worker_id")
    request = {
        "job_id": job_id,
        "ttl_seconds": ttl,
        "resources": units,
        "metadata": metadata,
        **(
            {"worker_type": worker_type, "specialization": specialization}
            if kind == "worker"
            else {"worker_id": worker_id, "communication_protocol": protocol}
        ),
    }
    job = _job(tx, job_id)
    existing = tx.get(unit_key(kind, unit_id))
    if existing is not None:
        if existing["request"] == request:
            return existing
        raise AlreadyExists(f"{kind} {unit_id!r} exists (spawned with other arguments)")
    if not JOB_TRANSITIONS[job["status"]]:
        raise FailedPrecondition(
            f"job {job_id!r} is {job['status']}; nothing can be spawned for it"
        )
    if worker_id is not None:
        parent = tx.get(unit_key("worker", worker_id))
        if parent is None:
            raise NotFound(f"no worker {worker_id!r}")
    expiry = tx.now + ttl
    allocation_id = None
    if any(units.values()):
        allocation_id = f"{kind}:{unit_id}"  # unit ids are unique per kind
    unit = {
        "kind": kind,
        "id": unit_id,
        "job_id": job_id,
        "status": "active",
        "spawned_at": tx.now,
        "retired_at": None,
        "ttl_seconds": ttl,
        "expiry_at": expiry,
        "allocation_id": allocation_id,
        "request": request,
    }
    tx.emit(*_unit_row(unit))
    if allocation_id is not None:
        _take(tx, job["pool"], units, allocation_id, job_id)
    if kind == "worker":
        _worker_event(tx, unit_id, "spawned", {"ttl_seconds": ttl, "resources": units})
    tx.put(unit_key(kind, unit_id), unit)
    tx.put(expiry_key(expiry, kind, unit_id), {"kind": kind, "id": unit_id})
    job["units"].append([kind, unit_id])
    tx.put(job_key(job_id), job)
    return unit


def _unit_row(unit: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    request = unit["request"]
    if unit["kind"] == "worker":
        return "workers", {
            "worker_id": unit["id"],
            "job_id": unit["job_id"],
            "worker_type": request["worker_type"],
            "specialization": request["specialization"],
            "status": unit["status"],
            "spawned_at": unit["spawned_at"],
            "retired_at": unit["retired_at"],
            "ttl_seconds": unit["ttl_seconds"],
            "expiry_at": unit["expiry_at"],
            "metadata": request["metadata"],
        }
    return "tadpole_instances", {
        "tadpole_id": unit["id"],
        "worker_id": request["worker_id"],
        "job_id": unit["job_id"],
        "communication_protocol": request["communication_protocol"],
        "resource_allocation": request["resources"],
        "status": unit["status"],
        "spawned_at": unit["spawned_at"],
        "expiry_at": unit["expiry_at"],
    }


def _worker_event(tx: Tx, worker_id: str, event_type: str, payload: Any) -> None:
    tx.emit(
        "worker_events",
        {
            "event_id": f"{tx.event_id}:{len(tx.rows)}",
            "worker_id": worker_id,
            "event_type": event_type,
            "payload": payload,
            "occurred_at": tx.now,
        },
    )


def _end_unit(tx: Tx, kind: str, unit_id: str, status: str, job: dict[str, Any]) -> None:
    unit = tx.get(unit_key(kind, unit_id))
    if unit is None or unit["status"] != "active":
        return
    unit["status"] = status
    unit["retired_at"] = tx.now
    _release(tx, unit["allocation_id"])
    tx.delete(expiry_key(unit["expiry_at"], kind, unit_id))
    tx.put(unit_key(kind, unit_id), unit)
    tx.emit(*_unit_row(unit))
    if kind == "worker":
        _worker_event(tx, unit_id, status, None)
    job["units"] = [u for u in job["units"] if u != [kind, unit_id]]
    if status == "expired":
        job["ttl_expirations"] += 1


def retire(tx: Tx, kind: str, unit_id: str, status: str = "retired") -> dict[str, Any]:
    """End a live unit (retired, failed, expired): its allocation is released exactly
    once. Ending an ended unit with the same status is a resend (no change); with
    another status it is FAILED_PRECONDITION naming the current one."""
    _check_kind(kind)
    check_id(unit_id, f"{kind}_id")
    if status not in UNIT_ENDS:
        raise InvalidArgument(
            f"status must be one of {', '.join(UNIT_ENDS)} (got {_shown(status)})"
        )
    unit = tx.get(unit_key(kind, unit_id))
    if unit is None:
        raise NotFound(f"no {kind} {unit_id!r}")
    if unit["status"] != "active":
        if unit["status"] == status:
            return unit
        raise FailedPrecondition(
            f"{kind} {unit_id!r} is {unit['status']}; it can't become {status}"
        )
    job = _job(tx, unit["job_id"])
    _end_unit(tx, kind, unit_id, status, job)
    tx.put(job_key(job["job_id"]), job)
    return tx.get(unit_key(kind, unit_id)) or unit


def sweep_one(tx: Tx, key: str, now: float) -> dict[str, Any]:
    """The sweeper's step for one expiry entry: expire the unit if it is live and due
    by ``now``; an entry whose unit ended some other way is dropped. Run twice (two
    sweepers), the second finds the unit expired and changes nothing. Answers
    ``{"expired": whether this step expired it, "unit": the unit or None}``."""
    _at, kind, unit_id = parse_expiry_key(key)
    unit = tx.get(unit_key(kind, unit_id))
    if (
        unit is None
        or unit["status"] != "active"
        or expiry_key(unit["expiry_at"], kind, unit_id) != key
    ):
        if tx.get(key) is not None:
            tx.delete(key)
        return {"expired": False, "unit": unit}
    if unit["expiry_at"] > now:
        return {"expired": False, "unit": unit}
    return {"expired": True, "unit": retire(tx, kind, unit_id, "expired")}


def record_event(tx: Tx, worker_id: str, event_type: Any, payload: Any = None) -> dict[str, Any]:
    """A worker's own event (a heartbeat, a metrics report, a milestone)."""
    check_id(worker_id, "worker_id")
    check_id(event_type, "event_type", 64)
    payload = check_json(payload, "payload")
    unit = tx.get(unit_key("worker", worker_id))
    if unit is None:
        raise NotFound(f"no worker {worker_id!r}")
    _worker_event(tx, worker_id, event_type, payload)
    return unit


ATTRIBUTE_ENTITIES = {"job": "job", "worker": "worker", "tadpole": "tadpole"}
_ATTRIBUTE_KEY = re.compile(r"[a-z][a-z0-9_]{0,62}")


def record_attribute(
    tx: Tx,
    entity_type: str,
    entity_id: str,
    key: str,
    value: Any,
    *,
    weight_hint: Any = None,
) -> dict[str, Any]:
    """An experimental field of a job, worker or tadpole (spec dynamic_extension): a
    ``dynamic_attributes`` row, its current value upserted, until ``tadpole ledger
    schema`` makes it a column. ``key`` is a lower-case SQL identifier, so it can
    become one."""
    if not isinstance(entity_type, str) or entity_type not in ATTRIBUTE_ENTITIES:
        raise InvalidArgument(
            f"entity_type must be job, worker or tadpole (got {_shown(entity_type)})"
        )
    check_id(entity_id, "entity_id")
    if not isinstance(key, str) or not _ATTRIBUTE_KEY.fullmatch(key):
        raise InvalidArgument(
            f"key must be a lower-case identifier: a letter, then letters, digits or _ "
            f"(at most 63; got {_shown(key)})"
        )
    size = json_size(value, "value")
    if size > MAX_TEXT:
        raise InvalidArgument(f"value is {size} bytes of JSON; at most {MAX_TEXT}")
    weight = check_number(weight_hint, "weight_hint")
    record = tx.get(
        job_key(entity_id) if entity_type == "job" else unit_key(entity_type, entity_id)
    )
    if record is None:
        raise NotFound(f"no {entity_type} {entity_id!r}")
    row = {
        "entity_type": entity_type,
        "entity_id": entity_id,
        "attribute_key": key,
        "attribute_value": value,
        "weight_hint": weight,
        "observed_at": tx.now,
    }
    tx.emit("dynamic_attributes", row)
    return row


def record_tadpole_metrics(
    tx: Tx,
    tadpole_id: str,
    *,
    entropy: Any = None,
    resource_pressure: Any = None,
    protocol_success: Any = None,
    details: Any = None,
) -> dict[str, Any]:
    check_id(tadpole_id, "tadpole_id")
    row = {
        "tadpole_id": tadpole_id,
        "recorded_at": tx.now,
        "entropy": check_number(entropy, "entropy"),
        "resource_pressure": check_number(resource_pressure, "resource_pressure", 0.0, 1.0),
        "protocol_success": check_number(protocol_success, "protocol_success", 0.0, 1.0),
        "details": check_json(details, "details"),
    }
    unit = tx.get(unit_key("tadpole", tadpole_id))
    if unit is None:
        raise NotFound(f"no tadpole {tadpole_id!r}")
    tx.emit("tadpole_metrics", row)
    return unit


Operation = Callable[[Tx], dict[str, Any]]
