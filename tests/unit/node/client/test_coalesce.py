"""Puts coalesced into KV.PutMany (node/client/coalesce.py and both flavours'
``Coalescer``), against stand-in stub methods that hold each call until the test lets
it answer: which puts travel together, and that each caller gets exactly the answer
(or error) a lone Put would have given it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from typing import Any

import grpc
import pytest

from node.client import _async_io, _sync_io, coalesce
from node.client import messages as wire
from node.client.errors import Unavailable, from_rpc_error
from node.pb import tadpole_pb2 as pb
from node.rbac import AUTH_PREFIX


def put(key: str, value: bytes = b"v") -> Any:
    return pb.PutRequest(key=key, value=value, request_id=f"id-{key}")


def answer(request: Any, revision: int) -> Any:
    return pb.PutResponse(
        header=pb.ResponseHeader(revision=revision, member_id="n1", leader_id="n1"),
        kv=pb.KeyValue(key=request.key, value=request.value, mod_revision=revision),
    )


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._code.name

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()


class Node:
    """Stand-in stub methods for one endpoint, as async callables: each call is
    recorded and waits until :meth:`release` (or answers at once when ``hold`` is
    off); ``refuse`` makes PutMany fail whole with that code."""

    def __init__(self, hold: bool = True, refuse: grpc.StatusCode | None = None) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.hold = hold
        self.refuse = refuse
        self.revision = 0
        self._gates: list[asyncio.Event] = []

    def _revision(self) -> int:
        self.revision += 1
        return self.revision

    async def put(self, request: Any, *, timeout: float, metadata: Any = None) -> Any:
        self.calls.append(("Put", [request.key]))
        await self._wait()
        if request.key.startswith("bad"):
            raise FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT)
        return answer(request, self._revision())

    async def put_many(self, request: Any, *, timeout: float, metadata: Any = None) -> Any:
        self.calls.append(("PutMany", [p.key for p in request.puts]))
        await self._wait()
        if self.refuse is not None:
            raise FakeRpcError(self.refuse)
        results = []
        for p in request.puts:
            if p.key.startswith("bad"):
                results.append(
                    pb.PutManyResult(
                        code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
                        message=f"{p.key}: bad key",
                        trailers=[pb.Trailer(key="tadpole-outcome", value="not-applied")],
                    )
                )
            else:
                results.append(pb.PutManyResult(put=answer(p, self._revision())))
        return pb.PutManyResponse(results=results)

    async def _wait(self) -> None:
        if self.hold:
            gate = asyncio.Event()
            self._gates.append(gate)
            await gate.wait()

    def release(self) -> None:
        gates, self._gates = self._gates, []
        for gate in gates:
            gate.set()

    def coalescer(self, in_flight: int = 1) -> _async_io.Coalescer:
        """The asyncio client's coalescer of puts to this node."""
        return _async_io.Coalescer(
            self.put, self.put_many, batcher=coalesce.Batcher(max_in_flight=in_flight)
        )


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


# -- the pure queue


def test_batcher_takes_everything_waiting_up_to_its_limits() -> None:
    b = coalesce.Batcher(max_in_flight=1, max_items=3, max_bytes=10_000)
    items = [coalesce.Pending(put(f"k{i}"), 1.0, None) for i in range(5)]
    for item in items:
        b.add(item)
    assert b.next_batch(0.0) == (items[:3], [])
    assert b.next_batch(0.0) == ([], [])  # the one slot is taken
    b.finished()
    assert b.next_batch(0.0) == (items[3:], [])
    b.finished()
    assert b.next_batch(0.0) == ([], []) and b.in_flight == 0


def test_batcher_bytes_bound_a_batch_but_never_strand_a_large_put() -> None:
    big = coalesce.Pending(put("big", b"x" * 500), 1.0, None)
    small = [coalesce.Pending(put(f"s{i}"), 1.0, None) for i in range(3)]
    b = coalesce.Batcher(max_in_flight=2, max_bytes=100)
    b.add(big)
    for item in small:
        b.add(item)
    assert b.next_batch(0.0)[0] == [big]  # alone, though over the bound
    assert b.next_batch(0.0)[0] == small


def test_batcher_withdraws_only_what_has_not_left() -> None:
    b = coalesce.Batcher(max_in_flight=1)
    first, second = coalesce.Pending(put("a"), 1.0, None), coalesce.Pending(put("b"), 1.0, None)
    b.add(first)
    b.add(second)
    assert b.next_batch(0.0)[0] == [first, second]
    assert not b.withdraw(first)
    third = coalesce.Pending(put("c"), 1.0, None)
    b.add(third)
    assert b.withdraw(third) and len(b) == 0


