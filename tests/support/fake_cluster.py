"""The one fake gRPC cluster of the client and CLI unit tests.

Real gRPC servers on loopback with fake servicers (each test file brings its own: KV,
Tiers, Documents) over shared in-memory state. Failures are injected per node and method
either as a *server-side exception* — answered through the node's real exception →
status table (:mod:`node.api.status`), so the tests speak the same contract as a node —
or as a :class:`Transport` failure that never reached a Tadpole server (no outcome field).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc

from node.api.status import status_for

__all__ = ["FakeNode", "FakeServers", "Transport"]


@dataclass(frozen=True)
class Transport:
    """A failure gRPC itself reports (connection lost, refused): code and its text only."""

    code: grpc.StatusCode
    details: str = ""


Failure = BaseException | Transport


@dataclass(frozen=True)
class _Queued:
    failure: Failure
    leader: tuple[str, str] | None


class FakeNode:
    """One fake node: counts calls, keeps copies of requests, answers injected failures."""

    def __init__(self, node_id: str, cluster: Any) -> None:
        self.id = node_id
        self.cluster = cluster
        self.address = ""
        self.server: grpc.Server | None = None
        self.calls: dict[str, int] = {}
        self.requests: dict[str, list[Any]] = {}
        self.failures: dict[str, list[_Queued]] = {}

    def inject(
        self,
        method: str,
        failure: Failure,
        *,
        times: int = 1,
        leader: tuple[str, str] | None = None,
    ) -> None:
        """Fail the next ``times`` calls of ``method`` with ``failure``; ``leader`` (id,
        address) is the hint a node attaches when it knows the leader."""
        self.failures.setdefault(method, []).extend([_Queued(failure, leader)] * times)

    def enter(self, method: str, request: Any, context: grpc.ServicerContext) -> None:
        """Record a call; abort it if a failure is queued for ``method``."""
        self.calls[method] = self.calls.get(method, 0) + 1
        kept = type(request)()
        kept.CopyFrom(request)
        self.requests.setdefault(method, []).append(kept)
        queue = self.failures.get(method)
        if not queue:
            return
        queued = queue.pop(0)
        if isinstance(queued.failure, Transport):
            context.abort(queued.failure.code, queued.failure.details)
            return  # abort raises; this keeps the type checker honest
        status = status_for(queued.failure, leader=queued.leader)
        context.set_trailing_metadata(status.trailers())
        context.abort(status.code, status.message)


N = TypeVar("N", bound=FakeNode)


class FakeServers(Generic[N]):
    """``size`` fake nodes, each a real gRPC server on a loopback port.

    ``register(node, server)`` adds the test's servicers for one node.
    """

    def __init__(
        self,
        size: int,
        register: Callable[[N, grpc.Server], None],
        make_node: Callable[[str], N],
        *,
        workers: int = 8,
    ) -> None:
        self.nodes: list[N] = [make_node(f"n{i + 1}") for i in range(size)]
        for node in self.nodes:
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
            register(node, server)
            port = server.add_insecure_port("127.0.0.1:0")
            server.start()
            node.server, node.address = server, f"127.0.0.1:{port}"

    @property
    def endpoints(self) -> list[str]:
        return [n.address for n in self.nodes]

    def calls(self, method: str) -> int:
        return sum(n.calls.get(method, 0) for n in self.nodes)

    def requests(self, method: str) -> list[Any]:
        return [r for n in self.nodes for r in n.requests.get(method, [])]

    def stop(self) -> None:
        for node in self.nodes:
            if node.server is not None:
                node.server.stop(None).wait()
