"""The CRDT change-stream cursor logic (node/http/changes.py) against scripted feeds."""

from __future__ import annotations

from typing import Any

import pytest

from crdt import PNCounter, encode
from node.errors import InvalidArgument
from node.http.changes import ChangesApi, decode_cursor, encode_cursor
from node.http.problems import Problem
from node.replication.messages import ChangesReply

COUNTER = encode(PNCounter().increment("n1", 3))


class Feeds:
    """Replication.changes over scripted per-member feeds: member -> (feed id, trimmed,
    [(seq, key, state)]); a member mapped to None does not answer."""

    def __init__(self, feeds: dict[str, tuple[str, int, list[tuple[int, str, bytes]]] | None]):
        self.feeds = feeds
        self.asked: list[dict[str, int]] = []

    def live(self) -> dict[str, str]:
        return {m: "" for m in self.feeds}

    async def changes(
        self, tier: str, prefix: str, after: dict[str, int], limit: int, members: Any = None
    ) -> dict[str, ChangesReply | None]:
        self.asked.append(dict(after))
        out: dict[str, ChangesReply | None] = {}
        for member, feed in self.feeds.items():
            if members is not None and member not in members:
                continue
            if feed is None:
                out[member] = None
                continue
            feed_id, trimmed, rows = feed
            newest = rows[-1][0] if rows else 0
            since = after.get(member, 0)
            if since == -1:
                out[member] = ChangesReply(feed_id, (), newest, trimmed)
                continue
            picked = [r for r in rows if r[0] > since][:limit]
            through = picked[-1][0] if len(picked) == limit else max(newest, since)
            out[member] = ChangesReply(feed_id, tuple(picked), through, trimmed)
        return out


def api(feeds: Feeds) -> ChangesApi:
    return ChangesApi(feeds)  # type: ignore[arg-type]


def test_cursors_round_trip_and_foreign_ones_are_refused() -> None:
    cursor = {"n1": ("f1", 7), "n2": ("f2", 0)}
    assert decode_cursor(encode_cursor(cursor)) == cursor
    for bad in ("!!", encode_cursor({}) + "x" * 20_000, "WzFd", "eyJuMSI6WyJmIiwiMiJdfQ"):
        with pytest.raises(InvalidArgument):
            decode_cursor(bad)


async def test_from_now_then_every_change_once_per_member() -> None:
    feeds = Feeds({"n1": ("f1", 0, [(1, "p/a", COUNTER)]), "n2": ("f2", 0, [])})
    changes, cursor, missing = await api(feeds).page("population", "", None, 100)
    assert (changes, cursor, missing) == ([], {"n1": ("f1", 1), "n2": ("f2", 0)}, [])
    feeds.feeds["n1"][2].append((2, "p/b", COUNTER))  # type: ignore[index]
    feeds.feeds["n2"] = ("f2", 0, [(1, "p/b", COUNTER)])
    changes, cursor, _ = await api(feeds).page("population", "", cursor, 100)
    assert [(c["node"], c["seq"], c["key"], c["value"]) for c in changes] == [
        ("n1", 2, "p/b", 3),
        ("n2", 1, "p/b", 3),
    ]
    assert cursor == {"n1": ("f1", 2), "n2": ("f2", 1)}


async def test_an_unreachable_member_keeps_its_place() -> None:
    feeds = Feeds({"n1": ("f1", 0, [(1, "p/a", COUNTER)]), "n2": None})
    changes, cursor, missing = await api(feeds).page("population", "", {"n2": ("f2", 4)}, 100)
    assert [c["node"] for c in changes] == ["n1"]  # n1 is not in the cursor: from its start
    assert missing == ["n2"] and cursor["n2"] == ("f2", 4)
    del feeds.feeds["n2"]  # gossip no longer lists it: still reported, still in place
    _, cursor, missing = await api(feeds).page("population", "", cursor, 100)
    assert missing == ["n2"] and cursor["n2"] == ("f2", 4)


async def test_a_store_created_anew_is_read_from_its_start() -> None:
    feeds = Feeds({"n1": ("new", 0, [(1, "p/a", COUNTER), (2, "p/b", COUNTER)])})
    changes, cursor, _ = await api(feeds).page("population", "", {"n1": ("old", 9)}, 100)
    assert [c["seq"] for c in changes] == [1, 2] and cursor == {"n1": ("new", 2)}


async def test_a_cursor_older_than_the_feed_keeps_is_410_naming_the_member() -> None:
    feeds = Feeds({"n1": ("f1", 50, [(51, "p/a", COUNTER)])})
    with pytest.raises(Problem) as caught:
        await api(feeds).page("population", "", {"n1": ("f1", 10)}, 100)
    assert caught.value.status == 410 and caught.value.extra == {"node": "n1", "trimmed": 50}
    # A fresh consumer (no cursor) starts from what is kept, without an error.
    changes, _, _ = await api(feeds).page("population", "", {}, 100)
    assert [c["seq"] for c in changes] == [51]
