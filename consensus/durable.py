"""Durable file primitives shared by the Raft journal, the tier store and gossip state.

Plain ``os`` calls, no threads: a caller that must not block its event loop runs
these in an executor.
"""

from __future__ import annotations

import bisect
import os

__all__ = ["FSYNC_BUCKETS", "Histogram", "atomic_write", "fsync_dir"]

# Seconds. An fsync on a local SSD takes ~0.1-2 ms, on a busy or networked disk tens.
FSYNC_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)


class Histogram:
    """Counts of observations per bucket (upper bounds, plus +Inf) and their sum, for
    the durations and sizes a Prometheus histogram exports. One thread observes (the
    tick thread, a store's writer); readers take :meth:`snapshot` from any thread and
    may see it one observation behind, never torn into a negative count."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self._counts = [0] * (len(buckets) + 1)
        self._sum = 0.0

    def observe(self, value: float, times: int = 1) -> None:
        """Record ``value`` (``times`` observations of it: a batch's items each waited
        the batch)."""
        self._counts[bisect.bisect_left(self.buckets, value)] += times
        self._sum += value * times

    def snapshot(self) -> tuple[list[tuple[float, int]], float]:
        """Cumulative ``(upper bound, count)`` per bucket, +Inf last, and the sum."""
        counts = list(self._counts)
        running, out = 0, []
        for bound, count in zip((*self.buckets, float("inf")), counts, strict=True):
            running += count
            out.append((bound, running))
        return out, self._sum


def fsync_dir(path: str) -> None:
    """Make a rename or file creation inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves old or new, never a mix.
    ``mode`` (0600 for anything secret): the new file's, from its first byte; None: as
    the process's umask makes it."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666 if mode is None else mode)
    if mode is not None:
        os.fchmod(fd, mode)  # an old .tmp left by a crash keeps its mode otherwise
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))
