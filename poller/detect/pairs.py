"""One asyncio task per instance-resource pair (DESIGN §2).

A pair task sleeps until its pair is due, then hands the pair to its instance's cycle
(`poller.detect.cycle.InstanceCycles.poll`), which polls every pair due at that moment under
the instance's lease with one QBO request and one commit, and tells each pair when it is due
next: on the instance's grid after a success, after a bounded exponential backoff (jittered
once for the pairs that failed together) after a failure, when the lease lapses if another
replica holds the instance. A poll request (`InstanceCycles.wake`) cuts the sleep short.
`ReconnectRequired` is handed to the instance, which stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from poller.detect.cycle import InstanceCycles
from poller.detect.feed import FeedClosed
from poller.qbo.types import ReconnectRequired
from poller.resources import Resource
from poller.store.cursors import PairKey


class PairPoller:
    """The task of one pair: `run` until stop; `poll_once` is one poll."""

    def __init__(
        self,
        cycles: InstanceCycles,
        resource: Resource,
        on_reconnect: Callable[[ReconnectRequired], None] | None = None,
    ) -> None:
        self.cycles = cycles
        self.resource = resource
        self.on_reconnect = on_reconnect

    @property
    def key(self) -> PairKey:
        return self.cycles.key(self.resource.name)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll the pair whenever it is due, until `stop` (the instance's cycle loop sees it and
        lets sleeping and waiting pairs go)."""
        due = self.cycles.schedule.first_due(await self.cycles.stored_due(self.resource.name))
        while not stop.is_set():
            if not await self.cycles.sleep_until(due, self.resource.name) or stop.is_set():
                return
            outcome = await self.cycles.poll(self.resource)
            if outcome.next_due is None:
                if isinstance(outcome.error, ReconnectRequired) and self.on_reconnect is not None:
                    self.on_reconnect(outcome.error)
                return
            due = outcome.next_due

    async def poll_once(self) -> float:
        """Poll in the next cycle; the next due time. Raises the poll's error, if any."""
        outcome = await self.cycles.poll(self.resource)
        if outcome.error is not None:
            raise outcome.error
        if outcome.next_due is None:
            raise FeedClosed(self.cycles.feed.name)
        return outcome.next_due


__all__ = ["PairPoller"]
