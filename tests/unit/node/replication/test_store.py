"""The local durable store (node/replication/store.py): semantics, group commit, errors.

Determinism: whenever a test depends on how items are grouped into batches,
it first parks the writer thread inside an update function (``Parked``), queues
the items while it is parked, and releases it from a loop callback scheduled
after the items' tasks, so the batch boundaries are fixed by asyncio's FIFO
ready queue rather than by thread timing.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.client.messages import new_request_id
from node.replication import store as store_mod
from node.replication.store import (
    REQUEST_WINDOW_NS,
    SCHEMA_VERSION,
    BatchAbortedError,
    CorruptStoreError,
    SchemaVersionError,
    StoreClosedError,
    StoreError,
    StoreFailedError,
    StoreLockedError,
    TierStore,
    _prefix_end,
    request_born,
    request_digest,
)
from tests.support.store_files import undo_v5, undo_v6


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "data" / "tiers.db")


@pytest.fixture
async def store(db: str) -> Any:
    s = TierStore(db)
    yield s
    await s.aclose()


class Parked:
    """Holds the writer thread inside an update function until released."""

    def __init__(self, store: TierStore) -> None:
        self.store = store
        self.entered = threading.Event()
        self.release = threading.Event()
        self.task: asyncio.Task[Any] | None = None

    def _fn(self, current: bytes | None) -> bytes | None:
        self.entered.set()
        assert self.release.wait(30), "test never released the writer"
        return current

    async def __aenter__(self) -> Parked:
        self.task = asyncio.create_task(self.store.update("_", "park", self._fn))
        await asyncio.to_thread(self.entered.wait, 30)
        return self

    def release_after_queued(self) -> None:
        """Release once every task created so far has taken its first step."""
        asyncio.get_running_loop().call_soon(self.release.set)

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        assert self.task is not None
        await self.task


async def run_parked(
    store: TierStore, make: list[Callable[[], Coroutine[Any, Any, Any]]]
) -> list[Any]:
    """Queue ``make``'s coroutines behind a parked writer, release, gather (exceptions too)."""
    async with Parked(store) as parked:
        tasks = [asyncio.create_task(m()) for m in make]
        parked.release_after_queued()
        return await asyncio.gather(*tasks, return_exceptions=True)


def const(value: bytes | None) -> Callable[[bytes | None], bytes | None]:
    return lambda _current: value


# ------------------------------------------------------------- round trips


async def test_update_get_delete_round_trip(store: TierStore) -> None:
    assert store.get("pop", "k") is None
    assert await store.update("pop", "k", const(b"v1")) == b"v1"
    assert store.get("pop", "k") == b"v1"
    assert store.get_with_digest("pop", "k") == (
        b"v1",
        hashlib.blake2b(b"v1", digest_size=16).digest(),
    )
    assert store.get("agent", "k") is None  # tiers are separate key spaces
    assert await store.delete("pop", "k") is True
    assert await store.delete("pop", "k") is False
    assert store.get("pop", "k") is None
    assert store.get_with_digest("pop", "k") is None


async def test_put_many_count_and_tiers(store: TierStore) -> None:
    await store.put_many([("pop", f"k{i}", bytes([i])) for i in range(10)])
    await store.put_many([("mesh", "m", b"x"), ("agent", "a", b"")])
    await store.put("metrics", "n1", b"7")
    assert store.count("pop") == 10
    assert store.count("nope") == 0
    assert store.tiers() == ["agent", "mesh", "metrics", "pop"]
    assert store.get("agent", "a") == b""  # empty value is a value, not a delete
    await store.put_many([])  # nothing to do, nothing queued
    assert store.stats.commits == 3


async def test_update_sees_current_value_and_none_deletes(store: TierStore) -> None:
    seen: list[bytes | None] = []

    def append(current: bytes | None) -> bytes:
        seen.append(current)
        return (current or b"") + b"+"

    assert await store.update("pop", "k", append) == b"+"
    assert await store.update("pop", "k", append) == b"++"
    assert await store.update("pop", "k", const(None)) is None
    assert store.get("pop", "k") is None
    assert await store.update("pop", "k", const(None)) is None  # deleting nothing
    assert await store.update("pop", "k", append) == b"+"
    assert seen == [None, b"+", None]


async def test_update_unchanged_value_writes_nothing(db: str) -> None:
    ticks = iter(range(1000, 2000))
    async with TierStore(db, clock_ns=lambda: next(ticks)) as s:
        await s.update("pop", "k", const(b"same"))
        await s.update("pop", "k", const(b"same"))
    conn = sqlite3.connect(db)
    (updated,) = conn.execute("SELECT updated_ns FROM state").fetchone()
    conn.close()
    assert updated == 1000


