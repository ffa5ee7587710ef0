"""A node cut off from the others rejoins without disturbing the leader.

With pre-vote (the default) a cut-off node asks before campaigning, gets no
majority, and so never raises its term: it rejoins at the leader's term and the
leader stays. Without pre-vote (``raft.pre_vote = false``, e.g. while a cluster
still has nodes without it) the node campaigns and its term climbs; leader
stickiness makes the others ignore its vote requests, and pysyncobj drops the
leader's lower-term append-entries at that node, so without the term notice
(consensus/raft/transport.py) it would never catch up again.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from consensus.raft.backend import RaftBackend, RaftConfig
from consensus.raft.transport import HeldTransport
from consensus.statemachine import PutOp, Txn
from tests.support.raft_cluster import start_cluster

pytestmark = pytest.mark.integration


def cluster(tmp_path: Any, config: RaftConfig) -> tuple[dict[str, RaftBackend], set[str]]:
    """n1..n3; a node in the returned set is cut off from the others."""
    cut: set[str] = set()
    nodes = start_cluster(
        str(tmp_path),
        config,
        deliver_if=lambda src, dst: src not in cut and dst not in cut,
        wait_for_leader=False,
    )
    return nodes, cut


def wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def put(node: RaftBackend, key: str) -> None:
    done = threading.Event()
    node.propose(Txn(success=(PutOp(key, b"v"),)), lambda _r, _e: done.set())
    assert done.wait(5)


def rejoin_after_isolation(tmp_path: Any) -> bool:
    nodes, cut = cluster(tmp_path, RaftConfig(pre_vote=False))
    try:
        assert wait(lambda: any(n.status().role == "leader" for n in nodes.values()), 10)
        leader = next(n for n in nodes.values() if n.status().role == "leader")
        loner = next(n for n in nodes.values() if n is not leader)
        put(leader, "before")
        term_before = loner.status().term
        cut.add(loner.node_id)
        # Cut off for a few election timeouts: it campaigns, its term climbs.
        assert wait(lambda: loner.status().term >= term_before + 2, 5)
        cut.discard(loner.node_id)
        assert wait(lambda: any(n.status().role == "leader" for n in nodes.values()), 10)
        current = next(n for n in nodes.values() if n.status().role == "leader")
        put(current, "after")
        return wait(lambda: loner.read(lambda sm: sm.get("after")) is not None, 5)
    finally:
        for node in nodes.values():
            node.stop()


def test_isolated_node_rejoins_and_catches_up(tmp_path: Any) -> None:
    assert rejoin_after_isolation(tmp_path)


def test_with_pre_vote_an_isolated_node_neither_raises_the_term_nor_deposes_the_leader(
    tmp_path: Any,
) -> None:
    nodes, cut = cluster(tmp_path, RaftConfig())
    try:
        assert wait(lambda: any(n.status().role == "leader" for n in nodes.values()), 10)
        leader = next(n for n in nodes.values() if n.status().role == "leader")
        loner = next(n for n in nodes.values() if n is not leader)
        put(leader, "before")
        term = leader.status().term
        cut.add(loner.node_id)
        time.sleep(1.5)  # five or more election timeouts cut off
        assert loner.status().term == term  # asked, was refused, did not campaign
        assert loner._transport is not None and loner._transport.pre_votes_started >= 3
        cut.discard(loner.node_id)
        put(leader, "after")
        assert wait(lambda: loner.read(lambda sm: sm.get("after")) is not None, 5)
        assert leader.status().role == "leader" and leader.status().term == term
    finally:
        for node in nodes.values():
            node.stop()


def test_without_the_term_notice_it_stays_stuck(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Control: the scenario really needs the notice."""
    monkeypatch.setattr(HeldTransport, "_send_term_notice", lambda self, node: None)
    assert not rejoin_after_isolation(tmp_path)