def test_a_call_past_its_deadline_never_leaves_the_queue_in_a_batch() -> None:
    b = coalesce.Batcher(max_in_flight=1)
    late = coalesce.Pending(put("late"), 5.0, None)
    fresh = coalesce.Pending(put("fresh"), 20.0, None)
    b.add(late)
    b.add(fresh)
    batch, expired = b.next_batch(10.0)
    assert (batch, expired) == ([fresh], [late])
    assert b.withdraw(late)  # never sent: its caller reports it not applied
    assert not b.withdraw(fresh)


def test_a_node_without_put_many_is_sent_lone_calls_for_a_while() -> None:
    b = coalesce.Batcher(max_in_flight=1)
    for key in "abc":
        b.add(coalesce.Pending(put(key), 1.0, None))
    assert b.batching(100.0) and len(b.next_batch(0.0)[0]) == 3
    b.finished(FakeRpcError(grpc.StatusCode.UNIMPLEMENTED), now=100.0)
    assert not b.batching(100.0 + coalesce.LONE_FOR_S - 1)
    assert b.batching(100.0 + coalesce.LONE_FOR_S)  # asked again: it may be upgraded


def test_item_error_is_what_a_lone_put_would_raise() -> None:
    result = pb.PutManyResult(
        code=grpc.StatusCode.UNAVAILABLE.value[0],
        message="no leader",
        trailers=[pb.Trailer(key="tadpole-outcome", value="not-applied")],
    )
    exc = coalesce.item_error(result)
    assert exc.code() is grpc.StatusCode.UNAVAILABLE and exc.details() == "no leader"
    translated = from_rpc_error(exc, write=True)
    assert type(translated).__name__ == "Unavailable" and "no leader" in str(translated)
    late = from_rpc_error(coalesce.withdrawn_error(), write=True)
    assert type(late).__name__ == "Unavailable"  # not applied: tried elsewhere


def test_the_client_knows_the_policy_prefix() -> None:
    assert wire.POLICY_PREFIX == AUTH_PREFIX
    assert not wire.coalescable(put(AUTH_PREFIX + "policy"))
    assert wire.coalescable(pb.PutRequest(key=AUTH_PREFIX + "x", tier="agent"))
    assert wire.coalescable(put("/app/x"))


# -- the asyncio flavour


def test_a_lone_put_leaves_at_once_and_puts_behind_it_go_together() -> None:
    async def run() -> None:
        node = Node()
        c = node.coalescer()
        first = asyncio.ensure_future(c(put("a"), timeout=5))
        await settle()
        assert node.calls == [("Put", ["a"])]
        rest = [asyncio.ensure_future(c(put(k), timeout=5)) for k in "bcd"]
        await settle()
        assert len(node.calls) == 1  # queued behind the call in flight
        node.release()
        assert (await first).kv.key == "a"
        await settle()
        assert node.calls[1] == ("PutMany", ["b", "c", "d"])
        node.release()
        answers = await asyncio.gather(*rest)
        assert [a.kv.key for a in answers] == ["b", "c", "d"]
        assert [a.header.revision for a in answers] == [2, 3, 4]

    asyncio.run(run())


def test_callers_arriving_in_one_turn_go_together_not_the_first_alone() -> None:
    # Callers an answer wakes resume in the same turn of the loop and call again at
    # once. Sent on arrival, the first of them took a free slot alone and the rest
    # queued behind it; at 64 callers two thirds of the calls carried one get.
    async def run() -> None:
        node = Node()
        c = node.coalescer(in_flight=2)

        async def caller(key: str) -> int:
            first = await c(put(key), timeout=5)
            again = await c(put(key + "2"), timeout=5)  # at once, as a load loop does
            return int(first.header.revision) + int(again.header.revision)

        callers = [asyncio.ensure_future(caller(k)) for k in "abcdef"]
        await settle()
        assert node.calls == [("PutMany", list("abcdef"))]  # one call, not a + bcdef
        node.release()
        await settle()
        assert node.calls[1:] == [("PutMany", [k + "2" for k in "abcdef"])]
        node.release()
        assert len(await asyncio.gather(*callers)) == 6

    asyncio.run(run())


