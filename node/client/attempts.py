"""Retry policy, endpoint routing and the retry rules of one call. Pure: no I/O, the
time is passed in, so every rule is tested without a server.

**What one failed try says about a write** (:func:`fate`): the server states it in
trailing metadata ``tadpole-outcome`` (``not-applied`` / ``applied`` / ``unknown``,
:mod:`node.api.status`); a message is never parsed for it. A failure that never reached
a Tadpole server has no such field; then gRPC's own transport status decides: a
connection that could not be opened sent nothing (not applied), a connection lost
mid-call may have delivered the request (unknown), and ABORTED / DEADLINE_EXCEEDED /
CANCELLED are unknown.

**Which tries are resent** (:meth:`Attempts.failed`):

==========================  =============================================================
call                        resent after
==========================  =============================================================
read                        UNAVAILABLE, ABORTED, DEADLINE_EXCEEDED, CANCELLED
write with a request id     the same, except a failure whose outcome is ``applied``
                            (the server applies a request id at most once)
write without one           only a failure whose outcome is ``not-applied``
(tier updates, documents)
==========================  =============================================================

**How a call ends.** Once any try of a write may have been applied, the call ends in
success or :class:`OutcomeUnknown` (:class:`ReplicationIncomplete` when a try is known to
be applied), never in an error that says "safe to resend" such as :class:`Unavailable`:
the last try's error is not the whole story.
"""

from __future__ import annotations

import enum
import logging
import random
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc

from node import placement
from node.client.errors import (
    LEADER_ADDRESS_KEY,
    LEADER_ID_KEY,
    OUTCOME_KEY,
    InvalidArgument,
    OutcomeUnknown,
    ReplicationIncomplete,
    TadpoleError,
    Timeout,
    Unavailable,
    WriteTimeout,
    from_rpc_error,
    rpc_code,
    rpc_details,
    trailing_metadata,
)

__all__ = ["Attempts", "Fate", "MemberLike", "RetryPolicy", "Router", "fate"]

log = logging.getLogger(__name__)

# gRPC's own wording (not Tadpole's) for a connection that could not be opened: nothing
# was sent, so nothing can have been applied.
_NEVER_SENT = ("failed to connect", "connection refused", "dns resolution failed")


class Fate(enum.IntEnum):
    """What a failed try did to the state, ordered from harmless to applied."""

    NOT_APPLIED = 0
    UNKNOWN = 1
    APPLIED = 2


_WIRE_FATE = {"not-applied": Fate.NOT_APPLIED, "applied": Fate.APPLIED, "unknown": Fate.UNKNOWN}
_DEFINITE = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
)


def fate(exc: BaseException) -> Fate:
    """What the failed try ``exc`` (a gRPC error) did, for a write."""
    said = _WIRE_FATE.get(trailing_metadata(exc).get(OUTCOME_KEY, ""))
    if said is not None:
        return said
    code = rpc_code(exc)
    if code is grpc.StatusCode.UNAVAILABLE:
        details = rpc_details(exc).lower()
        if any(marker in details for marker in _NEVER_SENT):
            return Fate.NOT_APPLIED
        return Fate.UNKNOWN
    if code in _DEFINITE:
        return Fate.NOT_APPLIED  # a refusal from a server that predates the outcome field
    return Fate.UNKNOWN


class MemberLike(Protocol):
    """What the router reads of a cluster member."""

    @property
    def id(self) -> str: ...
    @property
    def address(self) -> str: ...
    @property
    def is_leader(self) -> bool: ...
    @property
    def is_self(self) -> bool: ...
    @property
    def gossip_status(self) -> str: ...


