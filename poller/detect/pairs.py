"""An instance's pairs and their schedules: one task per instance, each pair a row of data.

DESIGN §2 gives every instance-resource pair its own schedule: it is due on its own, fails and
backs off on its own, and a poll request wakes it on its own. That model is kept as data, not
as tasks: `InstancePairs` holds, per pair, its next due time, and ONE task per instance sleeps
until the earliest of them, hands every pair due by then to the instance's cycle
(`poller.detect.cycle.InstanceCycles.submit`: one QBO request, one commit), and takes each
pair's next due time from its outcome: on the instance's grid after a success, after a bounded
exponential backoff after a failure, when the lease lapses if another replica holds it. Why not
a task per pair: a sleeping task with its frames, futures and callbacks is ~2.6 KB and ~20
objects the garbage collector re-traverses; at 100,000 pairs that was 250 MiB and most of the
collector's pauses (issue 17). Here a pair is a dictionary entry.

A poll request (`wake`, through `InstanceCycles.wake`) makes the named pairs due now: sleeping
ones poll in the next cycle together; one already waiting for its cycle just stays; one in the
cycle in progress (its request may predate the change) polls again right after it.
`ReconnectRequired` is handed to the instance (`on_reconnect`), which stops.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from poller.detect.cycle import InstanceCycles
from poller.detect.failures import Outcome
from poller.detect.feed import FeedClosed
from poller.qbo.types import ReconnectRequired
from poller.resources import Resource
from poller.store.cursors import PairKey


class InstancePairs:
    """The pairs of one instance: `run` polls each whenever it is due, until stop."""

    def __init__(
        self,
        cycles: InstanceCycles,
        resources: Sequence[Resource],
        on_reconnect: Callable[[ReconnectRequired], None] | None = None,
    ) -> None:
        self.cycles = cycles
        self.resources = list(resources)
        self.on_reconnect = on_reconnect
        self._by_name = {res.name: res for res in self.resources}
        self.due: dict[str, float] = {}  # pair → wall time it is due next (pairs still polling)
        self._woken: set[str] = set()  # due now, whatever `due` says
        self._in_flight: set[str] = set()
        self._nudge: asyncio.Future[None] | None = None
        cycles.attach(self.wake, len(self._by_name))

    def names(self) -> list[str]:
        return [res.name for res in self.resources]

    async def run(self, stop: asyncio.Event) -> None:
        """Poll the pairs whenever they are due, until `stop` (the instance's cycle loop sees it
        too and lets waiting pairs go) or until no pair is left to poll. Handing pairs to the
        cycle does not wait for it: a pair woken while the cycle gathers pairs joins it."""
        self._first_dues(await self.cycles.stored_schedule())
        while self.due and not stop.is_set() and not self.cycles.closed:
            ready = self._ready(time.time())
            if ready:
                self._submit(ready)
            await self._sleep(stop)

    def _first_dues(self, stored: dict[str, datetime]) -> None:
        """Each pair's first due time, from its stored schedule (a helper, so that the
        stored dictionary is not kept for the instance's lifetime by `run`'s frame)."""
        schedule = self.cycles.schedule
        for res in self.resources:
            self.due[res.name] = schedule.first_due(stored.get(res.name))

    def _submit(self, names: list[str]) -> None:
        self._woken.difference_update(names)
        self._in_flight.update(names)
        self.cycles.submit([self._by_name[name] for name in names], self._polled)

    def _polled(self, name: str, outcome: Outcome) -> None:
        self._in_flight.discard(name)
        if not self._in_flight:
            # A set never shrinks: after a cycle of 22 pairs it keeps a 2 KB table; a sleeping
            # instance gets a small empty one instead (issue 17: 9 MiB at 4,500 instances).
            self._in_flight = set()
        self._settled(name, outcome)
        self._poke()

    def wake(self, names: Iterable[str]) -> None:
        """Make the named pairs due now (see the module doc); unknown names are ignored. A pair
        waiting for a cycle that has not started yet is left as it is."""
        queued = self.cycles.queued()
        for name in names:
            if name in self.due and (name not in self._in_flight or name not in queued):
                self._woken.add(name)
        self._poke()

    def _poke(self) -> None:
        if self._nudge is not None and not self._nudge.done():
            self._nudge.set_result(None)

    def _ready(self, now: float) -> list[str]:
        return [
            name
            for name, due in self.due.items()
            if name not in self._in_flight and (due <= now or name in self._woken)
        ]

    def _settled(self, name: str, outcome: Outcome) -> None:
        if outcome.next_due is not None:
            self.due[name] = outcome.next_due
            return
        self.due.pop(name, None)  # stops polling: the feed closed, or the grant is lost
        self._woken.discard(name)
        if isinstance(outcome.error, ReconnectRequired) and self.on_reconnect is not None:
            self.on_reconnect(outcome.error)

    async def _sleep(self, stop: asyncio.Event) -> None:
        """Until the earliest due time of a pair not in a cycle, a `wake` or an outcome (the
        cycle loop wakes us when it closes)."""
        if stop.is_set() or self.cycles.closed:
            return
        loop = asyncio.get_running_loop()
        nudge = self._nudge = loop.create_future()
        waiting = [due for name, due in self.due.items() if name not in self._in_flight]
        timer = None
        if waiting:
            timer = loop.call_later(max(0.0, min(waiting) - time.time()), _done, nudge)
        try:
            await nudge
        finally:
            if timer is not None:
                timer.cancel()
            self._nudge = None


def _done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class PairPoller:
    """One pair polled on demand (tests and tools): `poll_once` is one poll in the next
    cycle of its instance."""

    def __init__(self, cycles: InstanceCycles, resource: Resource) -> None:
        self.cycles = cycles
        self.resource = resource

    @property
    def key(self) -> PairKey:
        return self.cycles.key(self.resource.name)

    async def poll_once(self) -> float:
        """Poll in the next cycle; the next due time. Raises the poll's error, if any."""
        outcome = await self.cycles.poll(self.resource)
        if outcome.error is not None:
            raise outcome.error
        if outcome.next_due is None:
            raise FeedClosed(self.cycles.feed.name)
        return outcome.next_due


__all__ = ["InstancePairs", "PairPoller"]
