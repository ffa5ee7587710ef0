"""TierStore.check_digests: the scrubber's view of values that rotted on disk."""

from __future__ import annotations

import asyncio
import pathlib
import sqlite3

from node.replication.store import TierStore


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