def test_each_put_of_a_batch_gets_its_own_error() -> None:
    async def run() -> None:
        node = Node(hold=False)
        c = node.coalescer()
        calls = [c(put(k), timeout=5) for k in ("a", "b", "bad1", "c")]
        out = await asyncio.gather(*calls, return_exceptions=True)
        assert node.calls == [("PutMany", ["a", "b", "bad1", "c"])]  # called in one turn
        assert [o.kv.key for o in out if not isinstance(o, BaseException)] == ["a", "b", "c"]
        error = out[2]
        assert isinstance(error, coalesce.BatchedRpcError)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert error.trailing_metadata() == (("tadpole-outcome", "not-applied"),)

    asyncio.run(run())


@pytest.mark.parametrize("code", [grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNIMPLEMENTED])
def test_a_batch_refused_whole_is_resent_put_by_put(code: grpc.StatusCode) -> None:
    async def run_checked() -> None:
        node = Node(hold=False, refuse=code)
        c = node.coalescer()
        out = await asyncio.gather(
            *(c(put(k), timeout=5) for k in ("a", "b", "bad", "c")), return_exceptions=True
        )
        assert node.calls[:1] == [("PutMany", ["a", "b", "bad", "c"])]
        assert sorted(node.calls[1:]) == [
            ("Put", ["a"]), ("Put", ["b"]), ("Put", ["bad"]), ("Put", ["c"])
        ]  # fmt: skip
        assert isinstance(out[2], FakeRpcError)
        assert out[2].code() is grpc.StatusCode.INVALID_ARGUMENT
        assert [o.kv.key for o in out if not isinstance(o, BaseException)] == ["a", "b", "c"]

    asyncio.run(run_checked())


def test_a_call_that_fails_whole_fails_each_of_its_puts() -> None:
    async def run() -> None:
        node = Node(hold=False, refuse=grpc.StatusCode.UNAVAILABLE)
        c = node.coalescer()
        out = await asyncio.gather(*(c(put(k), timeout=5) for k in "abc"), return_exceptions=True)
        assert [o.code() for o in out] == [grpc.StatusCode.UNAVAILABLE] * 3
        assert node.calls == [("PutMany", ["a", "b", "c"])]  # not resent: retry rules decide

    asyncio.run(run())


def test_a_put_still_queued_at_its_deadline_is_withdrawn_and_never_sent() -> None:
    async def run() -> None:
        node = Node()
        c = node.coalescer()
        first = asyncio.ensure_future(c(put("a"), timeout=5))
        await settle()
        with pytest.raises(coalesce.BatchedRpcError) as caught:
            await c(put("late"), timeout=0.05)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        assert ("tadpole-outcome", "not-applied") in caught.value.trailing_metadata()
        node.release()
        await first
        await settle()
        assert node.calls == [("Put", ["a"])]  # "late" never left

    asyncio.run(run())


def test_a_put_sent_but_unanswered_at_its_deadline_has_an_unknown_outcome() -> None:
    async def run() -> None:
        node = Node()
        c = node.coalescer()
        with pytest.raises(coalesce.BatchedRpcError) as caught:
            await c(put("a"), timeout=0.05)
        assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert caught.value.trailing_metadata() == ()  # no outcome: it may land
        assert type(from_rpc_error(caught.value, write=True)).__name__ == "WriteTimeout"
        node.release()
        await settle()

    asyncio.run(run())


# -- the blocking flavour


class SyncMethod:
    """A blocking stand-in stub method: ``method(request, ...)`` and ``.future()``,
    whose call runs on a thread of its own (as gRPC's would)."""

    def __init__(self, node: SyncNode, fn: Any) -> None:
        self.node, self.fn = node, fn

    def __call__(self, request: Any, *, timeout: float, metadata: Any = None) -> Any:
        return self.fn(request)

    def future(self, request: Any, *, timeout: float, metadata: Any = None) -> Any:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(self.fn(request))
            except BaseException as exc:
                future.set_exception(exc)

        threading.Thread(target=run, daemon=True).start()
        return future


