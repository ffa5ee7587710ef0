"""The HTTP app of a node that has nothing behind it: for tests of its routes alone."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from aiohttp import web

from consensus.memory import MemorySystem
from node.config import NodeConfig
from node.http.app import build_app
from node.observe.latency import RequestLatency


def bare_app(config: NodeConfig | None = None) -> web.Application:
    node: Any = SimpleNamespace(
        config=config or NodeConfig(),
        system=MemorySystem(),
        gossip=SimpleNamespace(members=list),
        metrics=SimpleNamespace(local_counts=dict),
        latency=RequestLatency(),
        replication=None,
    )
    return build_app(node, replication=SimpleNamespace())  # type: ignore[arg-type]
