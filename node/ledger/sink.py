"""Applies outbox events to the ledger database (blocking; the exporter runs it in a
thread).

An event is the list of rows one lifecycle change produced. Rows of tables keyed by
the cluster's own ids are upserted on their primary key (the newest row of a job or
an allocation replaces the older); rows of the pure series (``job_metrics``,
``tadpole_metrics``) are inserted. What makes each event count exactly once is the
cursor: :meth:`Sink.apply` first moves ``ledger_export_cursor`` from the revision
the exporter read to the newest event's, with a conditional update, and then writes
the rows, all in one transaction. Two exporters racing (an old leader that has not
yet noticed) cannot both win: the loser's update matches no row and it rolls back.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, DateTime, Engine, Table, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from node.ledger.growth import fits, materialised, write_values
from node.ledger.migrate import LedgerError, _failed, _shown, engine_for, migrate
from node.ledger.schema import Base, ExportCursor

__all__ = ["STREAM", "Sink"]

STREAM = "outbox"
_SERIES = frozenset({"job_metrics", "tadpole_metrics"})
# Tables whose rows are upserted on a unique key other than the primary key.
_CONFLICT = {"dynamic_attributes": ("entity_type", "entity_id", "attribute_key")}
_CURSOR: Table = ExportCursor.__table__  # type: ignore[assignment]


def _when(value: Any) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(float(value), UTC)


class Sink:
    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None

    @property
    def shown(self) -> str:
        return _shown(self._engine) if self._engine is not None else "(not open)"

    def open(self) -> None:
        """Create or upgrade the ledger (``tadpole ledger migrate``), then keep an
        engine. PostgreSQL and SQLite only: the upsert is written for those two."""
        migrate(self.url)
        engine = engine_for(self.url)
        if engine.dialect.name not in ("postgresql", "sqlite"):
            engine.dispose()
            raise LedgerError(f"the ledger runs on PostgreSQL or SQLite, not {engine.dialect.name}")
        self._engine = engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    @property
    def engine(self) -> Engine:
        return self._opened()

    def _opened(self) -> Engine:
        if self._engine is None:
            self.open()
        assert self._engine is not None
        return self._engine

    def cursor(self) -> int:
        """The revision of the last event applied here (0: none yet)."""
        engine = self._opened()
        try:
            with engine.connect() as conn:
                found = conn.execute(
                    select(_CURSOR.c.revision).where(_CURSOR.c.stream == STREAM)
                ).scalar_one_or_none()
        except SQLAlchemyError as exc:
            raise _failed(engine, exc) from None
        return int(found or 0)

    def apply(self, events: Sequence[tuple[int, dict[str, Any]]], expect: int) -> bool:
        """Apply ``events`` (revision, event), in order, if the cursor is still at
        ``expect``; False (nothing written) when another exporter moved it."""
        if not events:
            return True
        engine = self._opened()
        newest, last = events[-1]
        try:
            with engine.begin() as conn:
                if not self._claim(conn, expect, newest, _when(last["at"])):
                    conn.rollback()
                    return False
                for table, rows in _collapse(events):
                    self._write(conn, table, rows)
                    if table.name == "dynamic_attributes":
                        _keep_columns_current(conn, rows)
        except IntegrityError as exc:
            if "ledger_export_cursor" in str(exc.orig):
                return False  # two first exports raced to create the cursor row
            raise _failed(engine, exc) from None
        except SQLAlchemyError as exc:
            raise _failed(engine, exc) from None
        return True

    def _claim(self, conn: Connection, expect: int, newest: int, event_at: datetime | None) -> bool:
        now = datetime.now(UTC)
        if expect == 0:
            present = conn.execute(
                select(_CURSOR.c.revision).where(_CURSOR.c.stream == STREAM)
            ).scalar_one_or_none()
            if present is None:
                conn.execute(
                    _CURSOR.insert().values(
                        stream=STREAM, revision=newest, event_at=event_at, exported_at=now
                    )
                )
                return True
        moved = conn.execute(
            update(_CURSOR)
            .where(_CURSOR.c.stream == STREAM, _CURSOR.c.revision == expect)
            .values(revision=newest, event_at=event_at, exported_at=now)
        )
        return moved.rowcount == 1

    def _write(self, conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
        """One statement for all ``rows`` (the same columns) of ``table``."""
        if table.name in _SERIES:
            conn.execute(table.insert(), rows)
            return
        insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        keys = _conflict_key(table)
        stmt = insert(table)
        changes = {k: stmt.excluded[k] for k in rows[0] if k not in keys}
        conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_=changes), rows)


def _keep_columns_current(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Attributes that an approved schema change made columns (node/ledger/growth.py)
    are written to their column too."""
    columns = materialised(conn)
    if not columns:
        return
    for row in rows:
        target = columns.get((row["entity_type"], row["attribute_key"]))
        # A value the column can't hold stays in dynamic_attributes only (a blocked
        # export would hold up every change after it).
        if target is not None and fits(target[3], row["attribute_value"]):
            table, id_column, column, sql_type = target
            pair = [(row["entity_id"], row["attribute_value"])]
            write_values(conn, table, id_column, column, sql_type, pair)


def _conflict_key(table: Table) -> list[str]:
    return list(_CONFLICT.get(table.name, [c.name for c in table.primary_key.columns]))


# Parents before children (foreign keys are checked at once, not at commit).
_ORDER = {
    name: i
    for i, name in enumerate(
        (
            "jobs",
            "workers",
            "tadpole_instances",
            "resource_allocations",
            "worker_events",
            "job_metrics",
            "tadpole_metrics",
            "dynamic_attributes",
            "code_versions",
            "code_update_reports",
            "analysis_requests",
            "analysis_runs",
            "analysis_findings",
            "finding_artifacts",
            "improvement_reports",
            "learning_snapshots",
        )
    )
}


def _collapse(
    events: Sequence[tuple[int, dict[str, Any]]],
) -> list[tuple[Table, list[dict[str, Any]]]]:
    """The events' rows as one batch per table and column set, parents first. Every
    row of a table keyed by the cluster's ids is the whole row, so of several rows with
    one key only the last matters: applying it alone is applying them all in order.
    Series rows are all kept, in order."""
    latest: dict[tuple[str, tuple[Any, ...]], dict[str, Any]] = {}
    series: list[tuple[str, dict[str, Any]]] = []
    for _revision, event in events:
        for item in event["rows"]:
            name = item["table"]
            table = Base.metadata.tables.get(name)
            if table is None or name == _CURSOR.name:
                raise LedgerError(f"an outbox event names no ledger table {name!r}")
            values = _values(table, item["row"])
            if name in _SERIES:
                series.append((name, values))
                continue
            key = tuple(values.get(c) for c in _conflict_key(table))
            latest.pop((name, key), None)  # re-inserted: dict order is the last write's
            latest[(name, key)] = values
    groups: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = {}
    for name, values in [*((n, v) for (n, _key), v in latest.items()), *series]:
        groups.setdefault((name, tuple(sorted(values))), []).append(values)
    ordered = sorted(groups.items(), key=lambda item: _ORDER.get(item[0][0], len(_ORDER)))
    return [(Base.metadata.tables[name], rows) for (name, _cols), rows in ordered]


def _values(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, value in row.items():
        column = table.c.get(name)
        if column is None:
            raise LedgerError(f"an outbox row names no column {name!r} of {table.name}")
        out[name] = _when(value) if isinstance(column.type, DateTime) else value
    return out
