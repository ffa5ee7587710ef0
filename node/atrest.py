"""Encryption at rest on a node: the keyring its files are under, rotation, and the
background re-seal (docs/security.md, "Encryption at rest").

The storage layers do the encrypting (``consensus/atrest.py``; the Raft journal, its
term/vote file and snapshot in ``consensus/raft``; the tier store in
``node/replication/store.py``). This keeps the node's view of it: it starts a re-seal
when the store holds values under another key than the primary (a restart after the
operator put a new key first, or encryption just turned on), and ``rotate`` reads the
keyring file again, refuses a keyring that would strand data, switches every layer to
it and re-seals in the background.
"""

from __future__ import annotations

import asyncio
import logging
import os

from consensus.atrest import Keyring, KeyringError
from consensus.raft.backend import RaftBackend, snapshot_key
from node.config import ConfigError, NodeConfig
from node.pb import tadpole_pb2 as pb
from node.replication.store import TierStore

__all__ = ["AtRest", "RotateError"]

log = logging.getLogger(__name__)


class RotateError(Exception):
    """Rotation is not possible as things stand (the message says why); nothing changed."""


class AtRest:
    def __init__(
        self,
        config: NodeConfig,
        keyring: Keyring | None,
        store: TierStore,
        raft: RaftBackend | None,
    ) -> None:
        self._config = config
        self.keyring = keyring
        self._store = store
        self._raft = raft
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self.resealed = 0
        self.last_error = ""

    def start(self) -> None:
        """From the event loop: re-seal what the store holds under another key."""
        if self.keyring is not None:
            self._task = asyncio.get_running_loop().create_task(self._reseal(check_first=True))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _stale(self) -> bool:
        want = None if self.keyring is None else self.keyring.primary.fingerprint
        return any(fp != want and n for fp, n in self._store.key_usage().items())

    async def rotate(self) -> None:
        """Read the keyring again and make its first key the one everything is under.
        RotateError (nothing changed) if encryption at rest is off, the keyring is bad,
        or it lacks a key that data is still under."""
        try:
            keyring = self._config.keyring()
        except ConfigError as exc:
            raise RotateError(str(exc)) from exc
        if keyring is None:
            raise RotateError(
                f"encryption at rest is off on node {self._config.node_id} (no"
                " encryption_key_file): there is no key to rotate to"
            )
        if self._raft is not None:
            path = os.path.join(self._config.data_path, "raft.snapshot")
            fp = snapshot_key(path) if os.path.exists(path) else None
            if fp is not None and not keyring.has(fp):
                raise RotateError(
                    f"{keyring.source} lacks key {fp.hex()}, which {path} is under; keep it"
                    " until the rotation has finished"
                )
        try:
            await asyncio.to_thread(self._store.set_keyring, keyring)  # counts: a scan
        except KeyringError as exc:
            raise RotateError(str(exc)) from exc
        self.keyring = keyring
        if self._raft is not None:
            self._raft.rekey(keyring)
        log.info("encryption at rest: rotating to %s", keyring.primary.id)
        self._spawn()

    def _spawn(self) -> None:
        if self._task is not None and not self._task.done():
            self._again = True  # the running pass may have started under the old key
            return
        self._task = asyncio.get_running_loop().create_task(self._reseal(), name="reseal")

    async def _reseal(self, *, check_first: bool = False) -> None:
        try:
            if check_first:
                if not await asyncio.to_thread(self._stale):
                    return
                assert self.keyring is not None
                log.info("store holds values not under %s: re-sealing", self.keyring.primary.id)
            while True:
                self._again = False
                done = await self._store.reseal()
                self.resealed += done
                if done:
                    log.info("encryption at rest: re-sealed %d values", done)
                if not self._again:
                    break
            self.last_error = ""
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("encryption at rest: re-sealing the store failed")
            self.last_error = str(exc)

    @property
    def resealing(self) -> bool:
        return self._task is not None and not self._task.done()

    def _name(self, fp: bytes | None) -> str:
        if fp is None:
            return ""
        return fp.hex() if self.keyring is None else self.keyring.describe(fp)

    def status(self) -> pb.KeysStatusResponse:
        keyring = self.keyring
        journal = snapshot = "-"
        if self._raft is not None:
            if self._raft.journal is not None:
                journal = self._name(self._raft.journal.key_fingerprint)
            path = os.path.join(self._config.data_path, "raft.snapshot")
            try:
                snapshot = self._name(snapshot_key(path))
            except FileNotFoundError:
                snapshot = "-"
        return pb.KeysStatusResponse(
            node_id=self._config.node_id,
            enabled=keyring is not None,
            primary="" if keyring is None else keyring.primary.id,
            keyring=[] if keyring is None else [k.id for k in keyring.keys],
            journal=journal,
            snapshot=snapshot,
            store=[
                pb.KeyCount(key=self._name(fp), values=n)
                for fp, n in sorted(self._store.key_usage().items(), key=lambda i: i[0] or b"")
            ],
            resealing=self.resealing or self._stale_raft(),
            last_error=self.last_error or (self._raft.reseal_error if self._raft else ""),
            resealed=self.resealed,
        )

    def _stale_raft(self) -> bool:
        if self._raft is None or self.keyring is None:
            return False
        want = self.keyring.primary.fingerprint
        journal = self._raft.journal
        path = os.path.join(self._config.data_path, "raft.snapshot")
        try:
            snap = snapshot_key(path)
        except FileNotFoundError:
            snap = want
        return (journal is not None and journal.key_fingerprint != want) or snap != want
