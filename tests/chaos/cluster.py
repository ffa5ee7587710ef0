"""Chaos cluster controller: real node processes, each in its own network namespace.

:class:`ChaosCluster` is :class:`node.dev.cluster.LocalCluster` (same argv, data and
log layout: ``<root>/<id>/{data,node.log,node.pid}``) with three additions:

* with a :class:`~tests.chaos.netns.Netns`, node ``i`` listens on ``10.77.K.(10+i):7101``
  inside namespace ``tpc-<tag>-<id>`` (``ip netns exec``, which execs, so the pid we
  hold is the node's); without one (not root) it is plain loopback and partition
  faults are unavailable;
* per-node environment for the next start (the fsync shim, libfaketime), passed
  with ``env K=V ...`` so the pid still is the node's;
* restart on the same data dir or an empty one, health waits, and :meth:`collect`
  that copies logs and data dirs of a failed run into one folder.

Thread-safety: the nemesis thread and the runner both call in; every method is a
short sequence of process signals and status RPCs, and node ids are never shared
between two concurrent actions (the nemesis runs one fault at a time).
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from dataclasses import dataclass, field

from node.dev.cluster import LocalCluster
from tests.chaos.netns import Netns

# Nodes started with this load tests/chaos/preload/sitecustomize.py first: it records
# each completed journal fsync so the power-loss nemesis knows what was durable.
_PRELOAD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "preload")
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FSYNC_SHIM_ENV = {"PYTHONPATH": os.pathsep.join([_PRELOAD, _ROOT])}


@dataclass
class ChaosCluster(LocalCluster):
    net: Netns | None = None
    # Environment for every node start, and per node on top (e.g. libfaketime).
    env: dict[str, str] = field(default_factory=dict)
    node_env: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def addresses(self) -> dict[str, str]:
        if self.net is None:
            return super().addresses
        return {nid: self.net.address(nid) for nid in self.node_ids}

    def command(self, node_id: str) -> list[str]:
        env = {**self.env, **self.node_env.get(node_id, {})}
        prefix = self.net.exec_prefix(node_id) if self.net is not None else []
        env_argv = ["env", *(f"{k}={v}" for k, v in sorted(env.items()))] if env else []
        return [*prefix, *env_argv, *super().command(node_id)]

    # -- paths -----------------------------------------------------------------

    def journal_path(self, node_id: str) -> str:
        return os.path.join(self.data_dir(node_id), "raft.journal")

    # -- lifecycle -------------------------------------------------------------

    def alive(self, node_id: str) -> bool:
        return self.pid(node_id) is not None

    def restart(self, node_id: str, *, wipe: bool = False) -> int:
        """Start a node that is down, on its data dir or (``wipe``) an empty one."""
        if self.alive(node_id):
            self.kill(node_id)
        if wipe:
            shutil.rmtree(self.data_dir(node_id), ignore_errors=True)
        return self.start_node(node_id)

    def pause(self, node_id: str) -> None:
        self.signal_node(node_id, signal.SIGSTOP)

    def resume(self, node_id: str) -> None:
        self.signal_node(node_id, signal.SIGCONT)

    def revive_all(self) -> None:
        """SIGCONT everything (a paused node would ignore SIGTERM) and start dead nodes."""
        for node_id in self.node_ids:
            if self.alive(node_id):
                self.resume(node_id)
            else:
                self.start_node(node_id)

    def kill_all(self) -> None:
        for node_id in self.node_ids:
            if self.alive(node_id):
                self.resume(node_id)
                self.kill(node_id)

    def healthy(self) -> str | None:
        """The leader, if every node is up, answers, agrees on it, and it has quorum."""
        statuses = {}
        for node_id in self.node_ids:
            st = self.status(node_id, timeout=0.5)
            if st is None:
                return None
            statuses[node_id] = st
        leaders = {st.header.leader_id for st in statuses.values()}
        if len(leaders) != 1:
            return None
        (leader,) = leaders
        if leader not in statuses or statuses[leader].raft_role != "leader":
            return None
        return leader if statuses[leader].has_quorum else None

    def wait_healthy(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.healthy()
            if leader:
                return leader
            time.sleep(0.05)
        raise TimeoutError(f"cluster not healthy within {timeout:g} s")

    def followers(self, leader: str) -> list[str]:
        return [n for n in self.node_ids if n != leader]

    def collect(self, dest: str) -> None:
        """Copy every node's directory (log, data dir, pid file) into ``dest``."""
        os.makedirs(dest, exist_ok=True)
        for node_id in self.node_ids:
            src = self.node_dir(node_id)
            if os.path.isdir(src):
                shutil.copytree(src, os.path.join(dest, node_id), dirs_exist_ok=True)
        if self.net is not None and self.net.created:
            with open(os.path.join(dest, "nft-rules.txt"), "w") as f:
                for node_id in self.node_ids:
                    try:
                        f.write(f"# {node_id}\n{self.net.rules(node_id)}\n")
                    except Exception as exc:  # best effort while collecting evidence
                        f.write(f"# {node_id}: {exc}\n")
