"""The Raft files' scrub: every damaged record or snapshot found, an append in progress
not mistaken for damage."""

from __future__ import annotations

import pathlib
import pickle
import threading

from consensus.atrest import Key, Keyring
from consensus.raft import scrub
from consensus.raft.backend import write_snapshot_file
from consensus.raft.journal import MAGIC, DurableJournal, encode_record
from consensus.statemachine import PutOp, SystemStateMachine, Txn


def run(steps: object) -> tuple[int, list[scrub.Damage]]:
    read, found = 0, []
    for step in steps:  # type: ignore[attr-defined]
        if isinstance(step, scrub.Damage):
            found.append(step)
        else:
            read += step
    return read, found


def write_journal(path: pathlib.Path, n: int) -> list[int]:
    journal = DurableJournal(str(path))
    for i in range(n):
        journal.add(b"command-%d" % i * 50, i + 1, 1)
    journal.sync()
    journal._destroy()
    offsets, pos = [], len(MAGIC)
    for i in range(n):
        offsets.append(pos)
        pos += len(encode_record(b"command-%d" % i * 50, i + 1, 1))
    return offsets


def test_a_sound_journal_reads_clean_in_full(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "raft.journal"
    write_journal(path, 3000)
    read, found = run(scrub.journal(str(path)))
    assert found == [] and read == path.stat().st_size - len(MAGIC)


def test_a_flipped_byte_in_the_middle_is_found_at_its_record(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "raft.journal"
    offsets = write_journal(path, 3000)
    data = bytearray(path.read_bytes())
    data[offsets[1700] + 20] ^= 0x10  # inside record 1700's payload (past the 1 MiB chunk)
    path.write_bytes(bytes(data))
    _, found = run(scrub.journal(str(path)))
    assert [d.offset for d in found] == [offsets[1700]]
    assert "record checksum mismatch" in str(found[0]) and str(path) in str(found[0])


def test_a_record_still_being_appended_is_not_damage(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "raft.journal"
    write_journal(path, 10)
    record = encode_record(b"being written", 11, 1)
    with open(path, "ab") as f:
        f.write(record[:9])  # the scrubber finds half a record at the end ...

    def complete() -> None:
        with open(path, "ab") as f:
            f.write(record[9:])

    finish = threading.Timer(0.01, complete)
    finish.start()  # ... and the append completes a moment later
    assert run(scrub.journal(str(path)))[1] == []
    finish.join()


def test_snapshots_are_checked_whole(tmp_path: pathlib.Path) -> None:
    sm = SystemStateMachine()
    for i in range(500):
        sm.apply(Txn(success=(PutOp(f"k{i}", b"v" * 100),)))
    path = tmp_path / "raft.snapshot"
    write_snapshot_file(str(path), b"raft", sm)
    assert run(scrub.snapshot(str(path)))[1] == []
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    assert "checksum mismatch" in str(run(scrub.snapshot(str(path)))[1][0])
    path.write_bytes(b"garbage" * 10)
    assert "not a Tadpole snapshot" in str(run(scrub.snapshot(str(path)))[1][0])
    assert run(scrub.snapshot(str(tmp_path / "missing"))) == (0, [])


def test_a_damaged_length_that_runs_past_the_end_is_reported(tmp_path: pathlib.Path) -> None:
    """Review finding: a length field flipped to run past the end of the file looked
    like an append in flight and was never reported -- yet start-up cuts the journal
    there."""
    path = tmp_path / "raft.journal"
    offsets = write_journal(path, 3000)
    data = bytearray(path.read_bytes())
    data[offsets[10] + 3] ^= 0x40  # the length's high byte: now ~1 GiB
    path.write_bytes(bytes(data))
    read, found = run(scrub.journal(str(path)))
    assert [(d.offset, d.what) for d in found] == [
        (offsets[10], "record length runs past the end of the file")
    ]
    assert read <= 1 << 20  # it stopped there instead of buffering the rest


def test_an_encrypted_journal_and_snapshot_are_scrubbed_like_plain_ones(
    tmp_path: pathlib.Path,
) -> None:
    """The scrub reads past the encrypted journal's header (its wrapped data key) and
    checks the same CRCs: clean when sound, the record named when a byte flips."""
    keyring = Keyring([Key("k", b"\x01" * 32)])
    path = tmp_path / "raft.journal"
    journal = DurableJournal(str(path), keyring=keyring)
    for i in range(500):
        journal.add(b"command-%d" % i * 50, i + 1, 1)
    journal.sync()
    offsets = list(journal._offsets)
    journal._destroy()
    read, found = run(scrub.journal(str(path)))
    assert found == [] and read == path.stat().st_size - offsets[0]
    data = bytearray(path.read_bytes())
    data[offsets[321] + 30] ^= 0x10
    path.write_bytes(bytes(data))
    _, found = run(scrub.journal(str(path)))
    assert [d.offset for d in found] == [offsets[321]]
    snapshot = tmp_path / "raft.snapshot"
    sm = SystemStateMachine()
    sm.apply(Txn(success=(PutOp("k", b"v"),)))
    write_snapshot_file(str(snapshot), pickle.dumps(()), sm, keyring)
    assert run(scrub.snapshot(str(snapshot)))[1] == []
