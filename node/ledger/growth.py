"""Reviewed schema growth (spec ``dynamic_extension:
schema_change_log_controls_column_growth``): experimental fields become columns only
by an approved, logged ``ALTER TABLE``.

* Fields arrive as ``dynamic_attributes`` rows (``RecordAttribute``), one current
  value per (entity, id, key).
* :func:`propose` looks at what has been observed and writes, for each key seen on
  enough entities of one kind, an ``ALTER TABLE <table> ADD COLUMN <key> <type>``
  with its rationale to ``schema_change_log`` (``action = proposed``). The type is
  inferred from the values seen (boolean, integer, number, text; JSON otherwise).
  Nothing is applied.
* :func:`approve` applies one proposal in one transaction: the statement (checked
  again: only a nullable ``ADD COLUMN`` to an entity table, so no data can be lost),
  a backfill of the new column from the dynamic attributes, and an ``applied`` row
  naming the proposal. If any of it fails, none of it happened, and the error says
  why.
* Afterwards the exporter keeps the column current as new observations of the key
  arrive (:mod:`node.ledger.sink`).

A materialised column lives outside the model (``node/ledger/schema.py``) until a
release adopts it in a reviewed migration; the exporter never writes it except as
above.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, inspect, select, text
from sqlalchemy.exc import SQLAlchemyError

from node.ledger.migrate import LedgerError, _failed, engine_for
from node.ledger.schema import Base, DynamicAttribute, SchemaChange

__all__ = [
    "ENTITY_TABLES",
    "Applied",
    "Proposal",
    "approve",
    "changes",
    "materialised",
    "parse_ddl",
    "propose",
]

# entity type -> (table, its id column)
ENTITY_TABLES = {
    "job": ("jobs", "job_id"),
    "worker": ("workers", "worker_id"),
    "tadpole": ("tadpole_instances", "tadpole_id"),
}
_TYPES = {  # inferred kind -> SQL type per dialect
    "boolean": {"postgresql": "BOOLEAN", "sqlite": "BOOLEAN"},
    "integer": {"postgresql": "BIGINT", "sqlite": "BIGINT"},
    "number": {"postgresql": "DOUBLE PRECISION", "sqlite": "REAL"},
    "text": {"postgresql": "TEXT", "sqlite": "TEXT"},
    "json": {"postgresql": "JSONB", "sqlite": "JSON"},
}
_DDL = re.compile(
    r'ALTER TABLE (?P<table>[a-z_]+) ADD COLUMN (?P<q>"?)(?P<column>[a-z][a-z0-9_]{0,62})(?P=q) '
    r"(?P<type>BOOLEAN|BIGINT|DOUBLE PRECISION|REAL|TEXT|JSONB|JSON)"
)
_JSON_TYPES = ("JSONB", "JSON")


@dataclass(frozen=True, slots=True)
class Proposal:
    id: int
    table: str
    column: str
    ddl: str
    rationale: str


@dataclass(frozen=True, slots=True)
class Applied:
    proposal: int
    log_id: int
    table: str
    column: str
    backfilled: int


def parse_ddl(ddl: str) -> tuple[str, str, str]:
    """(table, column, SQL type) of a statement this module may apply; LedgerError
    naming why for anything else."""
    found = _DDL.fullmatch(ddl.strip().rstrip(";"))
    if found is None:
        if re.search(r"\b(DROP|RENAME|ALTER COLUMN|TYPE|DELETE|TRUNCATE)\b", ddl, re.I):
            raise LedgerError(f"{ddl!r} could lose data: only ADD COLUMN is ever applied")
        raise LedgerError(f"{ddl!r} is not an ADD COLUMN this release can apply")
    table = found["table"]
    if table not in {t for t, _id in ENTITY_TABLES.values()}:
        raise LedgerError(f"{table!r} is not a table dynamic attributes may grow")
    return table, found["column"], found["type"]


def _kind(values: list[Any]) -> str:
    kinds = set()
    for value in values:
        if isinstance(value, bool):
            kinds.add("boolean")
        elif isinstance(value, int):
            kinds.add("integer")
        elif isinstance(value, float):
            kinds.add("number")
        elif isinstance(value, str):
            kinds.add("text")
        elif value is not None:
            kinds.add("json")
    if kinds <= {"integer", "number"} and "number" in kinds:
        return "number"
    return kinds.pop() if len(kinds) == 1 else "json"


def _describe(kind: str, values: list[Any]) -> str:
    present = [v for v in values if v is not None]
    if kind in ("integer", "number") and present:
        return f"{kind} values from {min(present)} to {max(present)}"
    if kind == "text" and present:
        return f"text values ({len(set(present))} distinct)"
    return f"{kind} values"


def changes(url: str) -> list[dict[str, Any]]:
    """The schema change log, oldest first."""
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(SchemaChange).order_by(SchemaChange.id)).mappings().all()
            return [dict(r) for r in rows]
    except SQLAlchemyError as exc:
        raise _failed(engine, exc) from None
    finally:
        engine.dispose()


def propose(
    url: str, *, initiated_by: str, min_entities: int = 3
) -> tuple[list[Proposal], list[str]]:
    """Write a proposal for each observed key worth a column; (the proposals, why
    other keys were passed over)."""
    if min_entities < 1:
        raise LedgerError("min_entities must be at least 1")
    engine = engine_for(url)
    try:
        with engine.begin() as conn:
            return _propose(conn, engine, initiated_by, min_entities)
    except SQLAlchemyError as exc:
        raise _failed(engine, exc) from None
    finally:
        engine.dispose()


def _propose(
    conn: Connection, engine: Engine, initiated_by: str, min_entities: int
) -> tuple[list[Proposal], list[str]]:
    dialect = engine.dialect.name
    quote = engine.dialect.identifier_preparer.quote
    logged = {r.ddl_statement for r in conn.execute(select(SchemaChange.ddl_statement))}
    observed = conn.execute(
        select(
            DynamicAttribute.entity_type,
            DynamicAttribute.attribute_key,
            DynamicAttribute.attribute_value,
            DynamicAttribute.weight_hint,
        ).order_by(DynamicAttribute.entity_type, DynamicAttribute.attribute_key)
    ).all()
    groups: dict[tuple[str, str], list[tuple[Any, float | None]]] = {}
    for entity, key, value, weight in observed:
        groups.setdefault((entity, key), []).append((value, weight))
    made: list[Proposal] = []
    skipped: list[str] = []
    now = datetime.now(UTC)
    for (entity, key), items in sorted(groups.items()):
        if entity not in ENTITY_TABLES:
            skipped.append(f"{entity}.{key}: {entity!r} is not a job, worker or tadpole")
            continue
        table, _id = ENTITY_TABLES[entity]
        columns = {c["name"] for c in inspect(conn).get_columns(table)}
        if key in columns:
            skipped.append(f"{entity}.{key}: {table} already has a column {key}")
            continue
        if len(items) < min_entities:
            skipped.append(
                f"{entity}.{key}: seen on {len(items)} {entity}s; a column needs {min_entities}"
            )
            continue
        values = [v for v, _w in items]
        kind = _kind(values)
        ddl = f"ALTER TABLE {table} ADD COLUMN {quote(key)} {_TYPES[kind][dialect]}"
        if ddl in logged:
            skipped.append(f"{entity}.{key}: already in the change log ({ddl})")
            continue
        total = conn.execute(
            select(func.count()).select_from(Base.metadata.tables[table])
        ).scalar_one()
        weights = [w for _v, w in items if w is not None]
        rationale = (
            f"{key} observed on {len(items)} of {total} {table} rows; {_describe(kind, values)}"
            + (f"; mean weight hint {sum(weights) / len(weights):.2f}" if weights else "")
        )
        new_id = _log(conn, initiated_by, table, "proposed", ddl, rationale, now)
        made.append(Proposal(new_id, table, key, ddl, rationale))
    return made, skipped


def approve(url: str, change_id: int, *, approved_by: str) -> Applied:
    """Apply proposal ``change_id`` with its backfill and log it, in one transaction."""
    engine = engine_for(url)
    try:
        with engine.begin() as conn:
            return _approve(conn, change_id, approved_by)
    except LedgerError:
        raise
    except SQLAlchemyError as exc:
        raise LedgerError(f"not applied, nothing changed: {_failed(engine, exc)}") from None
    finally:
        engine.dispose()


def _approve(conn: Connection, change_id: int, approved_by: str) -> Applied:
    row = conn.execute(select(SchemaChange).where(SchemaChange.id == change_id)).mappings().first()
    if row is None:
        raise LedgerError(f"no schema change #{change_id}")
    if row["action"] != "proposed":
        raise LedgerError(f"#{change_id} records an {row['action']} change, not a proposal")
    done = conn.execute(
        select(SchemaChange.id).where(
            SchemaChange.action == "applied",
            SchemaChange.rationale.like(f"approves #{change_id}:%"),
        )
    ).first()
    if done is not None:
        raise LedgerError(f"#{change_id} was applied already (#{done[0]})")
    table, column, sql_type = parse_ddl(row["ddl_statement"])
    if column in {c["name"] for c in inspect(conn).get_columns(table)}:
        raise LedgerError(f"{table} already has a column {column}; nothing changed")
    entity = next(e for e, (t, _id) in ENTITY_TABLES.items() if t == table)
    values = _observed(conn, entity, column)
    misfits = [(i, v) for i, v in values if not fits(sql_type, v)]
    if misfits:
        entity_id, value = misfits[0]
        raise LedgerError(
            f"not applied, nothing changed: {entity} {entity_id} has {column} = {value!r}, "
            f"which a {sql_type} column can't hold ({len(misfits)} such values; propose again)"
        )
    conn.execute(text(row["ddl_statement"]))
    backfilled = write_values(conn, table, ENTITY_TABLES[entity][1], column, sql_type, values)
    rationale = f"approves #{change_id}: {row['rationale']}"
    ddl = row["ddl_statement"]
    log_id = _log(conn, approved_by, table, "applied", ddl, rationale, datetime.now(UTC))
    return Applied(change_id, log_id, table, column, backfilled)


def _log(
    conn: Connection, by: str, table: str, action: str, ddl: str, rationale: str, at: datetime
) -> int:
    """Append a row to ``schema_change_log``; its id."""
    new_id: int = conn.execute(
        SchemaChange.__table__.insert()  # type: ignore[attr-defined]
        .values(
            initiated_by=by,
            entity_name=table,
            action=action,
            ddl_statement=ddl,
            rationale=rationale,
            created_at=at,
        )
        .returning(SchemaChange.id)
    ).scalar_one()
    return new_id


def _observed(conn: Connection, entity: str, column: str) -> list[tuple[str, Any]]:
    """(entity id, current value) of the dynamic attribute ``column`` of ``entity``."""
    rows = conn.execute(
        select(DynamicAttribute.entity_id, DynamicAttribute.attribute_value).where(
            DynamicAttribute.entity_type == entity, DynamicAttribute.attribute_key == column
        )
    ).all()
    return [(entity_id, value) for entity_id, value in rows]


def fits(sql_type: str, value: Any) -> bool:
    """Whether a column of ``sql_type`` (one this module makes) can hold ``value``."""
    if value is None or sql_type in _JSON_TYPES:
        return True
    if sql_type == "BOOLEAN":
        return isinstance(value, bool)
    if sql_type == "BIGINT":
        return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
    if sql_type in ("DOUBLE PRECISION", "REAL"):
        return isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < 1e308
    return isinstance(value, str)


def write_values(
    conn: Connection,
    table_name: str,
    id_column: str,
    column: str,
    sql_type: str,
    values: list[Any],
) -> int:
    """Set ``column`` of the rows named by ``(id, value)`` pairs; how many rows."""
    if not values:
        return 0
    quoted = conn.dialect.identifier_preparer.quote(column)
    statement = text(f"UPDATE {table_name} SET {quoted} = :value WHERE {id_column} = :id")
    params = [
        {"id": entity_id, "value": json.dumps(value) if sql_type in _JSON_TYPES else value}
        for entity_id, value in values
    ]
    result = conn.execute(statement, params)
    return int(result.rowcount or 0)


def materialised(conn: Connection) -> dict[tuple[str, str], tuple[str, str, str, str]]:
    """(entity type, key) -> (table, id column, column, SQL type) of every applied
    change: the exporter keeps those columns current."""
    out = {}
    for (ddl,) in conn.execute(
        select(SchemaChange.ddl_statement).where(SchemaChange.action == "applied")
    ):
        try:
            table, column, sql_type = parse_ddl(ddl)
        except LedgerError:
            continue
        entity = next(e for e, (t, _id) in ENTITY_TABLES.items() if t == table)
        out[(entity, column)] = (table, ENTITY_TABLES[entity][1], column, sql_type)
    return out