class SyncNode:
    """Blocking stand-in stub methods; ``gate`` holds every call until set."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)
        self.revision = 0
        self._lock = threading.Lock()
        self.put = SyncMethod(self, self._put)
        self.put_many = SyncMethod(self, self._put_many)

    def _answer(self, request: Any) -> Any:
        with self._lock:
            self.revision += 1
            return answer(request, self.revision)

    def _put(self, request: Any) -> Any:
        self.calls.append(("Put", [request.key]))
        self.entered.release()
        assert self.gate.wait(5)
        return self._answer(request)

    def _put_many(self, request: Any) -> Any:
        self.calls.append(("PutMany", [p.key for p in request.puts]))
        self.entered.release()
        assert self.gate.wait(5)
        return pb.PutManyResponse(
            results=[pb.PutManyResult(put=self._answer(p)) for p in request.puts]
        )


def test_blocking_callers_share_a_call_and_each_gets_its_answer() -> None:
    node = SyncNode()
    c = _sync_io.Coalescer(node.put, node.put_many, batcher=coalesce.Batcher(max_in_flight=1))
    answers: dict[str, Any] = {}

    def call(key: str) -> None:
        answers[key] = c(put(key), timeout=5)

    first = threading.Thread(target=call, args=("a",))
    first.start()
    assert node.entered.acquire(timeout=5)  # "a" is in flight
    rest = [threading.Thread(target=call, args=(k,)) for k in "bcd"]
    for t in rest:
        t.start()
    deadline = time.monotonic() + 5
    while len(c._batcher) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    node.gate.set()
    for t in [first, *rest]:
        t.join(5)
    assert node.calls[0] == ("Put", ["a"])
    assert node.calls[1][0] == "PutMany" and sorted(node.calls[1][1]) == ["b", "c", "d"]
    assert len(node.calls) == 2
    assert {k: a.kv.key for k, a in answers.items()} == {k: k for k in "abcd"}


def test_a_blocking_put_queued_past_its_deadline_is_withdrawn() -> None:
    node = SyncNode()
    c = _sync_io.Coalescer(node.put, node.put_many, batcher=coalesce.Batcher(max_in_flight=1))
    first = threading.Thread(target=lambda: c(put("a"), timeout=5))
    first.start()
    assert node.entered.acquire(timeout=5)
    with pytest.raises(coalesce.BatchedRpcError) as caught:
        c(put("late"), timeout=0.05)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert ("tadpole-outcome", "not-applied") in caught.value.trailing_metadata()
    node.gate.set()
    first.join(5)
    assert node.calls == [("Put", ["a"])]


def test_a_blocking_caller_gives_up_at_its_own_deadline_not_its_batchs() -> None:
    """A batch's call lasts as long as its latest deadline; each caller still returns
    at its own (outcome unknown: it was sent)."""
    node = SyncNode()
    c = _sync_io.Coalescer(node.put, node.put_many, batcher=coalesce.Batcher(max_in_flight=1))
    started = time.monotonic()
    with pytest.raises(coalesce.BatchedRpcError) as caught:
        c(put("short"), timeout=0.2)
    took = time.monotonic() - started
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert caught.value.trailing_metadata() == ()  # it was sent: outcome unknown
    assert took < 2, took
    node.gate.set()


def test_gets_travel_as_get_many_and_each_gets_its_answer() -> None:
    calls: list[tuple[str, list[str]]] = []

    async def run() -> None:
        held = asyncio.Event()

        async def get(request: Any, *, timeout: float, metadata: Any = None) -> Any:
            calls.append(("Get", [request.key]))
            await held.wait()
            return pb.GetResponse(found=True, kv=pb.KeyValue(key=request.key))

        async def get_many(request: Any, *, timeout: float, metadata: Any = None) -> Any:
            calls.append(("GetMany", [g.key for g in request.gets]))
            return pb.GetManyResponse(
                results=[
                    pb.GetManyResult(get=pb.GetResponse(found=True, kv=pb.KeyValue(key=g.key)))
                    if g.key != "nope"
                    else pb.GetManyResult(code=grpc.StatusCode.INVALID_ARGUMENT.value[0])
                    for g in request.gets
                ]
            )

        c = _async_io.Coalescer(
            get, get_many, coalesce.GETS, batcher=coalesce.Batcher(max_in_flight=1)
        )
        first = asyncio.ensure_future(c(pb.GetRequest(key="a"), timeout=5))
        await settle()
        rest = asyncio.gather(
            *(c(pb.GetRequest(key=k), timeout=5) for k in ("b", "nope", "c")),
            return_exceptions=True,
        )
        await settle()
        held.set()
        assert (await first).kv.key == "a"
        b, nope, c_ = await rest
        assert calls == [("Get", ["a"]), ("GetMany", ["b", "nope", "c"])]
        assert (b.kv.key, c_.kv.key) == ("b", "c")
        assert nope.code() is grpc.StatusCode.INVALID_ARGUMENT

    asyncio.run(run())


def test_a_cancelled_caller_sends_nothing_later() -> None:
    async def run() -> None:
        node = Node()
        c = node.coalescer()
        first = asyncio.ensure_future(c(put("a"), timeout=5))
        await settle()
        gone = asyncio.ensure_future(c(put("gone"), timeout=5))
        kept = asyncio.ensure_future(c(put("kept"), timeout=5))
        await settle()
        gone.cancel()
        await settle()
        node.release()
        await first
        await settle()
        node.release()
        assert (await kept).kv.key == "kept"
        assert node.calls == [("Put", ["a"]), ("Put", ["kept"])]

    asyncio.run(run())


def test_after_unimplemented_calls_go_straight_until_asked_again() -> None:
    async def run() -> None:
        node = Node(hold=False, refuse=grpc.StatusCode.UNIMPLEMENTED)
        batcher = coalesce.Batcher(max_in_flight=1)
        c = _async_io.Coalescer(node.put, node.put_many, batcher=batcher)
        await asyncio.gather(*(c(put(k), timeout=5) for k in "abc"))
        assert not batcher.batching(time.monotonic())
        node.calls.clear()
        node.hold = True  # every call held: queued ones would wait behind one in flight
        straight = [asyncio.ensure_future(c(put(k), timeout=5)) for k in "xyz"]
        await settle()
        assert node.calls == [("Put", ["x"]), ("Put", ["y"]), ("Put", ["z"])]
        node.release()
        await asyncio.gather(*straight)
        assert batcher.batching(time.monotonic() + coalesce.LONE_FOR_S)

    asyncio.run(run())


def test_a_get_left_unanswered_in_a_full_batch_is_sent_again_alone() -> None:
    async def run() -> None:
        calls: list[str] = []
        held = asyncio.Event()

        async def get(request: Any, *, timeout: float, metadata: Any = None) -> Any:
            calls.append(f"Get {request.key}")
            await held.wait()
            return pb.GetResponse(found=True, kv=pb.KeyValue(key=request.key))

        async def get_many(request: Any, *, timeout: float, metadata: Any = None) -> Any:
            calls.append("GetMany " + ",".join(g.key for g in request.gets))
            full = pb.GetManyResult(
                code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
                trailers=[pb.Trailer(key=coalesce.RESEND_ALONE_KEY, value="1")],
            )
            first = pb.GetManyResult(get=pb.GetResponse(found=True, kv=pb.KeyValue(key="b")))
            return pb.GetManyResponse(results=[first, full])

        c = _async_io.Coalescer(get, get_many, coalesce.GETS, batcher=coalesce.Batcher(1))
        a = asyncio.ensure_future(c(pb.GetRequest(key="a"), timeout=5))
        await settle()
        rest = asyncio.gather(*(c(pb.GetRequest(key=k), timeout=5) for k in "bc"))
        await settle()
        held.set()
        await a
        b, c_ = await rest
        assert (b.kv.key, c_.kv.key) == ("b", "c")
        assert calls == ["Get a", "GetMany b,c", "Get c"]

    asyncio.run(run())


def test_node_and_client_agree_on_the_resend_trailer() -> None:
    from node.api.status import RESEND_ALONE_KEY

    assert coalesce.RESEND_ALONE_KEY == RESEND_ALONE_KEY


def test_puts_asking_for_the_previous_value_go_alone() -> None:
    assert not wire.coalescable(pb.PutRequest(key="k", prev_kv=True))
    assert wire.coalescable(pb.GetRequest(key=AUTH_PREFIX + "policy"))


def test_a_closed_client_refuses_puts_as_it_refuses_everything() -> None:
    from node.client import AsyncClient, Client
    from tests.support.client_helpers import dead_endpoint

    async def run() -> None:
        client = AsyncClient([dead_endpoint()], timeout=0.5)
        with pytest.raises(Unavailable):  # nothing listens; this makes its coalescer
            await client.put("k", "v")
        await client.close()
        with pytest.raises(RuntimeError, match="client is closed"):
            await client.put("k", "v")

    asyncio.run(run())
    blocking = Client([dead_endpoint()], timeout=0.5)
    blocking.close()
    with pytest.raises(RuntimeError, match="client is closed"):
        blocking.put("k", "v")


# -- single tier updates (Tiers.UpdateEach)


def counter_add(key: str) -> Any:
    return pb.TierUpdateRequest(
        tier="population", key=key, counter_add=pb.CounterAdd(amount=1), request_id=key
    )


def test_counter_adds_travel_together_other_tier_updates_alone() -> None:
    # Each answer carries the key's value: a counter's is small, a set's, a log's or a
    # map's need not be, so many of them could outgrow a message.
    assert wire.coalescable(counter_add("k"))
    for op in (
        {"set_add": pb.SetElements(elements=["x"])},
        {"set_remove": pb.SetElements(elements=["x"])},
        {"register_set": pb.RegisterSet(value_json="1")},
        {"log_append": pb.LogAppend(entry_id="e", payload_json="{}")},
        {"map_set": pb.MapSet(field="f", value_json="1")},
    ):
        assert not wire.coalescable(pb.TierUpdateRequest(tier="population", key="k", **op))


def fence(due_ns: int) -> tuple[tuple[str, str], ...]:
    return (("authorization", "Bearer t"), (wire.DEADLINE_KEY, str(due_ns)))


def test_a_batch_of_fenced_writes_carries_its_earliest_deadline() -> None:
    # The owner applies a fenced write by the call's deadline or not at all. Sent with
    # a later caller's deadline, an earlier caller that gave up at its own (and waited
    # out its fence) could still see its update applied behind its back.
    seen: list[tuple[str, Any]] = []

    async def single(request: Any, *, timeout: float, metadata: Any = None) -> Any:
        seen.append(("Update", metadata))
        await gate.wait()
        return pb.TierUpdateResponse(member_id="n1")

    async def many(request: Any, *, timeout: float, metadata: Any = None) -> Any:
        seen.append(("UpdateEach", metadata))
        results = [
            pb.TierUpdateEachResult(update=pb.TierUpdateResponse(member_id="n1", duplicate=True))
            for _ in request.updates
        ]
        return pb.TierUpdateEachResponse(member_id="n1", results=results)

    async def run() -> None:
        c = _async_io.Coalescer(
            single, many, coalesce.TIER_UPDATES, coalesce.Batcher(max_in_flight=1)
        )
        first = asyncio.ensure_future(c(counter_add("a"), timeout=5, metadata=fence(500)))
        await settle()
        rest = [
            asyncio.ensure_future(c(counter_add(k), timeout=5, metadata=fence(due)))
            for k, due in (("b", 300), ("c", 100), ("d", 200))
        ]
        await settle()
        gate.set()
        await first
        answers = await asyncio.gather(*rest)
        assert all(a.duplicate for a in answers)  # each got its own result's answer
        assert seen == [("Update", fence(500)), ("UpdateEach", fence(100))]

    gate = asyncio.Event()
    asyncio.run(run())
    assert coalesce.PUTS.metadata(
        [coalesce.Pending(put(k), 0.0, None, fence(d)) for k, d in (("a", 9), ("b", 1))]
    ) == fence(9)  # unfenced kinds: any caller's (they are all the client's own)


def test_blocking_fenced_writes_carry_their_batchs_earliest_deadline() -> None:
    seen: list[Any] = []
    entered, gate = threading.Semaphore(0), threading.Event()

    class Future:
        def __init__(self, answer: Any) -> None:
            self._answer = answer

        def result(self) -> Any:
            return self._answer

        def add_done_callback(self, fn: Any) -> None:
            threading.Thread(target=lambda: (gate.wait(5), fn(self))).start()

    class Method:
        def __init__(self, name: str) -> None:
            self.name = name

        def future(self, request: Any, *, timeout: float, metadata: Any = None) -> Any:
            seen.append((self.name, metadata))
            entered.release()
            if self.name == "Update":
                return Future(pb.TierUpdateResponse(member_id="n1"))
            results = [pb.TierUpdateEachResult(update=pb.TierUpdateResponse(member_id="n1"))]
            return Future(pb.TierUpdateEachResponse(results=results * len(request.updates)))

    c = _sync_io.Coalescer(
        Method("Update"), Method("UpdateEach"), coalesce.TIER_UPDATES,
        coalesce.Batcher(max_in_flight=1),
    )  # fmt: skip
    calls = [("a", 500), ("b", 300), ("c", 100), ("d", 200)]
    threads = [
        threading.Thread(
            target=c, args=(counter_add(k),), kwargs={"timeout": 5, "metadata": fence(d)}
        )
        for k, d in calls
    ]
    threads[0].start()
    assert entered.acquire(timeout=5)  # "a" is in flight
    for t in threads[1:]:
        t.start()
    deadline = time.monotonic() + 5
    while len(c._batcher) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    gate.set()
    for t in threads:
        t.join(5)
    assert seen == [("Update", fence(500)), ("UpdateEach", fence(100))]
