"""Lifeguard suspicion timer: a timeout that shrinks with independent confirmations.

When a member is first suspected, its timeout is ``max_s``. Every *distinct* other node
that independently suspects it (a confirmation) shortens the timeout along a log curve
down to ``min_s`` once ``k`` confirmations have arrived::

    timeout(c) = max(min_s, max_s - (max_s - min_s) * log(c + 1) / log(k + 1))

Dadgar et al. (2018) §4.2. The timer is pure: it only answers "when does it fire".
"""

from __future__ import annotations

import math

__all__ = ["Suspicion"]


class Suspicion:
    """Suspicion of one member, started at ``start`` by ``first_src``."""

    __slots__ = ("_confirmers", "first_src", "incarnation", "k", "max_s", "min_s", "start")

    def __init__(
        self,
        *,
        incarnation: int,
        start: float,
        min_s: float,
        max_s: float,
        k: int,
        first_src: str,
    ) -> None:
        self.incarnation = incarnation
        self.start = start
        self.min_s = min_s
        self.max_s = max(min_s, max_s)
        self.k = max(0, k)
        self.first_src = first_src
        self._confirmers: set[str] = set()

    @property
    def confirmations(self) -> int:
        return len(self._confirmers)

    def confirm(self, src: str) -> bool:
        """Count ``src`` as a confirmation; True if it is new (and should be re-gossiped)."""
        if src == self.first_src or src in self._confirmers or len(self._confirmers) >= self.k:
            return False
        self._confirmers.add(src)
        return True

    def timeout_s(self) -> float:
        """Current timeout in seconds, given the confirmations so far."""
        if self.k < 1:
            return self.min_s
        frac = math.log(len(self._confirmers) + 1) / math.log(self.k + 1)
        return max(self.min_s, self.max_s - (self.max_s - self.min_s) * frac)

    def deadline(self) -> float:
        """Absolute time (same clock as ``start``) at which the member is declared dead."""
        return self.start + self.timeout_s()
