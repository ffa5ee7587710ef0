"""A browser's WebSocket from another page is refused (node/http/app.py same_origin):
the node's own pages and the configured origins may open one; clients that are not
browsers (no Origin) are not asked."""

from __future__ import annotations

import pytest
from aiohttp import WSServerHandshakeError
from aiohttp.test_utils import TestClient, TestServer

from node.config import ConfigError, NodeConfig
from tests.unit.node.http.bare_app import bare_app

ALLOWED = "https://console.example:8443"


@pytest.mark.parametrize(
    ("origin", "opens"),
    [
        (None, True),  # not a browser
        ("own", True),  # the node's console
        (ALLOWED, True),
        (ALLOWED.upper() + "/", True),  # origins compare without case or a trailing /
        ("https://evil.example", False),
        ("null", False),  # a sandboxed page or a file
        ("https://console.example:8444", False),  # another port is another origin
    ],
)
async def test_a_websocket_opens_only_from_an_allowed_page(origin: str | None, opens: bool) -> None:
    app = bare_app(NodeConfig(http_allowed_origins=(ALLOWED,)))
    async with TestClient(TestServer(app)) as client:
        headers = {}
        if origin is not None:
            own = f"http://{client.host}:{client.port}"
            headers["Origin"] = own if origin == "own" else origin
        if opens:
            async with client.ws_connect("/api/v1/ws", headers=headers) as ws:
                await ws.send_json({"type": "subscribe", "id": "s", "prefix": "/app/"})
                assert (await ws.receive_json(timeout=5))["type"] == "subscribed"
            return
        with pytest.raises(WSServerHandshakeError) as info:
            await client.ws_connect("/api/v1/ws", headers=headers)
        assert info.value.status == 403
        resp = await client.get("/api/v1/ws", headers={**headers, "Upgrade": "websocket",
                                                       "Connection": "Upgrade"})  # fmt: skip
        assert resp.status == 403
        assert "is refused: not this node's origin" in (await resp.json())["detail"]
        # a page may still read over plain HTTP what CORS lets it (nothing is upgraded)
        plain = await client.get("/healthz", headers=headers)
        assert plain.status == 200


def test_an_allowed_origin_must_be_an_origin() -> None:
    for bad in ("console.example", "https://console.example/ui", "ftp://x"):
        with pytest.raises(ConfigError, match="is not an origin"):
            NodeConfig(http_allowed_origins=(bad,))
