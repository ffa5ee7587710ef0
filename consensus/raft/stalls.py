"""How long the Raft tick thread went without acting once it was due to.

Everything Raft does on a node happens on its tick thread: a leader's heartbeats, a
follower's election timer, the journal's fsync. When that thread cannot run -- a
garbage collection holding the GIL, an fsync that takes hundreds of milliseconds, a
host short of CPU -- a leader's followers hear nothing, and once that lasts an election
timeout (150-300 ms) they may elect another leader: clients see a moment of "no leader
is available right now" on a healthy cluster. A node reports each such stall as it
happens (etcd's "leader failed to send out heartbeat on time" is the same idea), so an
election on a busy host can be told from a fault without a profiler attached.

A tick's *stall* is from when it was due -- the timer it slept for (the leader's next
heartbeat, a follower's election deadline), or its start when something woke it
earlier -- to when it finished: the wake-up's lateness plus the tick's own duration
(its fsync included). Every tick's stall goes to a histogram; one of at least
``warn_s`` is counted and reported, at most once per ``quiet_s`` (the others are
counted and named in the next report). Pure: the tick loop passes in its clock readings.
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.durable import Histogram

__all__ = ["STALL_BUCKETS", "Stall", "TickStalls"]

STALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True, slots=True)
class Stall:
    """One stall to report: ``seconds`` in all, ``late`` of them before the tick
    started, and how many stalls went unreported since the last report."""

    seconds: float
    late: float
    unreported: int


class TickStalls:
    def __init__(self, warn_s: float, quiet_s: float = 10.0) -> None:
        if warn_s <= 0 or quiet_s < 0:
            raise ValueError("need warn_s > 0 and quiet_s >= 0")
        self.warn_s = warn_s
        self.quiet_s = quiet_s
        self.seconds = Histogram(STALL_BUCKETS)
        self.stalls = 0  # ticks that stalled at least warn_s
        self._reported: float | None = None
        self._unreported = 0

    def tick(self, due: float | None, started: float, ended: float) -> Stall | None:
        """Record a tick that was due at ``due`` (None: no timer; it ran when woken),
        started at ``started`` and ended at ``ended``; the stall to report, if any."""
        late = 0.0 if due is None else max(0.0, started - due)
        stall = late + max(0.0, ended - started)
        self.seconds.observe(stall)
        if stall < self.warn_s:
            return None
        self.stalls += 1
        if self._reported is not None and ended - self._reported < self.quiet_s:
            self._unreported += 1
            return None
        self._reported = ended
        report = Stall(stall, late, self._unreported)
        self._unreported = 0
        return report
