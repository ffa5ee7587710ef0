"""Quiet heartbeats on three in-process Raft nodes (real pysyncobj, journals and
threads; messages handed over directly): an idle group slows its heartbeats, any
write or read wakes it at once, and a leader lost while the group rests is replaced."""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from consensus.raft.backend import RaftBackend, RaftConfig
from tests.integration.test_raft_read_index import read_point, write
from tests.support.raft_cluster import in_tick, leader_of, settled_leader, start_cluster

pytestmark = pytest.mark.integration

QUIET = RaftConfig(quiet_after_s=0.3, quiet_heartbeat_s=0.4)


class Beats:
    """Every append-entries sent, as (time, sender, quiet stamp)."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, src: str, frames: list[bytes]) -> None:
        for frame in frames:
            message = pickle.loads(frame)
            if message.get("type") == "append_entries":
                with self._lock:
                    self.seen.append((time.monotonic(), src, message.get("quiet")))

    def since(self, t: float, src: str) -> list[Any]:
        with self._lock:
            return [stamp for at, s, stamp in self.seen if at >= t and s == src]


def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def cluster(tmp_path: Any) -> Any:
    beats = Beats()
    nodes = start_cluster(str(tmp_path), QUIET, on_send=beats)
    stopped: set[str] = set()
    try:
        yield nodes, beats, stopped
    finally:
        for node_id, node in nodes.items():
            if node_id not in stopped:
                node.stop()


def all_quiet(nodes: dict[str, RaftBackend]) -> bool:
    return all(n.quiet for n in nodes.values())


def test_an_idle_group_slows_its_heartbeats_and_wakes_for_a_write(cluster: Any) -> None:
    nodes, beats, _ = cluster
    leader = settled_leader(nodes)
    until(lambda: all_quiet(nodes))
    assert leader.quiet_entered >= 1
    start = time.monotonic()
    time.sleep(2.0)
    sent = beats.since(start, leader.node_id)
    # Two followers, one beat each per 0.4 s: 10 in 2 s (the normal 45 ms: 88).
    assert 6 <= len(sent) <= 12, sent
    assert set(sent) == {0.4}
    assert all(n.status().leader_id == leader.node_id for n in nodes.values())
    write(leader, "k", b"v")
    assert not in_tick(leader, lambda: leader.quiet)  # the write ended the rest at once
    # The commit reaches the followers at the normal pace, not at the next quiet beat.
    until(lambda: all(n.read(lambda sm: sm.get("k")) is not None for n in nodes.values()), 0.35)
    until(lambda: all_quiet(nodes))  # and the group rests again


def test_a_follower_forwards_writes_and_serves_reads_while_its_leader_is_quiet(
    cluster: Any,
) -> None:
    nodes, _, _ = cluster
    leader = settled_leader(nodes)
    follower = next(n for n in nodes.values() if n is not leader)
    until(lambda: all_quiet(nodes))
    time.sleep(0.3)  # past the normal 150 ms since the leader was last heard
    write(follower, "via-follower", b"1")  # forwarded, not refused as "leader gone"
    until(lambda: all_quiet(nodes))
    time.sleep(0.3)
    index, error = read_point(follower)
    assert error is None and index is not None
    assert follower.read(lambda sm: sm.get("via-follower").value) == b"1"


def _term(node: RaftBackend) -> int:
    return int(in_tick(node, lambda: node._obj.raftCurrentTerm))  # type: ignore[union-attr]


def test_a_leader_lost_while_the_group_rests_is_replaced(cluster: Any) -> None:
    nodes, _, stopped = cluster
    old = settled_leader(nodes)
    until(lambda: all_quiet(nodes))
    term = _term(old)
    old.stop()
    stopped.add(old.node_id)
    others = {k: n for k, n in nodes.items() if n is not old}
    lost = time.monotonic()
    # Nothing tells the followers (no link goes down here): they wait out 3-6 quiet
    # beats (1.2-2.4 s), then pre-vote and elect.
    new = leader_of(others, timeout=6.0)
    took = time.monotonic() - lost
    assert new is not old and _term(new) > term
    assert took >= 1.0, f"a follower campaigned {took:.2f} s into a quiet leader's silence"
    write(new, "after", b"x")


def test_a_quiet_leader_whose_link_drops_is_replaced_at_the_normal_pace(tmp_path: Any) -> None:
    # Quiet beats of 1 s: waiting them out would take 3-6 s.
    nodes = start_cluster(str(tmp_path), RaftConfig(quiet_after_s=0.3, quiet_heartbeat_s=1.0))
    old = settled_leader(nodes)
    others = {k: n for k, n in nodes.items() if n is not old}
    running = list(nodes.values())
    try:
        until(lambda: all_quiet(nodes))
        old.stop()
        running.remove(old)
        lost = time.monotonic()
        for node in others.values():  # what a RaftLink reports when its calls fail
            node.peer_down(old.node_id)
        new = leader_of(others, timeout=10.0)
        took = time.monotonic() - lost
        assert took < 2.0, f"{took:.2f} s: the followers waited out the quiet range"
        write(new, "after", b"x")
    finally:
        for node in running:
            node.stop()
