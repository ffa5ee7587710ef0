"""Durable file primitives shared by the Raft journal, the tier store and gossip state.

Plain ``os`` calls, no threads: a caller that must not block its event loop runs
these in an executor.
"""

from __future__ import annotations

import os

__all__ = ["atomic_write", "fsync_dir"]


def fsync_dir(path: str) -> None:
    """Make a rename or file creation inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves old or new, never a mix."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))
