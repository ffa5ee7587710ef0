"""Shared helpers of the client/CLI unit tests (fake servers live in each file)."""

from __future__ import annotations

import random
import socket
from typing import Any

import grpc

from node.client import Client, RetryPolicy

# Retries without sleeping, so retry paths run in milliseconds.
FAST = RetryPolicy(attempts=5, initial_backoff_s=0.0, max_backoff_s=0.0, cooldown_s=60.0)


def dead_endpoint() -> str:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def client_for(endpoints: list[str], **kwargs: Any) -> Client:
    return Client(endpoints, retry=FAST, rng=random.Random(7), **kwargs)


def rpc_error(code: grpc.StatusCode, details: str = "", **trailing: str) -> grpc.aio.AioRpcError:
    """A gRPC error as the client sees it; ``trailing`` becomes trailing metadata
    (underscores in names turn into dashes)."""
    md = grpc.aio.Metadata(*((k.replace("_", "-"), v) for k, v in trailing.items()))
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), md, details)
