"""Replication drivers of a whole cluster on the in-memory network (no sockets)."""

from __future__ import annotations

from collections.abc import Callable

from node.replication.driver import Replication
from node.replication.memory import MemoryNetwork, MemoryStore, MemoryTransport

__all__ = ["memory_cluster"]


def memory_cluster(
    n: int = 3,
    wrap: dict[str, type[MemoryTransport]] | None = None,
    clock_ns: Callable[[], int] = lambda: 1_700_000_000 * 10**9,
) -> tuple[MemoryNetwork, dict[str, Replication]]:
    """``n`` nodes ``n1..``; ``wrap`` gives some nodes a transport class of their own
    (a fault in code). The clock is fixed unless ``clock_ns`` says otherwise, so runs
    are deterministic."""
    net = MemoryNetwork()
    ids = [f"n{i + 1}" for i in range(n)]
    for node_id in ids:
        net.add(node_id)
    nodes = {}
    for node_id in ids:
        transport_class = (wrap or {}).get(node_id, MemoryTransport)
        nodes[node_id] = Replication(
            node_id=node_id,
            store=MemoryStore(),
            membership=net.membership(node_id),
            transport=transport_class(net, node_id),
            clock_ns=clock_ns,
            cluster_size=n,
        )
        net.attach(node_id, nodes[node_id].on_replica)
    return net, nodes
