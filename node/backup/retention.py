"""Which backups a retention schedule keeps. Pure: times in, ids out.

The spec's schedule ``24h_hourly_30d_daily_1y_weekly`` read the way restic reads
``forget --keep-hourly 24 --keep-daily 30 --keep-weekly 52``: walking from the
newest backup back, keep the newest backup of each of the last 24 distinct hours
that have one, of the last 30 distinct days, and of the last 52 distinct ISO weeks.
A backup kept by any rule is kept. The newest backup is always kept (it is the
newest of its hour). Buckets are UTC. Backups in the future of ``now`` (a clock
that stepped back) are kept and count toward nothing, so a bad clock can't make
prune delete the rest.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

Bucket = Callable[[dt.datetime], object]


@dataclass(frozen=True, slots=True)
class Schedule:
    hourly: int = 24
    daily: int = 30
    weekly: int = 52


SPEC_SCHEDULE: Final = Schedule()


def _hour(t: dt.datetime) -> object:
    return (t.year, t.month, t.day, t.hour)


def _day(t: dt.datetime) -> object:
    return (t.year, t.month, t.day)


def _week(t: dt.datetime) -> object:
    iso = t.isocalendar()
    return (iso.year, iso.week)


def keep(
    backups: Iterable[tuple[str, int]], now_ns: int, schedule: Schedule = SPEC_SCHEDULE
) -> set[str]:
    """The ids to keep among ``(id, created_ns)``."""
    items = sorted(backups, key=lambda b: (b[1], b[0]), reverse=True)  # newest first
    kept = {bid for bid, t in items if t > now_ns}
    past = [(bid, _utc(t)) for bid, t in items if t <= now_ns]
    for bucket, count in ((_hour, schedule.hourly), (_day, schedule.daily),
                          (_week, schedule.weekly)):  # fmt: skip
        seen: set[object] = set()
        for bid, t in past:
            if len(seen) >= count:
                break
            b = bucket(t)
            if b not in seen:
                seen.add(b)
                kept.add(bid)
    return kept


def _utc(ns: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC)
