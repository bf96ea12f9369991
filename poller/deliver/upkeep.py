"""The delivery services the supervisor runs: dispatcher, pruner, outbox gauges."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from poller import logs, metrics
from poller.aio import sleep_unless
from poller.errors import DatabaseError
from poller.store import db
from poller.store import notifications as store

log = logs.get_logger(__name__)
GAUGE_INTERVAL_S = 10.0


def prune_interval(retention_s: float) -> float:
    """Often enough that the table never holds much more than the retention, at most every 5 min."""
    return min(300.0, max(1.0, retention_s / 10))


PruneBatch = Callable[[db.Pool, float, int], Awaitable[int]]


class Pruner:
    """Deletes rows older than the retention, in small batches: by default delivered
    notifications (dead letters stay); the supervisor also prunes the webhook records."""

    def __init__(
        self,
        pool: db.Pool,
        retention_s: float,
        interval_s: float | None = None,
        batch: int = store.PRUNE_BATCH,
        *,
        prune_batch: PruneBatch = store.prune_batch,
        label: str = "outbox",
    ) -> None:
        self.pool = pool
        self.retention_s = retention_s
        self.interval_s = interval_s if interval_s is not None else prune_interval(retention_s)
        self.batch = batch
        self.prune_batch = prune_batch
        self.label = label  # log events "<label>_pruned", "<label>_prune_failed"
        self.name = "deliver.pruner" if label == "outbox" else f"{label}.pruner"

    async def run(self, stop: asyncio.Event) -> None:
        while not await sleep_unless(stop, self.interval_s):
            try:
                deleted = await self.prune_once(stop)
            except DatabaseError as exc:
                log.warning(f"{self.label}_prune_failed", error=f"{type(exc).__name__}: {exc}")
                continue
            if deleted:
                log.info(f"{self.label}_pruned", deleted=deleted, retention_s=self.retention_s)

    async def prune_once(self, stop: asyncio.Event | None = None) -> int:
        total = 0
        while stop is None or not stop.is_set():
            deleted = await self.prune_batch(self.pool, self.retention_s, self.batch)
            total += deleted
            if deleted < self.batch:
                break
            await asyncio.sleep(0)  # let deliveries use the pool between batches
        return total


class OutboxGauges:
    """Keeps OUTBOX_DEPTH, HELD_NOTIFICATIONS and DEAD_LETTERS current for /metrics."""

    name = "deliver.gauges"

    def __init__(self, pool: db.Pool, interval_s: float = GAUGE_INTERVAL_S) -> None:
        self.pool = pool
        self.interval_s = interval_s

    async def run(self, stop: asyncio.Event) -> None:
        while True:
            try:
                await self.refresh()
            except DatabaseError as exc:
                log.warning("outbox_gauges_failed", error=f"{type(exc).__name__}: {exc}")
            if await sleep_unless(stop, self.interval_s):
                return

    async def refresh(self) -> dict[str, int]:
        counts = await store.counts(self.pool)
        metrics.OUTBOX_DEPTH.set(counts["pending"])
        metrics.HELD_NOTIFICATIONS.set(counts["held"])
        metrics.DEAD_LETTERS.set(counts["dead"])
        return counts
