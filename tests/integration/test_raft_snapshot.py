"""Log compaction under load: snapshots are written in the background, the
leader keeps its term (no missed heartbeats), and a restart restores from the
snapshot plus the journal tail."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest

from consensus.raft.backend import RaftBackend, RaftConfig
from consensus.statemachine import PutOp, Txn

pytestmark = pytest.mark.integration


def start_cluster(root: str, config: RaftConfig) -> dict[str, RaftBackend]:
    ids = ["n1", "n2", "n3"]
    nodes: dict[str, RaftBackend] = {}

    def sender_for(src: str) -> Any:
        return lambda dst, frames: nodes[dst].deliver(src, frames)

    for node_id in ids:
        nodes[node_id] = RaftBackend(
            node_id,
            [p for p in ids if p != node_id],
            os.path.join(root, node_id),
            sender=sender_for(node_id),
            config=config,
        )
    for node in nodes.values():
        node.start()
        for peer in node.peer_ids:
            node.peer_up(peer)
    deadline = time.monotonic() + 10
    while not any(n.status().role == "leader" for n in nodes.values()):
        assert time.monotonic() < deadline, "no leader"
        time.sleep(0.01)
    return nodes


def test_snapshots_under_load_keep_the_leader_and_restore(tmp_path: Any) -> None:
    config = RaftConfig(snapshot_min_entries=1500)
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
        assert journal is not None and len(journal) < total  # compacted
        assert os.path.exists(os.path.join(str(tmp_path), leader.node_id, "raft.snapshot"))
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
