"""Retry delays: POLLER_RETRY_SCHEDULE with ±20 % jitter, and Retry-After (DESIGN §6).

A schedule of n delays allows n + 1 attempts: the first is immediate, attempt k + 1 waits
schedule[k - 1] (jittered) after attempt k failed. Jitter spreads the retries of notifications
that failed together (an outage) so a recovering receiver is not hit by one synchronised wave.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import datetime

from poller.backoff import spread
from poller.http_headers import retry_after_seconds

DELIVERY_JITTER = spread(0.2)  # each step × [0.8, 1.2]
# Retry-After is honoured (never retry sooner than asked) but not beyond this or the schedule's
# longest step, whichever is longer: a receiver must not be able to park a message for a year.
RETRY_AFTER_FLOOR_CAP_S = 3600.0
RETRY_AFTER_STATUSES = frozenset({429, 503})


def max_attempts(schedule: Sequence[float]) -> int:
    return len(schedule) + 1


def next_delay(
    schedule: Sequence[float], attempts_done: int, rand: Callable[[], float] = random.random
) -> float | None:
    """Seconds until the next attempt after `attempts_done` failures, or None: no attempts left."""
    if attempts_done < 1 or attempts_done > len(schedule):
        return None
    return DELIVERY_JITTER.apply(schedule[attempts_done - 1], rand)


def retry_delay(
    schedule: Sequence[float],
    attempts_done: int,
    status: int | None,
    retry_after: str | None,
    now: datetime | None = None,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """The delay before the next attempt, or None when the notification is out of attempts.

    For 429/503 a Retry-After longer than the jittered schedule step wins, capped at
    max(longest step, 1 h).
    """
    delay = next_delay(schedule, attempts_done, rand)
    if delay is None:
        return None
    if status in RETRY_AFTER_STATUSES:
        asked = retry_after_seconds(retry_after, now)
        if asked is not None:
            cap = max(max(schedule, default=0.0), RETRY_AFTER_FLOOR_CAP_S)
            delay = max(delay, min(asked, cap))
    return delay
