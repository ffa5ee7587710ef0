"""Linearizable reads by ReadIndex on three in-process Raft nodes: a read sees
every write acknowledged before it, on the leader and on followers, adds nothing
to the log, and a leader cut off from the others serves no read at all."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from consensus.errors import NotLeaderError
from consensus.raft.backend import RaftBackend, RaftConfig
from consensus.statemachine import PutOp, Txn
from tests.support.raft_cluster import commit_index, settled_leader, start_cluster

pytestmark = pytest.mark.integration


def write(node: RaftBackend, key: str, value: bytes) -> None:
    done = threading.Event()
    errors: list[Any] = []

    def landed(_result: Any, error: Any) -> None:
        errors.append(error)
        done.set()

    node.propose(Txn(success=(PutOp(key, value),)), landed)
    assert done.wait(5) and errors == [None], errors


def read_point(node: RaftBackend, timeout: float = 5.0) -> tuple[int | None, Any]:
    box: list[tuple[int | None, Any]] = []
    done = threading.Event()

    def landed(index: int | None, error: Any) -> None:
        box.append((index, error))
        done.set()

    node.read_index(landed)
    assert done.wait(timeout), "the read was never answered"
    return box[0]


@pytest.fixture
def cluster(tmp_path: Any) -> Any:
    blocked: set[tuple[str, str]] = set()
    nodes = start_cluster(str(tmp_path), RaftConfig(), blocked)
    try:
        yield nodes, blocked
    finally:
        for node in nodes.values():
            node.stop()


def test_reads_see_acknowledged_writes_and_add_no_entry(cluster: Any) -> None:
    nodes, _ = cluster
    leader = settled_leader(nodes)
    for i in range(20):
        target = list(nodes.values())[i % 3]
        write(leader, f"k{i}", b"v%d" % i)
        before = commit_index(leader)
        index, error = read_point(target)
        assert error is None and index is not None and index >= before
        # The reader's own state already holds the write acknowledged before the read.
        assert target.read(lambda sm, i=i: sm.get(f"k{i}").value) == b"v%d" % i
    settled = commit_index(leader)
    for node in nodes.values():
        assert read_point(node)[1] is None
    assert commit_index(leader) == settled, "a read must not append to the log"


def test_a_leader_cut_off_from_the_others_serves_no_read(cluster: Any) -> None:
    nodes, blocked = cluster
    old = settled_leader(nodes)
    for _ in range(3):  # earlier rounds of this term were confirmed by both followers
        assert read_point(old)[1] is None
    others = [n for n in nodes if n != old.node_id]
    for other in others:
        blocked.update({(old.node_id, other), (other, old.node_id)})
    # The others elect a new leader and acknowledge a write the old one never sees.
    new = settled_leader({n: nodes[n] for n in others})
    write(new, "after", b"new")
    index, error = read_point(old)
    assert index is None and isinstance(error, NotLeaderError), (index, error)
    assert old.read(lambda sm: sm.get("after")) is None
    # Healed: the old leader follows, and its reads see the write.
    blocked.clear()
    settled_leader(nodes)
    index, error = read_point(old)
    assert error is None and old.read(lambda sm: sm.get("after").value) == b"new"
