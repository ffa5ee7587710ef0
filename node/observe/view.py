"""What the HTTP side reads from a running node: a narrow, read-only view.

:class:`node.server.NodeServer` satisfies :class:`NodeView` structurally (nothing
subclasses it). The HTTP side depends on this protocol rather than on the server,
so the server imports the HTTP side and never the reverse, and a test can serve
``/metrics`` from any object with these few attributes.

Every member is read at scrape time, on the node's event loop; none may block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from consensus.backend import BackendInfo
from consensus.durable import Histogram
from gossip.swim import MemberView
from node.observe.latency import RequestLatency
from node.replication.driver import Replication

__all__ = ["CountsView", "Family", "IdentityView", "MembersView", "NodeView", "SystemView"]


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family of the node's internals, as /metrics exports it: each sample
    is its label values (in ``labels`` order) and a number, or a :class:`Histogram`.
    A counter's name ends in ``_total``."""

    name: str
    doc: str
    kind: Literal["gauge", "counter", "histogram"]
    labels: tuple[str, ...] = ()
    samples: tuple[tuple[tuple[str, ...], float | Histogram], ...] = ()


class IdentityView(Protocol):
    @property
    def node_id(self) -> str: ...


class SystemView(Protocol):
    def info(self) -> BackendInfo:
        """Role, term and indexes of the system tier; never blocks."""
        ...


class MembersView(Protocol):
    def members(self) -> list[MemberView]:
        """Every member this node knows, with its SWIM status."""
        ...


class CountsView(Protocol):
    def local_counts(self) -> dict[str, int]:
        """Requests (and ``bytes_in``) this node has served, by kind."""
        ...


class NodeView(Protocol):
    @property
    def config(self) -> IdentityView: ...

    @property
    def system(self) -> SystemView: ...

    @property
    def gossip(self) -> MembersView: ...

    @property
    def metrics(self) -> CountsView: ...

    @property
    def latency(self) -> RequestLatency: ...

    def histograms(self) -> list[tuple[str, str, Histogram]]:
        """Durability histograms to export: (metric name, help, histogram)."""
        ...

    def families(self) -> list[Family]:
        """Counters, gauges and labelled histograms of the node's internals."""
        ...

    @property
    def replication(self) -> Replication | None:
        """None until the node has started its CRDT tiers."""
        ...
