"""pysyncobj's timers run on its own clock (CLOCK_MONOTONIC_RAW on Linux), which drifts
away from time.monotonic(). The seam must compare them on that clock: read on the
other one, a follower's election deadline looked expired all the time (0.25 s of drift
on the machine this was found on) and it ran a pre-vote round on every tick while its
leader was healthy."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from pysyncobj import syncobj

from consensus.raft import backend as raft_backend
from consensus.raft.backend import RaftConfig
from consensus.raft.transport import HeldTransport
from consensus.statemachine import PutOp, Txn
from tests.support.raft_cluster import settled_leader, start_cluster

pytestmark = pytest.mark.integration


def test_the_seam_reads_pysyncobjs_clock() -> None:
    default_clock = HeldTransport.__init__.__kwdefaults__["clock"]  # type: ignore[index]
    assert default_clock is syncobj.monotonicTime
    assert raft_backend.raft_clock is syncobj.monotonicTime


def test_followers_of_a_healthy_leader_start_no_pre_vote(tmp_path: Any) -> None:
    nodes = start_cluster(str(tmp_path), RaftConfig())
    try:
        leader = settled_leader(nodes)
        followers = [n for n in nodes.values() if n is not leader]
        started = [f._transport.pre_votes_started for f in followers]  # type: ignore[union-attr]
        for i in range(200):
            done = threading.Event()
            leader.propose(Txn(success=(PutOp(f"k{i}", b"v"),)), lambda _r, _e, d=done: d.set())
            assert done.wait(5)
        now = [f._transport.pre_votes_started for f in followers]  # type: ignore[union-attr]
        assert now == started, "pre-vote rounds while the leader was heard all along"
        assert all(n.status().leader_id == leader.node_id for n in nodes.values())
    finally:
        for node in nodes.values():
            node.stop()
