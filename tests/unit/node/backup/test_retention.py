"""The keep schedule (24 hourly, 30 daily, 52 weekly), property-tested against a
straightforward oracle with an injected clock."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from node.backup.retention import Schedule, keep

HOUR = 3600 * 10**9
NOW = int(dt.datetime(2026, 12, 5, 12, 30, tzinfo=dt.UTC).timestamp()) * 10**9


def oracle(backups: list[tuple[str, int]], now: int, schedule: Schedule) -> set[str]:
    """For each rule: group the past backups by bucket, take the newest bucket first,
    keep the newest backup of each of the first N buckets."""
    past = [b for b in backups if b[1] <= now]
    kept = {bid for bid, t in backups if t > now}
    rules = (
        (lambda d: d.strftime("%Y%m%d%H"), schedule.hourly),
        (lambda d: d.strftime("%Y%m%d"), schedule.daily),
        (lambda d: "{}-{:02d}".format(*d.isocalendar()[:2]), schedule.weekly),
    )
    for bucket_of, count in rules:
        buckets: dict[str, tuple[int, str]] = {}
        for bid, t in past:
            b = bucket_of(dt.datetime.fromtimestamp(t / 1e9, tz=dt.UTC))
            buckets[b] = max(buckets.get(b, (t, bid)), (t, bid))
        newest_first = sorted(buckets.values(), reverse=True)[:count]
        kept |= {bid for _, bid in newest_first}
    return kept


times = st.lists(
    st.integers(min_value=NOW - 400 * 24 * HOUR, max_value=NOW + 2 * HOUR), max_size=120
)


@settings(max_examples=300, deadline=None)
@given(times)
def test_keeps_exactly_what_the_schedule_says(stamps: list[int]) -> None:
    backups = [(f"b{i:04d}", t) for i, t in enumerate(stamps)]
    assert keep(backups, NOW) == oracle(backups, NOW, Schedule())


@settings(max_examples=200, deadline=None)
@given(times, st.integers(0, 5), st.integers(0, 5), st.integers(0, 5))
def test_small_schedules_match_too_and_pruning_twice_changes_nothing(
    stamps: list[int], hourly: int, daily: int, weekly: int
) -> None:
    schedule = Schedule(hourly, daily, weekly)
    backups = [(f"b{i:04d}", t) for i, t in enumerate(stamps)]
    kept = keep(backups, NOW, schedule)
    assert kept == oracle(backups, NOW, schedule)
    survivors = [b for b in backups if b[0] in kept]
    assert keep(survivors, NOW, schedule) == kept


def test_a_year_of_hourly_backups_keeps_the_schedule_and_the_newest() -> None:
    backups = [(f"b{h:05d}", NOW - h * HOUR) for h in range(365 * 24)]
    kept = keep(backups, NOW)
    assert "b00000" in kept  # the newest
    assert {f"b{h:05d}" for h in range(24)} <= kept  # every one of the last 24 hours
    # 24 hourly + 29 more days + the weeks before those days (52 weeks in all)
    assert 24 + 29 + 40 <= len(kept) <= 24 + 30 + 52
    oldest_kept = max(int(b[1:]) for b in kept)
    # the newest backup of the 52nd week back (this week being the first) survives
    assert 51 * 7 * 24 - 7 * 24 < oldest_kept <= 52 * 7 * 24


def test_backups_from_the_future_are_kept_and_do_not_crowd_out_the_past() -> None:
    backups = [("future", NOW + 10 * HOUR), ("past", NOW - 48 * HOUR)]
    assert keep(backups, NOW, Schedule(1, 0, 0)) == {"future", "past"}
