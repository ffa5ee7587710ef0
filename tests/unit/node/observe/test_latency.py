"""Request latency histograms: bucket arithmetic and the interceptor's timing."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from node.observe.latency import BUCKETS, LatencyInterceptor, RequestLatency


def _samples(latency: RequestLatency) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    (family,) = latency.metrics()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}


def test_buckets_are_cumulative_with_a_sum_and_a_count() -> None:
    latency = RequestLatency()
    for seconds in (0.0004, 0.0005, 0.003, 0.003, 7.0, 60.0):
        latency.observe("tadpole.v1.KV/Put", seconds)
    latency.observe("tadpole.v1.KV/Get", 0.02)
    got = _samples(latency)

    def bucket(method: str, le: str) -> float:
        return got[("tadpole_request_duration_seconds_bucket", (("le", le), ("method", method)))]

    put = "tadpole.v1.KV/Put"
    assert bucket(put, "0.0005") == 2  # le is inclusive: 0.0005 counts
    assert bucket(put, "0.001") == 2
    assert bucket(put, "0.005") == 4
    assert bucket(put, "5.0") == 4
    assert bucket(put, "10.0") == 5
    assert bucket(put, "+Inf") == 6
    assert got[("tadpole_request_duration_seconds_count", (("method", put),))] == 6
    assert got[("tadpole_request_duration_seconds_sum", (("method", put),))] == pytest.approx(
        67.0069
    )
    assert bucket("tadpole.v1.KV/Get", "0.025") == 1
    assert len(BUCKETS) == 14


class _Details:
    method = "/tadpole.v1.KV/Put"


async def test_the_interceptor_times_calls_that_return_and_that_raise() -> None:
    latency = RequestLatency()

    async def serve(request: Any, context: Any) -> Any:
        await asyncio.sleep(0.01)
        if request == "boom":
            raise RuntimeError("boom")
        return "ok"

    async def continuation(_details: Any) -> Any:
        return grpc.unary_unary_rpc_method_handler(serve)

    handler = await LatencyInterceptor(latency).intercept_service(continuation, _Details())
    assert await handler.unary_unary("x", None) == "ok"
    with pytest.raises(RuntimeError):
        await handler.unary_unary("boom", None)
    got = _samples(latency)
    count = got[("tadpole_request_duration_seconds_count", (("method", "tadpole.v1.KV/Put"),))]
    total = got[("tadpole_request_duration_seconds_sum", (("method", "tadpole.v1.KV/Put"),))]
    assert count == 2 and total >= 0.02
