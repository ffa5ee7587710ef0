"""A stand-in for grpc.aio.ServicerContext: what the Peer servicer and the request
guards use of it, recorded for the tests."""

from __future__ import annotations

import asyncio
from typing import Any


class Aborted(Exception):
    """What :meth:`Context.abort` raises (gRPC's own abort raises, too)."""


class Context:
    def __init__(self) -> None:
        self.code: Any = None
        self.details = ""
        self.trailers: Any = None
        self.aborted_in: Any = None  # the task that called abort

    def set_trailing_metadata(self, trailers: Any) -> None:
        self.trailers = trailers

    async def abort(self, code: Any, details: str) -> None:
        self.code, self.details = code, details
        self.aborted_in = asyncio.current_task()
        raise Aborted(details)
