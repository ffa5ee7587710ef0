"""Writing, verifying, reading and pruning backups in a local repository (no cluster)."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import random
import re
from typing import Any

import pytest

from consensus.statemachine import PutOp, SystemStateMachine, Txn
from crdt import PNCounter, encode
from node.backup import archive, seal
from node.backup.archive import BackupError, Gathered, TierCopy
from node.backup.manifest import ManifestError
from node.backup.repository import Repository, RepositoryError

HOUR = 3600 * 10**9
T0 = 1_790_000_000 * 10**9


def state(n: int, seed: int = 1) -> SystemStateMachine:
    rng = random.Random(seed)
    sm = SystemStateMachine()
    for i in range(n):
        sm.apply(Txn(success=(PutOp(f"sys/{i:05d}", rng.randbytes(40)),)))
    return sm


def counter(node: str, amount: int) -> bytes:
    return encode(PNCounter().increment(node, amount))


def gathered(sm: SystemStateMachine, population: list[tuple[str, bytes]]) -> Gathered:
    return Gathered(
        revision=sm.revision,
        system=archive.system_records(sm),
        tiers={
            "population": TierCopy(population, ("n1", "n2", "n3"), (), True),
            "agent": TierCopy([], ("n1", "n2", "n3"), (), True),
        },
        source="n1",
        members=("n1", "n2", "n3"),
    )


@pytest.fixture
def keys(tmp_path: pathlib.Path) -> tuple[list[str], list[Any]]:
    secret, public = seal.generate_identity()
    path = tmp_path / "key.txt"
    path.write_text(secret + "\n")
    return [public], seal.load_identities(str(path))


@pytest.fixture
def repo(tmp_path: pathlib.Path) -> Repository:
    return Repository.local(str(tmp_path / "repo"), create=True)


def population(n: int) -> list[tuple[str, bytes]]:
    return [(f"job_resource_ledger/{i:05d}", counter("n1", i + 1)) for i in range(n)]


def test_a_backup_reads_back_exactly_and_verifies(
    repo: Repository, keys: tuple[list[str], list[Any]]
) -> None:
    recipients, identities = keys
    sm = state(500)
    pop = population(300)
    manifest, stats = archive.write_backup(repo, gathered(sm, pop), recipients, now_ns=T0)
    assert stats.chunks_new == stats.chunks_total > 2
    assert archive.verify(repo, manifest, identities).ok
    assert archive.verify(repo, manifest, None).ok
    back = archive.system_state(archive.read_section(repo, manifest, "system", identities),
                                manifest.revision)  # fmt: skip
    assert back.revision == sm.revision == 500
    assert sorted(back.items(), key=lambda kv: kv.key) == sorted(sm.items(), key=lambda kv: kv.key)
    assert archive.read_section(repo, manifest, "population", identities) == pop
    again = Repository.local(repo.store.root).read_manifest(manifest.id)  # type: ignore[attr-defined]
    assert again == manifest


def test_the_second_backup_stores_only_what_changed(
    repo: Repository, keys: tuple[list[str], list[Any]]
) -> None:
    recipients, _ = keys
    sm = state(3000)
    pop = population(3000)
    first, s1 = archive.write_backup(repo, gathered(sm, pop), recipients, now_ns=T0)
    sm.apply(Txn(success=(PutOp("sys/01500", b"changed"),)))
    pop[10] = (pop[10][0], counter("n2", 5))
    second, s2 = archive.write_backup(repo, gathered(sm, pop), recipients, now_ns=T0 + HOUR)
    assert s2.chunks_new == 2  # one chunk of each changed section
    assert s2.bytes_new < s1.bytes_new / 20
    assert len(first.chunk_ids() & second.chunk_ids()) == s2.chunks_total - 2


def test_verify_names_a_corrupt_a_missing_and_a_truncated_pack(
    repo: Repository, keys: tuple[list[str], list[Any]]
) -> None:
    recipients, identities = keys
    # pack_bytes=1: one chunk a pack, so each fault below hits one chunk
    manifest, _ = archive.write_backup(repo, gathered(state(2000), population(50)), recipients,
                                       now_ns=T0, pack_bytes=1)  # fmt: skip
    corrupt, missing, truncated = manifest.system.chunks[:3]
    path = pathlib.Path(repo.describe_pack(corrupt.pack))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    os.unlink(repo.describe_pack(missing.pack))
    t = pathlib.Path(repo.describe_pack(truncated.pack))
    t.write_bytes(t.read_bytes()[:-10])
    for ids in (identities, None):
        report = archive.verify(repo, manifest, ids)
        text = "\n".join(report.problems)
        assert len(report.problems) == 3, text
        assert f"{archive.describe(repo, corrupt)}: corrupt" in text
        assert f"{archive.describe(repo, missing)}: pack missing" in text
        assert f"{archive.describe(repo, truncated)}: truncated" in text
    with pytest.raises(BackupError, match=re.escape(archive.describe(repo, corrupt))):
        archive.read_section(repo, manifest, "system", identities)


def test_a_flipped_byte_in_a_shared_pack_names_the_one_chunk_it_hit(
    repo: Repository, keys: tuple[list[str], list[Any]]
) -> None:
    recipients, identities = keys
    manifest, _ = archive.write_backup(repo, gathered(state(2000), []), recipients, now_ns=T0)
    assert len(manifest.pack_ids()) == 1
    victim = manifest.system.chunks[7]
    path = pathlib.Path(repo.describe_pack(victim.pack))
    data = bytearray(path.read_bytes())
    data[victim.offset + victim.stored_size // 2] ^= 0x01
    path.write_bytes(bytes(data))
    report = archive.verify(repo, manifest, identities)
    problem = "corrupt (the stored bytes' checksum does not match the manifest)"
    assert report.problems == [f"system: {archive.describe(repo, victim)}: {problem}"]


def test_a_chunk_whose_checksum_was_forged_still_fails_on_decryption(
    repo: Repository, keys: tuple[list[str], list[Any]]
) -> None:
    """Stored-bytes checksums catch rot; age's authentication catches a changed chunk
    whose manifest entry was changed to match."""
    recipients, identities = keys
    manifest, _ = archive.write_backup(repo, gathered(state(10), []), recipients, now_ns=T0)
    ref = manifest.system.chunks[0]
    path = pathlib.Path(repo.describe_pack(ref.pack))
    data = bytearray(path.read_bytes())
    data[ref.offset + ref.stored_size - 5] ^= 1
    path.write_bytes(bytes(data))
    raw = json.loads(repo.store.get(f"backups/{manifest.id}.json"))
    stored = bytes(data[ref.offset : ref.offset + ref.stored_size])
    raw["system"]["chunks"][0]["stored_sha256"] = hashlib.sha256(stored).hexdigest()
    repo.store.put(f"backups/{manifest.id}.json", json.dumps(raw).encode())
    forged = repo.read_manifest(manifest.id)
    assert archive.verify(repo, forged, None).ok  # no key: nothing more can be checked
    report = archive.verify(repo, forged, identities)
    assert len(report.problems) == 1 and "does not decrypt" in report.problems[0]


def test_the_wrong_identity_is_named_and_reads_nothing(
    repo: Repository, keys: tuple[list[str], list[Any]], tmp_path: pathlib.Path
) -> None:
    recipients, _ = keys
    manifest, _ = archive.write_backup(repo, gathered(state(10), []), recipients, now_ns=T0)
    other = tmp_path / "other"
    other.write_text(seal.generate_identity()[0] + "\n")
    wrong = seal.load_identities(str(other))
    with pytest.raises(BackupError, match="does not decrypt with the given identity"):
        archive.read_section(repo, manifest, "system", wrong)


def test_manifests_of_a_newer_format_or_malformed_are_refused_by_name(repo: Repository) -> None:
    repo.store.put("backups/20260101T000000Z-0000abcd.json", b'{"format": 2}')
    repo.store.put("backups/20260101T010000Z-0000abcd.json", b"{not json")
    manifests, bad = repo.manifests()
    assert manifests == []
    text = " | ".join(map(str, bad))
    assert "20260101T000000Z-0000abcd.json: manifest format 2" in text
    assert "20260101T010000Z-0000abcd.json: not JSON" in text
    with pytest.raises(ManifestError):
        repo.read_manifest("20260101T000000Z-0000abcd")
    with pytest.raises(RepositoryError, match="no backup"):
        repo.read_manifest("20260101T020000Z-0000abcd")


def test_a_directory_that_is_not_a_repository_is_refused(tmp_path: pathlib.Path) -> None:
    with pytest.raises(RepositoryError, match="not a backup repository"):
        Repository.local(str(tmp_path / "none"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "precious.txt").write_text("x")
    with pytest.raises(RepositoryError, match="non-empty directory"):
        Repository.local(str(tmp_path / "full"), create=True)
    assert os.listdir(tmp_path / "full") == ["precious.txt"]


def test_prune_keeps_the_schedule_and_every_chunk_a_kept_backup_needs(
    repo: Repository, keys: tuple[list[str], list[Any]]
) -> None:
    recipients, identities = keys
    sm = state(400)
    written = []
    for hour in range(30):  # 30 hourly backups, each changing one key
        sm.apply(Txn(success=(PutOp(f"sys/{hour * 13:05d}", b"v%d" % hour),)))
        m, _ = archive.write_backup(repo, gathered(sm, population(20)), recipients,
                                    now_ns=T0 + hour * HOUR)  # fmt: skip
        written.append(m)
    now = T0 + 29 * HOUR + 10
    dry = archive.prune(repo, now, dry_run=True)
    assert len(repo.backup_ids()) == 30
    result = archive.prune(repo, now)
    assert result.removed == dry.removed and len(result.kept) < 30
    assert written[-1].id in result.kept and result.packs_removed > 0
    for backup_id in result.kept:
        m = repo.read_manifest(backup_id)
        assert archive.verify(repo, m, identities).ok, backup_id
    assert repo.stored_packs() == set().union(*(repo.read_manifest(b).pack_ids()
                                                 for b in result.kept))  # fmt: skip


def test_prune_refuses_when_a_manifest_is_unreadable(
    repo: Repository, keys: tuple[list[str], list[Any]]
) -> None:
    recipients, _ = keys
    archive.write_backup(repo, gathered(state(10), []), recipients, now_ns=T0)
    repo.store.put("backups/20200101T000000Z-0000abcd.json", b"{broken")
    before = repo.stored_packs()
    with pytest.raises(BackupError, match="refusing to prune"):
        archive.prune(repo, T0 + 1000 * HOUR)
    assert repo.stored_packs() == before and len(repo.backup_ids()) == 2


def test_a_second_writer_is_refused_while_one_holds_the_repository(repo: Repository) -> None:
    other = Repository.local(repo.store.root).store  # type: ignore[attr-defined]
    held = pytest.raises(RepositoryError, match="another backup or prune")
    with repo.store.exclusive(), held, other.exclusive():
        pass


def test_system_records_with_impossible_revisions_are_refused() -> None:
    sm = state(3)
    records = archive.system_records(sm)
    with pytest.raises(BackupError, match="revisions out of order"):
        archive.system_state(records, revision=2)
    with pytest.raises(BackupError, match="malformed record"):
        archive.system_state([("k", b"\xc1")], revision=5)


def test_backups_made_within_one_second_sort_in_the_order_they_were_made(
    repo: Repository, keys: tuple[list[str], list[Any]]
) -> None:
    """`restore latest` once picked a random one of two backups made in the same second
    (ids had whole seconds and a random suffix)."""
    recipients, _ = keys
    made = [
        archive.write_backup(repo, gathered(state(3), []), recipients, now_ns=T0 + n * 1000)[0]
        for n in range(5)
    ]
    readable, _ = repo.manifests()
    assert [m.id for m in readable] == [m.id for m in made] == repo.backup_ids()


def test_new_recipients_reseal_everything(
    repo: Repository, keys: tuple[list[str], list[Any]], tmp_path: pathlib.Path
) -> None:
    """Review finding: chunks were reused whatever keys sealed them, so after rotating a
    leaked key the old key still opened most of every new backup."""
    old_recipients, old_identities = keys
    g = gathered(state(300), population(100))
    archive.write_backup(repo, g, old_recipients, now_ns=T0)
    secret, public = seal.generate_identity()
    (tmp_path / "new").write_text(secret + "\n")
    manifest, stats = archive.write_backup(repo, g, [public], now_ns=T0 + HOUR)
    assert stats.chunks_new == stats.chunks_total
    assert archive.verify(repo, manifest, seal.load_identities(str(tmp_path / "new"))).ok
    report = archive.verify(repo, manifest, old_identities)
    assert len(report.problems) == len(manifest.chunk_ids())  # the old key opens none
