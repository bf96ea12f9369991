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
