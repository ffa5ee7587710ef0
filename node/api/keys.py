"""gRPC servicer for encryption at rest (``Keys`` service): status and rotation.

Operator calls (``node/peer/auth.py``): the credential is checked before the request
is parsed. Keys are named by name and fingerprint, never shown.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from node.atrest import AtRest, RotateError
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc


class KeysServicer(pb_grpc.KeysServicer):  # type: ignore[misc]
    def __init__(self, atrest: AtRest) -> None:
        self._atrest = atrest

    async def Status(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> pb.KeysStatusResponse:
        # Counting values per key scans the store: off the event loop.
        return await asyncio.to_thread(self._atrest.status)

    async def Rotate(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> pb.KeysStatusResponse:
        try:
            await self._atrest.rotate()
        except RotateError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return await asyncio.to_thread(self._atrest.status)
