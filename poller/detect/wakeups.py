"""Poll requests reach the pairs running here (DESIGN §2, §8, §11).

`poller.store.polls.request_poll`, called by any process, makes pairs due in the database and
NOTIFYs `polls.CHANNEL`. Every replica runs every instance's pair tasks (the lease decides who
polls), so `Wakeups` LISTENs on a dedicated connection (`poller.store.listener`) and, for each
named instance running in this process, wakes the named pairs with `InstanceCycles.wake`:
they poll together in the instance's next cycle, one QBO request. The replica holding the lease
polls; any other finds the lease held elsewhere in that cycle and goes back to sleep.

A notification sent while the LISTEN connection was down is lost, but its due times are still
in the database: each reconnect triggers one check (`polls.due_pairs`), and the pairs whose
stored due time has come are woken the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from poller.detect.cycle import InstanceCycles
from poller.errors import DatabaseError
from poller.logs import get_logger
from poller.store import db, polls
from poller.store.db import Pool
from poller.store.listener import Connect, Handler, Listener, OnListening

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Target:
    """An instance running in this process: its cycles and the resources of its pairs."""

    cycles: InstanceCycles
    resources: Sequence[str]


Targets = Callable[[], Mapping[int, Target]]  # instance id → target, as of now


class Wakeups:
    """`run(stop)` listens until stop; `targets()` says which instances run here."""

    def __init__(
        self,
        pool: Pool,
        connect: Connect,
        targets: Targets,
        *,
        channels: Mapping[str, Handler] | None = None,
        on_listening: OnListening | None = None,
    ) -> None:
        """`channels` and `on_listening`: the owner's own channels on the same connection (the
        poller's instance changes), so that one replica holds one LISTEN connection."""
        self.pool = pool
        self.targets = targets
        self.also_listening = on_listening
        self.listener = Listener(
            connect,
            {polls.CHANNEL: self.notified, **(channels or {})},
            name="poll",
            on_listening=self._listening,
        )

    async def run(self, stop: asyncio.Event) -> None:
        await self.listener.run(stop)

    def notified(self, payload: str) -> None:
        """One notification of `polls.CHANNEL`: wake the pairs it names."""
        try:
            wakeup = polls.parse_wakeup(payload)
        except ValueError as exc:
            log.warning("poll_request_unreadable", error=str(exc))
            return
        targets = self.targets()
        if wakeup.instance_ids is None:
            ids = sorted(targets)
        else:
            ids = sorted(wakeup.instance_ids & targets.keys())
        for instance_id in ids:
            target = targets[instance_id]
            if wakeup.resources is None:
                names = list(target.resources)
            else:
                names = [name for name in target.resources if name in wakeup.resources]
            self._wake(instance_id, target, names, "notified")

    async def _listening(self, missed: bool) -> None:
        """After a reconnect: the requests that came while nobody listened, from their due
        times (pairs simply due by now are woken too, which changes nothing)."""
        if self.also_listening is not None:
            await self.also_listening(missed)
        if not missed:
            return
        targets = self.targets()
        if not targets:
            return
        try:
            async with db.acquire(self.pool) as conn:
                due = await polls.due_pairs(conn, sorted(targets))
        except DatabaseError as exc:  # the pairs' own schedules still hold
            log.warning("poll_requests_check_failed", error=str(exc))
            return
        for instance_id, names in due.items():
            target = targets.get(instance_id)
            if target is not None:
                known = [name for name in names if name in target.resources]
                self._wake(instance_id, target, known, "due after reconnect")

    def _wake(self, instance_id: int, target: Target, names: list[str], reason: str) -> None:
        if not names:
            return
        target.cycles.wake(names)
        log.info(
            "poll_requested",
            instance=target.cycles.cfg.instance_name,
            instance_id=instance_id,
            resources=names,
            reason=reason,
        )


__all__ = ["Target", "Targets", "Wakeups"]
