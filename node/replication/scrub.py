"""The background scrubber: re-read what is stored, find corruption, repair what can be.

Every ``interval_s`` a pass re-reads, at most ``bytes_per_s``:

* the Raft journal, checking every record's CRC-32, and the Raft snapshot, checking its
  whole-file CRC-32 (``consensus/raft/scrub.py``). These are reported, not repaired: a
  node's log is its own (the fix is to wipe the node and let it catch up from the
  leader, or to restore), and the report comes before a restart would cut the journal
  at the damage;
* every value of the CRDT tiers' store against the digest stored beside it
  (``TierStore.check_digests``): SQLite keeps no page checksums, and anti-entropy
  compares those stored digests, so a value that rots on disk would otherwise be
  served and never noticed. A rotten value is replaced with the other owners' copies
  (``Replication.repair_corrupt``).

Findings are logged (ERROR) and counted: ``tadpole_corruption_detected_total{file}``,
``tadpole_corruption_repaired_total``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterator

from consensus.raft import scrub as raft_scrub
from node.replication.background import Background
from node.replication.driver import Replication
from node.replication.store import TierStore

log = logging.getLogger(__name__)

_PAGE = 512  # values per store read


class Scrubber(Background):
    """One pass every ``interval_s``; findings counted in ``detected`` and ``repaired``."""

    task_name = "scrubber"

    def __init__(
        self,
        data_dir: str,
        store: TierStore,
        replication: Replication,
        *,
        interval_s: float,
        bytes_per_s: float,
        raft_files: bool = True,
    ) -> None:
        self.data_dir = data_dir
        self.store = store
        self.replication = replication
        self.interval_s = interval_s
        self.bytes_per_s = bytes_per_s
        self.raft_files = raft_files
        self.detected = {"journal": 0, "snapshot": 0, "tiers": 0}
        self.repaired = 0
        self.passes = 0
        self.bytes_read = 0
        self.last_pass_ns = 0

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.scrub()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scrub pass failed")

    async def _pace(self, n: int) -> None:
        self.bytes_read += n
        if self.bytes_per_s > 0:
            await asyncio.sleep(n / self.bytes_per_s)

    async def _file(self, kind: str, steps: Iterator[raft_scrub.Progress]) -> None:
        done = object()
        while (step := await asyncio.to_thread(next, steps, done)) is not done:
            if isinstance(step, raft_scrub.Damage):
                self.detected[kind] += 1
                log.error("corruption found by the scrubber: %s", step)
            else:
                assert isinstance(step, int)
                await self._pace(step)

    async def scrub(self) -> None:
        """One pass over everything."""
        started = time.monotonic()
        if self.raft_files:
            await self._file(
                "journal", raft_scrub.journal(os.path.join(self.data_dir, "raft.journal"))
            )
            await self._file(
                "snapshot", raft_scrub.snapshot(os.path.join(self.data_dir, "raft.snapshot"))
            )
        after: tuple[str, str] | None = ("", "")
        while after is not None:
            bad, after, read = await asyncio.to_thread(self.store.check_digests, after, _PAGE)
            for tier, key, corrupt in bad:
                self.detected["tiers"] += 1
                log.error("corruption found by the scrubber: %s/%s no longer matches its "
                          "digest in %s", tier, key, self.store.path)  # fmt: skip
                if await self.replication.repair_corrupt(tier, key, corrupt):
                    self.repaired += 1
                    log.warning("repaired %s/%s from its other owners", tier, key)
                else:
                    log.error("could not repair %s/%s: no other owner holds it, or it was "
                              "rewritten meanwhile", tier, key)  # fmt: skip
            await self._pace(read)
        self.passes += 1
        self.last_pass_ns = time.time_ns()
        log.info("scrub pass %d done in %.1f s (%d bytes read in all)", self.passes,
                 time.monotonic() - started, self.bytes_read)  # fmt: skip
