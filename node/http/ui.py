"""The web console at ``/ui``: three static files shipped in the package
(``node/http/static/``), served as they are — no build step, nothing fetched from the
internet. The page reads the node's own JSON API (``/api/v1/members``,
``/api/v1/status``, ``/api/v1/watch``, ``/state/system``)."""

from __future__ import annotations

from importlib import resources

from aiohttp import web

__all__ = ["console_routes"]

_FILES = {
    "console.js": "text/javascript",
    "console.css": "text/css",
}


def _read(name: str) -> bytes:
    return resources.files("node.http").joinpath("static", name).read_bytes()


def console_routes() -> list[web.RouteDef]:
    index = _read("index.html")
    assets = {name: (_read(name), kind) for name, kind in _FILES.items()}
    headers = {
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'self'",
    }

    async def page(_request: web.Request) -> web.Response:
        return web.Response(body=index, content_type="text/html", charset="utf-8", headers=headers)

    async def asset(request: web.Request) -> web.Response:
        found = assets.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        body, kind = found
        return web.Response(body=body, content_type=kind, charset="utf-8", headers=headers)

    return [web.get("/ui", page), web.get("/ui/{name}", asset)]
