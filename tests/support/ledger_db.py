"""The ledger tests' databases: the machine's PostgreSQL (``make postgres``), emptied
for each test, or skipped without it -- except under CI, where a missing PostgreSQL
fails the test: a ledger that only ever ran on SQLite is not tested."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import create_engine, text

POSTGRES_URL = os.environ.get(
    "TADPOLE_TEST_POSTGRES_URL", "postgresql+psycopg://tadpole:tadpole@127.0.0.1:5432/tadpole_test"
)


def empty_postgres() -> str:
    engine = create_engine(POSTGRES_URL)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    except Exception as exc:  # no server: fail under CI, skip elsewhere
        if os.environ.get("CI", "false") not in ("", "false"):
            pytest.fail(f"PostgreSQL is not reachable under CI ({exc.__class__.__name__})")
        pytest.skip(f"no PostgreSQL at {POSTGRES_URL} (make postgres starts one)")
    finally:
        engine.dispose()
    return POSTGRES_URL
