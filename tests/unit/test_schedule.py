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
    assert first == schedule.anchor


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


def test_a_fleet_started_together_spreads_over_the_whole_interval() -> None:
    # 4,500 instances at 60 s: the service's spread is 4500 / START_RATE = 90 s, capped at
    # the interval; the instances' phases (their first polls) then cover all of it.
    interval = 60.0
    before = time.time()
    schedules = [InstanceSchedule(interval, spread_s=min(interval, 90.0)) for _ in range(400)]
    phases = [s.anchor - before for s in schedules]
    assert all(0 <= phase <= interval + 1 for phase in phases)
    assert {int(phase // (interval / 6)) for phase in phases} >= set(range(6))
    # and each keeps its phase: the next polls are whole intervals after the first
    one = schedules[0]
    assert abs(one.next_due(one.anchor) - (one.anchor + interval)) < 1e-6
