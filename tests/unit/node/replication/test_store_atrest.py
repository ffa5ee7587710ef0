"""The tier store encrypted at rest (node/replication/store.py, "Encryption at rest")."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from pathlib import Path

import pytest

from consensus.atrest import Key, Keyring, KeyringError
from node.replication.store import CorruptValueError, StoreOpenError, TierStore
from tests.support.store_files import undo_v5


def ring(*names: str) -> Keyring:
    return Keyring([Key(n, hashlib.sha256(n.encode()).digest()) for n in names])


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "data" / "tiers.db")


def _file_bytes(db: str) -> bytes:
    return b"".join(Path(p).read_bytes() for p in (db, db + "-wal") if Path(p).exists())


async def test_values_and_hints_are_ciphertext_on_disk_and_plaintext_to_readers(db: str) -> None:
    store = TierStore(db, keyring=ring("k1"))
    await store.put("population", "agent-1", b"SECRET-ONE")
    await store.update("population", "agent-2", lambda _: b"SECRET-TWO")
    await store.add_hint("n3", "mesh", "m1", b"SECRET-HINT")
    assert store.get("population", "agent-1") == b"SECRET-ONE"
    assert store.get_checked("population", "agent-2") == b"SECRET-TWO"
    assert store.scan("population") == [("agent-1", b"SECRET-ONE"), ("agent-2", b"SECRET-TWO")]
    assert [h.value for h in store.hints_for("n3")] == [b"SECRET-HINT"]
    page = store.changes("population", "", 0, 10)
    assert [(k, v) for _, k, v in page.entries] == [
        ("agent-1", b"SECRET-ONE"),
        ("agent-2", b"SECRET-TWO"),
    ]
    assert store.check_digests()[0] == []
    assert b"SECRET" not in _file_bytes(db)
    fp = ring("k1").primary.fingerprint
    assert store.key_usage() == {fp: 3}
    await store.aclose()
    again = TierStore(db, keyring=ring("k1"))
    assert again.get("population", "agent-1") == b"SECRET-ONE"
    await again.aclose()


async def test_an_encrypted_store_does_not_open_without_its_key(db: str) -> None:
    store = TierStore(db, keyring=ring("k1"))
    await store.put("population", "a", b"v")
    await store.aclose()
    with pytest.raises(StoreOpenError, match="1 values are encrypted at rest, and no encryption"):
        TierStore(db)
    with pytest.raises(StoreOpenError, match=r"not in keyring.*\(1 values are under it\)"):
        TierStore(db, keyring=ring("other"))


async def test_a_ciphertext_moved_to_another_row_is_corrupt_never_decoded(db: str) -> None:
    """Swapping two rows' stored bytes (and digests) keeps every SQLite page valid and
    every digest beside its own value: only the associated data catches it."""
    store = TierStore(db, keyring=ring("k1"))
    await store.put_many([("population", "a", b"value-a"), ("population", "b", b"value-b")])
    conn = sqlite3.connect(db, isolation_level=None)
    (va, da), (vb, db_) = conn.execute(
        "SELECT value, digest FROM state WHERE tier='population' ORDER BY key"
    ).fetchall()
    conn.execute("UPDATE state SET value=?, digest=? WHERE key='a'", (vb, db_))
    conn.execute("UPDATE state SET value=?, digest=? WHERE key='b'", (va, da))
    conn.close()
    with pytest.raises(CorruptValueError, match="population/a fails authentication"):
        store.get("population", "a")
    bad, _, _ = store.check_digests()
    assert [(t, k) for t, k, _ in bad] == [("population", "a"), ("population", "b")]
    with pytest.raises(CorruptValueError):
        await store.update("population", "a", lambda v: (v or b"") + b"!")
    # repair, as the driver does: replace what was read (the stored bytes) with a good copy
    assert await store.replace_if("population", "a", bad[0][2], b"value-a") is True
    assert store.get_checked("population", "a") == b"value-a"
    await store.aclose()


async def test_rotation_reseals_everything_under_the_new_key_and_drops_old_data_keys(
    db: str,
) -> None:
    old, both, new = ring("old"), ring("new", "old"), ring("new")
    store = TierStore(db, keyring=old)
    await store.put_many([("population", f"k{i}", b"v%d" % i) for i in range(600)])
    await store.add_hint("n2", "agent", "x", b"hinted")
    with pytest.raises(KeyringError, match=r"lacks key .* 601 values"):
        store.set_keyring(new)  # would strand what is under "old"
    store.set_keyring(both)
    await store.put("population", "fresh", b"under new")
    assert store.key_usage() == {old.primary.fingerprint: 601, new.primary.fingerprint: 1}
    assert await store.reseal(page=128) == 601
    assert store.key_usage() == {new.primary.fingerprint: 602}
    assert await store.reseal() == 0  # idempotent
    await store.aclose()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM deks").fetchone()[0] == 1
    conn.close()
    store = TierStore(db, keyring=new)  # the old key can go now
    assert store.get_checked("population", "k599") == b"v599"
    assert [h.value for h in store.hints_for("n2")] == [b"hinted"]
    assert store.check_digests(limit=1000)[0] == []
    await store.aclose()


async def test_old_data_keys_are_found_unused_off_the_writer(db: str) -> None:
    # Finding which data keys nothing is under is a pass over both tables. In the
    # writer's transaction it held every write back for that long; now the writer
    # only deletes, and a key a write went under meanwhile is never dropped.
    old, both = ring("old"), ring("new", "old")
    store = TierStore(db, keyring=old)
    await store.put_many([("population", f"k{i}", b"v%d" % i) for i in range(300)])
    store.set_keyring(both)
    writer: list[str] = []
    store._wconn.set_trace_callback(writer.append)
    assert await store.reseal(page=128) == 300
    store._wconn.set_trace_callback(None)
    assert not [st for st in writer if "count(" in st.lower()], "no pass in the writer"
    assert [st for st in writer if st.startswith("DELETE FROM deks")] == [
        "DELETE FROM deks WHERE id=1"
    ]
    await store.put("population", "after", b"x")  # under the new key, which stays
    assert await store._drop_unused_deks() == 0
    await store.aclose()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT id FROM deks").fetchall() == [(2,)]
    conn.close()
    store = TierStore(db, keyring=ring("new"))
    assert store.get_checked("population", "k299") == b"v299"
    assert store.get_checked("population", "after") == b"x"
    await store.aclose()


async def test_a_data_key_first_used_while_unused_ones_are_counted_is_kept(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Between the writer naming its data keys and the count of what is under each, two
    # rotations make two newer keys and a value goes under each. The count (a snapshot
    # from before those writes, in the worst case) finds nothing under them, and they
    # must not be dropped: only keys the writer named, other than its current one, are.
    # (Dropping every counted-unused key but the current one would lose key 3.)
    store = TierStore(db, keyring=ring("old"))
    await store.put_many([("population", f"k{i}", b"v%d" % i) for i in range(50)])
    store.set_keyring(ring("new", "old"))
    loop = asyncio.get_running_loop()
    count = store._count_deks_in_use
    seen: list[dict[int, int]] = []

    def rotate_and_write_then_count() -> dict[int, int]:
        before = count()  # a snapshot from before the writes below
        for names, key in ((("k3", "new", "old"), "late"), (("k4", "k3", "new"), "later")):
            store.set_keyring(ring(*names))  # the next write makes a new data key
            put = store.put("population", key, key.encode())
            asyncio.run_coroutine_threadsafe(put, loop).result()
        seen.append(before)
        return before

    monkeypatch.setattr(store, "_count_deks_in_use", rotate_and_write_then_count)
    assert await store.reseal() == 50
    assert seen == [{2: 50}]  # keys 3 and 4 were not in use when counted
    await store.aclose()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT id FROM deks ORDER BY id").fetchall() == [(2,), (3,), (4,)]
    conn.close()
    store = TierStore(db, keyring=ring("k4", "k3", "new"))  # "old" can go
    assert store.get_checked("population", "late") == b"late"
    assert store.get_checked("population", "later") == b"later"
    assert store.get_checked("population", "k49") == b"v49"
    await store.aclose()


async def test_turning_encryption_on_reseals_plaintext_values(db: str) -> None:
    store = TierStore(db)
    await store.put("mesh", "m", b"PLAINTEXT-VALUE")
    await store.aclose()
    store = TierStore(db, keyring=ring("k1"))
    assert store.get("mesh", "m") == b"PLAINTEXT-VALUE"  # readable while mixed
    assert store.key_usage() == {None: 1}
    assert await store.reseal() == 1
    assert store.key_usage() == {ring("k1").primary.fingerprint: 1}
    await store.aclose()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("VACUUM")
    conn.close()
    assert b"PLAINTEXT-VALUE" not in _file_bytes(db)


async def test_reseal_skips_a_corrupt_value_and_finishes(db: str) -> None:
    store = TierStore(db, keyring=ring("old"))
    await store.put_many([("population", "a", b"1"), ("population", "b", b"2")])
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(
        "UPDATE state SET value=x'00112233445566778899aabbccddeeff0011223344' WHERE key='a'"
    )
    conn.close()
    store.set_keyring(ring("new", "old"))
    assert await store.reseal() == 1
    assert store.get("population", "b") == b"2"
    await store.aclose()


async def test_a_value_whose_digest_rotted_is_repaired_like_one_whose_bytes_did(db: str) -> None:
    store = TierStore(db, keyring=ring("k1"))
    await store.put("population", "a", b"good")
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("UPDATE state SET digest=x'00' WHERE key='a'")
    conn.close()
    bad, _, _ = store.check_digests()
    assert [k for _, k, _ in bad] == ["a"]
    assert await store.replace_if("population", "a", bad[0][2], b"repaired") is True
    assert store.get_checked("population", "a") == b"repaired"
    await store.aclose()


async def test_a_hint_that_fails_authentication_is_skipped_then_deleted(db: str) -> None:
    store = TierStore(db, keyring=ring("old"))
    for key in ("a", "b", "c"):
        await store.add_hint("n2", "mesh", key, b"hinted-" + key.encode())
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("UPDATE hints SET value=x'00112233445566778899aabbccddeeff0011' WHERE key='a'")
    conn.close()
    assert [h.key for h in store.hints_for("n2")] == ["b", "c"]  # hand-off is not stuck
    store.set_keyring(ring("new", "old"))
    assert await store.reseal() == 2
    assert store.key_usage() == {ring("new").primary.fingerprint: 2}  # rotation completes
    assert [h.key for h in store.hints_for("n2")] == ["b", "c"]
    await store.aclose()


def _state_indexes(db: str) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='state'"
            " AND sql IS NOT NULL"
        ).fetchall()
    finally:
        conn.close()
    return sorted(str(r[0]) for r in rows)


async def test_nothing_but_the_key_indexes_the_state_table(db: str) -> None:
    """A value written updates one B-tree: an index of values by data key cost every
    encrypted write a second one, for what only opening and re-sealing ask."""
    store = TierStore(db, keyring=ring("k1"))
    await store.put("population", "a", b"v")
    await store.aclose()
    assert _state_indexes(db) == []


async def test_a_store_made_with_the_data_key_index_loses_it_and_keeps_its_accounting(
    db: str,
) -> None:
    old, both = ring("old"), ring("new", "old")
    store = TierStore(db, keyring=old)
    await store.put_many([("population", f"k{i}", b"v%d" % i) for i in range(50)])
    await store.aclose()
    store = TierStore(db, keyring=both)  # a second data key, under "new"
    await store.put("population", "fresh", b"under new")
    await store.aclose()
    conn = sqlite3.connect(db, isolation_level=None)  # a v4 store from before 2026-12-07
    undo_v5(conn)
    conn.execute("CREATE INDEX state_by_dek ON state (dek) WHERE dek IS NOT NULL")
    conn.close()
    store = TierStore(db, keyring=both)
    assert _state_indexes(db) == []
    assert store.key_usage() == {old.primary.fingerprint: 50, both.primary.fingerprint: 1}
    with pytest.raises(KeyringError, match=r"lacks key .* 50 values"):
        store.set_keyring(ring("new"))  # still counted without the index
    assert await store.reseal() == 50
    assert store.key_usage() == {both.primary.fingerprint: 51}
    await store.aclose()
    conn = sqlite3.connect(db)
    wrapped = [bytes(r[0]) for r in conn.execute("SELECT wrapped FROM deks")]
    conn.close()
    assert wrapped and {w[:4] for w in wrapped} == {both.primary.fingerprint}  # old's went
    store = TierStore(db, keyring=ring("new"))
    assert store.get_checked("population", "k49") == b"v49"
    await store.aclose()
