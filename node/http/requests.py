"""Reading HTTP requests safely: bodies, media types, query parameters, tokens.

Nothing here touches the cluster. Every check fails with a :class:`Problem` (or
:class:`InvalidArgument`, which the one status table turns into ``400``) before any
state is read or written, so bad input changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from aiohttp import web

from node.errors import InvalidArgument
from node.http.problems import Problem

__all__ = [
    "JSON",
    "MERGE_PATCH",
    "decode_token",
    "encode_token",
    "int_param",
    "json_body",
]

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
MAX_JSON_DEPTH = 64


async def json_body(request: web.Request, media_types: tuple[str, ...], limit: int) -> Any:
    """The request's JSON body. ``413`` when larger than ``limit`` (judged from
    ``Content-Length`` before reading, and again while reading a chunked body),
    ``415`` for another media type, ``400`` for invalid UTF-8 or JSON."""
    if request.content_type not in media_types:
        raise Problem(
            415,
            f"Content-Type must be {' or '.join(media_types)}, not "
            f"{request.content_type or 'missing'!r}",
            headers={"Accept-Patch": MERGE_PATCH} if MERGE_PATCH in media_types else {},
        )
    if request.content_length is not None and request.content_length > limit:
        raise Problem(413, f"the body is {request.content_length} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 << 10):
        size += len(chunk)
        if size > limit:
            raise Problem(413, f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        raise InvalidArgument("the body is empty; send a JSON document")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"the body is not valid UTF-8 (byte {exc.start})") from exc
    try:
        value = json.loads(text)
    except RecursionError as exc:
        raise InvalidArgument("the body nests too deeply") from exc
    except ValueError as exc:
        raise InvalidArgument(f"the body is not valid JSON: {exc}") from exc
    _check_depth(value)
    return value


def _check_depth(value: Any) -> None:
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise InvalidArgument(f"the body nests deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def int_param(
    request: web.Request, name: str, default: int, *, lo: int = 0, hi: int = 2**63 - 1
) -> int:
    """An integer query parameter within ``[lo, hi]``; ``400`` naming it otherwise."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw, 10)
    except ValueError:
        raise InvalidArgument(f"query parameter {name}={raw[:40]!r} is not an integer") from None
    if not lo <= value <= hi:
        raise InvalidArgument(f"query parameter {name}={value} is outside {lo}..{hi}")
    return value


def choice_param(request: web.Request, name: str, choices: tuple[str, ...], default: str) -> str:
    raw = request.query.get(name, default) or default
    if raw not in choices:
        raise InvalidArgument(f"query parameter {name} must be one of {', '.join(choices)}")
    return raw


def encode_token(token: dict[str, int]) -> str:
    """A causal token as an opaque header value (base64url of compact JSON)."""
    text = json.dumps(dict(sorted(token.items())), separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_token(value: str | None, header: str) -> dict[str, int]:
    """The token a client echoes back; ``{}`` when absent. ``400`` naming the header when
    it is not one this API issued (the agent tier then checks its entries)."""
    if not value:
        return {}
    if len(value) > 8192:
        raise InvalidArgument(f"{header} is longer than 8192 characters")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        token = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError) as exc:
        raise InvalidArgument(f"{header} is not a causal token this API issued") from exc
    if not isinstance(token, dict):
        raise InvalidArgument(f"{header} is not a causal token this API issued")
    return token
