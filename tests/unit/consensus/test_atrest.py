"""Encryption at rest: the keyring, data keys, sealed blobs and sealed streams, and
the Raft journal, term/vote file and snapshot under them."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import pickle
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from consensus.atrest import (
    FRAME_BYTES,
    WRAPPED_BYTES,
    DataKey,
    Key,
    Keyring,
    KeyringError,
    SealedReader,
    SealedWriter,
    TamperedError,
    UnknownKeyError,
    generate_line,
    sealed_stream_bytes,
)
from consensus.errors import JournalError, SnapshotError
from consensus.raft.backend import (
    RaftBackend,
    open_snapshot,
    seed_data_dir,
    snapshot_key,
    write_snapshot_file,
)
from consensus.raft.journal import SEALED_MAGIC, DurableJournal
from consensus.statemachine import PutOp, SystemStateMachine, Txn


def ring(*names: str) -> Keyring:
    """A keyring of ``names``; a name always stands for the same key bytes."""
    return Keyring([Key(n, hashlib.sha256(n.encode()).digest()) for n in names])


_B64X = base64.b64encode(b"x" * 32).decode()
_B64Y = base64.b64encode(b"y" * 32).decode()


# -- keyring --------------------------------------------------------------------------


def test_a_keyring_parses_lines_commas_and_comments() -> None:
    a, b = generate_line("new"), generate_line("old")
    parsed = Keyring.parse(f"# rotated today\n{a}\n\n{b}  # the previous one\n", "f")
    assert [k.name for k in parsed.keys] == ["new", "old"] and parsed.primary.name == "new"
    assert [k.name for k in Keyring.parse(f"{a},{b}", "env").keys] == ["new", "old"]
    assert parsed.primary.secret == base64.b64decode(a.split(":", 1)[1])


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "holds no key"),
        ("k1", "not 'name:base64-key'"),
        ("k 1:AAAA", "not 'name:base64-key'"),
        ("k1:not base64!", "not valid base64"),
        (f"k1:{base64.b64encode(b'x' * 16).decode()}", "16 bytes, not 32"),
        (f"k1:{_B64X}\nk1:{_B64Y}", "appears twice"),
        (f"a:{_B64X}\nb:{_B64X}", "repeats an earlier key"),
    ],
)
def test_a_bad_keyring_is_refused_naming_the_problem_not_the_key(text: str, problem: str) -> None:
    with pytest.raises(KeyringError, match=problem) as info:
        Keyring.parse(text, "keys.txt")
    assert "keys.txt" in str(info.value)
    assert "eHh4" not in str(info.value)  # never the key material itself


def test_key_reprs_and_messages_never_show_the_secret() -> None:
    key = Key("k1", b"\x07" * 32)
    assert "\\x07" not in repr(key) and key.id == f"k1 ({key.fingerprint.hex()})"


# -- data keys and sealed blobs ----------------------------------------------------------


def test_a_data_key_is_wrapped_by_the_primary_and_opens_with_any_ring_holding_it() -> None:
    old = ring("old")
    dek = old.new_data_key()
    record = dek.encrypt(b"value", b"row 1")
    assert len(dek.wrapped) == WRAPPED_BYTES and dek.kek_fingerprint == old.primary.fingerprint
    rotated = Keyring([Key("new", b"\x09" * 32), *old.keys])
    assert rotated.unwrap(dek.wrapped).decrypt(record, b"row 1") == b"value"
    assert rotated.new_data_key().kek_fingerprint == rotated.primary.fingerprint
    with pytest.raises(UnknownKeyError, match=old.primary.fingerprint.hex()):
        Keyring([Key("new", b"\x09" * 32)]).unwrap(dek.wrapped)


def test_same_name_other_bytes_is_an_unknown_key_not_corruption() -> None:
    dek = ring("k1").new_data_key()
    with pytest.raises(UnknownKeyError):
        Keyring([Key("k1", b"\x05" * 32)]).unwrap(dek.wrapped)


def test_records_are_bound_to_their_associated_data_and_every_byte_counts() -> None:
    dek = ring("k").new_data_key()
    record = dek.encrypt(b"counter=7", b"state:3:pop:a")
    with pytest.raises(TamperedError):
        dek.decrypt(record, b"state:3:pop:b")  # moved to another row
    for i in range(len(record)):
        flipped = bytearray(record)
        flipped[i] ^= 0x01
        with pytest.raises(TamperedError):
            dek.decrypt(bytes(flipped), b"state:3:pop:a")
    with pytest.raises(TamperedError, match="too short"):
        dek.decrypt(record[:10], b"state:3:pop:a")
    assert b"counter" not in record


def test_a_tampered_wrapped_key_is_refused() -> None:
    keyring = ring("k")
    wrapped = bytearray(keyring.new_data_key().wrapped)
    wrapped[20] ^= 1
    with pytest.raises(TamperedError, match="does not open"):
        keyring.unwrap(bytes(wrapped))
    with pytest.raises(TamperedError, match="a wrapped key has"):
        keyring.unwrap(bytes(wrapped[:-1]))


def test_a_data_key_counts_its_uses_and_reports_when_worn_out() -> None:
    dek = ring("k").new_data_key()
    dek.encrypt(b"x", b"")
    dek.count_uses((1 << 31) - 2)
    assert not dek.exhausted
    dek.encrypt(b"x", b"")
    assert dek.exhausted


def test_sealed_blobs_name_their_key_and_authenticate() -> None:
    keyring = ring("a", "b")
    blob = keyring.seal(b'{"term": 3}', b"meta")
    assert keyring.unseal(blob, b"meta") == b'{"term": 3}'
    with pytest.raises(TamperedError):
        keyring.unseal(blob, b"other")
    with pytest.raises(UnknownKeyError):
        ring("b", "c").unseal(blob, b"meta")


# -- sealed streams ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [0, 1, FRAME_BYTES - 1, FRAME_BYTES, FRAME_BYTES + 1, 3 * FRAME_BYTES + 7]
)
def test_a_sealed_stream_round_trips_at_frame_boundaries(size: int) -> None:
    dek = ring("k").new_data_key()
    plain = os.urandom(size)
    out = io.BytesIO()
    writer = SealedWriter(out, dek, b"snap")
    for i in range(0, size, 1000):
        writer.write(plain[i : i + 1000])
    writer.close()
    sealed = out.getvalue()
    assert len(sealed) == sealed_stream_bytes(size)
    reader = SealedReader(io.BytesIO(sealed), len(sealed), dek, b"snap", what="s")
    assert reader.read(5) + reader.read() == plain


def _sealed(dek: DataKey, plain: bytes) -> bytes:
    out = io.BytesIO()
    writer = SealedWriter(out, dek, b"snap")
    writer.write(plain)
    writer.close()
    return out.getvalue()


def test_a_sealed_stream_cut_at_a_frame_boundary_or_reordered_is_refused() -> None:
    dek = ring("k").new_data_key()
    frame = FRAME_BYTES + 16
    sealed = _sealed(dek, os.urandom(2 * FRAME_BYTES + 10))
    cut = sealed[: 2 * frame]  # the last frame dropped: the new last one was not last
    with pytest.raises(TamperedError, match="frame 1"):
        SealedReader(io.BytesIO(cut), len(cut), dek, b"snap", what="s").read()
    swapped = sealed[frame : 2 * frame] + sealed[:frame] + sealed[2 * frame :]
    with pytest.raises(TamperedError, match="frame 0"):
        SealedReader(io.BytesIO(swapped), len(swapped), dek, b"snap", what="s").read()
    with pytest.raises(TamperedError, match="cut short"):
        SealedReader(io.BytesIO(sealed[:100]), len(sealed), dek, b"snap", what="s").read()


# -- the journal and its term/vote file -------------------------------------------------------


def _journal(path: Path, keyring: Keyring | None) -> DurableJournal:
    return DurableJournal(str(path / "raft.journal"), keyring=keyring)


def test_an_encrypted_journal_holds_no_plaintext_and_reopens(tmp_path: Path) -> None:
    keyring = ring("k1")
    j = _journal(tmp_path, keyring)
    for i in range(1, 51):
        j.add(b"secret-command-%d" % i, i, 1)
    j.setCurrentTerm(4, "n2")
    j.sync()
    j._destroy()
    raw = (tmp_path / "raft.journal").read_bytes()
    meta = (tmp_path / "raft.journal.meta").read_bytes()
    assert raw.startswith(SEALED_MAGIC) and b"secret-command" not in raw
    assert b"n2" not in meta
    assert oct((tmp_path / "raft.journal").stat().st_mode & 0o777) == "0o600"
    again = _journal(tmp_path, keyring)
    assert [e[0] for e in again[:]][-1] == b"secret-command-50" and len(again) == 50
    assert again.getCurrentTerm() == 4 and again.getVotedForNodeId() == "n2"
    assert again.key_fingerprint == keyring.primary.fingerprint


def test_an_encrypted_journal_does_not_open_without_its_key(tmp_path: Path) -> None:
    j = _journal(tmp_path, ring("k1"))
    j.add(b"x", 1, 1)
    j.setCurrentTerm(1, None)
    j.sync()
    j._destroy()
    with pytest.raises(JournalError, match="no encryption key is configured"):
        _journal(tmp_path, None)
    with pytest.raises(JournalError, match="not in keyring"):
        _journal(tmp_path, ring("other"))


def test_a_tampered_record_is_refused_not_cut_as_a_torn_tail(tmp_path: Path) -> None:
    """A record whose CRC matches but whose tag does not is not a torn write: cutting it
    (and every acknowledged entry after it) would be silent data loss."""
    import struct
    import zlib

    j = _journal(tmp_path, ring("k1"))
    for i in range(1, 4):
        j.add(b"cmd%d" % i, i, 1)
    j.sync()
    offset = j._offsets[1]
    j._destroy()
    path = tmp_path / "raft.journal"
    data = bytearray(path.read_bytes())
    length, _ = struct.unpack_from("<II", data, offset)
    data[offset + 8 + 20] ^= 0x01  # inside the ciphertext
    struct.pack_into("<I", data, offset + 4, zlib.crc32(data[offset + 8 : offset + 8 + length]))
    path.write_bytes(bytes(data))
    with pytest.raises(JournalError, match=f"record at byte {offset}.*authentication failed"):
        _journal(tmp_path, ring("k1"))
    assert path.read_bytes() == bytes(data)  # nothing cut


def test_a_torn_encrypted_tail_is_still_cut(tmp_path: Path) -> None:
    j = _journal(tmp_path, ring("k1"))
    for i in range(1, 4):
        j.add(b"cmd%d" % i, i, 1)
    j.sync()
    j._destroy()
    path = tmp_path / "raft.journal"
    path.write_bytes(path.read_bytes()[:-5])
    assert [e[1] for e in _journal(tmp_path, ring("k1"))[:]] == [1, 2]


def test_a_journal_is_resealed_at_open_when_the_primary_key_changes(tmp_path: Path) -> None:
    old = ring("old")
    j = _journal(tmp_path, None)  # written before encryption was turned on
    j.add(b"plain-entry", 1, 1)
    j.setCurrentTerm(2, "n1")
    j.sync()
    j._destroy()
    assert b"plain-entry" in (tmp_path / "raft.journal").read_bytes()
    j = _journal(tmp_path, old)
    assert j.key_fingerprint == old.primary.fingerprint and j[0][0] == b"plain-entry"
    j._destroy()
    assert b"plain-entry" not in (tmp_path / "raft.journal").read_bytes()
    assert b"n1" not in (tmp_path / "raft.journal.meta").read_bytes()
    rotated = Keyring([Key("new", b"\x42" * 32), *old.keys])
    j = _journal(tmp_path, rotated)
    assert j.key_fingerprint == rotated.primary.fingerprint
    j._destroy()
    j = _journal(tmp_path, Keyring([Key("new", b"\x42" * 32)]))  # old key gone: still opens
    assert j[0][0] == b"plain-entry" and j.getCurrentTerm() == 2
    j._destroy()


def test_rekey_rewrites_a_live_journal_and_its_meta(tmp_path: Path) -> None:
    old = ring("old")
    j = _journal(tmp_path, old)
    j.add(b"a", 1, 1)
    j.setCurrentTerm(1, "n1")
    j.sync()
    new_ring = Keyring([Key("new", b"\x42" * 32), *old.keys])
    assert j.rekey(new_ring) is True and j.rekey(new_ring) is False
    j.add(b"b", 2, 1)
    j.sync()
    j._destroy()
    j = _journal(tmp_path, Keyring([Key("new", b"\x42" * 32)]))
    assert [e[0] for e in j[:]] == [b"a", b"b"] and j.getVotedForNodeId() == "n1"
    j._destroy()


def test_a_worn_out_data_key_is_replaced_at_the_next_sync(tmp_path: Path) -> None:
    j = _journal(tmp_path, ring("k"))
    j.add(b"a", 1, 1)
    j.sync()
    first = j._key
    assert first is not None
    first.count_uses(1 << 31)
    j.add(b"b", 2, 1)
    j.sync()
    assert j._key is not first and j._key is not None and j._key.uses == 2
    j._destroy()
    assert [e[0] for e in _journal(tmp_path, ring("k"))[:]] == [b"a", b"b"]


# -- the snapshot ------------------------------------------------------------------------------


def _state(n: int) -> SystemStateMachine:
    sm = SystemStateMachine()
    for i in range(n):
        sm.apply(Txn(success=(PutOp(f"/k/{i:05d}", b"secret-value-%d" % i),)))
    return sm


def test_an_encrypted_snapshot_round_trips_and_holds_no_plaintext(tmp_path: Path) -> None:
    keyring = ring("k1")
    path = str(tmp_path / "raft.snapshot")
    state = _state(3000)  # several frames
    write_snapshot_file(path, pickle.dumps(("last", "before")), state, keyring)
    raw = Path(path).read_bytes()
    assert b"secret-value" not in raw and b"/k/00001" not in raw
    assert snapshot_key(path) == keyring.primary.fingerprint
    assert oct(Path(path).stat().st_mode & 0o777) == "0o600"
    f, raft, body = open_snapshot(path, keyring)
    with f:
        restored = SystemStateMachine()
        restored.restore_from(body)  # type: ignore[arg-type]
    assert raft == ("last", "before") and restored.range("/k/") == state.range("/k/")
    with pytest.raises(SnapshotError, match="no encryption key is configured"):
        open_snapshot(path, None)


def test_a_tampered_snapshot_with_a_fixed_checksum_fails_authentication(tmp_path: Path) -> None:
    import struct
    import zlib

    keyring = ring("k1")
    path = tmp_path / "raft.snapshot"
    write_snapshot_file(str(path), pickle.dumps(()), _state(3000), keyring)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    struct.pack_into("<I", data, len(data) - 4, zlib.crc32(data[:-4]))
    path.write_bytes(bytes(data))
    f, _, body = open_snapshot(str(path), keyring)
    with f, pytest.raises(SnapshotError, match="fails authentication"):
        SystemStateMachine().restore_from(body)  # type: ignore[arg-type]


def test_a_plain_snapshot_still_opens_with_a_keyring(tmp_path: Path) -> None:
    path = str(tmp_path / "raft.snapshot")
    write_snapshot_file(path, pickle.dumps(()), _state(10), None)
    assert snapshot_key(path) is None
    f, _, body = open_snapshot(path, ring("k"))
    with f:
        sm = SystemStateMachine()
        sm.restore_from(body)  # type: ignore[arg-type]
    assert len(sm) == 10


def test_aesgcm_is_the_cipher() -> None:
    """The files are AES-256-GCM as documented: a record opens with the bare primitive."""
    keyring = Keyring([Key("k", b"\x01" * 32)])
    dek = keyring.new_data_key()
    record = dek.encrypt(b"hello", b"ad")
    secret = AESGCM(b"\x01" * 32).decrypt(
        dek.wrapped[4:16], dek.wrapped[16:], b"tadpole data key v1"
    )
    assert AESGCM(secret).decrypt(record[:12], record[12:], b"ad") == b"hello"


# -- the backend ------------------------------------------------------------------------------


def _seeded(tmp_path: Path, keyring: Keyring) -> str:
    data = str(tmp_path / "n1")
    seed_data_dir(data, _state(3000), keyring)
    return data


def test_a_node_does_not_start_on_a_snapshot_that_fails_authentication(tmp_path: Path) -> None:
    """pysyncobj swallows a snapshot that fails to load and starts from an empty state:
    the backend authenticates every frame before, and refuses to start."""
    import struct
    import zlib

    keyring = ring("k1")
    data = _seeded(tmp_path, keyring)
    path = Path(data, "raft.snapshot")
    raw = bytearray(path.read_bytes())
    raw[len(raw) - 1000] ^= 0x01  # in the last frame: the header still reads
    struct.pack_into("<I", raw, len(raw) - 4, zlib.crc32(raw[:-4]))
    path.write_bytes(bytes(raw))
    backend = RaftBackend("n1", [], data, sender=lambda peer, frames: None, keyring=keyring)
    with pytest.raises(SnapshotError, match="fails authentication"):
        backend.start()


def test_a_snapshot_under_a_key_not_yet_loaded_is_read_with_the_keyring_file_as_it_is_now(
    tmp_path: Path,
) -> None:
    """A leader that rotated first sends a snapshot under the new key to a follower that
    has the key in its file but not yet in memory."""
    old, rotated = ring("k1"), ring("k2", "k1")
    path = str(tmp_path / "received.snapshot")
    write_snapshot_file(path, pickle.dumps(("last", "before")), _state(10), rotated)
    stuck = RaftBackend("n1", [], str(tmp_path / "a"), sender=lambda p, f: None, keyring=old)
    with pytest.raises(SnapshotError, match="not in") as info:
        stuck._read_snapshot(path)
    assert info.value.unknown_key
    follower = RaftBackend(
        "n1", [], str(tmp_path / "b"), sender=lambda p, f: None, keyring=old,
        keyring_loader=lambda: rotated,
    )  # fmt: skip
    assert follower._read_snapshot(path) == ("last", "before")
    assert follower.read(len) == 10


def test_a_journal_is_bound_to_its_node_and_its_records_to_their_order(tmp_path: Path) -> None:
    keyring = ring("k1")
    path = str(tmp_path / "raft.journal")
    j = DurableJournal(path, keyring=keyring, owner="n1")
    for i, command in enumerate((b"cmdA", b"cmdB", b"cmdC"), 1):
        j.add(command, i, 1)
    j.setCurrentTerm(5, "n1")
    j.sync()
    offsets = list(j._offsets)
    j._destroy()
    with pytest.raises(JournalError, match="authentication failed"):
        DurableJournal(path, keyring=keyring, owner="n2")  # another node's files
    data = bytearray(Path(path).read_bytes())
    size = offsets[2] - offsets[1]
    first, second = bytes(data[offsets[0] : offsets[1]]), bytes(data[offsets[1] : offsets[2]])
    assert len(first) == size
    data[offsets[0] : offsets[2]] = second + first  # two whole, authentic records swapped
    Path(path).write_bytes(bytes(data))
    with pytest.raises(JournalError, match="holds index 1 after 2"):
        DurableJournal(path, keyring=keyring, owner="n1")
