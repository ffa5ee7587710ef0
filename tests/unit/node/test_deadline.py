"""The write fence's pure rules (node/deadline.py): what a deadline may look like, and
when a write is too late."""

from __future__ import annotations

import time

import pytest

from node import deadline
from node.client import messages as wire
from node.errors import DeadlineExpired, InvalidArgument, Outcome

NOW = 1_765_000_000 * 10**9


@pytest.mark.parametrize("value", ["1", "1765000000000000000", b"42", str(2**63 - 1)])
def test_a_wall_clock_time_in_ns_parses(value: str | bytes) -> None:
    text = value.decode() if isinstance(value, bytes) else value
    assert deadline.parse(value) == int(text)


@pytest.mark.parametrize(
    "value", ["", "0", "-1", "+5", "1.5", "1e18", " 5", "5 ", "٣", str(2**63), "9" * 20, b"\xff"]
)
def test_anything_else_is_invalid_and_named(value: str | bytes) -> None:
    with pytest.raises(InvalidArgument, match="tadpole-deadline-ns"):
        deadline.parse(value)


def test_a_write_is_refused_only_past_the_deadline_and_the_clock_allowance() -> None:
    deadline.check(0, NOW, "k")  # no deadline: never refused
    deadline.check(NOW, NOW, "k")
    deadline.check(NOW - deadline.GRACE_NS, NOW, "k")  # a client clock this far behind: fine
    with pytest.raises(DeadlineExpired, match=r"p/k: reached its owner 0\.500 s after") as caught:
        deadline.check(NOW - deadline.GRACE_NS - 1, NOW, "p/k")
    assert caught.value.outcome is Outcome.NOT_APPLIED


def test_the_client_and_the_node_agree_on_the_key_and_the_allowance() -> None:
    assert wire.DEADLINE_KEY == deadline.DEADLINE_KEY
    assert wire.DEADLINE_GRACE_NS == deadline.GRACE_NS
    due = wire.write_deadline_ns(2.5)
    assert deadline.parse(str(due)) == due
    before = time.time_ns()
    assert wire.write_deadline_ns(-1.0) >= before  # a spent timeout: now, never earlier
