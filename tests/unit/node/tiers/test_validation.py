"""Client API input validation: each bad input raises InvalidArgument naming the problem."""

from __future__ import annotations

import pytest

from node.tiers.validation import (
    MAX_KEY_BYTES,
    InvalidArgument,
    check_key,
    check_limit,
    check_prefix,
    check_revision,
    check_tier,
    check_value,
)


def test_key_limit_is_one_kib() -> None:
    assert MAX_KEY_BYTES == 1024


def test_invalid_argument_is_a_value_error() -> None:
    assert issubclass(InvalidArgument, ValueError)


def test_empty_key() -> None:
    with pytest.raises(InvalidArgument, match="key is empty"):
        check_key("")


def test_empty_key_message_names_the_field() -> None:
    with pytest.raises(InvalidArgument, match="compare key is empty"):
        check_key("", "compare key")


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("k", id="one-byte"),
        pytest.param("a" * 1024, id="1024-ascii"),
        pytest.param("é" * 512, id="1024-bytes-as-512-chars"),
        pytest.param("日" * 341 + "a", id="1024-bytes-3-byte-chars"),
        pytest.param("\U0001f600" * 256, id="1024-bytes-as-256-emoji"),
    ],
)
def test_keys_up_to_1024_utf8_bytes_are_accepted(key: str) -> None:
    assert len(key.encode("utf-8")) <= 1024
    check_key(key)


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("a" * 1025, id="1025-ascii"),
        pytest.param("é" * 512 + "a", id="1025-bytes-513-chars"),
        pytest.param("日" * 342, id="1026-bytes-342-chars"),
        pytest.param("\U0001f600" * 256 + "a", id="1025-bytes-257-chars"),
    ],
)
def test_keys_over_1024_utf8_bytes_are_rejected(key: str) -> None:
    size = len(key.encode("utf-8"))
    if not key.isascii():
        assert len(key) <= 1024  # counting characters instead of bytes would let it pass
    with pytest.raises(InvalidArgument) as info:
        check_key(key)
    message = str(info.value)
    assert f"key is {size} bytes" in message
    assert "1024" in message


def test_prefix_may_be_empty_but_not_too_long() -> None:
    check_prefix("")
    check_prefix("é" * 512)
    with pytest.raises(InvalidArgument, match="prefix is 1025 bytes"):
        check_prefix("é" * 512 + "/")


@pytest.mark.parametrize("size", [0, 1, 1 << 20])
def test_values_up_to_the_limit_are_accepted(size: int) -> None:
    check_value(b"x" * size, 1 << 20)


@pytest.mark.parametrize(("size", "limit"), [((1 << 20) + 1, 1 << 20), (11, 10), (1, 0)])
def test_values_over_the_limit_are_rejected(size: int, limit: int) -> None:
    with pytest.raises(InvalidArgument) as info:
        check_value(b"\x00" * size, limit)
    assert str(info.value) == f"value is {size} bytes; the limit is {limit} bytes"


@pytest.mark.parametrize("tier", ["", "system"])
def test_known_tiers(tier: str) -> None:
    check_tier(tier)


@pytest.mark.parametrize("tier", ["eventual", "SYSTEM", "system ", "crdt"])
def test_unknown_tier_is_named(tier: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        check_tier(tier)
    message = str(info.value)
    assert f"unknown tier {tier!r}" in message
    assert "system" in message  # and says what is served


@pytest.mark.parametrize("revision", [0, 1, 2**62])
def test_non_negative_revisions(revision: int) -> None:
    check_revision(revision)


@pytest.mark.parametrize("revision", [-1, -(2**62)])
def test_negative_revision(revision: int) -> None:
    with pytest.raises(InvalidArgument, match=f"revision {revision} is negative"):
        check_revision(revision)
    with pytest.raises(InvalidArgument, match=f"start_revision {revision} is negative"):
        check_revision(revision, "start_revision")


def test_limit() -> None:
    check_limit(0)
    check_limit(500)
    with pytest.raises(InvalidArgument, match="limit -1 is negative"):
        check_limit(-1)
