"""One asyncio task per instance-resource pair (DESIGN §2).

A pair task sleeps until its pair is due, takes the pair's lease, asks its instance's
ChangeFeed for changes, diffs them against the snapshot and commits everything in one
transaction (`poller.store.outbox`). Pairs of one instance share a schedule grid so they come
due together and the feed serves them with one request. A failed poll backs off (bounded,
exponential, with jitter); `ReconnectRequired` is handed to the instance, which stops.
"""
from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import asyncpg

from poller import metrics
from poller.detect import diff as diff_mod
from poller.detect.feed import ChangeFeed, FeedClosed, PairAnswer, PairRequest, Ticket
from poller.logs import get_logger
from poller.qbo.types import QboError, ReconnectRequired
from poller.resources import Resource
from poller.store import cursors, outbox
from poller.store.cursors import Cursor, LeaseLost, PairKey

log = get_logger(__name__)
UTC = timezone.utc

BACKOFF_CAP_S = 600.0          # a failing pair is retried at least every 10 minutes
BACKOFF_MIN_S = 0.05
INITIAL_SPREAD_CAP_S = 30.0    # first polls of instances spread over up to this long
BeforeCommit = Callable[[PairKey, PairAnswer], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class PairConfig:
    """Everything a pair task needs to know (from its instance row and the Settings)."""

    instance_id: int
    instance_name: str
    resource: Resource
    refresh_interval_s: float
    initial_mode: str
    deactivated_as_deleted: bool
    overlap_s: float
    reconcile_interval_s: float
    events_per_notification: int
    lease_s: float
    owner: str

    @property
    def key(self) -> PairKey:
        return PairKey(self.instance_id, self.resource.name)


class InstanceSchedule:
    """The due-time grid shared by an instance's pairs: anchor + k × interval.

    Pairs polled in the same cycle get the same next due time, and a pair that fell off (an
    error, a lease it did not hold) snaps back onto the grid, so the feed keeps serving the
    whole instance with one request per cycle.
    """

    def __init__(self, interval_s: float, spread_s: float | None = None) -> None:
        self.interval_s = interval_s
        spread = min(interval_s, INITIAL_SPREAD_CAP_S) if spread_s is None else spread_s
        # A random phase per instance spreads instances over the interval.
        self.anchor = time.time() + random.uniform(0, spread)

    def first_due(self, stored: datetime | None) -> float:
        """When to poll first: the stored schedule (resume after restart), else the anchor."""
        stored_at = stored.timestamp() if stored is not None else 0.0
        return max(stored_at, self.anchor) if stored_at > time.time() else self.anchor

    def next_due(self, after: float) -> float:
        """The first grid point strictly after `after`."""
        steps = math.floor((after - self.anchor) / self.interval_s) + 1
        return self.anchor + steps * self.interval_s


def backoff_s(errors: int, interval_s: float) -> float:
    """Bounded exponential backoff with ±20 % jitter (never faster than the interval)."""
    base = max(interval_s, BACKOFF_MIN_S) * (2 ** min(errors, 16))
    return min(base, max(BACKOFF_CAP_S, interval_s)) * random.uniform(0.8, 1.2)


class PairPoller:
    """The task of one pair: `run` until stop; `poll_once` is one poll."""

    def __init__(self, pool: asyncpg.Pool, feed: ChangeFeed, cfg: PairConfig,
                 schedule: InstanceSchedule,
                 on_reconnect: Callable[[ReconnectRequired], None] | None = None,
                 before_commit: BeforeCommit | None = None) -> None:
        self.pool = pool
        self.feed = feed
        self.cfg = cfg
        self.schedule = schedule
        self.on_reconnect = on_reconnect
        self.before_commit = before_commit
        self.errors = 0
        self.polls = 0

    async def run(self, stop: asyncio.Event) -> None:
        due = await self._first_due()
        while not stop.is_set():
            if await _sleep_until(due, stop):
                break
            try:
                due = await self._poll_and_schedule(stop)
            except FeedClosed:
                return
            except ReconnectRequired as exc:
                if self.on_reconnect is not None:
                    self.on_reconnect(exc)
                return
            if due is None:
                return

    async def _first_due(self) -> float:
        try:
            async with self.pool.acquire() as conn:
                stored = await cursors.next_due_at(conn, self.cfg.key)
        except (asyncpg.PostgresError, OSError):
            stored = None
        return self.schedule.first_due(stored)

    async def _poll_and_schedule(self, stop: asyncio.Event) -> float | None:
        """One poll; returns the next due time (None: stop)."""
        try:
            outcome = await self.poll_once(stop)
        except (FeedClosed, ReconnectRequired):
            raise
        except LeaseLost as exc:
            log.info("pair_lease_lost", **self._ctx(), detail=str(exc))
            return self.schedule.next_due(time.time())
        except Exception as exc:  # noqa: BLE001 - any failure of one pair must not stop others
            return await self._failed(exc)
        return outcome

    async def poll_once(self, stop: asyncio.Event | None = None) -> float | None:
        """Lease → feed → diff → commit. Returns the next due time (None: stopping)."""
        ticket = self.feed.announce()
        try:
            async with self.pool.acquire() as conn:
                cursor = await cursors.acquire(conn, self.cfg.key, self.cfg.owner, self.cfg.lease_s)
                if cursor is None:
                    return await self._held_elsewhere(conn)
            answer = await self._fetch(cursor, ticket, stop)
        finally:
            self.feed.withdraw(ticket)
        if answer is None:
            return None
        if self.before_commit is not None:
            await self.before_commit(self.cfg.key, answer)
        next_due = self.schedule.next_due(answer.cycle_started)
        stats = await self._commit(cursor, answer, next_due)
        self._record_success(cursor, answer, stats)
        return next_due

    async def _fetch(self, cursor: Cursor, ticket: Ticket,
                     stop: asyncio.Event | None) -> PairAnswer | None:
        request = PairRequest(self.cfg.resource, cursor.watermark if cursor.initialized else None,
                              self.cfg.initial_mode, self._reconcile_due(cursor))
        if stop is None:
            return await self.feed.fetch(request, ticket)
        return await _unless_stopped(self.feed.fetch(request, ticket), stop)

    def _reconcile_due(self, cursor: Cursor) -> bool:
        age = cursor.reconciled_age_s
        return age is None or age >= self.cfg.reconcile_interval_s

    async def _commit(self, cursor: Cursor, answer: PairAnswer, next_due: float) -> outbox.WriteStats:
        """ONE transaction: lock (fencing) → snapshot → diff → snapshot/events/notifications →
        fenced watermark → NOTIFY."""
        ctx = self._context(cursor, answer)
        ids = None if answer.complete else sorted({str(o["Id"]) for o in answer.objects if "Id" in o})
        advance = cursors.Advance(
            watermark=answer.time, baseline=None if cursor.initialized else answer.time,
            reconciled=answer.complete, next_due_at=datetime.fromtimestamp(next_due, UTC))
        if not answer.objects and not answer.complete:
            # Nothing changed (the common case): the fenced watermark UPDATE alone is atomic.
            async with self.pool.acquire() as conn:
                await cursors.advance(conn, self.cfg.key, cursor.lease_token, advance)
            return outbox.WriteStats(0, 0, 0, {})
        async with self.pool.acquire() as conn, conn.transaction():
            await cursors.lock(conn, self.cfg.key, cursor.lease_token)
            previous = await outbox.load_snapshots(conn, self.cfg.key, ids)
            result = diff_mod.diff(previous, answer.objects, ctx)
            return await outbox.write(conn, self.cfg.key, cursor.lease_token, result.snapshots,
                                      result.events, advance, self.cfg.events_per_notification)

    def _context(self, cursor: Cursor, answer: PairAnswer) -> diff_mod.PairContext:
        first = not cursor.initialized
        backfill = first and self.cfg.initial_mode == "backfill"
        return diff_mod.PairContext(
            baseline=None if backfill else (answer.time if first else cursor.baseline),
            deactivated_as_deleted=self.cfg.deactivated_as_deleted,
            is_list=self.cfg.resource.is_list,
            record_only=first and not backfill,
            complete=answer.complete,
            observed_at=answer.time)

    def _record_success(self, cursor: Cursor, answer: PairAnswer, stats: outbox.WriteStats) -> None:
        self.errors = 0
        self.polls += 1
        metrics.POLLS.labels("ok").inc()
        for kind, n in stats.by_type.items():
            metrics.EVENTS.labels(kind).inc(n)
        lag = (self.feed.qbo_now() - answer.time).total_seconds()
        metrics.WATERMARK_LAG.labels(self.cfg.instance_name, self.cfg.resource.name).set(max(lag, 0))
        if stats.events or not cursor.initialized or answer.complete:
            log.info("pair_polled", **self._ctx(), mode=answer.mode.value, objects=len(answer.objects),
                     events=stats.events, duplicates=stats.duplicates,
                     notifications=stats.notifications, watermark=answer.time.isoformat())

    async def _held_elsewhere(self, conn: asyncpg.Connection) -> float:
        """Another replica holds the pair: look again when its lease lapses (or next cycle)."""
        expires_in = await cursors.lease_expires_in(conn, self.cfg.key)
        wait = self.cfg.refresh_interval_s if expires_in is None else expires_in + 0.05
        return time.time() + min(max(wait, BACKOFF_MIN_S), self.cfg.refresh_interval_s + self.cfg.lease_s)

    async def _failed(self, exc: Exception) -> float:
        self.errors += 1
        metrics.POLLS.labels("error").inc()
        delay = backoff_s(self.errors, self.cfg.refresh_interval_s)
        fields = self._ctx() | {"error": f"{type(exc).__name__}: {exc}", "errors": self.errors,
                                "retry_in_s": round(delay, 3)}
        if isinstance(exc, QboError):
            fault = exc.fault
            log.warning("pair_poll_failed", **fields,
                        intuit_tid=fault.intuit_tid if fault else None)
        else:
            log.error("pair_poll_failed", **fields, exc_info=exc)
        due = time.time() + delay
        await self._store_error(exc, due)
        return due

    async def _store_error(self, exc: Exception, due: float) -> None:
        """Best effort: the error count and schedule in the cursor row (fenced by our lease)."""
        try:
            async with self.pool.acquire() as conn:
                token = await cursors.token_held_by(conn, self.cfg.key, self.cfg.owner)
                if token is not None:
                    await cursors.record_error(conn, self.cfg.key, token,
                                               f"{type(exc).__name__}: {exc}",
                                               datetime.fromtimestamp(due, UTC))
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as db_exc:
            log.warning("pair_error_not_recorded", **self._ctx(), error=str(db_exc))

    def _ctx(self) -> dict[str, object]:
        return {"instance": self.cfg.instance_name, "instance_id": self.cfg.instance_id,
                "resource": self.cfg.resource.name}


async def _sleep_until(due: float, stop: asyncio.Event) -> bool:
    """Sleep until wall time `due`; True if `stop` was set meanwhile."""
    delay = due - time.time()
    if delay <= 0:
        return stop.is_set()
    try:
        await asyncio.wait_for(stop.wait(), timeout=delay)
    except TimeoutError:
        return False
    return True


async def _unless_stopped(work: Awaitable[PairAnswer], stop: asyncio.Event) -> PairAnswer | None:
    """Await `work` unless `stop` comes first (then cancel it and return None)."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if task.done():
        return task.result()
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, FeedClosed):
        pass
    return None


__all__ = ["PairPoller", "PairConfig", "InstanceSchedule", "backoff_s"]
