"""Turn a tier-store file back into what an older schema wrote, for migration tests."""

from __future__ import annotations

import sqlite3


def undo_v6(conn: sqlite3.Connection, rows: list[tuple[int, bytes]] | None = None) -> None:
    """Make a store file look as schema v5 wrote it: request ids as (slot, digest)
    ``rows``, with no birth time."""
    conn.execute("DROP TABLE requests")
    conn.execute(
        "CREATE TABLE requests (slot INTEGER NOT NULL, id BLOB NOT NULL,"
        " PRIMARY KEY (slot, id)) WITHOUT ROWID"
    )
    conn.executemany("INSERT INTO requests VALUES (?, ?)", rows or [])
    conn.execute("PRAGMA user_version=5")


def undo_v5(conn: sqlite3.Connection, ids: dict[str, int] | None = None) -> None:
    """Make a store file look as schema v4 wrote it: request ids kept whole, as text,
    with when each was applied (``ids``; the digests v5 kept cannot be turned back)."""
    conn.execute("DROP TABLE requests")
    conn.execute(
        "CREATE TABLE requests (id TEXT PRIMARY KEY, at_ns INTEGER NOT NULL) WITHOUT ROWID"
    )
    conn.execute("CREATE INDEX requests_by_age ON requests (at_ns)")
    conn.executemany("INSERT INTO requests VALUES (?, ?)", list((ids or {}).items()))
    conn.execute("PRAGMA user_version=4")
