"""gRPC servicer for backups (``Backup`` service): hands out this node's raw data.

``System`` streams a snapshot of the system tier's state machine taken at a
linearizable read point, so it holds every write acknowledged before the call and
is one revision's consistent cut. ``Rows`` streams a CRDT tier as this node stores
it -- its copies and the hints it keeps for down owners -- in pages; or, for
``archive``, the population retention archives in its data directory.

Nothing here builds a backup: ``node/backup`` gathers these from every member,
joins the CRDT copies and writes the repository. Both methods are operator calls
(``node/peer/auth.py``): they need the operator credential, checked before the
request is parsed.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc

from consensus.backend import SystemBackend
from node.api import status
from node.backup.layout import ARCHIVE
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc
from node.replication.store import TierStore
from node.tiers.ops import TIERS
from node.tiers.validation import InvalidArgument

# Bytes of snapshot per streamed piece, and rows per page; both well under the
# 4 MiB default message limit of a client.
PIECE_BYTES = 1 << 20
PAGE_ROWS = 512
SNAPSHOT_TIMEOUT_S = 10.0


class BackupServicer(pb_grpc.BackupServicer):  # type: ignore[misc]
    def __init__(
        self, node_id: str, system: SystemBackend, store: TierStore, archive_dir: str
    ) -> None:
        self._node_id = node_id
        self._system = system
        self._store = store
        self._archive_dir = archive_dir

    async def System(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.BackupSystemPiece]:
        try:
            state = await self._system.snapshot(SNAPSHOT_TIMEOUT_S)
        except Exception as exc:
            await status.abort(context, exc)
            raise
        first = True
        buffer = bytearray()
        for chunk in state.snapshot_chunks():
            buffer += chunk
            if len(buffer) >= PIECE_BYTES:
                yield _piece(state.revision, len(state), bytes(buffer), first)
                buffer.clear()
                first = False
        if buffer or first:
            yield _piece(state.revision, len(state), bytes(buffer), first)

    async def Rows(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.BackupRowsPage]:
        tier = request.tier
        if tier == ARCHIVE:
            for page in self._archive_pages():
                yield page
            yield pb.BackupRowsPage(node_id=self._node_id, done=True)
            return
        if tier not in TIERS:
            await status.abort(
                context,
                InvalidArgument(f"tier {tier!r}: expected {ARCHIVE} or one of {', '.join(TIERS)}"),
            )
        after = ""
        while True:
            rows = self._store.scan(tier, after=after, limit=PAGE_ROWS)
            if not rows:
                break
            yield pb.BackupRowsPage(
                node_id=self._node_id, rows=[pb.BackupRow(key=k, value=v) for k, v in rows]
            )
            after = rows[-1][0]
        after_id = 0
        while True:
            hints = self._store.hints_in(tier, after_id=after_id, limit=PAGE_ROWS)
            if not hints:
                break
            yield pb.BackupRowsPage(
                node_id=self._node_id,
                rows=[pb.BackupRow(key=h.key, value=h.value) for h in hints],
            )
            after_id = hints[-1].id
        yield pb.BackupRowsPage(node_id=self._node_id, done=True)

    def _archive_pages(self) -> Iterator[pb.BackupRowsPage]:
        """The retention archives (``node/tiers/retention.py``): content-named files,
        the same on every owner, as (file name, bytes), a few MiB a page."""
        try:
            names = sorted(n for n in os.listdir(self._archive_dir) if not n.startswith("."))
        except FileNotFoundError:
            return
        rows: list[pb.BackupRow] = []
        size = 0
        for name in names:
            try:
                with open(os.path.join(self._archive_dir, name), "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                continue
            rows.append(pb.BackupRow(key=name, value=data))
            size += len(data)
            if size >= PIECE_BYTES:
                yield pb.BackupRowsPage(node_id=self._node_id, rows=rows)
                rows, size = [], 0
        if rows:
            yield pb.BackupRowsPage(node_id=self._node_id, rows=rows)


def _piece(revision: int, keys: int, data: bytes, first: bool) -> pb.BackupSystemPiece:
    if first:
        return pb.BackupSystemPiece(revision=revision, keys=keys, data=data)
    return pb.BackupSystemPiece(data=data)
