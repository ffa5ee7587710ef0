"""One HTTPS request from a test, with the socket closed when it returns (urllib: no
event loop left holding a half-closed TLS transport for the garbage collector)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any


def https(
    address: str,
    method: str,
    path: str,
    context: ssl.SSLContext,
    body: Any = None,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> tuple[int, Any, Any]:
    """``(status, JSON body or None, headers)`` of ``method path`` on ``address``."""
    sent = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        sent["Content-Type"] = content_type
    request = urllib.request.Request(
        f"https://{address}{path}", data=data, headers=sent, method=method
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=20) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None, resp.headers
    except urllib.error.HTTPError as exc:
        with exc:
            raw = exc.read()
            return exc.code, json.loads(raw) if raw else None, exc.headers
