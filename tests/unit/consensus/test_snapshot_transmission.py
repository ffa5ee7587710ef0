"""Snapshot transmissions close their files (pysyncobj's serializer does not).

Each test drives pysyncobj's own ``Serializer`` the way a leader does when it
streams a snapshot to a follower, with the table that
:func:`close_finished_transmissions` installs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.serializer import Serializer

from consensus.raft.backend import ClosingTransmissions, close_finished_transmissions


def _serializer(path: Path) -> Any:
    return Serializer(
        str(path),
        4,  # bytes per chunk: a 10-byte snapshot takes several
        False,
        lambda *_: None,
        lambda *_: None,
        lambda: SERIALIZER_STATE.NOT_SERIALIZING,
    )


def _open_file(table: ClosingTransmissions, transmission: str) -> Any:
    return table[transmission]["file"]


def test_a_finished_transmission_closes_its_file(tmp_path: Path) -> None:
    snapshot = tmp_path / "raft.snapshot"
    snapshot.write_bytes(b"0123456789")
    serializer = _serializer(snapshot)
    table = close_finished_transmissions(serializer)
    chunks = [serializer.getTransmissionData("n2")]
    handle = _open_file(table, "n2")
    while not chunks[-1][2]:
        chunks.append(serializer.getTransmissionData("n2"))
    assert b"".join(c[0] for c in chunks) == b"0123456789"
    assert handle.closed
    assert "n2" not in table


def test_a_cancelled_transmission_closes_its_file(tmp_path: Path) -> None:
    snapshot = tmp_path / "raft.snapshot"
    snapshot.write_bytes(b"0123456789")
    serializer = _serializer(snapshot)
    table = close_finished_transmissions(serializer)
    serializer.getTransmissionData("n2")
    serializer.getTransmissionData("n3")
    first, second = _open_file(table, "n2"), _open_file(table, "n3")
    serializer.cancelTransmisstion("n2")  # pysyncobj's spelling
    assert first.closed and not second.closed
    table.close_all()
    assert second.closed and not table


class _Recording(ClosingTransmissions):
    def __init__(self) -> None:
        super().__init__()
        self.files: list[Any] = []

    def __setitem__(self, key: Any, value: Any) -> None:
        self.files.append(value["file"])
        super().__setitem__(key, value)


def test_an_empty_snapshot_is_sent_and_closed_in_one_call(tmp_path: Path) -> None:
    snapshot = tmp_path / "raft.snapshot"
    snapshot.write_bytes(b"")
    serializer = _serializer(snapshot)
    table = _Recording()
    serializer._Serializer__transmissions = table
    assert serializer.getTransmissionData("n2") == (b"", True, True)
    assert len(table.files) == 1 and table.files[0].closed
    assert not table