async def test_local_mistakes_raise_in_the_caller(store: TierStore) -> None:
    with pytest.raises(TypeError):
        await store.update("pop", b"k", const(b"v"))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await store.put_many([("pop", "a", b"ok"), ("pop", "b", "not bytes")])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="empty"):
        await store.update("pop", "", const(b"v"))
    with pytest.raises(ValueError, match="empty"):
        await store.put("", "k", b"v")
    with pytest.raises(ValueError):
        store.scan("pop", limit=-1)
    with pytest.raises(ValueError):
        TierStore(store.path + "-other", group_commit_max=0)
    assert store.stats.items == 0
    assert store.get("pop", "a") is None


# ---------------------------------------------- batching, isolation, order


async def test_exception_in_one_update_fails_only_that_item(store: TierStore) -> None:
    def boom(_current: bytes | None) -> bytes:
        raise KeyError("boom")

    results = await run_parked(
        store,
        [
            lambda: store.update("pop", "a", const(b"A")),
            lambda: store.update("pop", "b", boom),
            lambda: store.update("pop", "c", const("not bytes")),  # type: ignore[arg-type]
            lambda: store.update("pop", "d", const(b"D")),
        ],
    )
    assert results[0] == b"A" and results[3] == b"D"
    assert isinstance(results[1], KeyError) and results[1].args == ("boom",)
    assert isinstance(results[2], TypeError)
    assert [store.get("pop", k) for k in "abcd"] == [b"A", None, None, b"D"]
    stats = store.stats
    assert stats.commits == 2  # the parked item, then all four together
    assert stats.max_batch == 4
    assert stats.item_errors == 2


async def test_put_many_is_all_or_nothing(store: TierStore) -> None:
    # The second row fails inside the writer (a lone surrogate cannot be encoded)
    # after the first row was inserted: the item's savepoint undoes both.
    with pytest.raises(UnicodeEncodeError):
        await store.put_many([("pop", "a", b"1"), ("pop", "b\ud800", b"2")])
    assert store.get("pop", "a") is None
    await store.put("pop", "a", b"ok")
    assert store.get("pop", "a") == b"ok"


async def test_updates_of_one_key_apply_in_submission_order(store: TierStore) -> None:
    def appender(tag: bytes) -> Callable[[bytes | None], bytes]:
        return lambda current: (current or b"") + tag

    tags = [str(i).encode() + b"," for i in range(50)]
    results = await run_parked(
        store, [lambda t=t: store.update("pop", "k", appender(t)) for t in tags]
    )
    expected = [b"".join(tags[: i + 1]) for i in range(len(tags))]
    assert results == expected
    assert store.get("pop", "k") == expected[-1]


async def test_order_holds_across_batches(db: str) -> None:
    async with TierStore(db, group_commit_max=3) as s:
        results = await run_parked(
            s,
            [
                lambda i=i: s.update("pop", "k", lambda c, i=i: (c or b"") + bytes([i]))
                for i in range(10)
            ],
        )
        assert results[-1] == bytes(range(10))
        assert s.stats.max_batch == 3


async def test_group_commit_batches_concurrent_updates(store: TierStore) -> None:
    results = await run_parked(
        store, [lambda i=i: store.update("pop", f"k{i}", const(b"v%d" % i)) for i in range(200)]
    )
    assert results == [b"v%d" % i for i in range(200)]
    stats = store.stats
    assert stats.items == 201
    assert stats.commits == 2  # 200 updates shared one commit
    assert stats.fsyncs == stats.commits
    assert stats.max_batch == 200
    assert store.count("pop") == 200


async def test_group_commit_max_caps_a_batch(db: str) -> None:
    async with TierStore(db, group_commit_max=64) as s:
        await run_parked(s, [lambda i=i: s.update("pop", f"k{i}", const(b"v")) for i in range(200)])
        stats = s.stats
    assert stats.max_batch == 64
    assert stats.commits == 1 + 4  # 64 + 64 + 64 + 8


async def test_group_commit_wait_fills_a_batch(db: str) -> None:
    # The writer lingers (up to an hour) until the batch is full: 5 items, 1 commit.
    async with TierStore(db, group_commit_max=5, group_commit_wait_s=3600) as s:
        await asyncio.gather(*(s.update("pop", f"k{i}", const(b"v")) for i in range(5)))
        assert (s.stats.commits, s.stats.max_batch) == (1, 5)
        # close() ends a linger early and still commits what is queued.
        pending = asyncio.create_task(s.update("pop", "last", const(b"v")))
        await asyncio.sleep(0)  # let the task submit (a yield, not a timed sleep)
    assert await pending == b"v"


