"""Log compaction under load: snapshots are written in the background, the
leader keeps its term (no missed heartbeats), and a restart restores from the
snapshot plus the journal tail."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest

from consensus.raft.backend import RaftConfig
from consensus.statemachine import PutOp, Txn
from tests.support.raft_cluster import start_cluster

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
