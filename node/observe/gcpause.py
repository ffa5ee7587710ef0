"""How long the garbage collector stops the node, per generation.

CPython's cyclic collector holds the GIL for a whole collection, so while it runs no
thread of the node does: not the Raft tick that sends heartbeats, not the links, not
the event loop. A full (generation 2) collection walks every tracked object the
process holds, and the system tier's keys are such objects, so its pause grows with
the data. A pause near the election timeout (150 ms) lets the followers elect another
leader. ``tadpole_gc_pause_seconds{generation}`` shows it; :func:`settle` is how a
node keeps what it holds for good out of every later full collection.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from typing import Any

from consensus.durable import Histogram

__all__ = ["PAUSES", "GcPauses", "Settled", "settle"]

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0)


class GcPauses:
    """A histogram of collection durations per generation, fed by ``gc.callbacks``.

    Collections are serialized by the GIL, so one runs at a time and its start and
    stop arrive on one thread, in order."""

    def __init__(self) -> None:
        self.seconds = {generation: Histogram(BUCKETS) for generation in (0, 1, 2)}
        self._started = 0.0
        self._installed = False

    def install(self) -> None:
        if not self._installed:
            gc.callbacks.append(self._callback)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            gc.callbacks.remove(self._callback)
            self._installed = False

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        histogram = self.seconds.get(info.get("generation", -1))
        if histogram is not None:
            histogram.observe(time.perf_counter() - self._started)


# The process's own: ``run_node`` installs it, /metrics exports it.
PAUSES = GcPauses()


@dataclass(frozen=True)
class Settled:
    frozen: int  # objects now in the permanent generation
    seconds: float  # the collection and freeze


def settle() -> Settled:
    """Collect everything now, then move every object still alive into the collector's
    permanent generation (``gc.freeze``), where no later collection walks it.

    For what a node holds for as long as it runs -- its modules, its servers, and the
    state it has just restored -- this takes them out of every later full collection.
    Nothing is leaked by it: a frozen object is still freed when its last reference
    goes (the state's values hold no cycles), and only cycles that die after being
    frozen would stay. The collection here is a full one, with its pause. The node
    calls this twice: before it starts anything (so that pause stalls no Raft timer),
    and as soon as it has caught up after start, when only what start-up made is
    left to walk."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    return Settled(gc.get_freeze_count(), time.perf_counter() - started)
