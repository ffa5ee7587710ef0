"""Request latency per gRPC method, as a Prometheus histogram.

:class:`LatencyInterceptor` times every unary call the node serves, from the moment
its handler starts to the moment it returns or raises (decoding and the status
mapping included, the network not), and :class:`RequestLatency` keeps a fixed-bucket
histogram per method: plain counters on the event loop, no lock, no allocation per
call beyond the timing itself. ``tadpole_request_duration_seconds{method="tadpole.v1.KV/Put"}``
gives the spec's p95/p99 through ``histogram_quantile``.
"""

from __future__ import annotations

import bisect
import inspect
import time
from collections.abc import Iterator
from typing import Any

import grpc
from prometheus_client.core import HistogramMetricFamily

from node.api.wrapping import WrappingInterceptor

__all__ = ["BUCKETS", "LatencyInterceptor", "RequestLatency"]

# Seconds. A put is ~5 ms on a quiet cluster and ~60 ms at 64 clients; a timed-out
# call is the request deadline (10 s by default).
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RequestLatency:
    """Per-method histograms with :data:`BUCKETS` (and +Inf)."""

    def __init__(self) -> None:
        self._counts: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}

    def observe(self, method: str, seconds: float) -> None:
        counts = self._counts.get(method)
        if counts is None:
            counts = self._counts[method] = [0] * (len(BUCKETS) + 1)
            self._sums[method] = 0.0
        counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self._sums[method] += seconds

    def load(self) -> list[tuple[str, int, float, list[int]]]:
        """``(method, calls, total seconds, calls per bucket)`` per method, buckets
        not cumulative and +Inf last (``Cluster.Status`` carries them to ``tadpole top``)."""
        return [
            (method, sum(counts), self._sums[method], list(counts))
            for method, counts in sorted(self._counts.items())
        ]

    def metrics(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            "tadpole_request_duration_seconds",
            "Time this node took to serve a unary gRPC call, by method",
            labels=["method"],
        )
        for method in sorted(self._counts):
            running, buckets = 0, []
            for bound, count in zip((*BUCKETS, float("inf")), self._counts[method], strict=True):
                running += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
            family.add_metric([method], buckets, self._sums[method])
        yield family


class LatencyInterceptor(WrappingInterceptor):
    """Times every unary-unary call into a :class:`RequestLatency` (streams are not)."""

    def __init__(self, latency: RequestLatency) -> None:
        super().__init__()
        self._latency = latency

    def wrap(self, handler: grpc.RpcMethodHandler, method_path: str) -> grpc.RpcMethodHandler:
        inner = getattr(handler, "unary_unary", None)
        if inner is None or not inspect.iscoroutinefunction(inner):
            return handler
        method = method_path.lstrip("/")
        observe = self._latency.observe

        async def timed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start = time.perf_counter()
            try:
                return await inner(request, context)
            finally:
                observe(method, time.perf_counter() - start)

        return handler._replace(unary_unary=timed)
