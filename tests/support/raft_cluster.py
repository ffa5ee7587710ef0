"""Three in-process Raft backends (real journals and threads, no sockets), wired
directly to each other, for tests of the Raft layer."""

from __future__ import annotations

import functools
import gc
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from consensus.raft.backend import RaftBackend, RaftConfig


def start_cluster(
    root: str,
    config: RaftConfig,
    blocked: set[tuple[str, str]] | None = None,
    *,
    deliver_if: Callable[[str, str], bool] | None = None,
    wait_for_leader: bool = True,
    on_send: Callable[[str, list[bytes]], None] | None = None,
    backend: type[RaftBackend] = RaftBackend,
) -> dict[str, RaftBackend]:
    """Start n1..n3 under ``root`` (and, unless told not to, wait until one of them
    leads). Messages from ``a`` to ``b`` are dropped while ``(a, b)`` is in
    ``blocked``, or ``deliver_if(a, b)`` is false (a partition the test may change at
    any time). ``on_send(a, frames)`` sees every batch as it leaves ``a``;
    ``backend`` is the class each node runs."""
    # The three nodes share the test process's heap: a full garbage collection walks
    # everything the tests before this one left alive and stops all three nodes'
    # threads meanwhile, long enough on a busy host to cost a leader its election
    # timeout. Settle the heap first, as a node process does once it caught up
    # (node/observe/gcpause.py), so later collections walk only what is new.
    gc.collect()
    gc.freeze()
    ids = ["n1", "n2", "n3"]
    nodes: dict[str, RaftBackend] = {}
    cut = blocked if blocked is not None else set()

    def sender_for(src: str) -> Any:
        def send(dst: str, frames: list[bytes]) -> None:
            if on_send is not None:
                on_send(src, frames)
            if (src, dst) not in cut and (deliver_if is None or deliver_if(src, dst)):
                nodes[dst].deliver(src, frames)

        return send

    for node_id in ids:
        nodes[node_id] = backend(
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
    if wait_for_leader:
        leader_of(nodes)
    return nodes


def leader_of(nodes: dict[str, RaftBackend], timeout: float = 10.0) -> RaftBackend:
    deadline = time.monotonic() + timeout
    while True:
        for node in nodes.values():
            if node.status().role == "leader":
                return node
        assert time.monotonic() < deadline, "no leader"
        time.sleep(0.01)


def in_tick(node: RaftBackend, fn: Any) -> Any:
    """``fn()`` run in ``node``'s tick thread (pysyncobj state is only consistent
    there; ``status()`` is published at the end of a tick and may lag)."""
    box: list[Any] = []
    done = threading.Event()

    def run() -> None:
        box.append(fn())
        done.set()

    node.call_in_tick(run)
    assert done.wait(5), "the tick thread did not run the call"
    return box[0]


def commit_index(node: RaftBackend) -> int:
    return int(in_tick(node, lambda: node._obj.raftCommitIndex))  # type: ignore[union-attr]


def settled_leader(nodes: dict[str, RaftBackend], timeout: float = 10.0) -> RaftBackend:
    """The leader, once it has committed its whole log (the no-op of its term
    included) and every node names it."""
    deadline = time.monotonic() + timeout
    while True:
        leader = leader_of(nodes, timeout)
        if in_tick(leader, functools.partial(_caught_up, leader)) and all(
            n.status().leader_id == leader.node_id for n in nodes.values()
        ):
            return leader
        assert time.monotonic() < deadline, "the cluster did not settle"
        time.sleep(0.01)


def _caught_up(node: RaftBackend) -> bool:
    obj, journal = node._obj, node.journal
    assert obj is not None and journal is not None
    last = journal[-1][1]
    return bool(obj.raftCommitIndex == obj.raftLastApplied == last)
