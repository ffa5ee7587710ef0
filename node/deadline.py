"""The write fence: a CRDT-tier write is applied by its deadline or not at all.

Why: gRPC sends a call's deadline as a *relative* timeout that the server counts from
when the call reaches it. A write held in the network -- a partition, TCP retransmission
after a heal -- can reach its owner long after the client stopped waiting and took the
write's outcome as unknown. Applied then, it gets a fresh HLC timestamp and wins the
last-writer-wins against the writes the same session made (and had acknowledged) in
the meantime: a session would read its own older value back. ``make chaos`` found one
(``partition-leader``, an agent document, design.md "Causal sessions").

So the client also sends the attempt's deadline as an absolute wall-clock time, in
nanoseconds since the epoch, as request metadata :data:`DEADLINE_KEY`. The node that
receives it keeps it for the call (:data:`WRITE_DEADLINE`), a forward to the key's
owner carries it (``node.replication.messages.Until``), and the owner checks it at the
moment it takes the write's first HLC timestamp (:func:`check`): later than the
deadline plus :data:`GRACE_NS` and the write is refused,
:class:`~node.errors.DeadlineExpired`, nothing applied. A write that is applied
therefore has a timestamp no later than ``deadline + GRACE_NS`` (on the owner's clock),
and the client reports a try of unknown outcome only once that time has passed on its
own clock: the caller's next write is stamped after anything the first can still do.

The grace is the clock allowance, the same 500 ms as the HLC's drift bound
(``crdt.clocks.DEFAULT_MAX_DRIFT_NS``). A client clock behind the node's by less than
that costs no write; a node whose clock runs further ahead refuses writes, loudly and
with nothing applied, instead of stamping them into the future. Calls without the
metadata (older clients, the HTTP face) are not fenced. The client's side is in
:mod:`node.client.messages` (``DEADLINE_KEY``, ``DEADLINE_GRACE_NS``), which imports
nothing from the node.

Pure: no I/O.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Final

from crdt.clocks import DEFAULT_MAX_DRIFT_NS
from node.errors import DeadlineExpired, InvalidArgument

__all__ = ["DEADLINE_KEY", "GRACE_NS", "WRITE_DEADLINE", "check", "parse"]

DEADLINE_KEY: Final = "tadpole-deadline-ns"
GRACE_NS: Final = DEFAULT_MAX_DRIFT_NS
_MAX_NS: Final = 2**63 - 1

# The deadline of the write being served, in wall-clock ns; 0: none. Set for the call
# by the API (node.api.guard.WriteFence) or from a forwarded Until, read by the driver.
WRITE_DEADLINE: ContextVar[int] = ContextVar("tadpole_write_deadline_ns", default=0)


def parse(value: str | bytes) -> int:
    """The deadline a metadata value names; InvalidArgument naming the problem."""
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise InvalidArgument(
            f"{DEADLINE_KEY} must be a wall-clock time in ns since the epoch, got {text[:40]!r}"
        )
    deadline = int(text)
    if not 0 < deadline <= _MAX_NS:
        raise InvalidArgument(f"{DEADLINE_KEY} {deadline} is out of range (1..2**63-1)")
    return deadline


def check(deadline_ns: int, now_ns: int, what: str) -> None:
    """Raise DeadlineExpired if ``what`` would be applied at ``now_ns`` (this node's wall
    clock) later than ``deadline_ns`` plus the grace; 0 means no deadline."""
    if deadline_ns and now_ns > deadline_ns + GRACE_NS:
        late = (now_ns - deadline_ns) / 1e9
        raise DeadlineExpired(
            f"{what}: reached its owner {late:.3f} s after the client's deadline (more than "
            f"the {GRACE_NS / 1e9:g} s clock allowance); not applied. If the client did not "
            "time out, its clock or this node's is wrong"
        )
