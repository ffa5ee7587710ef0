"""Quiet heartbeats: an idle Raft group slows its heartbeats instead of sending one
every 45 ms for ever.

Over Python gRPC a heartbeat costs about 3 ms of CPU between the two ends, almost
all of it waking threads, so a leader's 44 heartbeats a second were most of an
idle cluster's cost (7-9 % of a core per node, etcd's members 1.5 %). Nothing
in Raft needs them while nothing happens; they only keep followers from
campaigning. So, in the manner of CockroachDB's quiesced ranges and TiKV's
hibernating regions:

Leader
    When the group has been *at rest* for ``after_s`` -- every follower connected
    and holding the whole log, no proposal, read or election activity, the term,
    log and commit index unchanged -- the leader stamps its heartbeats ``quiet``
    (the interval it now keeps) and sends them every ``heartbeat_s`` instead.
    Anything that disturbs the rest (a write, a read round, a follower falling
    behind or dropping out, a vote or pre-vote request) ends it at once: the next
    append-entries goes out unstamped and the normal interval resumes.

Follower
    A quiet heartbeat moves its election deadline to ``heartbeat_s`` x a random
    3-6 (instead of 150-300 ms), and it counts the leader as recently heard (for
    leader stickiness and pre-vote) for ``3 x heartbeat_s``. An unstamped
    append-entries puts it back on the normal timer. If its link reports the
    leader down, it stops waiting at once (the normal timer, and votes granted
    again), so a crashed leader is replaced about as fast as when busy.

Safety is untouched: timers only decide *when* an election may start, never what
a vote or a commit means. What is given up is failover time while at rest: a
leader cut off without its connections closing (a partition, a powered-off
host) is noticed after 3-6 quiet heartbeats instead of 3-6 normal ones. The
leader's own check-quorum window stretches the same way (``fallback_s``).
``heartbeat_s = 0`` turns quiet heartbeats off.

This module is pure: the tick loop tells it what it sees, it answers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["QuietLeader", "quiet_deadline", "quiet_hold_s", "quiet_window_s", "stamp_of"]

# A follower waits this many quiet heartbeats, at random in the range, before it
# campaigns (the normal timer: 150-300 ms, i.e. 3.3-6.7 heartbeats of 45 ms).
DEADLINE_BEATS = (3.0, 6.0)
# Stamps outside this range are not honoured (a confused or hostile leader must not
# silence a follower's failure detection for minutes).
MAX_QUIET_S = 10.0
# Silence a node tolerates at rest before it counts its peer as gone: the leader's
# check-quorum window, a follower's "which leader" report.
WINDOW_BEATS = 4


@dataclass(slots=True)
class QuietLeader:
    """Leader side: has the group been at rest for ``after_s``?

    ``observe`` is called every tick with a fingerprint of everything whose change
    means activity (term, last log index, commit index, counters of election
    messages, ...) and whether the group is *settled* (every follower connected and
    caught up, nothing pending). Rest starts when both hold and lasts while the
    fingerprint stays the same."""

    after_s: float
    heartbeat_s: float
    _fingerprint: tuple[object, ...] | None = None
    _since: float = 0.0
    quiet: bool = False
    entered: int = field(default=0)  # times the group went quiet (for /metrics)

    @property
    def enabled(self) -> bool:
        return self.heartbeat_s > 0

    def observe(self, now: float, fingerprint: tuple[object, ...], settled: bool) -> bool:
        """Whether heartbeats should be quiet from now on."""
        if not self.enabled or not settled or fingerprint != self._fingerprint:
            self._fingerprint = fingerprint if settled else None
            self._since = now
            self.quiet = False
            return False
        was = self.quiet
        self.quiet = now - self._since >= self.after_s
        if self.quiet and not was:
            self.entered += 1
        return self.quiet

    def fallback_s(self, normal_s: float) -> float:
        """The leader's check-quorum window: followers answer a quiet heartbeat only
        every ``heartbeat_s``, so the window must hold several of them."""
        return quiet_window_s(normal_s, self.heartbeat_s if self.quiet else None)


def quiet_window_s(normal_s: float, stamp: float | None) -> float:
    """``normal_s``, or ``WINDOW_BEATS`` quiet intervals if longer (``stamp``: the quiet
    interval in force, None when not at rest)."""
    if stamp is None:
        return normal_s
    return max(normal_s, WINDOW_BEATS * stamp)


def stamp_of(message: dict[str, object]) -> float | None:
    """The quiet interval an append-entries carries, if it carries a valid one."""
    stamp = message.get("quiet")
    if isinstance(stamp, float) and 0 < stamp <= MAX_QUIET_S:
        return stamp
    return None


def quiet_deadline(now: float, stamp: float, rng: random.Random | None = None) -> float:
    """A follower's election deadline after a quiet heartbeat stamped ``stamp``."""
    low, high = DEADLINE_BEATS
    draw = (rng or random).uniform(low, high)
    return now + stamp * draw


def quiet_hold_s(stamp: float) -> float:
    """How long after a quiet heartbeat the leader counts as recently heard."""
    return stamp * DEADLINE_BEATS[0]
