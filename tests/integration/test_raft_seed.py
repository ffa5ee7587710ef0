"""A Raft group seeded from a state (a restore) starts at that state, keeps writing from
its revision, and restarts from its own files -- including after compaction."""

from __future__ import annotations

import os
import pathlib
import threading
import time
from typing import Any

import pytest

from consensus.raft.backend import RaftConfig, open_snapshot, seed_data_dir
from consensus.statemachine import PutOp, SystemStateMachine, Txn
from tests.support.raft_cluster import leader_of, start_cluster

pytestmark = pytest.mark.integration


def seeded_state(n: int) -> SystemStateMachine:
    sm = SystemStateMachine()
    for i in range(n):
        sm.apply(Txn(success=(PutOp(f"seed/{i:04d}", b"v%d" % i),)))
    return sm


def put(nodes: dict[str, Any], key: str) -> Any:
    answers: list[Any] = []
    done = threading.Event()
    leader_of(nodes).propose(
        Txn(success=(PutOp(key, b"x"),)), lambda r, e: (answers.append((r, e)), done.set())
    )
    assert done.wait(10)
    result, error = answers[0]
    assert error is None
    return result


def wait_all(nodes: dict[str, Any], check: Any) -> None:
    deadline = time.monotonic() + 10
    while not all(n.read(check) for n in nodes.values()):
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_seeded_group_starts_at_the_state_and_keeps_going(tmp_path: pathlib.Path) -> None:
    state = seeded_state(200)
    for node_id in ("n1", "n2", "n3"):
        seed_data_dir(str(tmp_path / node_id), state)
    config = RaftConfig(snapshot_min_entries=20)
    nodes = start_cluster(str(tmp_path), config)
    try:
        wait_all(nodes, lambda sm: sm.revision == 200 and len(sm) == 200)
        first = put(nodes, "after/0")
        assert first.revision == 201  # the revision counter continues from the backup's
        for i in range(1, 60):  # enough to compact the log past the seed entries
            put(nodes, f"after/{i}")
        wait_all(nodes, lambda sm: sm.revision == 260 and sm.get("seed/0199") is not None)
    finally:
        for node in nodes.values():
            node.stop()
    # the log was compacted: the snapshots now end past the two seed entries
    for node_id in ("n1", "n2", "n3"):
        f, raft_data, _ = open_snapshot(str(tmp_path / node_id / "raft.snapshot"), None)
        f.close()
        assert raft_data[0][1] > 2
    nodes = start_cluster(str(tmp_path), config)
    try:
        wait_all(nodes, lambda sm: sm.revision >= 260 and sm.get("seed/0000").value == b"v0")
        assert put(nodes, "after/restart").revision == 261
    finally:
        for node in nodes.values():
            node.stop()


def test_a_member_with_an_empty_data_directory_gets_the_seeded_state(
    tmp_path: pathlib.Path,
) -> None:
    """Review finding: seeded at index 1, term 0 -- a new node's own first entry -- a
    member joining with an empty data directory matched the leader's log and was sent
    the later entries on top of an empty state, never the snapshot: it diverged."""
    state = seeded_state(50)
    for node_id in ("n1", "n2"):
        seed_data_dir(str(tmp_path / node_id), state)  # n3 starts empty
    nodes = start_cluster(str(tmp_path), RaftConfig())
    try:
        put(nodes, "after/0")
        wait_all(nodes, lambda sm: sm.revision == 51 and sm.get("seed/0049") is not None)
    finally:
        for node in nodes.values():
            node.stop()


def test_seeding_refuses_a_directory_that_holds_raft_files(tmp_path: pathlib.Path) -> None:
    seed_data_dir(str(tmp_path), seeded_state(3))
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(FileExistsError, match=r"raft\.snapshot: already exists"):
        seed_data_dir(str(tmp_path), seeded_state(5))
    assert sorted(os.listdir(tmp_path)) == before
