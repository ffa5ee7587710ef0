"""Names a backup shares with the node: where things are in a node's data directory,
and the backup section that is not a CRDT tier."""

from __future__ import annotations

from typing import Final

TIERS_DB: Final = "tiers.db"  # the CRDT tiers' store (node/replication/store.py)
ARCHIVE_DIR: Final = "archive"  # population retention archives (node/tiers/retention.py)
AUDIT_LOG: Final = "audit.log"  # operator actions and refused calls (node/audit.py)
# The section (and the Backup.Rows pseudo-tier) holding those archives: content-named
# files, the same on every owner of their key.
ARCHIVE: Final = "archive"
# System-tier keys of the backup machinery: the schedule's state (node/backup/schedule.py)
# and the timeline a restore stamps (node/backup/wal.py).
SCHEDULE_KEY: Final = "/tadpole/backup/schedule"
TIMELINE_KEY: Final = "/tadpole/backup/timeline"
ORIGIN: Final = "origin"  # the timeline of a cluster that was never restored
