"""Watches on a real (single-node, in-process) Raft system tier."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from consensus.raft.backend import RaftConfig
from consensus.raft.bridge import RaftSystem
from consensus.statemachine import PutOp, Txn

pytestmark = pytest.mark.integration


async def test_one_watcher_going_away_does_not_end_the_others(tmp_path: Path) -> None:
    system = RaftSystem("n1", [], str(tmp_path), sender=lambda *_: None, config=RaftConfig())
    await system.start()
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while system.info().role != "leader":
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)

        async def first(prefix: str) -> list[str]:
            async for batch in system.watch(prefix, prefix=True, start_revision=0):
                return [e.kv.key for e in batch]
            return []

        leaving = asyncio.create_task(first("a"))
        staying = asyncio.create_task(first("b"))
        await asyncio.sleep(0.1)  # both wait for the next apply
        leaving.cancel()  # a client hangs up
        with contextlib.suppress(asyncio.CancelledError):
            await leaving
        await system.txn(Txn(success=(PutOp("b1", b"v"),)), 5.0)
        assert await asyncio.wait_for(staying, 5) == ["b1"]
    finally:
        await system.stop()
