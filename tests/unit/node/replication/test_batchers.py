"""MergeBatcher and ForwardBatcher: what is bound for one peer shares messages
(MergeMany, ForwardMany), one in flight; each submitter gets its own outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from node.replication.batcher import ForwardBatcher, MergeBatcher
from node.replication.messages import ForwardGroup, Merge, MergeMany
from node.tiers.ops import Op


class Peer:
    """Answers each MergeMany when the test releases it: durable unless the key says
    ``refused``; ``down`` makes a whole message fail."""

    def __init__(self) -> None:
        self.sent: list[list[str]] = []
        self.release = asyncio.Event()
        self.down = False

    async def send(self, batch: MergeMany) -> Sequence[bool]:
        self.sent.append([m.key for m in batch.items])
        await self.release.wait()
        if self.down:
            return ()
        return [m.key != "refused" for m in batch.items]


async def turns() -> None:
    """Let every runnable task run up to its next wait."""
    for _ in range(5):
        await asyncio.sleep(0)


def merges(*keys: str) -> list[Merge]:
    return [Merge("population", k, b"") for k in keys]


async def test_concurrent_writes_share_a_message_and_keep_their_own_outcomes() -> None:
    peer = Peer()
    batcher = MergeBatcher(peer.send)
    first = asyncio.create_task(batcher.submit_many(merges("a", "b")))
    await turns()  # the first goes at once, alone
    assert peer.sent == [["a", "b"]]
    second = asyncio.create_task(batcher.submit_many(merges("c", "refused")))
    lone = asyncio.create_task(batcher.submit(Merge("population", "d", b"")))
    third = asyncio.create_task(batcher.submit_many(merges("e")))
    await turns()
    assert peer.sent == [["a", "b"]]  # they wait for the one in flight
    peer.release.set()
    assert await first == [True, True]
    assert await second == [True, False]
    assert await lone is True
    assert await third == [True]
    assert peer.sent == [["a", "b"], ["c", "refused", "d", "e"]]


async def test_a_submission_larger_than_a_message_spans_several() -> None:
    peer = Peer()
    peer.release.set()
    batcher = MergeBatcher(peer.send)
    batcher.MAX_ITEMS = 3
    keys = [f"k{i}" for i in range(7)] + ["refused"]
    assert await batcher.submit_many(merges(*keys)) == [True] * 7 + [False]
    assert [len(m) for m in peer.sent] == [3, 3, 2]
    assert await batcher.submit_many([]) == []


async def test_a_message_holds_at_most_max_bytes_of_values() -> None:
    # A peer takes messages of at most 64 MiB; values go up to 1 MiB each by default,
    # and 256 of them in one MergeMany would be refused whole, again and again.
    peer = Peer()
    batcher = MergeBatcher(peer.send)
    mib = 1 << 20

    def big(key: str, size: int) -> Merge:
        return Merge("population", key, b"x" * size)

    first = asyncio.create_task(batcher.submit(big("a", 1)))
    await turns()
    rest = [
        asyncio.create_task(batcher.submit(big(k, n)))
        for k, n in (("b", 3 * mib), ("c", 3 * mib), ("d", 2 * mib), ("e", 1), ("f", 20 * mib))
    ]
    await turns()
    peer.release.set()
    assert await first is True and all([await r for r in rest])
    # 3 + 3 + 2 MiB fit in 8 MiB, one byte more does not; one larger than the bound
    # goes alone rather than never.
    assert peer.sent == [["a"], ["b", "c", "d"], ["e"], ["f"]]
    assert mib * 8 == MergeBatcher.MAX_BYTES


async def test_an_unreachable_peer_fails_every_merge_of_the_message() -> None:
    peer = Peer()
    peer.down = True
    peer.release.set()
    batcher = MergeBatcher(peer.send)
    results = await asyncio.gather(
        batcher.submit_many(merges("a", "b")), batcher.submit(Merge("population", "c", b""))
    )
    assert results == [[False, False], False]


async def test_a_failed_send_fails_what_waits_and_the_next_write_goes_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def send(batch: MergeMany) -> Sequence[bool]:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0)
            raise RuntimeError("transport bug")
        return [True] * len(batch.items)

    batcher = MergeBatcher(send)
    first = asyncio.create_task(batcher.submit_many(merges("a")))
    await asyncio.sleep(0)
    queued = asyncio.create_task(batcher.submit_many(merges("b", "c")))
    await asyncio.wait({first, queued})
    assert first.result() == [False]  # its message failed: not durable there
    assert queued.result() == [False, False]  # never sent
    assert await batcher.submit_many(merges("d")) == [True]
    assert "merge batch of 1 failed" in caplog.text


def group(key: str) -> ForwardGroup:
    return ForwardGroup("population", key, ((Op("counter_add", amount=1), f"id-{key}"),))


async def test_forwards_travel_together_under_the_earliest_deadline() -> None:
    """Each group keeps its write's deadline: a message carries the earliest of its
    groups' (each applied by its own or not at all), and groups without one go in a
    message without one."""
    sent: list[tuple[list[str], int]] = []
    release = asyncio.Event()

    async def send(groups: tuple[ForwardGroup, ...], due: int) -> list[object]:
        sent.append(([g.key for g in groups], due))
        await release.wait()
        return [f"applied {g.key}" if g.key != "bad" else ValueError(g.key) for g in groups]

    batcher = ForwardBatcher(send)
    first = asyncio.create_task(batcher.submit(group("a"), 50))
    await turns()
    assert sent == [(["a"], 50)]  # a lone forward goes at once
    later = [
        asyncio.create_task(batcher.submit(group(k), due))
        for k, due in (("b", 40), ("c", 0), ("bad", 30), ("d", 0))
    ]
    await turns()
    assert len(sent) == 1  # they wait for the one in flight
    release.set()
    assert await first == "applied a"
    outcomes = [await t for t in later]
    assert outcomes[:2] == ["applied b", "applied c"] and outcomes[3] == "applied d"
    assert isinstance(outcomes[2], ValueError)  # that group's failure is its own
    assert sorted(sent[1:]) == [(["b", "bad"], 30), (["c", "d"], 0)]


async def test_a_forward_batch_that_fails_below_the_transport_answers_every_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def send(groups: tuple[ForwardGroup, ...], due: int) -> list[object]:
        return ["only one"]  # fewer outcomes than groups: a bug, not an answer

    batcher = ForwardBatcher(send)
    outcomes = await asyncio.gather(batcher.submit(group("a"), 0), batcher.submit(group("b"), 0))
    assert all(isinstance(o, RuntimeError) for o in outcomes), outcomes
    assert "forward batch of 2 failed" in caplog.text


async def test_a_forward_whose_caller_gave_up_while_it_waited_is_not_sent() -> None:
    sent: list[list[str]] = []
    release = asyncio.Event()

    async def send(groups: tuple[ForwardGroup, ...], due: int) -> list[object]:
        sent.append([g.key for g in groups])
        await release.wait()
        return ["applied"] * len(groups)

    batcher = ForwardBatcher(send)
    first = asyncio.create_task(batcher.submit(group("a"), 0))
    await turns()
    gave_up = asyncio.create_task(batcher.submit(group("b"), 0))
    kept = asyncio.create_task(batcher.submit(group("c"), 0))
    await turns()
    gave_up.cancel()
    release.set()
    assert await first == "applied" and await kept == "applied"
    assert sent == [["a"], ["c"]]