async def test_readers_see_only_committed_data(store: TierStore) -> None:
    await store.update("pop", "k", const(b"old"))
    seen: list[bytes | None] = []

    def peek(current: bytes | None) -> bytes | None:
        seen.append(store.get("pop", "k"))  # the batch's own write is not committed yet
        return current

    await run_parked(
        store,
        [lambda: store.update("pop", "k", const(b"new")), lambda: store.update("pop", "x", peek)],
    )
    assert seen == [b"old"]
    assert store.get("pop", "k") == b"new"


# ------------------------------------------------------------------- scans

ALPHABET = [
    "a",
    "b",
    "z",
    "é",
    "ß",
    "日",
    "本",
    "🐸",
    "\x00",
    "/",
    "\ud7ff",
    "\ue000",
    "\U0010ffff",
]


def _random_keys(rng: random.Random, n: int) -> list[str]:
    return sorted({"".join(rng.choices(ALPHABET, k=rng.randint(1, 4))) for _ in range(n)})


async def test_scan_matches_a_naive_oracle(store: TierStore) -> None:
    rng = random.Random(5)
    keys = _random_keys(rng, 400)
    await store.put_many([("pop", k, k.encode("utf-8")) for k in keys])
    await store.put_many([("other", k, b"") for k in keys[:50]])
    prefixes = ["", "a", "é", "日本", "🐸", "\U0010ffff", "a\U0010ffff", "\ud7ff", "zz", "\x00"]
    for prefix in prefixes:
        for after in ["", "a", "b🐸", "日", "\U0010ffff"]:
            for limit in [0, 1, 7]:
                want = [k for k in keys if k.startswith(prefix) and k > after]
                if limit:
                    want = want[:limit]
                got = store.scan("pop", prefix=prefix, after=after, limit=limit)
                assert [k for k, _ in got] == want, (prefix, after, limit)
                assert all(v == k.encode() for k, v in got)


async def test_scan_pages_through_a_prefix(store: TierStore) -> None:
    keys = [f"job/{i:03d}/é" for i in range(25)] + ["joc", "jo", "job"]
    await store.put_many([("pop", k, b"v") for k in keys])
    pages: list[list[str]] = []
    after = ""
    while page := store.scan("pop", prefix="job/", after=after, limit=10):
        pages.append([k for k, _ in page])
        after = page[-1][0]
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [k for p in pages for k in p] == sorted(k for k in keys if k.startswith("job/"))


async def test_keys_and_digests_across_pages(
    store: TierStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_mod, "_DIGEST_PAGE", 3)
    keys = _random_keys(random.Random(9), 40)
    await store.put_many([("mesh", k, k.encode() * 2) for k in keys])
    await store.put("mesh2", "x", b"x")
    got = list(store.keys_and_digests("mesh"))
    assert got == [(k, store_mod.digest_of(k.encode() * 2)) for k in keys]
    assert list(store.keys_and_digests("empty")) == []
    assert store.count("mesh") == len(keys)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    prefix=st.text(st.characters(exclude_categories=["Cs"]), max_size=4),
    other=st.text(st.characters(exclude_categories=["Cs"]), max_size=6),
)
def test_prefix_end_bounds_exactly_the_prefixed_strings(prefix: str, other: str) -> None:
    end = _prefix_end(prefix)
    for s in (other, prefix + other, prefix[:-1] + other):
        inside = prefix <= s and (end is None or s < end)
        assert inside == s.startswith(prefix), (prefix, s, end)


def test_prefix_end_edges() -> None:
    assert _prefix_end("") is None
    assert _prefix_end("\U0010ffff") is None
    assert _prefix_end("a\U0010ffff") == "b"
    assert _prefix_end("\ud7ff") == "\ue000"


# ------------------------------------------------------------- hints, meta


async def test_hint_lifecycle(db: str) -> None:
    ticks = iter(range(10, 100))
    async with TierStore(db, clock_ns=lambda: next(ticks)) as s:
        ids = [
            await s.add_hint("n2", "pop", "a", b"1"),
            await s.add_hint("n3", "pop", "b", b"2"),
            await s.add_hint("n2", "mesh", "c", b"3"),
        ]
        assert ids == sorted(ids) and len(set(ids)) == 3
        hints = s.hints_for("n2")
        assert [(h.id, h.tier, h.key, h.value) for h in hints] == [
            (ids[0], "pop", "a", b"1"),
            (ids[2], "mesh", "c", b"3"),
        ]
        assert hints[0].target == "n2" and hints[0].created_ns < hints[1].created_ns
        assert s.hints_for("n2", limit=1) == hints[:1]
        assert s.hints_for("n9") == []
        assert await s.delete_hints([ids[0], ids[2], 12345]) == 2
        assert await s.delete_hints([ids[0]]) == 0
        assert await s.delete_hints([]) == 0
        assert s.hints_for("n2") == []
        assert [h.key for h in s.hints_for("n3")] == ["b"]


