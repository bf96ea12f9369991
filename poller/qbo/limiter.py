"""Per-realm request limiter: what Intuit meters, enforced before Intuit has to (reference §5.1).

Per realm: a sliding window (500 requests per 60 s), a burst limit (10 per second) and a cap on
requests in flight (10). A 429 pauses only that realm, for `Retry-After` or 60 s; other realms
keep going. The daemon uses only `budget_share` of the window (POLLER_QBO_BUDGET_SHARE, 0.8 by
default): whatever its instances' intervals, the realm's other apps keep the rest. Everything
is asyncio sleeps until a computed instant: no polling loops.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass


@dataclass(frozen=True)
class LimiterConfig:
    per_window: int = 500  # requests per `window_s` (Intuit: 500/min per realm)
    window_s: float = 60.0
    per_second: int = 10  # requests per `second_s` (Intuit: 10/s per realm and app)
    second_s: float = 1.0
    max_in_flight: int = 10  # concurrent requests (Intuit: >10 concurrent → 429)
    throttle_pause_s: float = 60.0  # a 429 without Retry-After: Intuit says wait 60 s
    # Requests reach Intuit a little after they leave here, not all equally late: windows are
    # held this much longer so jitter on the wire cannot turn 10 starts into 11 arrivals.
    margin_s: float = 0.05


class _Window:
    """Start times of recent requests; answers how long until one more fits."""

    def __init__(self, limit: int, span: float) -> None:
        self.limit = limit
        self.span = span
        # A list, not a deque: an empty deque is 760 bytes, two per realm (issue 17); at most
        # `limit` entries, mostly one or two, so dropping the oldest costs nothing to speak of.
        self.starts: list[float] = []

    def wait(self, now: float) -> float:
        expired = 0
        while expired < len(self.starts) and self.starts[expired] <= now - self.span:
            expired += 1
        if expired:
            del self.starts[:expired]
        if len(self.starts) < self.limit:
            return 0.0
        # The oldest start that must leave the window before one more request fits.
        return self.starts[len(self.starts) - self.limit] + self.span - now

    def record(self, now: float) -> None:
        self.starts.append(now)


def budget(config: LimiterConfig, share: float) -> int:
    """Requests per window the daemon allows itself: its share of Intuit's, at least one."""
    return max(1, math.floor(config.per_window * share))


class _RealmState:
    def __init__(self, config: LimiterConfig, per_window: int) -> None:
        self.in_flight = asyncio.Semaphore(config.max_in_flight)
        # FIFO admission: one waiter at a time computes and sleeps, so requests start in the
        # order they asked and nobody is starved by a thundering herd.
        self.admission = asyncio.Lock()
        self.minute = _Window(per_window, config.window_s + config.margin_s)
        self.second = _Window(config.per_second, config.second_s + config.margin_s)
        self.paused_until = 0.0
        # Set when a pause is extended: wakes the request sleeping in admission. Made by the
        # first sleep (an Event holds a 760-byte deque; most realms never sleep).
        self.resume: asyncio.Event | None = None
        self.started = 0


class RealmLimiter:
    """One limiter for the whole process; state per realm, created on first use."""

    def __init__(
        self,
        config: LimiterConfig | None = None,
        clock: Callable[[], float] | None = None,
        *,
        budget_share: float = 1.0,
    ) -> None:
        self.config = config or LimiterConfig()
        self.per_window = budget(self.config, budget_share)
        self._clock = clock
        self._realms: dict[str, _RealmState] = {}

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    def _state(self, realm_id: str) -> _RealmState:
        state = self._realms.get(realm_id)
        if state is None:
            state = self._realms[realm_id] = _RealmState(self.config, self.per_window)
        return state

    @asynccontextmanager
    async def slot(self, realm_id: str) -> AsyncIterator[None]:
        """Hold one request slot of `realm_id` for the duration of an HTTP request."""
        state = self._state(realm_id)
        async with state.in_flight:
            await self._admit(state)
            yield

    async def _admit(self, state: _RealmState) -> None:
        async with state.admission:
            while True:
                now = self._now()
                delay = max(
                    state.paused_until - now, state.minute.wait(now), state.second.wait(now)
                )
                if delay <= 0:
                    state.minute.record(now)
                    state.second.record(now)
                    state.started += 1
                    return
                resume = state.resume = state.resume or asyncio.Event()
                resume.clear()
                # A pause that arrives meanwhile sets `resume`, so the delay is recomputed.
                with suppress(TimeoutError):
                    await asyncio.wait_for(resume.wait(), timeout=delay)

    def pause(self, realm_id: str, seconds: float | None = None) -> float:
        """A 429 for `realm_id`: no new request starts for `seconds` (default 60). Returns it."""
        seconds = self.config.throttle_pause_s if seconds is None else max(0.0, seconds)
        state = self._state(realm_id)
        until = self._now() + seconds
        if until > state.paused_until:
            state.paused_until = until
            if state.resume is not None:
                state.resume.set()
        return seconds

    def paused_for(self, realm_id: str) -> float:
        """Seconds left of the realm's pause (0 when not paused)."""
        state = self._realms.get(realm_id)
        return max(0.0, state.paused_until - self._now()) if state else 0.0

    def started(self, realm_id: str) -> int:
        """Requests admitted for this realm so far (tests and benchmarks)."""
        state = self._realms.get(realm_id)
        return state.started if state else 0
