"""When pairs are due: an instance's shared grid, and the backoff of a failing pair."""

from __future__ import annotations

import math
import random
import time
from datetime import datetime

from poller.backoff import Backoff, spread

BACKOFF_CAP_S = 600.0  # a failing pair is retried at least every 10 minutes
BACKOFF_MIN_S = 0.05
PAIR_JITTER = spread(0.2)  # pairs that failed together (an outage) come back spread out
# First polls of instances spread over up to this long; many instances started together
# spread further (poller.detect.service.START_RATE), up to the whole interval: the phase of
# each instance's grid is its first poll, so instances keep polling spread as they started.
INITIAL_SPREAD_CAP_S = 30.0


class InstanceSchedule:
    """The due-time grid shared by an instance's pairs: anchor + k × interval.

    Pairs polled in the same cycle get the same next due time, and a pair that fell off (an
    error, a lease held elsewhere) snaps back onto the grid, so the instance keeps being
    served with one request per cycle.
    """

    def __init__(
        self, interval_s: float, spread_s: float | None = None, *, baseline_now: bool = False
    ) -> None:
        self.interval_s = interval_s
        # A webhook instance polls at once when nothing is due later (DESIGN §11: it takes its
        # baseline at start, and after a restart it catches up on notifications it missed),
        # then keeps to its backstop grid.
        self.baseline_now = baseline_now
        spread = min(interval_s, INITIAL_SPREAD_CAP_S) if spread_s is None else spread_s
        # A random phase per instance spreads instances over the interval.
        self.anchor = time.time() + random.uniform(0, spread)

    def first_due(self, stored: datetime | None) -> float:
        """When to poll first: the stored schedule when it is still ahead (resume after a
        restart, or a takeover from a crashed replica, on time: those due times are spread
        already), which then anchors the grid; else the anchor (the start-up spread)."""
        stored_at = stored.timestamp() if stored is not None else 0.0
        if stored_at <= time.time():
            return time.time() if self.baseline_now else self.anchor
        self.anchor = stored_at
        return stored_at

    def next_due(self, after: float) -> float:
        """The first grid point strictly after `after`."""
        steps = math.floor((after - self.anchor) / self.interval_s) + 1
        return self.anchor + steps * self.interval_s


def backoff_s(errors: int, interval_s: float) -> float:
    """Bounded exponential backoff with ±20 % jitter (never faster than the interval): twice
    the interval after the first error, doubling per error, at most max(10 min, interval)."""
    backoff = Backoff(
        base_s=2 * max(interval_s, BACKOFF_MIN_S),
        cap_s=max(BACKOFF_CAP_S, interval_s),
        jitter=PAIR_JITTER,
    )
    return backoff.delay(errors)
