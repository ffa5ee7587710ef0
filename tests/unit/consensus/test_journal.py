"""Unit tests for the durable pysyncobj journal.

"Crash" here means: open a second journal on the same path while the first
one still holds unsynced changes in memory. What the second one sees is what
the file holds, i.e. what a restarted process would find.
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pysyncobj.journal import Journal

from consensus.errors import JournalError
from consensus.raft.journal import MAGIC, DurableJournal, encode_record

Entry = tuple[bytes, int, int]


class FsyncCounter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, fd: int) -> None:
        self.calls += 1
        os.fdatasync(fd)


Opener = Callable[..., DurableJournal]


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "raft.journal")


@pytest.fixture
def open_journal(path: str) -> Iterator[Opener]:
    opened: list[DurableJournal] = []

    def opener(fsync: Callable[[int], None] | None = None, **kwargs: object) -> DurableJournal:
        journal = DurableJournal(path, fsync=fsync or FsyncCounter(), **kwargs)  # type: ignore[arg-type]
        opened.append(journal)
        return journal

    yield opener
    for journal in opened:  # close every descriptor; abandoned ("crashed") ones too
        with contextlib.suppress(OSError):
            os.close(journal._fd)


def entries(n: int, *, first: int = 1, term: int = 1, tag: str = "e") -> list[Entry]:
    return [(f"{tag}{first + i}".encode(), first + i, term) for i in range(n)]


def add_all(journal: DurableJournal, items: list[Entry]) -> None:
    for command, idx, term in items:
        journal.add(command, idx, term)


def contents(journal: DurableJournal) -> list[Entry]:
    return [journal[i] for i in range(len(journal))]


def file_size(path: str) -> int:
    return os.path.getsize(path)


# --- the Journal interface --------------------------------------------------


def test_is_a_pysyncobj_journal(open_journal: Opener) -> None:
    assert isinstance(open_journal(), Journal)


def test_add_getitem_len_and_slicing(open_journal: Opener) -> None:
    journal = open_journal()
    assert len(journal) == 0
    items = entries(5, first=10, term=3)
    add_all(journal, items)
    assert len(journal) == 5
    assert journal[0] == (b"e10", 10, 3)
    assert journal[-1] == (b"e14", 14, 3)
    assert journal[1:3] == items[1:3]
    assert journal[-2:] == items[-2:]
    assert journal[:] == items
    with pytest.raises(IndexError):
        journal[5]


def test_size_bytes_is_the_records_held_through_every_change(
    path: str, open_journal: Opener
) -> None:
    # What the node compacts by (RaftConfig.snapshot_min_bytes): it must follow the
    # records the journal holds whether they are pending, written, cut or rewritten.
    journal = open_journal()
    header = file_size(path)
    assert journal.size_bytes == 0
    add_all(journal, entries(6))
    pending = journal.size_bytes
    assert pending > 6 * len(b"e1")
    journal.sync()
    assert journal.size_bytes == pending == file_size(path) - header
    add_all(journal, entries(2, first=7))  # two pending after six written
    journal.deleteEntriesFrom(7)  # one pending record cut
    journal.deleteEntriesFrom(4)  # the other pending one and two written
    journal.sync()
    assert journal.size_bytes == file_size(path) - header
    assert 0 < journal.size_bytes < pending
    journal.deleteEntriesTo(2)  # rewritten without the first two
    assert journal.size_bytes == file_size(path) - header
    assert contents(journal) == entries(2, first=3)
    journal._destroy()
    assert open_journal().size_bytes == file_size(path) - header  # reopened


def test_fresh_journal_defaults(open_journal: Opener) -> None:
    journal = open_journal()
    assert journal.getCurrentTerm() == 0
    assert journal.getVotedForNodeId() is None
    assert journal.getRaftCommitIndex() == 1
    assert not journal.has_unsynced


# --- nothing durable before sync; one fsync per sync ------------------------


def test_nothing_reaches_the_file_before_sync(path: str, open_journal: Opener) -> None:
    counter = FsyncCounter()
    journal = open_journal(counter)
    add_all(journal, entries(3))
    assert journal.has_unsynced
    assert file_size(path) == len(MAGIC)
    assert counter.calls == 0
    assert len(open_journal()) == 0  # a crash now loses all three

    assert journal.sync() is True
    assert counter.calls == 1 == journal.syncs
    assert not journal.has_unsynced
    assert file_size(path) > len(MAGIC)
    assert contents(open_journal()) == entries(3)


def test_one_fsync_per_sync_with_pending_data_none_without(open_journal: Opener) -> None:
    counter = FsyncCounter()
    journal = open_journal(counter)
    assert journal.sync() is False
    assert counter.calls == 0
    for batch in range(1, 4):
        add_all(journal, entries(50, first=batch * 100))  # a tick's worth of appends
        assert journal.sync() is True
        assert counter.calls == batch
        assert journal.sync() is False  # nothing changed since
        assert counter.calls == batch
    assert journal.syncs == 3


def test_reopen_after_sync_restores_entries_term_vote_and_commit_index(
    open_journal: Opener,
) -> None:
    journal = open_journal()
    items = [(b"", 1, 1), (bytes(range(256)), 2, 1), (b"x" * 100_000, 3, 4)]
    add_all(journal, items)
    journal.setCurrentTerm(4, "n2")
    journal.setRaftCommitIndex(3)
    journal.sync()
    again = open_journal()
    assert contents(again) == items
    assert (again.getCurrentTerm(), again.getVotedForNodeId(), again.getRaftCommitIndex()) == (
        4,
        "n2",
        3,
    )


def test_appends_after_reopen_land_after_the_existing_records(open_journal: Opener) -> None:
    first = open_journal()
    add_all(first, entries(2))
    first.sync()
    second = open_journal()
    add_all(second, entries(2, first=3))
    second.sync()
    assert contents(open_journal()) == entries(4)


# --- term and vote ------------------------------------------------------------


def test_term_and_vote_are_not_durable_until_sync(open_journal: Opener) -> None:
    journal = open_journal()
    journal.setCurrentTerm(5, "n2")
    assert (journal.getCurrentTerm(), journal.getVotedForNodeId()) == (5, "n2")
    assert journal.has_unsynced
    crashed = open_journal()
    assert (crashed.getCurrentTerm(), crashed.getVotedForNodeId()) == (0, None)

    assert journal.sync() is True  # a vote may be sent only after this
    assert not journal.has_unsynced
    durable = open_journal()
    assert (durable.getCurrentTerm(), durable.getVotedForNodeId()) == (5, "n2")

    journal.setCurrentTerm(6, None)
    assert (open_journal().getCurrentTerm(), open_journal().getVotedForNodeId()) == (5, "n2")
    journal.sync()
    assert (open_journal().getCurrentTerm(), open_journal().getVotedForNodeId()) == (6, None)


def test_commit_index_is_persisted_lazily(open_journal: Opener) -> None:
    journal = open_journal()
    add_all(journal, entries(3))
    journal.sync()
    journal.setRaftCommitIndex(2)
    assert open_journal().getRaftCommitIndex() == 1  # not yet written
    add_all(journal, entries(1, first=4))
    journal.onOneSecondTimer()  # entries pending: the timer leaves it alone
    assert open_journal().getRaftCommitIndex() == 1
    journal.sync()
    journal.onOneSecondTimer()
    assert open_journal().getRaftCommitIndex() == 2
    journal.setRaftCommitIndex(4)
    journal._destroy()  # a clean shutdown writes it too
    assert open_journal().getRaftCommitIndex() == 4


def test_unreadable_meta_file_is_a_journal_error(path: str, open_journal: Opener) -> None:
    Path(path + ".meta").write_bytes(b"\xc1\xc1")
    with pytest.raises(JournalError, match="term/vote"):
        open_journal()
    Path(path + ".meta").write_bytes(msgpack.packb([1, 2]))
    with pytest.raises(JournalError, match="unexpected"):
        open_journal()


# --- torn tails and corruption --------------------------------------------------


def _synced(open_journal: Opener, items: list[Entry]) -> None:
    journal = open_journal()
    add_all(journal, items)
    journal.sync()


ITEMS = [(b"first", 1, 1), (b"second-command", 2, 1), (b"third", 3, 2), (b"last-one!", 4, 2)]
LAST_RECORD = len(encode_record(*ITEMS[-1]))  # 8-byte header + 16-byte index/term + command


@pytest.mark.parametrize(
    "keep",
    [1, 3, 7, 9, 15, 23, LAST_RECORD - 1],
    ids=lambda k: f"keep-{k}-of-{LAST_RECORD}",
)
def test_truncated_last_record_is_cut_off_at_reopen(
    path: str, open_journal: Opener, keep: int
) -> None:
    _synced(open_journal, ITEMS)
    full = file_size(path)
    os.truncate(path, full - LAST_RECORD + keep)
    reopened = open_journal()
    assert contents(reopened) == ITEMS[:-1]
    assert file_size(path) == full - LAST_RECORD  # the tail is gone from disk, too
    # new records must follow the last good one, not the garbage
    add_all(reopened, [(b"replacement", 4, 3)])
    reopened.sync()
    assert contents(open_journal()) == [*ITEMS[:-1], (b"replacement", 4, 3)]


@pytest.mark.parametrize(
    "offset_in_record",
    [0, 3, 4, 7, 8, 15, 16, 23, 24, LAST_RECORD - 1],
    ids=lambda o: f"byte-{o}",
)
def test_flipped_byte_in_last_record_is_detected_by_checksum(
    path: str, open_journal: Opener, offset_in_record: int
) -> None:
    _synced(open_journal, ITEMS)
    data = bytearray(Path(path).read_bytes())
    data[len(data) - LAST_RECORD + offset_in_record] ^= 0x01
    Path(path).write_bytes(bytes(data))
    assert contents(open_journal()) == ITEMS[:-1]


def test_corrupt_record_in_the_middle_cuts_it_and_everything_after(
    path: str, open_journal: Opener
) -> None:
    _synced(open_journal, ITEMS)
    data = bytearray(Path(path).read_bytes())
    second = len(MAGIC) + len(encode_record(*ITEMS[0]))
    data[second + 8 + 16] ^= 0xFF  # first command byte of record 2
    Path(path).write_bytes(bytes(data))
    assert contents(open_journal()) == ITEMS[:1]


def test_record_with_a_consistent_checksum_but_too_short_payload_is_cut(
    path: str, open_journal: Opener
) -> None:
    _synced(open_journal, ITEMS[:1])
    bogus = b"short"
    with open(path, "ab") as f:
        f.write(struct.pack("<II", len(bogus), zlib.crc32(bogus)) + bogus)
    assert contents(open_journal()) == ITEMS[:1]


def test_foreign_file_is_refused(path: str, open_journal: Opener) -> None:
    Path(path).write_bytes(b"NOTAJOURNAL" + b"\x00" * 32)
    with pytest.raises(JournalError, match="magic"):
        open_journal()


def test_empty_existing_file_is_initialised(path: str, open_journal: Opener) -> None:
    Path(path).write_bytes(b"")
    journal = open_journal()
    add_all(journal, ITEMS)
    journal.sync()
    assert contents(open_journal()) == ITEMS


# --- deleteEntriesFrom ----------------------------------------------------------


def test_delete_from_within_pending_data(open_journal: Opener) -> None:
    counter = FsyncCounter()
    journal = open_journal(counter)
    add_all(journal, entries(3))
    journal.sync()
    add_all(journal, entries(3, first=4))  # pending
    journal.deleteEntriesFrom(4)  # drop the pending idx 5 and 6
    assert contents(journal) == entries(4)
    add_all(journal, entries(2, first=5, term=2, tag="n"))
    journal.sync()
    assert counter.calls == 2
    expected = entries(4) + entries(2, first=5, term=2, tag="n")
    assert contents(journal) == expected
    assert contents(open_journal()) == expected


def test_delete_from_within_synced_data(open_journal: Opener) -> None:
    counter = FsyncCounter()
    journal = open_journal(counter)
    add_all(journal, entries(5))
    journal.sync()
    journal.deleteEntriesFrom(2)  # conflicting suffix idx 3..5
    assert contents(journal) == entries(2)
    assert journal.has_unsynced
    add_all(journal, entries(2, first=3, term=2, tag="n"))
    assert journal.sync() is True
    assert counter.calls == 2  # one for the first batch, one for truncate + append
    expected = entries(2) + entries(2, first=3, term=2, tag="n")
    assert contents(open_journal()) == expected


def test_delete_from_spanning_synced_and_pending_data(open_journal: Opener) -> None:
    journal = open_journal()
    add_all(journal, entries(3))
    journal.sync()
    add_all(journal, entries(2, first=4))
    journal.deleteEntriesFrom(1)
    add_all(journal, [(b"new", 2, 5)])
    journal.sync()
    assert contents(open_journal()) == [(b"e1", 1, 1), (b"new", 2, 5)]


def test_truncation_alone_is_made_durable_by_sync(open_journal: Opener) -> None:
    counter = FsyncCounter()
    journal = open_journal(counter)
    add_all(journal, entries(4))
    journal.sync()
    journal.deleteEntriesFrom(1)
    assert journal.sync() is True
    assert counter.calls == 2
    assert contents(open_journal()) == entries(1)


def test_delete_from_past_the_end_changes_nothing(open_journal: Opener) -> None:
    counter = FsyncCounter()
    journal = open_journal(counter)
    add_all(journal, entries(2))
    journal.sync()
    journal.deleteEntriesFrom(2)
    journal.deleteEntriesFrom(10)
    assert contents(journal) == entries(2)
    assert journal.sync() is False
    assert counter.calls == 1


def test_delete_everything_from_zero(open_journal: Opener) -> None:
    journal = open_journal()
    add_all(journal, entries(3))
    journal.sync()
    journal.deleteEntriesFrom(0)
    journal.sync()
    assert len(open_journal()) == 0


# --- deleteEntriesTo and clear --------------------------------------------------


def test_delete_entries_to_rewrites_the_file(path: str, open_journal: Opener) -> None:
    snapshot = Path(path).with_name("raft.dump")
    snapshot.write_bytes(b"snapshot")
    journal = open_journal(snapshot_path=str(snapshot))
    add_all(journal, entries(6))
    journal.sync()
    add_all(journal, entries(2, first=7))  # still pending
    journal.deleteEntriesTo(3)
    assert contents(journal) == entries(5, first=4)
    kept_bytes = sum(len(encode_record(*e)) for e in entries(5, first=4))
    assert file_size(path) == len(MAGIC) + kept_bytes  # the dropped records are gone
    assert contents(open_journal()) == entries(5, first=4)  # rewrite is durable at once
    assert journal.sync() is False
    # the rewritten file keeps working: truncate into it, append, reopen
    journal.deleteEntriesFrom(3)
    add_all(journal, entries(2, first=7, term=2, tag="n"))
    journal.sync()
    expected = entries(3, first=4) + entries(2, first=7, term=2, tag="n")
    assert contents(open_journal()) == expected
    assert not Path(path + ".compact").exists()


def test_delete_entries_to_keeps_term_and_vote_state(open_journal: Opener) -> None:
    journal = open_journal()
    add_all(journal, entries(4))
    journal.setCurrentTerm(3, "n1")
    journal.sync()
    journal.deleteEntriesTo(4)
    assert len(journal) == 0
    again = open_journal()
    assert len(again) == 0
    assert (again.getCurrentTerm(), again.getVotedForNodeId()) == (3, "n1")


def test_clear(path: str, open_journal: Opener) -> None:
    journal = open_journal()
    add_all(journal, entries(3))
    journal.sync()
    add_all(journal, entries(1, first=4))
    journal.clear()
    assert len(journal) == 0
    journal.sync()
    assert len(open_journal()) == 0
    assert file_size(path) == len(MAGIC)
    add_all(journal, [(b"after", 100, 7)])
    journal.sync()
    assert contents(open_journal()) == [(b"after", 100, 7)]


# --- model test -------------------------------------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.binary(max_size=40)),
        st.tuples(st.just("delete_from"), st.integers(0, 12)),
        st.tuples(st.just("delete_to"), st.integers(0, 4)),
        st.tuples(st.just("sync"), st.none()),
        st.tuples(st.just("crash"), st.none()),
        st.tuples(st.just("clear"), st.none()),
    ),
    max_size=25,
)


@settings(derandomize=True, deadline=None, max_examples=150)
@given(steps=ops)
def test_journal_agrees_with_a_list_model(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, Any]]
) -> None:
    path = str(tmp_path_factory.mktemp("j") / "raft.journal")
    journals: list[DurableJournal] = []

    def reopen() -> DurableJournal:
        journals.append(DurableJournal(path, fsync=FsyncCounter()))
        return journals[-1]

    try:
        journal = reopen()
        model: list[Entry] = []
        # What a restart finds: the last synced state, cut by any truncation
        # since (a truncation reaches the file at once; only its fsync waits).
        durable: list[Entry] = []
        next_idx = 1
        for op, arg in steps:
            if op == "add":
                model.append((arg, next_idx, 1))
                journal.add(arg, next_idx, 1)
                next_idx += 1
            elif op == "delete_from":
                journal.deleteEntriesFrom(arg)
                del model[arg:]
                durable = durable[:arg] if arg < len(durable) else durable
            elif op == "delete_to":
                journal.deleteEntriesTo(arg)
                model = model[arg:]
                durable = list(model)
            elif op == "clear":
                journal.clear()
                model = []
                durable = []
            elif op == "sync":
                journal.sync()
                durable = list(model)
            else:  # crash: a restart finds exactly the last durable state
                journal = reopen()
                assert contents(journal) == durable
                model = list(durable)
            assert contents(journal) == model
            next_idx = model[-1][1] + 1 if model else next_idx
        journal.sync()
        assert contents(reopen()) == model
    finally:
        for j in journals:
            os.close(j._fd)


def test_each_fsync_is_timed(open_journal: Opener) -> None:
    journal = open_journal(FsyncCounter())
    add_all(journal, entries(5))
    journal.sync()
    journal.sync()  # nothing new: no fsync, nothing observed
    buckets, total = journal.fsync_seconds.snapshot()
    assert buckets[-1] == (float("inf"), 1) and total >= 0


def test_histogram_buckets_are_cumulative_upper_bounds() -> None:
    from consensus.durable import Histogram

    h = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 2.0):
        h.observe(value)
    assert h.snapshot() == ([(0.1, 2), (1.0, 3), (float("inf"), 4)], 2.65)


def test_compaction_is_due_at_the_floor_and_at_the_last_snapshots_size() -> None:
    from consensus.raft.backend import compaction_due

    floor = 8 << 20
    assert not compaction_due(floor - 1, 0, floor)  # no snapshot yet: the floor
    assert compaction_due(floor, 0, floor)
    assert not compaction_due(floor, floor + 1, floor)  # a larger state: its size
    assert compaction_due(floor + 1, floor + 1, floor)
    assert not compaction_due(floor - 1, 1, floor)  # a small state: still the floor
