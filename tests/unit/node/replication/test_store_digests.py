"""TierStore.check_digests: the scrubber's view of values that rotted on disk."""

from __future__ import annotations

import asyncio
import pathlib
import sqlite3

import pytest

from node.replication.store import CorruptValueError, TierStore


def test_rotten_values_are_found_page_by_page(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "tiers.db")
    store = TierStore(path)
    try:
        rows = [
            (t, f"k{i:04d}", b"value-%d" % i) for t in ("agent", "population") for i in range(700)
        ]
        asyncio.run(store.put_many(rows))
        # Rot two values behind SQLite's back, leaving their digests.
        with sqlite3.connect(path) as raw:
            raw.execute(
                "UPDATE state SET value=? WHERE tier='agent' AND key='k0005'", (b"v4lue-5",)
            )
            raw.execute("UPDATE state SET value=? WHERE tier='population' AND key='k0699'", (b"",))
        found, after, pages, read = [], ("", ""), 0, 0
        while after is not None:
            bad, after, n = store.check_digests(after, limit=256)
            found += [(t, k) for t, k, _ in bad]
            pages += 1
            read += n
        assert found == [("agent", "k0005"), ("population", "k0699")]
        assert pages == 6 and read > 1400 * 10
        bad, _, _ = store.check_digests(("agent", "k0004"), limit=1)
        assert bad == [("agent", "k0005", b"v4lue-5")]
    finally:
        store.close()


def _with_rotten_a(tmp_path: pathlib.Path) -> TierStore:
    """A store holding agent/a (its bytes rotted behind SQLite's back) and agent/b."""
    path = str(tmp_path / "tiers.db")
    store = TierStore(path)
    asyncio.run(store.put_many([("agent", "a", b"good"), ("agent", "b", b"fine")]))
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE state SET value=? WHERE key='a'", (b"rot!",))
    return store


def test_an_update_refuses_a_rotten_value_and_replace_if_repairs_it(tmp_path: pathlib.Path) -> None:
    """Review finding: an update joined into rotten bytes and stored the result under a
    valid digest, where no scrub could find it again."""
    store = _with_rotten_a(tmp_path)
    try:

        async def scenario() -> None:
            with pytest.raises(CorruptValueError, match="agent/a no longer matches its digest"):
                await store.update("agent", "a", lambda old: (old or b"") + b"+")
            assert await store.update("agent", "b", lambda old: (old or b"") + b"+") == b"fine+"
            assert not await store.replace_if("agent", "a", b"other", b"x")
            assert await store.replace_if("agent", "a", b"rot!", b"good")
            assert await store.update("agent", "a", lambda old: (old or b"") + b"+") == b"good+"

        with pytest.raises(CorruptValueError):
            store.get_checked("agent", "a")
        assert store.get("agent", "a") == b"rot!"  # nothing was written over it
        asyncio.run(scenario())
        assert store.get_checked("agent", "a") == b"good+"
        assert store.check_digests()[0] == []
    finally:
        store.close()


def test_a_batched_update_refuses_a_rotten_value_alone(tmp_path: pathlib.Path) -> None:
    # update_many / update_many_once read their rows in bulk: the digest check must
    # still fail the rotten key's item, and only it.
    store = _with_rotten_a(tmp_path)
    try:

        def plus(old: bytes | None) -> bytes:
            return (old or b"") + b"+"

        many = asyncio.run(store.update_many([("agent", "a", plus), ("agent", "b", plus)]))
        assert isinstance(many[0], CorruptValueError) and many[1] == b"fine+"
        once = asyncio.run(
            store.update_many_once(
                [("agent", "a", lambda v, _: (plus(v), ["r"]), ["r"]),
                 ("agent", "b", lambda v, _: (plus(v), ["s"]), ["s"])]
            )
        )  # fmt: skip
        assert isinstance(once[0], CorruptValueError) and once[1] == b"fine++"
        assert store.get("agent", "a") == b"rot!"  # nothing was written over it
    finally:
        store.close()
