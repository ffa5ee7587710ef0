"""The Raft system-tier backend: the only code that imports pysyncobj.

backend    RaftBackend: pysyncobj's SyncObj on a tick thread (apply, one fsync, send)
journal    DurableJournal: checksummed, fsynced log and snapshots
transport  HeldTransport: pysyncobj messages held per tick, handed to links after the fsync
bridge     RaftSystem: the asyncio side, implementing consensus.backend.SystemBackend
"""

from __future__ import annotations

from consensus.raft.backend import RaftBackend, RaftConfig
from consensus.raft.bridge import RaftSystem

__all__ = ["RaftBackend", "RaftConfig", "RaftSystem"]
