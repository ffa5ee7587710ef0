"""``trim_append_entries``: table-driven cases, then a property against Raft's rule.

Logs are lists of ``(command, index, term)`` and may start at any index (the
entries before it were compacted into a snapshot).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.raft.transport import trim_append_entries

Entry = tuple[bytes, int, int]


def log(first: int, terms: list[int]) -> list[Entry]:
    """Entries first, first+1, ... with the given terms; the command names (index, term)."""
    return [entry(first + i, term) for i, term in enumerate(terms)]


def entry(idx: int, term: int) -> Entry:
    return (f"{idx}@{term}".encode(), idx, term)


def ae(term: int, prev: tuple[int, int], entries: list[Entry], **extra: Any) -> dict[str, Any]:
    return {
        "type": "append_entries",
        "term": term,
        "commit_index": 2,
        "prevLogIdx": prev[0],
        "prevLogTerm": prev[1],
        "entries": entries,
        **extra,
    }


def summary(message: dict[str, Any]) -> tuple[int, int, list[tuple[int, int]]]:
    return (
        message["prevLogIdx"],
        message["prevLogTerm"],
        [(e[1], e[2]) for e in message["entries"]],
    )


# (follower log, message, expected (prevLogIdx, prevLogTerm, [(idx, term), ...]))
CASES = [
    pytest.param(
        log(1, [1, 1, 1]),
        ae(1, (3, 1), log(4, [1, 1])),
        (3, 1, [(4, 1), (5, 1)]),
        id="nothing-present-unchanged",
    ),
    pytest.param(
        log(1, [1, 1, 1, 1, 1]),
        ae(1, (2, 1), log(3, [1, 1, 1, 1, 1])),
        (5, 1, [(6, 1), (7, 1)]),
        id="skips-entries-already-present",
    ),
    pytest.param(
        log(1, [1, 1, 1, 1, 1]),
        ae(2, (2, 1), log(3, [1, 2, 2, 2])),
        (3, 1, [(4, 2), (5, 2), (6, 2)]),
        id="conflict-at-k-gives-prev-k-minus-1",
    ),
    pytest.param(
        log(1, [1, 1, 1, 1, 1]),
        ae(2, (2, 1), log(3, [2, 2])),
        (2, 1, [(3, 2), (4, 2)]),
        id="conflict-at-first-entry-unchanged",
    ),
    pytest.param(
        log(1, [1, 2, 2, 2, 2, 2]),
        ae(2, (2, 2), log(3, [2, 2])),
        (6, 2, []),
        id="all-present-longer-log-in-senders-term-prev-moves-to-last",
    ),
    pytest.param(
        log(1, [1, 1, 1, 1, 1, 1]),
        ae(2, (2, 1), log(3, [1, 1])),
        (4, 1, []),
        id="all-present-older-term-tail-prev-is-last-covered",
    ),
    pytest.param(
        log(1, [1, 1, 2, 2]),
        ae(2, (2, 1), log(3, [2, 2])),
        (4, 2, []),
        id="all-present-same-length",
    ),
    pytest.param(
        log(1, [1, 2, 2, 2]),
        ae(2, (2, 2), []),
        (4, 2, []),
        id="heartbeat-longer-log-in-senders-term",
    ),
    pytest.param(
        log(1, [1, 1, 1, 1]),
        ae(2, (2, 1), []),
        (2, 1, []),
        id="heartbeat-older-term-tail-keeps-prev",
    ),
    pytest.param(
        log(1, [1, 1]),
        ae(1, (2, 1), []),
        (2, 1, []),
        id="heartbeat-at-end-of-log",
    ),
    pytest.param(
        log(100, [3, 3, 3, 4, 4]),
        ae(5, (101, 3), log(102, [3, 4, 5])),
        (103, 4, [(104, 5)]),
        id="log-starting-at-100-conflict",
    ),
    pytest.param(
        log(100, [3, 3, 3, 5, 5]),
        ae(5, (100, 3), log(101, [3, 3])),
        (104, 5, []),
        id="log-starting-at-100-all-present",
    ),
    pytest.param(
        log(1, [1, 1, 1]),
        ae(1, (2, 1), log(3, [1, 1, 1])),
        (3, 1, [(4, 1), (5, 1)]),
        id="partially-present-then-missing",
    ),
]


@pytest.mark.parametrize(("follower", "message", "expected"), CASES)
def test_trim(follower: list[Entry], message: dict[str, Any], expected: tuple[Any, ...]) -> None:
    original = copy.deepcopy(message)
    trimmed = trim_append_entries(message, follower)
    assert summary(trimmed) == expected
    assert message == original  # the input is never mutated
    # everything else travels as it was
    assert {
        k: v for k, v in trimmed.items() if k not in ("prevLogIdx", "prevLogTerm", "entries")
    } == {k: v for k, v in original.items() if k not in ("prevLogIdx", "prevLogTerm", "entries")}
    # entries that survive are the sender's own, untouched
    for sent in trimmed["entries"]:
        assert sent in original["entries"]


NO_OP_CASES = [
    pytest.param(log(1, [1, 1, 1]), ae(2, (3, 2), log(4, [2])), id="prev-term-mismatch"),
    pytest.param(
        # a heartbeat whose prev disagrees must stay a rejection, even though
        # the follower's last entry is from the sender's term
        log(1, [1, 1, 2, 2]),
        ae(2, (2, 2), []),
        id="heartbeat-prev-term-mismatch",
    ),
    pytest.param(log(1, [1, 1, 1]), ae(1, (5, 1), log(6, [1])), id="prev-beyond-log"),
    pytest.param(log(10, [1, 1, 1]), ae(1, (8, 1), log(9, [1, 1, 1])), id="prev-before-log"),
    pytest.param([], ae(1, (0, 0), log(1, [1])), id="empty-log"),
    pytest.param(
        log(1, [1, 1, 1]),
        ae(1, (1, 1), [], transmission="start", data=b"x"),
        id="transmission-start",
    ),
    pytest.param(
        log(1, [1, 1, 1]),
        {
            "type": "append_entries",
            "term": 1,
            "commit_index": 2,
            "prevLogIdx": 1,
            "prevLogTerm": 1,
            "transmission": "finish",
            "data": b"y",
        },
        id="transmission-finish-no-entries",
    ),
    pytest.param(
        log(1, [1, 1, 1]),
        {"type": "append_entries", "term": 1, "commit_index": 2, "serialized": (b"d", 0, True)},
        id="serialized-snapshot",
    ),
    pytest.param(
        log(1, [1, 1, 1]),
        {
            "type": "append_entries",
            "term": 1,
            "commit_index": 2,
            "serialized": None,
            "prevLogIdx": 1,
            "prevLogTerm": 1,
        },
        id="serialized-with-prev-but-no-entries",
    ),
]


@pytest.mark.parametrize(("follower", "message"), NO_OP_CASES)
def test_passes_unchanged(follower: list[Entry], message: dict[str, Any]) -> None:
    original = copy.deepcopy(message)
    assert trim_append_entries(message, follower) == original
    assert message == original


def test_transmission_with_entries_key_is_not_touched() -> None:
    """A chunked entry never carries 'entries'; if one did, it must still pass as is."""
    follower = log(1, [1, 1, 1, 1])
    message = ae(1, (1, 1), log(2, [1, 1]), transmission="process", data=b"z")
    assert trim_append_entries(message, follower) is message


# --- property: pysyncobj fed the trimmed message follows Raft's rule -------------


def pysyncobj_follower(follower: list[Entry], message: dict[str, Any]) -> list[Entry] | None:
    """What pysyncobj 0.3.17 does with an append-entries batch (syncobj.py,
    ``append_entries``): reject on a prev mismatch, else truncate *everything*
    after prev when the log is longer, then add the entries."""
    result = list(follower)
    first = result[0][1] if result else 0
    pos = message["prevLogIdx"] - first
    if not 0 <= pos < len(result) or result[pos][2] != message["prevLogTerm"]:
        return None
    del result[pos + 1 :]
    result.extend(message["entries"])
    return result


def raft_rule(follower: list[Entry], message: dict[str, Any]) -> list[Entry]:
    """Figure 2, AppendEntries steps 3-4: delete from the first conflict only;
    append what is missing; keep everything else."""
    result = list(follower)
    first = result[0][1]
    for e in message["entries"]:
        pos = e[1] - first
        if pos < len(result) and result[pos][2] == e[2]:
            continue
        del result[pos:]
        result.append(e)
    return result


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Entry], dict[str, Any]]:
    first = draw(st.integers(1, 5))
    n = draw(st.integers(1, 10))
    follower_terms = sorted(draw(st.lists(st.integers(1, 4), min_size=n, max_size=n)))
    follower = log(first, follower_terms)
    prev_pos = draw(st.integers(0, n - 1))
    prev = follower[prev_pos]
    count = draw(st.integers(0, 7))
    # the sender's entries: terms non-decreasing from prev's term (Raft logs are)
    sent_terms = sorted(draw(st.lists(st.integers(prev[2], 5), min_size=count, max_size=count)))
    sender_term = (
        max([5, *sent_terms])
        if draw(st.booleans())
        else max([prev[2], *sent_terms, follower_terms[-1]])
    )
    return follower, ae(sender_term, (prev[1], prev[2]), log(prev[1] + 1, sent_terms))


@settings(derandomize=True, deadline=None, max_examples=500)
@given(scenarios())
def test_trimmed_message_never_truncates_what_raft_keeps(
    scenario: tuple[list[Entry], dict[str, Any]],
) -> None:
    follower, message = scenario
    first = follower[0][1]
    trimmed = trim_append_entries(message, follower)
    got = pysyncobj_follower(follower, trimmed)
    assert got is not None  # a matching prev stays matching
    want = raft_rule(follower, message)
    sent = message["entries"]
    last_sent = sent[-1][1] if sent else message["prevLogIdx"]
    # Everything up to the last entry sent is exactly what Raft's rule gives ...
    assert len(got) >= last_sent - first + 1
    assert got == want[: len(got)]
    # ... and beyond it the result is Raft's, or Raft's cut short by a tail
    # that is not from the sender's term; a tail in the sender's term is kept.
    assert all(e[2] != message["term"] for e in want[len(got) :])
    if follower[-1][2] == message["term"]:
        assert got == want
    # pysyncobj deletes every entry after the trimmed prev: each of those must
    # be a real conflict (at or after the first one) or such an older-term tail.
    conflicts = [
        e[1] for e in sent if e[1] - first < len(follower) and follower[e[1] - first][2] != e[2]
    ]
    first_conflict = conflicts[0] if conflicts else None
    for idx, term in [(e[1], e[2]) for e in follower if e[1] > trimmed["prevLogIdx"]]:
        is_conflict = first_conflict is not None and idx >= first_conflict
        is_old_tail = idx > last_sent and term != message["term"]
        assert is_conflict or is_old_tail, (idx, term)
