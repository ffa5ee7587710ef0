"""Power-loss instrumentation for chaos nodes, loaded only by the chaos suite.

The chaos cluster starts nodes with this folder first on ``PYTHONPATH``
(``tests/chaos/cluster.py``: ``FSYNC_SHIM_ENV``), so Python imports this module at
start-up, before the node. It wraps :class:`consensus.raft.journal.DurableJournal` so
that every completed journal fsync records the journal's length in
``<path>.chaos-fsynced``; the "lose-unfsynced" nemesis (tests/chaos/nemesis.py) can then
kill -9 the node and cut the journal back to what was fsynced, as a power loss would;
and, while ``chaos-slow-fsync`` exists in the data dir, it delays each fsync (the
"slow-disk" nemesis).
Production code carries no switch for this: the journal's ``fsync`` parameter is the
seam.

The length is recorded *after* the fsync returns: a kill between the two cuts bytes
that did reach the disk, but nothing that depends on them has left the node yet
(messages go out only after ``sync()`` returns), so that state is the same as a crash
just before the fsync completed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any


def _recording(fsync: Callable[[int], None], path: str) -> Callable[[int], None]:
    side = path + ".chaos-fsynced"
    slow = os.path.join(os.path.dirname(os.path.abspath(path)), "chaos-slow-fsync")

    def recording_fsync(fd: int) -> None:
        note = os.open(side, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            _maybe_slow(slow)
            fsync(fd)
            os.pwrite(note, b"%020d\n" % os.fstat(fd).st_size, 0)
        finally:
            os.close(note)

    return recording_fsync


def _maybe_slow(flag: str) -> None:
    """The slow-disk nemesis: while ``chaos-slow-fsync`` exists in the data dir, every
    journal fsync first waits the number of seconds it holds."""
    try:
        with open(flag) as f:
            delay_s = float(f.read().strip() or 0)
    except (OSError, ValueError):
        return
    time.sleep(min(max(delay_s, 0.0), 5.0))


def _install() -> None:
    from consensus.raft import journal

    original = journal.DurableJournal.__init__

    def init(self: Any, path: str, *args: Any, **kwargs: Any) -> None:
        kwargs["fsync"] = _recording(kwargs.get("fsync", os.fdatasync), path)
        original(self, path, *args, **kwargs)

    journal.DurableJournal.__init__ = init  # type: ignore[method-assign]


_install()