async def test_meta(store: TierStore) -> None:
    assert store.get_meta("node_id") is None
    await store.set_meta("node_id", b"n1")
    await store.set_meta("node_id", b"n2")
    assert store.get_meta("node_id") == b"n2"


async def test_reopen_persists_everything(db: str) -> None:
    async with TierStore(db) as s:
        await s.update("pop", "k", const(b"v"))
        await s.add_hint("n2", "pop", "k", b"v")
        await s.set_meta("epoch", b"\x01")
    with TierStore(db) as s:
        assert s.get("pop", "k") == b"v"
        assert [h.key for h in s.hints_for("n2")] == ["k"]
        assert s.get_meta("epoch") == b"\x01"
        assert s.stats.commits == 0


# ------------------------------------------------------------------ errors


def _set_user_version(path: str, version: int) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(f"PRAGMA user_version={version}")
        conn.commit()
    finally:
        conn.close()


def test_newer_schema_is_refused_untouched(db: str) -> None:
    TierStore(db).close()
    _set_user_version(db, SCHEMA_VERSION + 1)
    with pytest.raises(SchemaVersionError, match="newer") as info:
        TierStore(db)
    assert db in str(info.value)
    assert info.value.found == SCHEMA_VERSION + 1
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    finally:
        conn.close()


def test_garbage_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(random.Random(1).randbytes(8192))
    with pytest.raises(CorruptStoreError) as info:
        TierStore(str(path))
    assert str(path) in str(info.value)
    assert isinstance(info.value, StoreError)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)


def test_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "other.db")
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(CorruptStoreError, match="not a Tadpole store"):
        TierStore(path)


def test_second_open_is_refused_until_close(db: str) -> None:
    first = TierStore(db)
    with pytest.raises(StoreLockedError):
        TierStore(db)
    first.close()
    TierStore(db).close()


async def test_closed_store_refuses_and_close_flushes(db: str) -> None:
    s = TierStore(db)
    async with Parked(s) as parked:
        tasks = [asyncio.create_task(s.update("pop", f"k{i}", const(b"v"))) for i in range(20)]
        parked.release_after_queued()
        closing = asyncio.create_task(s.aclose())  # starts after the 20 have queued
        assert [await t for t in tasks] == [b"v"] * 20
        await closing
    s.close()  # idempotent
    with pytest.raises(StoreClosedError):
        await s.update("pop", "k", const(b"v"))
    with pytest.raises(StoreClosedError):
        s.get("pop", "k0")
    with TierStore(db) as again:
        assert again.count("pop") == 20


class _FailingConn:
    """Wraps the writer's connection and fails one statement once."""

    def __init__(self, conn: sqlite3.Connection, statement: str) -> None:
        self._conn = conn
        self._statement = statement
        self.armed = True

    def execute(self, sql: str, *args: Any) -> Any:
        if self.armed and sql == self._statement:
            self.armed = False
            raise sqlite3.OperationalError("disk I/O error (injected)")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


async def test_failed_begin_aborts_only_that_batch(store: TierStore) -> None:
    store._wconn = _FailingConn(store._wconn, "BEGIN IMMEDIATE")  # type: ignore[assignment]
    with pytest.raises(BatchAbortedError, match="nothing committed") as info:
        await store.update("pop", "k", const(b"v"))
    assert store.path in str(info.value)
    assert await store.update("pop", "k", const(b"v2")) == b"v2"
    assert store.stats.batches_aborted == 1


async def test_failed_commit_poisons_the_store(store: TierStore) -> None:
    await store.update("pop", "before", const(b"v"))
    store._wconn = _FailingConn(store._wconn, "COMMIT")  # type: ignore[assignment]
    with pytest.raises(StoreFailedError, match="outcome unknown"):
        await store.update("pop", "k", const(b"v"))
    with pytest.raises(StoreFailedError):
        await store.update("pop", "k2", const(b"v"))
    assert store.get("pop", "before") == b"v"  # reads still work
    assert store.get("pop", "k") is None  # it was rolled back here; after a real failure: unknown


