"""Retry schedule with ±20 % jitter; Retry-After (seconds or HTTP date) for 429/503."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from poller.deliver.retries import max_attempts, next_delay, retry_delay
from poller.http_headers import retry_after_seconds

SCHEDULE = (5.0, 300.0, 1800.0)
NOW = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)


@given(st.integers(min_value=1, max_value=3), st.floats(min_value=0, max_value=1))
def test_jitter_stays_within_20_percent(attempts_done: int, r: float) -> None:
    base = SCHEDULE[attempts_done - 1]
    delay = next_delay(SCHEDULE, attempts_done, lambda: r)
    assert delay is not None and base * 0.8 - 1e-9 <= delay <= base * 1.2 + 1e-9


def test_jitter_actually_varies() -> None:
    delays = {next_delay(SCHEDULE, 1) for _ in range(50)}
    assert len(delays) > 40 and min(delays) >= 4.0 and max(delays) <= 6.0  # type: ignore[type-var]


def test_no_delay_after_the_last_attempt() -> None:
    assert max_attempts(SCHEDULE) == 4
    assert next_delay(SCHEDULE, 3, lambda: 0.5) == 1800.0
    assert next_delay(SCHEDULE, 4) is None
    assert retry_delay(SCHEDULE, 4, 503, "1") is None


def test_retry_after_parsing() -> None:
    assert retry_after_seconds("120", NOW) == 120.0
    assert retry_after_seconds("Tue, 24 Nov 2026 10:01:30 GMT", NOW) == 90.0
    assert retry_after_seconds("Tue, 24 Nov 2026 09:00:00 GMT", NOW) == 0.0  # past: now
    for bad in (None, "", "soon", "-5", "1.5e3"):
        assert retry_after_seconds(bad, NOW) is None


def test_retry_after_is_honoured_for_429_and_503_only() -> None:
    mid = lambda: 0.5  # noqa: E731 — no jitter
    assert retry_delay(SCHEDULE, 1, 429, "120", NOW, mid) == 120.0
    assert retry_delay(SCHEDULE, 1, 503, "Tue, 24 Nov 2026 10:01:00 GMT", NOW, mid) == 60.0
    assert retry_delay(SCHEDULE, 1, 500, "120", NOW, mid) == 5.0
    # Never sooner than the schedule asks.
    assert retry_delay(SCHEDULE, 2, 429, "1", NOW, mid) == 300.0
    # Clamped to max(longest step, 1 h): a receiver cannot park a message for a year.
    assert retry_delay(SCHEDULE, 1, 429, str(365 * 86400), NOW, mid) == 3600.0
    assert retry_delay((5.0, 86400.0), 1, 429, str(365 * 86400), NOW, mid) == 86400.0
    # Garbage is ignored.
    assert retry_delay(SCHEDULE, 1, 429, "later", NOW, mid) == 5.0
