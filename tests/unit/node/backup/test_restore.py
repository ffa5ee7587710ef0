"""Restore into data directories: placement, refusals, and nothing touched on failure."""

from __future__ import annotations

import os
import pathlib
import re
from typing import Any

import pytest

from consensus.atrest import Key, Keyring
from consensus.raft.backend import open_snapshot, snapshot_key
from consensus.statemachine import SystemStateMachine
from node.backup import archive, seal
from node.backup.archive import BackupError, TierCopy
from node.backup.repository import Repository
from node.backup.restore import restore
from node.replication.coordinator import owners
from node.replication.store import TierStore
from node.tiers.ops import TIERS
from tests.unit.node.backup.test_archive import T0, gathered, population, state

MEMBERS = ("n1", "n2", "n3")


@pytest.fixture
def backup(tmp_path: pathlib.Path) -> tuple[Repository, Any, list[Any]]:
    secret, public = seal.generate_identity()
    (tmp_path / "key").write_text(secret + "\n")
    repo = Repository.local(str(tmp_path / "repo"), create=True)
    g = gathered(state(120), population(200))
    g.tiers["metrics"] = TierCopy([("cpu", population(1)[0][1])], MEMBERS, (), True)
    manifest, _ = archive.write_backup(repo, g, [public], now_ns=T0)
    return repo, manifest, seal.load_identities(str(tmp_path / "key"))


def targets(root: pathlib.Path) -> dict[str, str]:
    return {m: str(root / m / "data") for m in MEMBERS}


def stored(path: str, tier: str) -> list[tuple[str, bytes]]:
    store = TierStore(os.path.join(path, "tiers.db"))
    try:
        return store.scan(tier)
    finally:
        store.close()


def test_each_value_lands_on_its_owners_only(
    backup: tuple[Repository, Any, list[Any]], tmp_path: pathlib.Path
) -> None:
    repo, manifest, ids = backup
    where = targets(tmp_path / "new")
    done = restore(repo, manifest, ids, where)
    # the 120 keys at revision 120, and the new timeline the restore stamps
    assert done.system_keys == 121 and done.revision == 120
    pop = dict(population(200))
    for member, path in where.items():
        assert {"raft.journal", "raft.snapshot", "tiers.db"} <= set(os.listdir(path))
        mine = dict(stored(path, "population"))
        expected = {k for k in pop if member in owners(TIERS["population"], k, MEMBERS)}
        assert set(mine) == expected
        assert all(mine[k] == pop[k] for k in mine)
        assert [k for k, _ in stored(path, "metrics")] == ["cpu"]  # RF all
    assert sum(done.copies_written.values()) == 200 * 2 + 3


def test_a_non_empty_target_is_refused_unless_forced(
    backup: tuple[Repository, Any, list[Any]], tmp_path: pathlib.Path
) -> None:
    repo, manifest, ids = backup
    where = targets(tmp_path / "new")
    os.makedirs(where["n2"])
    precious = pathlib.Path(where["n2"]) / "precious"
    precious.write_text("keep me")
    with pytest.raises(BackupError, match=r"n2/data \(member n2\): not empty"):
        restore(repo, manifest, ids, where)
    assert precious.read_text() == "keep me"
    assert not os.path.exists(where["n1"]) and not os.path.exists(where["n3"])
    restore(repo, manifest, ids, where, force=True)
    assert not precious.exists()
    assert not os.path.exists(where["n2"] + ".replaced")
    assert not os.path.exists(where["n2"] + ".restoring")


def test_a_corrupt_chunk_stops_the_restore_before_any_target_is_touched(
    backup: tuple[Repository, Any, list[Any]], tmp_path: pathlib.Path
) -> None:
    repo, manifest, ids = backup
    last = manifest.tiers["population"].chunks[-1]
    path = pathlib.Path(repo.describe_pack(last.pack))
    data = bytearray(path.read_bytes())
    data[last.offset + last.stored_size - 1] ^= 0x01
    path.write_bytes(bytes(data))
    where = targets(tmp_path / "new")
    with pytest.raises(BackupError, match=re.escape(archive.describe(repo, last))):
        restore(repo, manifest, ids, where)
    assert not (tmp_path / "new").exists()


def test_an_incomplete_backup_needs_allow_incomplete(tmp_path: pathlib.Path) -> None:
    secret, public = seal.generate_identity()
    (tmp_path / "key").write_text(secret + "\n")
    ids = seal.load_identities(str(tmp_path / "key"))
    repo = Repository.local(str(tmp_path / "repo"), create=True)
    g = gathered(state(5), population(5))
    g.tiers["agent"] = TierCopy([], ("n1", "n2"), ("n3",), False)
    manifest, _ = archive.write_backup(repo, g, [public], now_ns=T0)
    with pytest.raises(BackupError, match=r"incomplete for agent \(missing n3\)"):
        restore(repo, manifest, ids, targets(tmp_path / "a"))
    assert not (tmp_path / "a").exists()
    restore(repo, manifest, ids, targets(tmp_path / "b"), allow_incomplete=True)


def test_a_restore_with_a_keyring_writes_nothing_in_plaintext(
    backup: tuple[Repository, Any, list[Any]], tmp_path: pathlib.Path
) -> None:
    """Restoring into an encrypted cluster: the journal, its term/vote file, the snapshot
    and every tier value are encrypted from the first byte, and open with the keyring."""
    repo, manifest, ids = backup
    keyring = Keyring([Key("k1", b"\x11" * 32)])
    where = targets(tmp_path / "new")
    restore(repo, manifest, ids, where, keyring=keyring)
    pop = dict(population(200))
    for path in where.values():
        assert pathlib.Path(path, "raft.journal").read_bytes()[:8] == b"TPJOURN2"
        assert snapshot_key(os.path.join(path, "raft.snapshot")) == keyring.primary.fingerprint
        store = TierStore(os.path.join(path, "tiers.db"), keyring=keyring)
        try:
            assert set(store.key_usage()) == {keyring.primary.fingerprint}
            assert all(pop[k] == v for k, v in store.scan("population"))
        finally:
            store.close()
        f, _, body = open_snapshot(os.path.join(path, "raft.snapshot"), keyring)
        with f:
            sm = SystemStateMachine()
            sm.restore_from(body)  # type: ignore[arg-type]
        assert sm.revision == 120