async def test_the_feed_is_durable_trimmed_and_keeps_its_id(db: str) -> None:
    store = TierStore(db, feed_keep=1500)
    for i in range(2100):  # a trim runs every 1024 appends
        await store.update("population", f"p/{i % 7}", lambda _, i=i: b"%d" % i)
    page = store.changes("population", "", 0, 1000)
    assert page.trimmed > 0 and page.entries[0][0] > page.trimmed  # nothing older is kept
    feed, through = page.feed, store.changes("population", "", 0, 1000).through
    await store.aclose()
    reopened = TierStore(db)
    again = reopened.changes("population", "", through, 1000)
    assert again.feed == feed  # the same feed after a restart; seqs go on
    await reopened.update("population", "p/new", lambda _: b"x")
    assert [k for _, k, _ in reopened.changes("population", "", through, 1000).entries][-1] == (
        "p/new"
    )
    await reopened.aclose()
    os.remove(db)
    fresh = TierStore(db)
    assert fresh.changes("population", "", 0, 10).feed != feed  # a new store, a new feed
    await fresh.aclose()


async def test_a_v1_store_is_migrated_in_place(db: str) -> None:
    one_digest = store_mod.digest_of(b"\x01").hex()
    os.makedirs(os.path.dirname(db), exist_ok=True)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    for statement in (
        "CREATE TABLE state (tier TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,"
        " digest BLOB NOT NULL, updated_ns INTEGER NOT NULL, PRIMARY KEY (tier, key))"
        " WITHOUT ROWID",
        "CREATE TABLE hints (id INTEGER PRIMARY KEY, target TEXT NOT NULL, tier TEXT NOT NULL,"
        " key TEXT NOT NULL, value BLOB NOT NULL, created_ns INTEGER NOT NULL)",
        "CREATE INDEX hints_by_target ON hints (target)",
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
        # a real v1 row: the digest beside the value is the value's (updates check it)
        f"INSERT INTO state VALUES ('mesh', 'm', x'01', x'{one_digest}', 1)",
        "PRAGMA user_version=1",
    ):
        conn.execute(statement)
    conn.close()
    store = TierStore(db)
    assert store.get("mesh", "m") == b"\x01"  # data kept
    await store.update("mesh", "m", lambda _: b"\x02")
    page = store.changes("mesh", "", 0, 10)
    assert page.feed and [(k, v) for _, k, v in page.entries] == [("m", b"\x02")]
    await store.aclose()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def _undo_v4(conn: sqlite3.Connection) -> None:
    """Make a store file look as schema v3 wrote it (no encryption at rest)."""
    undo_v5(conn)
    conn.execute("DROP TABLE deks")
    conn.execute("DROP INDEX IF EXISTS state_by_dek")  # made by stores before 2026-12-07
    conn.execute("DROP INDEX hints_by_dek")
    conn.execute("ALTER TABLE state DROP COLUMN dek")
    conn.execute("ALTER TABLE hints DROP COLUMN dek")
    conn.execute("PRAGMA user_version=3")


async def test_a_v3_store_gains_the_data_key_table_and_keeps_its_values(db: str) -> None:
    store = TierStore(db)
    await store.update("mesh", "m", lambda _: b"\x01")
    await store.add_hint("n2", "mesh", "m", b"\x02")
    await store.aclose()
    conn = sqlite3.connect(db, isolation_level=None)
    _undo_v4(conn)
    conn.close()
    store = TierStore(db)
    assert store.get_checked("mesh", "m") == b"\x01"
    assert [h.value for h in store.hints_for("n2")] == [b"\x02"]
    assert store.key_usage() == {None: 2}
    await store.aclose()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
    conn.close()


async def test_a_v2_store_gains_the_request_table_and_keeps_its_feed(db: str) -> None:
    store = TierStore(db)
    await store.update("mesh", "m", lambda _: b"\x01")
    feed = store.changes("mesh", "", 0, 10).feed
    await store.aclose()
    conn = sqlite3.connect(db, isolation_level=None)
    _undo_v4(conn)
    conn.execute("DROP INDEX requests_by_age")
    conn.execute("DROP TABLE requests")
    conn.execute("PRAGMA user_version=2")
    conn.close()
    store = TierStore(db)
    assert store.get("mesh", "m") == b"\x01" and store.changes("mesh", "", 0, 10).feed == feed
    await store.update_once("mesh", "m", lambda v, seen: (b"\x02", ["r1"]), ["r1"])
    await store.aclose()
    store = TierStore(db)  # the id is durable, like the value
    seen_now: list[frozenset[str]] = []
    await store.update_once("mesh", "m", lambda v, seen: (seen_now.append(seen) or v, []), ["r1"])
    assert seen_now == [frozenset({"r1"})]
    await store.aclose()


