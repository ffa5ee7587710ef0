"""Log compaction under load: snapshots are written in the background, the
leader keeps its term (no missed heartbeats), and a restart restores from the
snapshot plus the journal tail."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from consensus.raft.backend import RaftBackend, RaftConfig
from consensus.statemachine import PutOp, Txn
from tests.support.raft_cluster import commit_index, in_tick, leader_of, start_cluster

pytestmark = pytest.mark.integration


def test_snapshots_under_load_keep_the_leader_and_restore(tmp_path: Any) -> None:
    # Proposals pending together share a log entry, so 6,000 writes from 64 clients
    # are about a hundred entries: compact every 25.
    config = RaftConfig(snapshot_min_entries=25)
    nodes = start_cluster(str(tmp_path), config)
    total = 6000
    try:
        leader = next(n for n in nodes.values() if n.status().role == "leader")
        term = leader.status().term
        window, done = threading.Semaphore(64), threading.Semaphore(0)

        def landed(_r: Any, _e: Any) -> None:
            window.release()
            done.release()

        for i in range(total):
            window.acquire()
            leader.propose(Txn(success=(PutOp(f"k{i}", b"v" * 200),)), landed)
        for _ in range(total):
            assert done.acquire(timeout=10)
        # Several snapshots were taken during the load, and the leader never
        # missed enough heartbeats to be deposed.
        assert leader.status().role == "leader" and leader.status().term == term
        journal = leader.journal
        entries = leader.status().commit_index
        assert journal is not None and len(journal) < entries  # compacted
        assert os.path.exists(os.path.join(str(tmp_path), leader.node_id, "raft.snapshot"))
        buckets, _ = leader.snapshot_seconds.snapshot()
        assert buckets[-1][1] >= 2, "several snapshots during the load"
    finally:
        for node in nodes.values():
            node.stop()
    # Every node restarts from its snapshot plus journal tail; nothing is lost.
    nodes = start_cluster(str(tmp_path), config)
    try:
        leader = next(n for n in nodes.values() if n.status().role == "leader")
        marker = threading.Event()
        leader.propose(Txn(success=(PutOp("after-restart", b"1"),)), lambda r, e: marker.set())
        assert marker.wait(10)
        deadline = time.monotonic() + 10
        while any(n.read(len) < total + 1 for n in nodes.values()):
            assert time.monotonic() < deadline, {n.node_id: n.read(len) for n in nodes.values()}
            time.sleep(0.05)
        for node in nodes.values():
            assert node.read(lambda sm: sm.get("k5999")) is not None
    finally:
        for node in nodes.values():
            node.stop()


def test_the_journal_is_bounded_by_bytes_not_only_by_entries(tmp_path: Any) -> None:
    # Proposals pending together share one entry, so a few hundred entries can hold
    # many megabytes that the node also keeps in memory. With the entry count far out
    # of reach, the journal's bytes alone must bring a snapshot -- and then keep the
    # journal within the last snapshot's size (or the floor) plus one tick's entries.
    floor = 256 << 10
    config = RaftConfig(
        snapshot_min_entries=1_000_000, snapshot_min_bytes=floor, watch_history_events=100
    )
    nodes = start_cluster(str(tmp_path), config)
    value = b"v" * 2000
    try:
        leader = leader_of(nodes)
        window, done = threading.Semaphore(32), threading.Semaphore(0)

        def landed(_r: Any, _e: Any) -> None:
            window.release()
            done.release()

        written = 0
        largest = 0
        for i in range(3000):  # ~6 MB of values over 1,000 distinct keys
            window.acquire()
            leader.propose(Txn(success=(PutOp(f"k{i % 1000}", value),)), landed)
            written += 1
            journal = leader.journal
            assert journal is not None
            largest = max(largest, journal.size_bytes)
        for _ in range(written):
            assert done.acquire(timeout=10)
        snapshot = os.path.join(str(tmp_path), leader.node_id, "raft.snapshot")
        assert os.path.exists(snapshot), "no snapshot: the journal grew without bound"
        size = os.path.getsize(snapshot)
        assert size < 3 << 20  # the state (1,000 keys of 2 KB), not the 6 MB written
        # Never more than a snapshot's worth (or the floor), plus what a tick appends
        # and the snapshot being written meanwhile lets through (a few batches).
        assert largest < max(floor, size) + (1 << 20), (largest, size)
        buckets, _ = leader.snapshot_seconds.snapshot()
        assert buckets[-1][1] >= 2, "snapshots keep coming as the journal refills"
    finally:
        for node in nodes.values():
            node.stop()


class _HeldSnapshots(RaftBackend):
    """Once ``hold`` is set, the next background snapshot waits for ``release`` before
    it is written: a snapshot still being written while other things happen."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hold = False
        self.release = threading.Event()
        self.writing = threading.Event()  # the held snapshot was started
        self.written = threading.Event()  # ... and has been written (or has failed)

    def _write_snapshot(self, *args: Any) -> None:
        if not self.hold or self.writing.is_set():
            super()._write_snapshot(*args)
            return
        self.writing.set()
        try:
            assert self.release.wait(10), "the held snapshot was never released"
            super()._write_snapshot(*args)
        finally:
            self.written.set()


