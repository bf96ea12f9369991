"""Progress of the long-lived services, for the systemd watchdog (neutral: imports nothing of ours).

A service that the watchdog vouches for is given a `Progress` by the supervisor (the only place
that wires them). It calls `beat()` when a turn of its main loop starts (work to do, or to look
for) and `idle()` when it goes to wait for the next turn (nothing to do until a timer or a
wake-up; a database outage it backs off from is waiting too, not a hang). Every await inside a
turn is bounded (database calls by the pool's command timeout, HTTP by its timeouts), so a turn
that has lasted longer than the watchdog period is stuck — a hung await beyond its own timeouts,
a busy loop, a deadlock — and `ProgressBoard.stale` names it. The supervisor then stops sending
WATCHDOG=1 and systemd restarts the daemon. Waiting is never stale: how long a service sleeps
between turns is its own business (the event loop that will wake it is checked by the pings
themselves).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]


class Progress:
    """One service's liveness: when its current turn started, or that it is waiting."""

    def __init__(self, name: str, clock: Clock = time.monotonic) -> None:
        self.name = name
        self._clock = clock
        self.last = clock()  # start of the current turn (a service just started is in one)
        self.waiting = False

    def beat(self) -> None:
        """A turn starts (or makes progress): the watchdog period counts from now."""
        self.last = self._clock()
        self.waiting = False

    def idle(self) -> None:
        """The turn is over; waiting for the next one cannot be stuck."""
        self.last = self._clock()
        self.waiting = True


@dataclass(frozen=True)
class Stale:
    name: str
    silent_s: float  # since the service's current turn started


class ProgressBoard:
    """The services being watched; the watchdog asks it which, if any, are stuck."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._tracked: list[Progress] = []

    def track(self, name: str) -> Progress:
        progress = Progress(name, self._clock)
        self._tracked.append(progress)
        return progress

    @property
    def names(self) -> list[str]:
        return [progress.name for progress in self._tracked]

    def stale(self, within_s: float) -> list[Stale]:
        """The services inside one turn for longer than `within_s`."""
        now = self._clock()
        return [
            Stale(progress.name, round(now - progress.last, 3))
            for progress in self._tracked
            if not progress.waiting and now - progress.last > within_s
        ]
