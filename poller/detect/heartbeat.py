"""The replica's heartbeat (DESIGN §8): what keeps its instance leases live.

`Heartbeat` is a service of its own (the supervisor runs it beside the poller): every few
seconds it writes the replica's row (`poller.store.replicas.beat`). Another replica may take an
instance over once its owner's heartbeat is older than POLLER_REPLICA_TIMEOUT, so a lease is
held for as long as the process lives, whatever the poll interval or the length of a cycle, and
a crashed replica's instances move on within the timeout.

`Liveness` is what this process knows of its own heartbeat: the monotonic time until which no
other replica can consider it dead (the send time of its last successful beat plus the
timeout; the database stamps the beat later than that). The instances' cycles believe they hold
their leases only until then: a replica whose beats cannot be written (a database outage) stops
believing it holds anything after the timeout, as the other replicas stop believing it too.
When a beat succeeds again after failures, `Liveness` tells its subscribers that the database
is back (pairs that failed only because of it retry at once instead of at their backoff).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from poller.aio import sleep_unless
from poller.errors import DatabaseError
from poller.logs import get_logger
from poller.store import db, replicas

log = get_logger(__name__)

BEATS_PER_TIMEOUT = 3  # a beat lost (or slow) still leaves two before the timeout
MAX_BEAT_EVERY_S = 5.0  # "every few seconds", even with a long timeout
FAILED_BEAT_RETRY_S = 1.0  # after a failed beat: notice the database's return within a second
PRUNE_AFTER_S = 86400.0  # rows of replicas silent for a day are dropped (crashed processes)


class Liveness:
    """This replica's own view of its heartbeat (see module docstring)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._beat_sent = float("-inf")  # monotonic send time of the last successful beat
        self._down = False  # the last beat failed
        self._on_recovered: list[Callable[[], None]] = []

    def alive_until(self) -> float:
        """Monotonic time until which no other replica may take our leases (from heartbeats
        alone: a lease taken or committed later lasts longer, see `InstanceCycles`)."""
        return self._beat_sent + self.timeout_s

    @property
    def down(self) -> bool:
        """The last beat failed."""
        return self._down

    def beaten(self, sent: float) -> None:
        """A beat sent at monotonic `sent` was written."""
        self._beat_sent = max(self._beat_sent, sent)
        if self._down:
            self._down = False
            for callback in list(self._on_recovered):
                callback()

    def failed(self) -> None:
        """A beat could not be written."""
        self._down = True

    def subscribe(self, on_recovered: Callable[[], None]) -> Callable[[], None]:
        """Call `on_recovered` whenever a beat succeeds after failures; returns the
        unsubscribe function."""
        self._on_recovered.append(on_recovered)

        def unsubscribe() -> None:
            if on_recovered in self._on_recovered:
                self._on_recovered.remove(on_recovered)

        return unsubscribe


class Heartbeat:
    """The service that writes the replica's heartbeat until stop, then removes its row."""

    name = "heartbeat"

    def __init__(
        self,
        pool: db.Pool,
        replica_id: str,
        timeout_s: float,
        liveness: Liveness | None = None,
    ) -> None:
        self.pool = pool
        self.replica_id = replica_id
        self.liveness = liveness or Liveness(timeout_s)
        self.every_s = min(timeout_s / BEATS_PER_TIMEOUT, MAX_BEAT_EVERY_S)

    async def run(self, stop: asyncio.Event) -> None:
        log.info("heartbeat_started", replica=self.replica_id, every_s=round(self.every_s, 3))
        await self._prune()
        while not stop.is_set():
            beaten = await self._beat()
            wait = self.every_s if beaten else min(self.every_s, FAILED_BEAT_RETRY_S)
            await sleep_unless(stop, wait)
        await self._forget()

    async def _beat(self) -> bool:
        sent = time.monotonic()
        try:
            async with db.acquire(self.pool) as conn:
                await replicas.beat(conn, self.replica_id)
        except DatabaseError as exc:
            if not self.liveness.down:
                log.warning("heartbeat_failed", replica=self.replica_id, error=str(exc))
            self.liveness.failed()
            return False
        if self.liveness.down:
            log.info("heartbeat_recovered", replica=self.replica_id)
        self.liveness.beaten(sent)
        return True

    async def _prune(self) -> None:
        try:
            async with db.acquire(self.pool) as conn:
                pruned = await replicas.prune(conn, PRUNE_AFTER_S)
        except DatabaseError as exc:
            log.warning("replicas_prune_failed", error=str(exc))
            return
        if pruned:
            log.info("replicas_pruned", replicas=pruned)

    async def _forget(self) -> None:
        """Graceful stop: the row goes (the leases themselves are released by the poller)."""
        try:
            async with db.acquire(self.pool) as conn:
                await replicas.forget(conn, self.replica_id)
        except DatabaseError as exc:
            log.warning("heartbeat_forget_failed", replica=self.replica_id, error=str(exc))


__all__ = ["Heartbeat", "Liveness"]