def _request_rows(db: str) -> list[tuple[int, Any]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT slot, id FROM requests ORDER BY slot, born, id").fetchall()
    finally:
        conn.close()


W = REQUEST_WINDOW_NS


async def _seen(store: TierStore, ids: list[str]) -> frozenset[str]:
    """Which of ``ids`` the store reports applied (nothing is written)."""
    got: list[frozenset[str]] = []
    await store.update_once("pop", "k", lambda v, seen: (got.append(seen) or v, []), ids)
    return got[0]


async def test_the_request_table_keeps_a_digest_of_each_id_not_the_id(db: str) -> None:
    # An hour of ids stays in the table: whole scoped ids (tier, key and client id)
    # made it three times the size, and each write slower as it grew.
    store = TierStore(db, clock_ns=lambda: 5 * W + 7)
    ids = [f"population\x00job/k{i}\x00{uuid.uuid4().hex}" for i in range(3)]
    await store.update_once("population", "job/k", lambda v, seen: (b"1", ids), ids)
    await store.aclose()
    rows = _request_rows(db)
    assert sorted(rows) == sorted((5, request_digest(i)) for i in ids)
    assert all(isinstance(i, bytes) and len(i) == 16 for _, i in rows)
    store = TierStore(db, clock_ns=lambda: 5 * W + 8)
    seen_now: list[frozenset[str]] = []
    await store.update_once(
        "population", "job/k", lambda v, seen: (seen_now.append(seen) or v, []), [*ids, "other"]
    )
    assert seen_now == [frozenset(ids)]
    await store.aclose()


async def test_a_v4_store_keeps_the_ids_it_applied_as_digests(db: str) -> None:
    store = TierStore(db)
    await store.update("mesh", "m", lambda _: b"\x01")
    await store.aclose()
    conn = sqlite3.connect(db, isolation_level=None)
    # applied late in slot 2 and early in slot 3
    undo_v5(conn, {"pop\x00k\x00r1": 3 * W - 1, "pop\x00k\x00r2": 3 * W + 12})
    conn.close()
    store = TierStore(db, clock_ns=lambda: 3 * W + 13)
    assert store.get_checked("mesh", "m") == b"\x01"
    seen_now: list[frozenset[str]] = []
    await store.update_once(
        "pop", "k", lambda v, seen: (seen_now.append(seen) or b"2", []),
        ["pop\x00k\x00r1", "pop\x00k\x00r2", "pop\x00k\x00r3"],
    )  # fmt: skip
    assert seen_now == [frozenset({"pop\x00k\x00r1", "pop\x00k\x00r2"})]
    await store.aclose()
    assert _request_rows(db) == [
        (2, request_digest("pop\x00k\x00r1")),
        (3, request_digest("pop\x00k\x00r2")),
    ]
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert not {"requests_v5", "requests_v6", "requests_by_age"} & names
    conn.close()


def _uuid7(ms: int, rand: int = 0x5A5A) -> uuid.UUID:
    return uuid.UUID(int=ms << 80 | 0x7 << 76 | 0xABC << 64 | 0b10 << 62 | rand)


def test_request_born_reads_the_millisecond_of_a_trailing_uuid7() -> None:
    ms = 1_796_642_865_136
    u = _uuid7(ms)
    for form in (u.hex, str(u), str(u).upper(), f"population\x00job/k\x00{u.hex}", f"a:{u}"):
        assert request_born(form) == ms, form
    made = new_request_id()  # the client library's ids are UUIDv7s, made now
    assert uuid.UUID(made).version == 7 and len(made) == 32
    assert abs(request_born(made) - time.time_ns() // 10**6) < 60_000
    not_uuid7 = (
        uuid.uuid4().hex,
        str(uuid.uuid4()),
        "r1",
        "",
        u.hex[:-1],  # 31 digits
        u.hex[:12] + "4" + u.hex[13:],  # version 4
        u.hex[:16] + "c" + u.hex[17:],  # not the RFC variant
        "-" + u.hex[1:],
        "g" + u.hex[1:],
        str(u)[:8] + "_" + str(u)[9:],
    )
    for other in not_uuid7:
        assert request_born(other) == 0, other


def _born_rows(db: str) -> list[tuple[int, int, bytes]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(
            "SELECT slot, born, id FROM requests ORDER BY slot, born, id"
        ).fetchall()
    finally:
        conn.close()


async def test_client_request_ids_are_filed_by_the_millisecond_they_were_made(db: str) -> None:
    # Filed by time, a batch of fresh ids is written side by side at the end of the
    # slot instead of each on its own page somewhere in up to two hours of ids.
    store = TierStore(db, clock_ns=lambda: 5 * W + 7)
    made = [1_796_642_865_136 + i for i in (30, 10, 20)]
    ids = [f"pop\x00k\x00{_uuid7(ms, i).hex}" for i, ms in enumerate(made)] + ["pop\x00k\x00r1"]
    await store.update_once("pop", "k", lambda v, seen: (b"1", ids), ids)
    assert await _seen(store, [*ids, "pop\x00k\x00r2"]) == frozenset(ids)
    assert store.get_meta("requests_unborn_slot") is None  # a new file: nothing converted
    await store.aclose()
    assert _born_rows(db) == sorted((5, request_born(i), request_digest(i)) for i in ids) and [
        born for _, born, _ in _born_rows(db)
    ] == [0, *sorted(made)]


async def test_a_v5_store_keeps_the_ids_it_applied_for_two_slots(db: str) -> None:
    # v5 kept digests alone: a converted id is born 0, so until its slot is no longer
    # searched, an id that has a birth time is also looked for under 0.
    store = TierStore(db)
    await store.update("mesh", "m", lambda _: b"\x01")
    await store.aclose()
    timed, plain = f"pop\x00k\x00{_uuid7(1_796_642_865_136)}", "pop\x00k\x00r1"
    conn = sqlite3.connect(db, isolation_level=None)
    undo_v6(conn, [(3, request_digest(timed)), (3, request_digest(plain))])
    conn.close()
    now = [3 * W + 5]
    store = TierStore(db, clock_ns=lambda: now[0])
    assert store.get_checked("mesh", "m") == b"\x01"
    assert store.get_meta("requests_unborn_slot") == b"3"  # the newest converted slot
    assert await _seen(store, [timed, plain, "pop\x00k\x00r3"]) == {timed, plain}
    now[0] = 4 * W + 5  # the next slot: slot 3 is still searched
    assert await _seen(store, [timed, plain]) == {timed, plain}
    await store.update_once(
        "pop", "k", lambda v, seen: (b"2", ["pop\x00k\x00r4"]), ["pop\x00k\x00r4"]
    )
    now[0] = 5 * W  # slot 3 is no longer searched: forgotten, as any id
    assert await _seen(store, [timed, plain]) == frozenset()
    await store.aclose()
    assert _born_rows(db)[:2] == sorted(
        [(3, 0, request_digest(timed)), (3, 0, request_digest(plain))]
    )
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
    assert {r[0] for r in conn.execute("SELECT name FROM sqlite_master")} >= {"requests"}
    conn.close()


@pytest.mark.parametrize("applied", [7 * W, 8 * W - 1], ids=["slot start", "slot end"])
async def test_a_request_id_is_known_for_the_window_and_less_than_twice_it(
    db: str, applied: int
) -> None:
    now = [applied]
    store = TierStore(db, clock_ns=lambda: now[0])
    await store.update_once("pop", "k", lambda v, seen: (b"1", ["a"]), ["a"])
    now[0] = applied + W - 1  # a window later: still a duplicate
    assert await _seen(store, ["a"]) == {"a"}
    now[0] = 9 * W - 1  # the end of the next slot, up to two windows later: still known
    assert await _seen(store, ["a"]) == {"a"}
    now[0] = 9 * W  # two slots on: forgotten
    assert await _seen(store, ["a"]) == frozenset()
    await store.aclose()


async def test_expired_request_ids_are_deleted_a_bounded_step_at_a_time(db: str) -> None:
    now = [7 * W]
    store = TierStore(db, clock_ns=lambda: now[0])
    old = [f"old-{i}" for i in range(store_mod._REQUEST_TRIM_MAX + 500)]
    for start in range(0, len(old), 500):
        chunk = old[start : start + 500]
        await store.update_once("pop", "k", lambda v, seen, c=chunk: (v, c), chunk)
    kept_until_searched = len(_request_rows(db))
    assert kept_until_searched == len(old)  # the trims so far found nothing expired
    now[0] = 9 * W  # slot 7 is no longer searched
    new = [f"new-{i}" for i in range(store_mod._TRIM_EVERY)]
    await store.update_once("pop", "k", lambda v, seen: (v, new), new)  # one trim
    rows = _request_rows(db)
    assert sum(1 for slot, _ in rows if slot == 7) == 500, "one bounded step, oldest first"
    assert sum(1 for slot, _ in rows if slot == 9) == len(new)
    left = sorted(i for slot, i in rows if slot == 7)
    assert left == sorted(request_digest(o) for o in old)[-500:]
    again = [f"again-{i}" for i in range(store_mod._TRIM_EVERY)]
    await store.update_once("pop", "k", lambda v, seen: (v, again), again)  # the next
    assert {slot for slot, _ in _request_rows(db)} == {9}
    await store.aclose()


async def test_expired_ids_with_birth_times_are_trimmed_in_key_order(db: str) -> None:
    # Ids made at many different milliseconds, and plain ones (born 0): a trim takes
    # the front of the expired slot in (born, id) order, a bounded step at a time.
    now = [7 * W]
    store = TierStore(db, clock_ns=lambda: now[0])
    old = [
        f"pop\x00k\x00{_uuid7(1_796_642_865_136 + i % 97, i).hex}" if i % 3 else f"plain-{i}"
        for i in range(store_mod._REQUEST_TRIM_MAX + 500)
    ]
    for start in range(0, len(old), 500):
        chunk = old[start : start + 500]
        await store.update_once("pop", "k", lambda v, seen, c=chunk: (v, c), chunk)
    now[0] = 9 * W  # slot 7 is no longer searched
    new = [f"pop\x00k\x00{new_request_id()}" for _ in range(store_mod._TRIM_EVERY)]
    await store.update_once("pop", "k", lambda v, seen: (v, new), new)  # one trim
    left = [(born, i) for slot, born, i in _born_rows(db) if slot == 7]
    assert left == sorted((request_born(o), request_digest(o)) for o in old)[-500:]
    assert sum(1 for slot, _, _ in _born_rows(db) if slot == 9) == len(new)
    again = [f"pop\x00k\x00{new_request_id()}" for _ in range(store_mod._TRIM_EVERY)]
    await store.update_once("pop", "k", lambda v, seen: (v, again), again)  # the next
    assert {slot for slot, _, _ in _born_rows(db)} == {9}
    assert store.request_ids == 2 * store_mod._TRIM_EVERY
    await store.aclose()


@pytest.mark.parametrize("batch", [16, 69, 128, 175, 400])
async def test_checking_a_batchs_ids_costs_the_same_however_many_ids_are_held(
    db: str, batch: int
) -> None:
    # With a plain JOIN, SQLite's planner scanned every id of the two slots searched
    # for batches of 69 to 175 ids: 10 ms a batch of 128 at 47,000 ids held, 41% of a
    # busy node's writer. Counted in SQLite VM instructions, not time.
    store = TierStore(db, clock_ns=lambda: 7 * W)
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    async def check(ids: list[str]) -> int:
        steps[0] = 0
        store._wconn.set_progress_handler(count, 10)
        try:
            assert await _seen(store, ids) == frozenset()
        finally:
            store._wconn.set_progress_handler(None, 0)
        return steps[0]

    async def hold(n: int) -> None:
        held = [f"h-{i}" for i in range(store.request_ids, n)]
        for start in range(0, len(held), 500):
            chunk = held[start : start + 500]
            await store.update_once("pop", "k", lambda v, seen, c=chunk: (v, c), chunk)

    await hold(1_000)
    few = await check([f"q-{i}" for i in range(batch)])
    await hold(20_000)
    many = await check([f"r-{i}" for i in range(batch)])
    await store.aclose()
    assert many < 2 * few, f"{few} steps beside 1,000 ids held, {many} beside 20,000"


async def test_the_store_counts_the_request_ids_it_holds(db: str) -> None:
    """What /metrics shows as tadpole_store_request_ids: inserts, resends, an update
    whose function fails beside one that applies, a trim, and a reopen."""
    now = [7 * W]
    store = TierStore(db, clock_ns=lambda: now[0])
    assert store.request_ids == 0
    first = [f"a-{i}" for i in range(300)]
    await store.update_once("pop", "k", lambda v, seen: (v, first), first)
    await store.update_once("pop", "k", lambda v, seen: (v, first[:100]), first[:100])  # resent
    assert store.request_ids == len(_request_rows(db)) == 300

    def fails(value: bytes | None, seen: frozenset[str]) -> tuple[bytes | None, list[str]]:
        raise ValueError("the update function fails")

    results = await store.update_many_once(
        [("pop", "k", lambda v, seen: (v, ["b-1"]), ["b-1"]), ("pop", "j", fails, ["b-2"])]
    )
    assert isinstance(results[1], ValueError)
    assert store.request_ids == len(_request_rows(db)) == 301
    now[0] = 9 * W  # slot 7 expires: the next trim deletes its ids
    fresh = [f"c-{i}" for i in range(store_mod._TRIM_EVERY)]
    await store.update_once("pop", "k", lambda v, seen: (v, fresh), fresh)
    assert store.request_ids == len(_request_rows(db)) == len(fresh)
    await store.aclose()
    reopened = TierStore(db, clock_ns=lambda: now[0])
    assert reopened.request_ids == len(fresh)
    await reopened.aclose()