# -- retry policy and routing ----------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How a call is retried after a retryable failure.

    Once every endpoint has been tried in a round, the client sleeps
    ``min(max_backoff_s, initial_backoff_s * multiplier**round)``, of which a random
    fraction up to ``jitter`` is taken off (so clients that failed together do not retry
    together). The call's deadline caps everything.
    """

    # Total tries per call including the first; every endpoint counts (a round over
    # three endpoints is three tries). 40 with the defaults below outlasts the default
    # 5 s deadline, so the deadline is what normally ends retrying: a leader election
    # (150-300 ms timeout, plus failure detection) fits comfortably inside it.
    attempts: int = 40
    # First back-off in seconds. Smaller reacts faster, larger loads a sick cluster less.
    initial_backoff_s: float = 0.05
    # Back-off ceiling in seconds.
    max_backoff_s: float = 1.0
    # Growth factor per round.
    multiplier: float = 2.0
    # Fraction in [0, 1] of each back-off that is randomised away.
    jitter: float = 0.5
    # How long (s) an endpoint that failed is tried last.
    cooldown_s: float = 2.0
    # Longest single try (s) of a call that may be resent (reads, writes with a request
    # id); the call's deadline still bounds the whole. Without it one try to a paused
    # (SIGSTOPped, starved) node would take the whole deadline and the call could never
    # fail over. Larger than a loaded commit (p99 ~0.1 s here) by far; smaller than the
    # default 5 s deadline so two more endpoints fit after a stuck one.
    attempt_timeout_s: float = 1.5

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise InvalidArgument("retry attempts must be >= 1")
        if self.initial_backoff_s < 0 or self.max_backoff_s < self.initial_backoff_s:
            raise InvalidArgument("need 0 <= initial_backoff_s <= max_backoff_s")
        if self.multiplier < 1:
            raise InvalidArgument("retry multiplier must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise InvalidArgument("retry jitter must be within [0, 1]")
        if self.cooldown_s < 0:
            raise InvalidArgument("cooldown_s must be >= 0")
        if not self.attempt_timeout_s > 0:
            raise InvalidArgument("attempt_timeout_s must be > 0")

    def backoff_s(self, round_: int, rng: random.Random) -> float:
        """Seconds to wait before retry round ``round_`` (0-based)."""
        base = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier**round_)
        return base * (1.0 - self.jitter * rng.random())


# Gossip states in which a member still owns its keys (as the nodes' own placement).
_LIVE = ("alive", "suspect")


class Router:
    """Which endpoint to try first: the leader when known, else the last one that worked.
    It also remembers the live members of the last ``Members`` answer, to name a CRDT
    key's first owner (:meth:`first_owners`) the way the nodes do.

    Thread-safe; never blocks on I/O, so it is also safe to use from an event loop.
    """

    def __init__(self, endpoints: Sequence[str], *, prefer_leader: bool, cooldown_s: float):
        self._lock = threading.Lock()
        self._endpoints = list(dict.fromkeys(endpoints))  # configured, then learned
        self._preferred = self._endpoints[0]
        self._prefer_leader = prefer_leader
        self._cooldown_s = cooldown_s
        self._down_until: dict[str, float] = {}
        self._seen_at: dict[str, str] = {}  # member id -> endpoint that answered as it
        self._advertised: dict[str, str] = {}  # member id -> address from Members
        self._leader_id = ""
        self._looked_up: set[str] = set()  # leader ids discovery already ran for
        self._live: dict[str, str] = {}  # live member id -> address, from gossip's view
        self._live_at = float("-inf")  # when it was learned

    @property
    def endpoints(self) -> list[str]:
        with self._lock:
            return list(self._endpoints)

    def order(self, now: float) -> list[str]:
        """Every endpoint, preferred first, then ring order; endpoints in cooldown last."""
        with self._lock:
            i = self._endpoints.index(self._preferred)
            ring = self._endpoints[i:] + self._endpoints[:i]
            up = [e for e in ring if self._down_until.get(e, 0.0) <= now]
            return up + [e for e in ring if e not in up]

    def _address_of(self, member_id: str) -> str:
        return self._seen_at.get(member_id) or self._advertised.get(member_id, "")

    def _add(self, endpoint: str) -> None:
        if endpoint not in self._endpoints:
            self._endpoints.append(endpoint)

    def _prefer(self, endpoint: str, now: float) -> None:
        if endpoint != self._preferred and self._down_until.get(endpoint, 0.0) <= now:
            log.debug("client now prefers %s", endpoint)
            self._preferred = endpoint

    def succeeded(self, endpoint: str, member_id: str, leader_id: str, now: float) -> bool:
        """Record a response header; returns True if the leader's address is unknown and
        a one-off ``Members`` lookup would find it."""
        with self._lock:
            self._down_until.pop(endpoint, None)
            if member_id:
                self._seen_at[member_id] = endpoint
            self._prefer(endpoint, now)
            if not self._prefer_leader or not leader_id:
                return False
            self._leader_id = leader_id
            address = self._address_of(leader_id)
            if address:
                self._prefer(address, now)
                return False
            if leader_id in self._looked_up:
                return False
            self._looked_up.add(leader_id)
            return True

    def failed(self, endpoint: str, now: float, leader_id: str, leader_address: str) -> None:
        """Record a failure of ``endpoint`` and the server's leader hint, if any."""
        with self._lock:
            self._down_until[endpoint] = now + self._cooldown_s
            if leader_id and leader_address:
                self._advertised.setdefault(leader_id, leader_address)
            hint = leader_address or (self._address_of(leader_id) if leader_id else "")
            if hint and self._prefer_leader:
                self._add(hint)
                self._prefer(hint, now)
            elif self._preferred == endpoint:
                i = self._endpoints.index(endpoint)
                ring = self._endpoints[i + 1 :] + self._endpoints[:i]
                up = [e for e in ring if self._down_until.get(e, 0.0) <= now]
                if up:
                    self._preferred = up[0]

    def learn_members(self, members: Iterable[MemberLike], now: float) -> None:
        """Add every member's advertised address to the rotation; prefer the leader.
        Remember the live ones (the answering node and those its gossip holds alive or
        suspect) when the answer has a gossip view."""
        members = list(members)
        with self._lock:
            for m in members:
                if m.address:
                    self._advertised[m.id] = m.address
                    if m.id not in self._seen_at:
                        self._add(m.address)
                if m.is_leader:
                    self._leader_id = m.id
            if any(m.gossip_status for m in members):
                self._live = {
                    m.id: m.address
                    for m in members
                    if m.address and (m.is_self or m.gossip_status in _LIVE)
                }
                self._live_at = now
            if self._prefer_leader and self._leader_id:
                address = self._address_of(self._leader_id)
                if address:
                    self._prefer(address, now)

    def placement_age(self, now: float) -> float:
        """Seconds since the live members were last learned (inf: never)."""
        with self._lock:
            return now - self._live_at

    def first_owners(self, keys: Iterable[tuple[str, str]]) -> list[str | None]:
        """For each (tier, key), the address of its first owner among the live members
        last learned -- the member that coordinates its updates -- or None while no
        live member is known. A stale view costs a hop, never correctness: a node sent
        a key it does not coordinate forwards it to the owner it computes."""
        with self._lock:
            live = dict(self._live)
        if not live:
            return [None for _ in keys]
        ids = list(live)
        return [
            live[placement.first(placement.placement_key(tier, key), ids) or ids[0]]
            for tier, key in keys
        ]

    def up(self, endpoint: str, now: float) -> bool:
        """Whether ``endpoint`` is out of its cooldown after a failure."""
        with self._lock:
            return self._down_until.get(endpoint, 0.0) <= now


