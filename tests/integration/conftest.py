"""Fixtures for tests that run real node processes on loopback."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from node.dev.cluster import LocalCluster, free_base_port
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc


def run_cli(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    """``tadpole`` against ``cluster`` with its operator token and, when it runs TLS, the
    CLI's certificate (unless ``args`` say how to connect: ``--insecure``, ``--ca-file``),
    output captured."""
    own = any(a in ("--insecure", "--ca-file") for a in args)
    return subprocess.run(
        [sys.executable, "-m", "node.cli", "--endpoints", cluster.endpoints,
         *([] if own else cluster.cli_flags()),
         "--token-file", cluster.token_file, "--timeout", "10", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def start_http_cluster(
    root: str, extra_args: list[str] | None = None, *, tls: bool = True
) -> LocalCluster:
    """A started three-node cluster with the HTTP listener on (ports apart from gRPC's),
    a leader elected and every node up; mutual TLS on every port, as ``make cluster``
    runs it (a throw-away CA in ``<root>/tls``), unless ``tls`` is False."""
    base, http = free_base_port(3), free_base_port(3)
    while abs(base - http) < 10:
        http = free_base_port(3)
    cluster = LocalCluster(
        root, ["n1", "n2", "n3"], base, metrics_base_port=http, extra_args=extra_args or [],
        tls=tls,
    )  # fmt: skip
    cluster.start()
    try:
        cluster.wait_leader(30, all_up=True)
    except BaseException:
        for node_id in cluster.node_ids:
            cluster.kill(node_id)
        raise
    return cluster


@pytest.fixture
def make_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Factory: make_cluster(n=3, extra_args=[], tls=True) -> a started LocalCluster with
    a leader (mutual TLS unless ``tls`` is False)."""
    clusters: list[LocalCluster] = []

    def factory(n: int = 3, extra_args: list[str] | None = None, tls: bool = True) -> LocalCluster:
        root = tmp_path_factory.mktemp("cluster")
        ids = [f"n{i + 1}" for i in range(n)]
        cluster = LocalCluster(
            str(root), ids, free_base_port(n), extra_args=extra_args or [], tls=tls
        )
        clusters.append(cluster)
        cluster.start()
        cluster.wait_leader(30, all_up=True)
        return cluster

    yield factory
    for cluster in clusters:
        for node_id in cluster.node_ids:
            cluster.kill(node_id)


class Stubs:
    """Raw gRPC stubs for one node of a cluster, over TLS when it runs TLS (the tests
    talk to the wire API directly)."""

    def __init__(self, cluster: LocalCluster, node_id: str) -> None:
        self.channel = cluster.channel(node_id)
        self.kv = pb_grpc.KVStub(self.channel)
        self.cluster = pb_grpc.ClusterStub(self.channel)
        self.peer = pb_grpc.PeerStub(self.channel)
        self.tiers = pb_grpc.TiersStub(self.channel)

    def close(self) -> None:
        self.channel.close()


@pytest.fixture
def stubs() -> Iterator[object]:
    """Factory: stubs(cluster, node_id) -> Stubs, closed after the test."""
    opened: list[Stubs] = []

    def factory(cluster: LocalCluster, node_id: str) -> Stubs:
        s = Stubs(cluster, node_id)
        opened.append(s)
        return s

    yield factory
    for s in opened:
        s.close()


__all__ = ["Stubs", "free_base_port", "pb"]
