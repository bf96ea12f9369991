"""Progress of the long-lived services, for the systemd watchdog (neutral: imports nothing of ours).

A service that the watchdog vouches for is given a `Progress` by the supervisor (the only place
that wires them) and calls `beat()` each time its main loop comes round: after work done, after a
handled failure (a database outage it backs off from is not a hang), or after finding nothing to
do. Every await inside one turn of such a loop is bounded (database calls by the pool's command
timeout, HTTP by its timeouts), so a loop that has not come round within the watchdog period is
stuck — a hung await beyond its own timeouts, a busy loop, a deadlock — and `ProgressBoard.stale`
names it. The supervisor then stops sending WATCHDOG=1 and systemd restarts the daemon.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]


class Progress:
    """One service's liveness: the monotonic time its loop last came round."""

    def __init__(self, name: str, clock: Clock = time.monotonic) -> None:
        self.name = name
        self._clock = clock
        self.last = clock()  # a service just started has not had time to be stuck

    def beat(self) -> None:
        self.last = self._clock()


@dataclass(frozen=True)
class Stale:
    name: str
    silent_s: float  # since the service's loop last came round


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
        """The services whose loops have not come round for longer than `within_s`."""
        now = self._clock()
        return [
            Stale(progress.name, round(now - progress.last, 3))
            for progress in self._tracked
            if now - progress.last > within_s
        ]
