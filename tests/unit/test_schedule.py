"""The instance's due-time grid: where the first poll lands."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from poller.detect.schedule import InstanceSchedule


def test_a_polling_instance_starts_within_its_spread() -> None:
    before = time.time()
    schedule = InstanceSchedule(3600.0, spread_s=30.0)
    first = schedule.first_due(datetime.now(UTC) - timedelta(minutes=5))
    assert before <= first <= time.time() + 30.0
    assert first == schedule.first


def test_a_webhook_instance_takes_its_baseline_at_once() -> None:
    schedule = InstanceSchedule(3600.0, spread_s=30.0, baseline_now=True)
    overdue = datetime.now(UTC) - timedelta(minutes=5)
    assert abs(schedule.first_due(overdue) - time.time()) < 1.0
    # Then the backstop keeps to its grid: the next poll is an interval after the anchor's.
    assert schedule.next_due(time.time()) - schedule.anchor <= 3600.0


def test_a_stored_due_time_ahead_is_kept_by_both() -> None:
    ahead = datetime.now(UTC) + timedelta(minutes=10)
    for baseline_now in (False, True):
        schedule = InstanceSchedule(3600.0, spread_s=30.0, baseline_now=baseline_now)
        assert schedule.first_due(ahead) == ahead.timestamp()


def test_instances_phases_cover_the_whole_interval_not_the_start_up_spread() -> None:
    interval = 60.0
    before = time.time()
    schedules = [InstanceSchedule(interval) for _ in range(400)]
    after = time.time()
    phases = sorted((s.anchor - before) % interval for s in schedules)
    assert all(before <= s.anchor <= after + interval for s in schedules)
    # Every sixth of the interval holds some instance's phase: the spread is not capped at
    # 30 s (the first polls still are: a new instance takes its baseline soon).
    assert {int(phase // (interval / 6)) for phase in phases} == set(range(6))
    assert all(before <= s.first <= after + 30.0 for s in schedules)
    # Then each instance's pairs stay on its own grid, an interval apart.
    one = schedules[0]
    second = one.next_due(one.first)
    assert one.first < second <= one.first + interval
    assert abs(one.next_due(second) - (second + interval)) < 1e-6


def test_an_overdue_pair_catches_up_soon_then_keeps_its_stored_phase() -> None:
    interval = 900.0
    stored = datetime.now(UTC) - timedelta(seconds=100)  # the process was down when it was due
    schedule = InstanceSchedule(interval, spread_s=30.0)
    first = schedule.first_due(stored)
    assert time.time() - 1 <= first <= time.time() + 30.0
    # After the catch-up poll: the stored phase again, the next interval of the old grid.
    assert abs(schedule.next_due(first) - (stored.timestamp() + interval)) < 1e-6


def test_a_pair_never_polled_takes_the_random_phase() -> None:
    schedule = InstanceSchedule(900.0, spread_s=30.0)
    anchor = schedule.anchor
    assert schedule.first_due(None) == schedule.first
    assert schedule.anchor == anchor
