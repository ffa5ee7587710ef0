"""Create or upgrade a ledger database (spec ``migration_strategy``:
``sqlalchemy_metadata_autocreate_with_reviewed_alter_statements``).

* An **empty** database is created from the model (:mod:`node.ledger.schema`) in one
  transaction and stamped with the newest migration.
* A database **made by an earlier version** is brought up by the reviewed migrations
  in ``node/ledger/migrations/versions``, in order, each in the same transaction as
  its version stamp (PostgreSQL and SQLite both have transactional DDL, so a failed
  step leaves the previous version whole).
* A database that holds tables but no ledger version is refused: it is not a ledger,
  and nothing is written to it.

``ADAPTIVE_DATABASE_URL`` names the database (SQLAlchemy URLs:
``postgresql+psycopg://user:password@host/db``, ``sqlite:///path``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from node.ledger.schema import Base

__all__ = ["ENV_URL", "LedgerError", "MigrationResult", "engine_for", "head", "migrate", "status"]

ENV_URL = "ADAPTIVE_DATABASE_URL"
MIGRATIONS = os.path.join(os.path.dirname(__file__), "migrations")


class LedgerError(Exception):
    """The ledger database cannot be used as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class MigrationResult:
    before: str | None  # the version found (None: an empty database)
    after: str  # the version now
    created: bool  # made from the model (it was empty)


def _config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest migration's revision."""
    found = ScriptDirectory.from_config(_config()).get_current_head()
    assert found is not None, "node/ledger/migrations has no revision"
    return found


def _known(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(_config()).get_revision(revision) is not None
    except CommandError:
        return False


def engine_for(url: str) -> Engine:
    """An engine for ``url``, or :class:`LedgerError` naming what is wrong with it
    (the password is never repeated)."""
    try:
        parsed = make_url(url)
        engine = create_engine(parsed)
    except (ArgumentError, ValueError) as exc:
        raise LedgerError(f"not a database URL: {exc}") from None
    except ImportError as exc:
        raise LedgerError(f"no driver for this database URL: {exc.name}") from None
    if engine.dialect.name == "sqlite":
        _transactional_sqlite(engine)
    return engine


def _transactional_sqlite(engine: Engine) -> None:
    """Make every SQLAlchemy transaction a real SQLite transaction, DDL included.

    Python's sqlite3 (before 3.12's ``autocommit``) opens a transaction only before
    INSERT/UPDATE/DELETE, so a CREATE TABLE or ALTER TABLE commits on its own: a
    creation or upgrade cut short would leave tables without their version stamp.
    The driver is told to open nothing itself, and each transaction begins here."""

    @event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")


def _shown(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def status(url: str) -> tuple[str | None, str]:
    """``(version of the database, newest version)``; None for an empty database. A
    database of other tables is :class:`LedgerError`, as :func:`migrate` says."""
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
            if current is None:
                _refuse_foreign(engine, conn)
            return current, head()
    except LedgerError:
        raise
    except SQLAlchemyError as exc:
        raise _failed(engine, exc) from None
    finally:
        engine.dispose()


def _refuse_foreign(engine: Engine, conn: Connection) -> None:
    """LedgerError if a database without a ledger version holds any table: it is not
    a ledger, and nothing may be written to it."""
    present = set(inspect(conn).get_table_names())
    if present:
        clash = sorted(present & set(Base.metadata.tables)) or sorted(present)
        raise LedgerError(
            f"{_shown(engine)} holds tables ({', '.join(clash[:5])}) but no "
            "ledger version: it is not a ledger made by tadpole; nothing changed"
        )


def _failed(engine: Engine, exc: SQLAlchemyError) -> LedgerError:
    """The database's own complaint (the driver's message, not SQLAlchemy's wrapper
    with the statement), after the URL without its password."""
    detail = getattr(exc, "orig", None) or exc
    return LedgerError(f"{_shown(engine)}: {exc.__class__.__name__}: {detail}")


def migrate(url: str) -> MigrationResult:
    """Create the ledger in an empty database or upgrade it to :func:`head`."""
    engine = engine_for(url)
    newest = head()
    try:
        with engine.begin() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
            if current is None:
                _refuse_foreign(engine, conn)
                Base.metadata.create_all(conn)
                command.stamp(_config(conn), "head")
                return MigrationResult(None, newest, True)
            if not _known(current):
                raise LedgerError(
                    f"{_shown(engine)} is at ledger version {current}, which this release "
                    "does not know (made by a newer one?); nothing changed"
                )
            if current != newest:
                command.upgrade(_config(conn), "head")
            return MigrationResult(current, newest, False)
    except LedgerError:
        raise
    except SQLAlchemyError as exc:
        raise _failed(engine, exc) from None
    finally:
        engine.dispose()