class _RestartedWithHook(RaftBackend):
    """Runs ``before_load`` after start() has reconciled the journal with the snapshot
    on disk and before pysyncobj loads that snapshot (its first tick)."""

    def __init__(self, *args: Any, before_load: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._before_load = before_load

    def _reconcile_journal(self, snapshot_path: str) -> None:
        super()._reconcile_journal(snapshot_path)
        self._before_load()


def _wait_leader(node: RaftBackend) -> None:
    deadline = time.monotonic() + 10
    while node.status().role != "leader":
        assert time.monotonic() < deadline, "no leader"
        time.sleep(0.01)


def _put(node: RaftBackend, key: str) -> None:
    landed = threading.Event()
    errors: list[Any] = []

    def done(_result: Any, error: Any) -> None:
        errors.append(error)
        landed.set()

    node.propose(Txn(success=(PutOp(key, b"v"),)), done)
    assert landed.wait(10) and errors == [None], errors


def test_a_snapshot_in_flight_at_stop_does_not_cost_the_restart_its_journal(
    tmp_path: Any,
) -> None:
    # A snapshot being written in the background when the node stops must be on disk
    # (or abandoned) by the time stop() returns. If it is renamed into place later --
    # after the next start() reconciled the journal with the snapshot it found, and
    # before pysyncobj loads the snapshot -- pysyncobj finds a journal that does not
    # start with the snapshot's last two entries, clears it, and the acknowledged
    # entries after the snapshot are gone (three nodes: two followers losing them can
    # elect one of themselves, and the cluster loses the writes for good).
    data_dir = str(tmp_path / "n1")
    config = RaftConfig(snapshot_min_entries=5)
    node = _HeldSnapshots("n1", [], data_dir, sender=lambda *_: None, config=config)
    node.hold = True
    node.start()
    keys: list[str] = []
    stopper = threading.Thread(target=node.stop)
    try:
        _wait_leader(node)
        while not node.writing.is_set():  # one write a log entry, until a snapshot starts
            keys.append(f"k{len(keys)}")
            _put(node, keys[-1])
            assert len(keys) < 50, "no snapshot was started"
        for _ in range(5):  # acknowledged after the snapshot's index, in the journal only
            keys.append(f"k{len(keys)}")
            _put(node, keys[-1])
    finally:
        stopper.start()
        # stop() may (and should) wait for the snapshot being written: let it go on once
        # stop() is visibly waiting. A stop() that returns at once leaves it held, to be
        # released in the window below.
        stopper.join(1.0)
        if stopper.is_alive():
            node.release.set()
        stopper.join(15)
        assert not stopper.is_alive(), "stop() did not return"

    def before_load() -> None:  # whatever the old node still had under way lands now
        node.release.set()
        assert node.written.wait(10)

    restarted = _RestartedWithHook(
        "n1", [], data_dir, sender=lambda *_: None, config=config, before_load=before_load
    )
    restarted.start()
    try:
        _wait_leader(restarted)
        _put(restarted, "after-restart")
        missing = restarted.read(lambda sm: [k for k in keys if sm.get(k) is None])
        assert missing == [], f"acknowledged writes lost across a clean restart: {missing}"
    finally:
        restarted.stop()


def test_a_followers_own_snapshot_does_not_replace_the_leaders_it_installed(
    tmp_path: Any,
) -> None:
    # A follower that falls behind the leader's compacted log is sent the leader's
    # snapshot; pysyncobj renames it into place and cuts the journal to it. If the
    # follower was writing a snapshot of its own (older) meanwhile, that one must not
    # be renamed over the installed one afterwards: the next start would find a
    # snapshot older than the journal's start, clear the journal and lose every entry
    # the follower acknowledged since -- after a clean stop, kill -9 or power loss.
    config = RaftConfig(snapshot_min_entries=10)
    cut: set[tuple[str, str]] = set()
    nodes = start_cluster(str(tmp_path), config, cut, backend=_HeldSnapshots)
    keys: list[str] = []
    leader = leader_of(nodes)
    follower = next(n for n in nodes.values() if n is not leader)
    assert isinstance(follower, _HeldSnapshots)

    def put() -> None:
        keys.append(f"k{len(keys)}")
        _put(leader, keys[-1])

    def applied() -> int:
        return int(in_tick(follower, lambda: follower._obj.raftLastApplied))  # type: ignore[union-attr]

    def catch_up() -> None:
        deadline = time.monotonic() + 10
        while applied() < commit_index(leader):
            assert time.monotonic() < deadline, "the follower did not catch up"
            time.sleep(0.02)

    try:
        follower.hold = True
        while not follower.writing.is_set():  # the follower starts a snapshot, held
            put()
            assert len(keys) < 100, "the follower started no snapshot"
        log_end = in_tick(follower, lambda: follower.journal[-1][1])  # type: ignore[index]
        for other in nodes:
            if other != follower.node_id:
                cut.update({(other, follower.node_id), (follower.node_id, other)})
        for _ in range(3 * config.snapshot_min_entries):  # the leader compacts past it
            put()
        cut.clear()
        for node in nodes.values():
            for peer in node.peer_ids:
                node.peer_up(peer)
        catch_up()
        first = in_tick(follower, lambda: follower.journal[0][1])  # type: ignore[index]
        assert first > log_end, "the follower was not sent the leader's snapshot"
        for _ in range(5):  # acknowledged by the follower too
            put()
        catch_up()
        follower.release.set()  # its own snapshot, started before the install, ends
        assert follower.written.wait(10)
    finally:
        follower.release.set()
        for node in nodes.values():
            node.stop()
    # The follower's directory alone, cut off from the others: what its disk holds.
    alone = RaftBackend(
        follower.node_id,
        follower.peer_ids,
        str(tmp_path / follower.node_id),
        sender=lambda *_: None,
        config=config,
    )
    alone.start()
    try:
        deadline = time.monotonic() + 10
        while alone.read(len) < len(keys):
            assert time.monotonic() < deadline, (
                f"the follower restarted with {alone.read(len)} of {len(keys)} keys"
            )
            time.sleep(0.02)
    finally:
        alone.stop()