class Attempts:
    """The retry state of one call: which endpoint next, whether and when to resend, and
    the error the call ends with.

    ``write`` says whether the call can change state; ``idempotent`` that it carries a
    request id (applied at most once however often it is sent); ``tiers`` that it went to
    a CRDT-tier service, whose ABORTED means "below the write quorum" (only used when the
    server did not say the outcome). ``only`` pins every try to one endpoint; ``first``
    is where the first try goes (a batch routed to its keys' owner) unless it is cooling
    down after a failure, the rest follow the router's order.
    """

    def __init__(
        self,
        router: Router,
        policy: RetryPolicy,
        rng: random.Random,
        *,
        write: bool,
        timeout_s: float,
        now: float,
        only: str | None = None,
        first: str | None = None,
        idempotent: bool = False,
        tiers: bool = False,
    ) -> None:
        self._router = router
        self._policy = policy
        self._rng = rng
        self._write = write
        self._idempotent = idempotent
        self._tiers = tiers
        self._timeout_s = timeout_s
        self._deadline = now + timeout_s
        self._only = only
        self._first = first
        self._tried: set[str] = set()
        self._round = 0
        self._count = 0
        # The worst fate among this call's failed tries (writes only).
        self._worst = Fate.NOT_APPLIED
        self.endpoint = self._pick(now)

    @property
    def resendable(self) -> bool:
        """Whether a try that hit its own timeout may be resent (see ``attempt_timeout``)."""
        return not self._write or self._idempotent

    def _pick(self, now: float) -> str:
        """The next endpoint not yet tried in this round; a new round (``_tried``
        cleared by the caller) starts from the preferred one."""
        if self._only is not None:
            return self._only
        first = self._first
        if first is not None and first not in self._tried and self._router.up(first, now):
            return first
        order = self._router.order(now)
        for endpoint in order:
            if endpoint not in self._tried:
                return endpoint
        return order[0]

    def _round_done(self, now: float) -> bool:
        return self._only is not None or all(e in self._tried for e in self._router.order(now))

    def remaining(self, now: float) -> float:
        return max(self._deadline - now, 0.0)

    def attempt_timeout(self, now: float) -> float:
        """The timeout to give the next try: what is left of the deadline, capped by the
        policy's ``attempt_timeout_s`` when a timed-out try could be resent."""
        left = self.remaining(now)
        return min(left, self._policy.attempt_timeout_s) if self.resendable else left

    def _retryable(self, code: grpc.StatusCode | None, fate_: Fate) -> bool:
        if code not in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.ABORTED,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.CANCELLED,
        ):
            return False
        if not self._write:
            return True
        if code is grpc.StatusCode.DEADLINE_EXCEEDED and fate_ is Fate.NOT_APPLIED:
            # The key's owner refused it past its deadline while we still waited: its
            # clock and ours disagree, and a new try would meet the same clocks.
            return False
        if self._idempotent:
            return fate_ is not Fate.APPLIED
        return fate_ is Fate.NOT_APPLIED

    def failed(self, exc: BaseException, now: float) -> float | TadpoleError:
        """Seconds to wait before the next try, or the error the call ends with."""
        code = rpc_code(exc)
        fate_ = fate(exc) if self._write else Fate.NOT_APPLIED
        if self._write:
            self._worst = max(self._worst, fate_)
        error = from_rpc_error(exc, write=self._write, tiers=self._tiers)
        if not self._retryable(code, fate_):
            if self._write and code is grpc.StatusCode.UNAVAILABLE and fate_ is Fate.UNKNOWN:
                error = OutcomeUnknown(
                    "the connection failed after the write was sent and it was not resent "
                    "(it carries no request id); it may or may not have been applied: read "
                    f"to find out ({error.details or error.code})",
                    code=error.code,
                    details=error.details,
                )
            return self._final(error)
        self._count += 1
        self._tried.add(self.endpoint)
        metadata = trailing_metadata(exc)
        self._router.failed(
            self.endpoint,
            now,
            metadata.get(LEADER_ID_KEY, ""),
            metadata.get(LEADER_ADDRESS_KEY, ""),
        )
        log.debug("attempt %d on %s failed: %s", self._count, self.endpoint, error)
        if self._count >= self._policy.attempts:
            return self._final(self._exhausted(error, f"after {self._count} attempts"))
        delay = 0.0
        if self._round_done(now):
            # Every endpoint failed this round: back off before the next one.
            delay = self._policy.backoff_s(self._round, self._rng)
            self._round += 1
            self._tried.clear()
        next_endpoint = self._pick(now)
        if now + delay >= self._deadline:
            return self._final(self._exhausted(error, f"within the {self._timeout_s:g} s deadline"))
        self.endpoint = next_endpoint
        return delay

    def _final(self, error: TadpoleError) -> TadpoleError:
        """The call's error, given every try: a write that any try may have applied ends
        as OutcomeUnknown (ReplicationIncomplete when a try is known applied)."""
        if not self._write or self._worst is Fate.NOT_APPLIED:
            return error
        if self._worst is Fate.APPLIED:
            if isinstance(error, ReplicationIncomplete):
                return error
            return ReplicationIncomplete(
                "an earlier try was applied on some replicas (below the write quorum; it "
                "will converge) and must not be resent; the last try failed: "
                f"{error.message}",
                code=error.code,
                details=error.details,
            )
        if isinstance(error, OutcomeUnknown):
            return error
        kind = WriteTimeout if isinstance(error, Timeout) else OutcomeUnknown
        return kind(
            "an earlier try may have been applied, so the outcome is unknown (read to find "
            f"out); the last try failed: {error.message}",
            code=error.code,
            details=error.details,
        )

    def _exhausted(self, error: TadpoleError, how: str) -> TadpoleError:
        if isinstance(error, Timeout):
            return Timeout(f"{error.message} ({how})", code=error.code, details=error.details)
        if isinstance(error, Unavailable):
            return Unavailable(
                f"unavailable: no endpoint could serve the request {how}; "
                f"last error from {self.endpoint}: {error.details or error.code}",
                code=error.code,
                details=error.details,
                leader_id=error.leader_id,
                leader_address=error.leader_address,
            )
        return error
