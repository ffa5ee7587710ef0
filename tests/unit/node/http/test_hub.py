"""The shared system-tier watch (node/http/hub.py) over the in-memory backend:
every change after a cursor exactly once and in order, past cursors caught up from
history, bounded memory, and the compacted case."""

from __future__ import annotations

import asyncio
import json

import pytest

from consensus.errors import CompactedError
from consensus.memory import MemorySystem
from consensus.statemachine import PutOp, Txn
from node.http.hub import Hub, Subscription


async def put(system: MemorySystem, *pairs: tuple[str, str]) -> int:
    ops = tuple(PutOp(k, json.dumps(v).encode()) for k, v in pairs)
    return (await system.txn(Txn(success=ops), 1.0)).revision


async def drain(sub: Subscription, until: int) -> list[tuple[int, list[str]]]:
    got = []
    while True:
        change = await sub.next(1.0)
        assert change is not None, f"stalled before revision {until}"
        revision, data = change
        got.append((revision, [e["key"] for e in json.loads(data)["events"]]))
        if revision >= until:
            return got


async def test_subscribers_see_every_matching_change_once_in_order() -> None:
    system = MemorySystem()
    hub = Hub(system, 1.0)
    await put(system, ("a/0", 0))
    subs = [Subscription(hub, "a/", True, 1) for _ in range(50)]
    other = Subscription(hub, "b/1", False, 1)
    assert await subs[0].next(0.05) is None  # nothing new yet: a timeout, not an error
    last = 0
    for i in range(1, 6):
        await put(system, (f"a/{i}", i), ("b/1", i))
        last = await put(system, ("c/x", i))  # matches no one
    expected = [(2 * i, [f"a/{i}"]) for i in range(1, 6)]
    for sub in subs:
        assert await drain(sub, 10) == expected
    assert [r for r, _ in await drain(other, 10)] == [2, 4, 6, 8, 10]
    assert last == 11
    # One encoding per filter and batch, however many subscribers share it.
    ring = hub.after(0)
    assert {len(b.encoded) for b in ring if b.revision % 2 == 0} == {2}
    await hub.close()


async def test_a_cursor_in_the_past_catches_up_from_history_then_follows() -> None:
    system = MemorySystem()
    for i in range(10):
        await put(system, (f"k{i}", i))
    hub = Hub(system, 1.0)
    live = Subscription(hub, "", True, 10)
    assert await live.next(0.01) is None  # the hub starts at revision 10
    old = Subscription(hub, "k", True, 3)  # older than the ring: read from history
    await put(system, ("k10", 10))
    got = await drain(old, 11)
    assert [r for r, _ in got] == list(range(4, 12))
    await hub.close()


async def test_the_ring_is_bounded_and_a_lost_cursor_is_compacted() -> None:
    system = MemorySystem(history=20)
    hub = Hub(system, 1.0, max_batches=8)
    slow = Subscription(hub, "", True, 0)
    fast = Subscription(hub, "", True, 0)
    await hub.ensure_running()
    for i in range(60):
        await put(system, ("k", i))
        assert await fast.next(1.0) is not None
    assert len(hub.after(0)) == 8 and hub.floor == 52
    with pytest.raises(CompactedError):
        await slow.next(1.0)  # behind the ring, and the history kept only 20
    await hub.close()


async def test_waiters_timing_out_do_not_cancel_the_shared_wake() -> None:
    system = MemorySystem()
    hub = Hub(system, 1.0)
    a, b = Subscription(hub, "", True, 0), Subscription(hub, "", True, 0)
    assert await a.next(0.01) is None  # a gives up waiting...
    waiting = asyncio.create_task(b.next(2.0))  # ...while b waits on
    await asyncio.sleep(0.01)
    await put(system, ("x", 1))
    assert (await waiting) is not None
    await hub.close()
