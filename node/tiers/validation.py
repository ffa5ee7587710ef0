"""Input validation for the client API. Pure functions; each raises
:class:`InvalidArgument` with a message that names the problem, before
anything is proposed or changed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from node.errors import InvalidArgument, InvalidDocument

MAX_KEY_BYTES = 1024  # largest key, in UTF-8 bytes, in any tier
KNOWN_TIERS = ("system",)
MAX_TXN_OPS = 128


__all__ = [
    "KNOWN_TIERS",
    "MAX_KEY_BYTES",
    "MAX_REQUEST_ID_CHARS",
    "MAX_TXN_OPS",
    "InvalidArgument",
    "InvalidDocument",
    "as_document_error",
    "check_consistency",
    "check_key",
    "check_limit",
    "check_prefix",
    "check_request_id",
    "check_revision",
    "check_tier",
    "check_value",
]


def check_tier(tier: str) -> None:
    if tier not in ("", *KNOWN_TIERS):
        raise InvalidArgument(
            f"unknown tier {tier!r}: the KV API serves tiers {', '.join(KNOWN_TIERS)}"
        )


def check_key(key: str, what: str = "key") -> None:
    if not key:
        raise InvalidArgument(f"{what} is empty")
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > MAX_KEY_BYTES:
        raise InvalidArgument(f"{what} is {size} bytes; the limit is {MAX_KEY_BYTES} bytes")


def check_prefix(prefix: str) -> None:
    size = len(prefix.encode("utf-8", "surrogatepass"))
    if size > MAX_KEY_BYTES:
        raise InvalidArgument(f"prefix is {size} bytes; the limit is {MAX_KEY_BYTES} bytes")


def check_value(value: bytes, limit: int) -> None:
    if len(value) > limit:
        raise InvalidArgument(f"value is {len(value)} bytes; the limit is {limit} bytes")


def check_revision(revision: int, what: str = "revision") -> None:
    if revision < 0:
        raise InvalidArgument(f"{what} {revision} is negative")


def check_limit(limit: int) -> None:
    if limit < 0:
        raise InvalidArgument(f"limit {limit} is negative")


MAX_REQUEST_ID_CHARS = 64


def check_request_id(request_id: str) -> None:
    if len(request_id) > MAX_REQUEST_ID_CHARS:
        raise InvalidArgument(
            f"request_id is {len(request_id)} characters; the limit is {MAX_REQUEST_ID_CHARS}"
        )


TIER_CONSISTENCIES = {0: "default", 1: "one", 2: "quorum", 3: "all"}


def check_consistency(consistency: int) -> int:
    """A tier consistency from the wire (TierConsistency); 0 means the tier's default."""
    if consistency not in TIER_CONSISTENCIES:
        raise InvalidArgument(
            f"unknown consistency {consistency}: use one of "
            + ", ".join(f"{v} ({k})" for k, v in TIER_CONSISTENCIES.items())
        )
    return consistency


@contextmanager
def as_document_error() -> Iterator[None]:
    """Report a bad argument raised inside as :class:`InvalidDocument`: the check
    inside is a document's schema (HTTP 422 rather than 400)."""
    try:
        yield
    except InvalidDocument:
        raise
    except InvalidArgument as exc:
        raise InvalidDocument(str(exc)) from exc
