"""A per-URL circuit breaker on timeouts (DESIGN §6).

A receiver that accepts requests and never answers costs a whole delivery timeout per request,
and every notification waiting for it would spend its attempts on nothing. After `threshold`
timeouts in a row the URL is paused: no request goes to it until the pause ends, and the
dispatcher reschedules what waits for it without counting an attempt. Then one probe is let
through: any answer (even an error status or a refused connection: the URL no longer hangs)
closes the breaker; a timeout pauses the URL again, for twice as long, up to the cap.

Results of requests that started before the latest pause are ignored: they were already in
flight when it opened, and say nothing about the URL since. The state lives in the process
(each dispatcher learns on its own; a restart starts closed), and only for URLs that timed out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from poller.backoff import Backoff


class Pause(NamedTuple):
    """A URL's current (or last) pause, in monotonic seconds."""

    started_at: float
    until: float


@dataclass
class _UrlState:
    timeouts: int = 0  # timeouts in a row while closed
    pauses: int = 0  # pauses in a row; the next one lasts `backoff.step(pauses + 1)`
    opened_at: float = -1.0  # monotonic start of the latest pause (-1: never paused)
    until: float = 0.0  # monotonic end of the latest pause
    probing: bool = False  # the probe after a pause is in flight


class Breaker:
    """The breakers of every callback URL of one dispatcher."""

    def __init__(
        self,
        threshold: int,
        backoff: Backoff,
        probe_wait_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.backoff = backoff
        self.probe_wait_s = probe_wait_s  # how long others wait for the probe's answer
        self.clock = clock
        self._states: dict[str, _UrlState] = {}

    def urls(self) -> list[str]:
        """URLs with breaker state (some timeouts, or paused)."""
        return list(self._states)

    def is_open(self, url: str) -> bool:
        state = self._states.get(url)
        return state is not None and state.until > self.clock()

    def open_count(self) -> int:
        now = self.clock()
        return sum(1 for state in self._states.values() if state.until > now)

    def pause(self, url: str) -> Pause | None:
        """The URL's current pause, or None when it is not paused."""
        state = self._states.get(url)
        if state is None or state.until <= self.clock():
            return None
        return Pause(state.opened_at, state.until)

    def room(self, url: str, limit: int) -> int:
        """How many requests to `url` may be in flight now: `limit` while closed, none while
        paused, one (the probe) once a pause has ended."""
        state = self._states.get(url)
        if state is None or state.opened_at < 0:
            return limit
        if state.until > self.clock() or state.probing:
            return 0
        return 1

    def admit(self, url: str) -> float:
        """0 when a request to `url` may start now (the probe, after a pause), else how many
        seconds it should wait before it is tried again."""
        state = self._states.get(url)
        if state is None or state.opened_at < 0:
            return 0.0
        now = self.clock()
        if state.until > now:
            return state.until - now
        if state.probing:
            return self.probe_wait_s
        state.probing = True
        return 0.0

    def record(self, url: str, started_at: float, timed_out: bool) -> float | None:
        """The result of a request to `url` started at `started_at` (monotonic). Returns the
        pause in seconds when this result paused the URL, else None."""
        state = self._states.get(url)
        if state is not None and started_at < state.opened_at:
            return None  # in flight when the URL was paused
        if not timed_out:
            self._states.pop(url, None)  # it answers: closed, and the pauses start over
            return None
        if state is None:
            state = self._states[url] = _UrlState()
        if state.probing:
            return self._open(state)
        state.timeouts += 1
        if state.timeouts >= self.threshold:
            return self._open(state)
        return None

    def abandon(self, url: str, started_at: float) -> None:
        """A request ended without a result (cancelled): a probe may be sent again."""
        state = self._states.get(url)
        if state is not None and started_at >= state.opened_at:
            state.probing = False

    def _open(self, state: _UrlState) -> float:
        state.pauses += 1
        pause_s = self.backoff.step(state.pauses)
        state.opened_at = self.clock()
        state.until = state.opened_at + pause_s
        state.timeouts = 0
        state.probing = False
        return pause_s
