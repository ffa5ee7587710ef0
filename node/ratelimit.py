"""Per-client rate limits: a token bucket per client identity (pure, no I/O).

A client is known by its TLS certificate's name when it has one, else by its network
address without the port (``ipv4:10.0.0.7``): a client that floods is answered
``RESOURCE_EXHAUSTED`` (gRPC) or ``429`` (HTTP) with how long to wait, and every other
client keeps its own full bucket. The table of buckets is bounded: the least recently
seen identity is forgotten first (it comes back with a full bucket, which is the most
it could have had anyway after being idle).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

__all__ = ["TokenBuckets", "client_identity"]


class TokenBuckets:
    """``rate`` requests per second per identity, bursts of up to ``burst``."""

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_identities: int = 10_000,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, got {rate}, {burst}")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._max = max_identities
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = (
            collections.OrderedDict()
        )  # identity -> (tokens, when last refilled)
        self._lock = threading.Lock()
        self.refused: collections.Counter[str] = collections.Counter()

    def take(self, identity: str) -> float:
        """Spend one token of ``identity``'s bucket: 0.0 if there was one, else the
        seconds until there will be (nothing is spent then)."""
        now = self._clock()
        with self._lock:
            tokens, then = self._buckets.pop(identity, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            if tokens >= 1.0:
                wait, tokens = 0.0, tokens - 1.0
            else:
                wait = (1.0 - tokens) / self.rate
                self.refused[identity] += 1
            self._buckets[identity] = (tokens, now)
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        return wait


def client_identity(certificate_name: str | None, peer: str) -> str:
    """Who a request counts against: its certificate's name, else its address without
    the port (``ipv4:127.0.0.1:5000`` -> ``ipv4:127.0.0.1``; ``ipv6:[::1]:5000`` ->
    ``ipv6:[::1]``)."""
    if certificate_name:
        return certificate_name
    host, sep, port = peer.rpartition(":")
    return host if sep and port.isdigit() and host not in ("ipv4", "ipv6") else peer
