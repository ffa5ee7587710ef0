"""Operator calls to every member of a cluster, for the commands that need each node's
own answer (``tadpole keys``, ``tadpole audit``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc

from node.cli.app import EXIT_USAGE, _fail
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc
from node.peer.auth import auth_metadata
from node.tls import aio_channel

__all__ = ["ask_every_member"]


def ask_every_member(
    settings: Any, what: str, call: Callable[[grpc.aio.Channel, Any, float], Any]
) -> dict[str, Any]:
    """``await call(channel, metadata, timeout)`` against every member at once (found
    through the first endpoint that answers); per member id, its answer or the error
    as ``"CODE: details"``. Needs the operator token (``what`` names the command)."""
    if not settings.token:
        _fail(f"{what} needs the operator token: --token-file FILE", EXIT_USAGE)
    try:
        return asyncio.run(_ask(settings, call))
    except ConnectionError as exc:
        _fail(str(exc))


async def _ask(
    settings: Any, call: Callable[[grpc.aio.Channel, Any, float], Any]
) -> dict[str, Any]:
    channels: dict[str, grpc.aio.Channel] = {}
    timeout_s: float = settings.timeout_s

    def channel(address: str) -> grpc.aio.Channel:
        if address not in channels:
            channels[address] = aio_channel(address, settings.tls)
        return channels[address]

    try:
        members: list[tuple[str, str]] = []
        errors = []
        for endpoint in settings.endpoints:
            try:
                reply = await pb_grpc.ClusterStub(channel(endpoint)).Members(
                    pb.MembersRequest(), timeout=min(timeout_s, 5.0)
                )
            except grpc.aio.AioRpcError as exc:
                errors.append(f"{endpoint}: {exc.details() or exc.code().name}")
                continue
            members = [(m.id, m.address) for m in reply.members]
            break
        if not members:
            raise ConnectionError("no endpoint answered: " + "; ".join(errors))
        metadata = auth_metadata(settings.token)

        async def one(address: str) -> Any:
            try:
                return await call(channel(address), metadata, timeout_s)
            except grpc.aio.AioRpcError as exc:
                return f"{exc.code().name}: {exc.details()}"

        answers = await asyncio.gather(*(one(address) for _, address in members))
        return dict(zip((m for m, _ in members), answers, strict=True))
    finally:
        for ch in channels.values():
            await ch.close()
