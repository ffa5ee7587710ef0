"""``POST /api/v1/auth/token``: a password for a token (node/api/login.py), for HTTP
clients without a certificate of their own."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node.errors import FailedPrecondition, InvalidArgument
from node.http.access import caller_address, common_name
from node.http.requests import json_body

__all__ = ["login_routes"]

BODY_LIMIT = 4 << 10


def login_routes(node: Any) -> list[web.RouteDef]:
    async def token(request: web.Request) -> web.Response:
        login = getattr(node, "login", None)
        if login is None:
            raise FailedPrecondition("this node serves no logins")
        body = await json_body(request, ("application/json",), BODY_LIMIT)
        if not isinstance(body, dict):
            raise InvalidArgument('send {"user": ..., "password": ...}')
        transport = request.transport
        who = common_name(transport.get_extra_info("peercert") if transport else None)
        issued, expires = await login.token(
            body.get("user"), body.get("password"), who or "anonymous", caller_address(request)
        )
        return web.json_response(
            {"token": issued, "expires_at": expires}, headers={"Cache-Control": "no-store"}
        )

    return [web.post("/api/v1/auth/token", token)]
