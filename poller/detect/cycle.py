"""An instance's poll cycles (DESIGN §2, §5, §8): lease, one QBO request, one commit.

Pair tasks (`poller.detect.pairs`) sleep until their pair is due and then hand it to their
instance's `InstanceCycles` with `poll`. Pairs of one instance share a schedule grid, so they
come due together; after a short coalescing window the instance serves every pair that
arrived as ONE cycle:
1. the lease. An instance's pairs are polled by one replica, under one lease with a fencing
   token. A cycle's commit renews it until the next cycle plus `lease_s`, so a replica that
   keeps polling an instance holds it without another statement; otherwise ONE statement
   takes (or renews) it and reads every pair's cursor. Held elsewhere: the pairs look again
   when that lease lapses.
2. one `ChangeFeed.answer` for all the pairs: one QBO request per cycle (two for a realm
   that refuses CDC inside a batch; more only for paging and the special cases of DESIGN §5).
3. the snapshot rows the diffs need (one SELECT, only when QBO returned objects) and the
   pure diff of each pair.
4. `outbox.commit`: when nothing is new, ONE statement advances every pair's watermark and
   renews the lease, fenced by the token; otherwise ONE transaction writes the snapshots,
   events and notifications of all the pairs and ends with that same fenced statement. A
   crash anywhere loses nothing (the old watermarks stay) and a replay duplicates nothing (the
   snapshot and the events' unique key); a stale token aborts the whole transaction.
Steps 3-4 use one pooled connection; none is held while QBO answers.

A pair whose request failed, or whose diff failed, is settled with its error (error count,
backoff schedule) in the same statement, and retried after a bounded exponential backoff.
`ReconnectRequired` is handed to the pair tasks, which stop the instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from poller import metrics
from poller.detect import diff as diff_mod
from poller.detect.feed import ChangeFeed, FeedClosed, Mode, PairAnswer, PairRequest
from poller.detect.schedule import BACKOFF_MIN_S, InstanceSchedule, backoff_s
from poller.logs import get_logger
from poller.qbo.types import QboError, ReconnectRequired
from poller.resources import Resource
from poller.store import cursors, outbox
from poller.store.cursors import Advance, Cursor, LeaseLost, LeaseRef, PairKey, Settle

log = get_logger(__name__)
UTC = UTC

DEFAULT_WINDOW_S = 0.1
BeforeCommit = Callable[[PairKey, PairAnswer], Awaitable[None]]
DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


@dataclass(frozen=True, slots=True)
class InstanceConfig:
    """What an instance's cycles need to know (from its instance row and the Settings)."""

    instance_id: int
    instance_name: str
    refresh_interval_s: float
    initial_mode: str = "now"
    deactivated_as_deleted: bool = False
    reconcile_interval_s: float = 6 * 3600.0
    events_per_notification: int = 10
    lease_s: float = 60.0
    owner: str = "replica"

    @property
    def hold_s(self) -> float:
        """How long one renewal holds the lease: to the next cycle, plus `lease_s` of grace."""
        return self.refresh_interval_s + self.lease_s


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a pair's poll ended: when it is due next (None: stop polling it) and its error."""

    next_due: float | None
    error: BaseException | None = None


class InstanceCycles:
    """One per instance: `run` serves the cycles; pair tasks call `poll`."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        feed: ChangeFeed,
        cfg: InstanceConfig,
        schedule: InstanceSchedule,
        *,
        window_s: float = DEFAULT_WINDOW_S,
        before_commit: BeforeCommit | None = None,
    ) -> None:
        self.pool = pool
        self.feed = feed
        self.cfg = cfg
        self.schedule = schedule
        self.window_s = window_s
        self.before_commit = before_commit
        self.cycles = 0
        self._queue: list[tuple[Resource, asyncio.Future[Outcome]]] = []
        self._wake: asyncio.Future[None] | None = None  # set by the first `poll` of a cycle
        self._sleepers: dict[float, tuple[asyncio.Future[bool], asyncio.TimerHandle]] = {}
        self._early: dict[str, asyncio.Future[bool]] = {}  # sleeping pairs `wake` can reach
        self._woken: set[str] = set()  # woken while not asleep: their next sleep is skipped
        self._closed = False
        self._token: int | None = None  # our lease token, while we believe we hold it
        self._lease_until = 0.0  # monotonic: the lease certainly lasts until then
        self._cursors: dict[str, tuple[Cursor, float]] = {}  # cursor, monotonic when read
        self._errors: dict[str, int] = {}  # consecutive failures per pair (for the backoff)
        self._retry_at: dict[str, float] = {}
        self._stored: dict[str, datetime] | None = None
        self._stored_lock = asyncio.Lock()
        self._lag_gauges: dict[str, Any] = {}

    def key(self, resource: str) -> PairKey:
        return PairKey(self.cfg.instance_id, resource)

    # -- the pairs' side --

    async def stored_due(self, resource: str) -> datetime | None:
        """The pair's stored next due time (one query for all the pairs of the instance)."""
        async with self._stored_lock:
            if self._stored is None:
                try:
                    async with self.pool.acquire() as conn:
                        self._stored = await cursors.schedule(conn, self.cfg.instance_id)
                except DB_ERRORS:
                    self._stored = {}
        return self._stored.get(resource)

    async def sleep_until(self, due: float, resource: str | None = None) -> bool:
        """Sleep until wall time `due`; False when polling stopped first. Pairs due at the same
        moment (the instance's grid) share one timer. The pair `resource` sleeps less when
        `wake` names it."""
        if self._closed:
            return False
        if resource in self._woken:
            self._woken.discard(resource)
            return True
        delay = due - time.time()
        if delay <= 0:
            return True
        sleeper = self._sleepers.get(due)
        if sleeper is None:
            loop = asyncio.get_running_loop()
            sleeper = self._sleepers[due] = (
                loop.create_future(),
                loop.call_later(delay, self._wake_sleepers, due),
            )
        if resource is None:
            return await asyncio.shield(sleeper[0])
        early = self._early[resource] = asyncio.get_running_loop().create_future()
        try:
            # asyncio.wait never cancels what it waits for: the shared timer stays intact.
            await asyncio.wait((sleeper[0], early), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if self._early.get(resource) is early:
                del self._early[resource]
        return early.result() if early.done() else sleeper[0].result()

    def wake(self, resources: Iterable[str]) -> None:
        """Make the named pairs poll in the next cycle, as if they were due now (a poll request,
        DESIGN §2). Sleeping pairs wake at once, and pairs woken together share that one cycle;
        a pair already waiting for a cycle just stays; a pair in the cycle in progress (its
        request may predate the change) or about to sleep polls again at once. Afterwards each
        keeps the instance's grid. Names of pairs this instance does not have are ignored."""
        if self._closed:
            return
        waiting = {res.name for res, future in self._queue if not future.done()}
        for name in resources:
            early = self._early.get(name)
            if early is not None:
                if not early.done():
                    early.set_result(True)
            elif name not in waiting:
                self._woken.add(name)

    def _wake_sleepers(self, due: float) -> None:
        sleeper = self._sleepers.pop(due, None)
        if sleeper is not None and not sleeper[0].done():
            sleeper[0].set_result(True)

    async def poll(self, resource: Resource) -> Outcome:
        """Poll the pair in the next cycle; returns when that cycle has committed."""
        if self._closed:
            return Outcome(None, FeedClosed(self.feed.name))
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.append((resource, future))
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
        return await future

    async def release(self) -> None:
        """Graceful stop: free the instance so another replica need not wait for expiry."""
        self._forget()
        try:
            async with self.pool.acquire() as conn:
                await cursors.release(conn, self.cfg.instance_id, self.cfg.owner)
        except DB_ERRORS as exc:
            log.warning("lease_release_failed", instance=self.cfg.instance_name, error=str(exc))

    # -- the cycle loop --

    async def run(self, stop: asyncio.Event) -> None:
        """Serve cycles until `stop`; pairs still waiting or sleeping are then let go."""
        loop = asyncio.get_running_loop()
        stopped = asyncio.ensure_future(stop.wait())
        try:
            while not stopped.done():
                if not self._queue:
                    self._wake = loop.create_future()
                    await asyncio.wait((self._wake, stopped), return_when=asyncio.FIRST_COMPLETED)
                    if stopped.done():
                        break
                await asyncio.wait((stopped,), timeout=self.window_s)  # the coalescing window
                if stopped.done():
                    break
                batch, self._queue = [(r, f) for r, f in self._queue if not f.done()], []
                if batch:
                    await self._cycle(stopped, batch)
        finally:
            stopped.cancel()
            self._closed = True
            queue, self._queue = self._queue, []
            _resolve(queue, {}, Outcome(None, FeedClosed(self.feed.name)))
            sleepers, self._sleepers = self._sleepers, {}
            for future, timer in sleepers.values():
                timer.cancel()
                if not future.done():
                    future.set_result(False)

    async def _cycle(
        self, stopped: asyncio.Future[Any], batch: list[tuple[Resource, asyncio.Future[Outcome]]]
    ) -> None:
        self.cycles += 1
        pairs = list({res.name: res for res, _ in batch}.values())
        try:
            outcomes = await self._serve(stopped, pairs)
        except FeedClosed as exc:
            outcomes = {res.name: Outcome(None, exc) for res in pairs}
        except Exception as exc:
            self._forget()
            failed: dict[str, BaseException] = {res.name: exc for res in pairs}
            self._retry(failed)
            outcomes = self._failed(failed)
        missing = [res.name for res in pairs if res.name not in outcomes]
        if missing:  # never leave a pair without its next due time: it would stop polling
            log.error("cycle_outcome_missing", **self._ctx(), resources=missing)
        _resolve(batch, outcomes, Outcome(self.schedule.next_due(time.time())))

    async def _serve(
        self, stopped: asyncio.Future[Any], pairs: list[Resource]
    ) -> dict[str, Outcome]:
        if not self._holding(pairs):
            held_until = await self._acquire()
            if held_until is not None:
                return {res.name: Outcome(held_until) for res in pairs}
        known = [res for res in pairs if res.name in self._cursors]
        gone: dict[str, BaseException] = {
            res.name: LookupError(f"pair {self.key(res.name)} is gone")
            for res in pairs
            if res.name not in self._cursors
        }
        self._retry(gone)
        outcomes = self._failed(gone)
        answers = await self._fetch([self._request(r) for r in known], stopped)
        outcomes.update(await self._commit(list(zip(known, answers, strict=True))))
        return outcomes

    # -- 1. the lease --

    def _holding(self, pairs: Sequence[Resource]) -> bool:
        """We hold the lease for long enough (half its grace left), and know every cursor."""
        return (
            self._token is not None
            and time.monotonic() < self._lease_until - self.cfg.lease_s / 2
            and all(res.name in self._cursors for res in pairs)
        )

    async def _acquire(self) -> float | None:
        """Take or renew the lease, reading every cursor. None: ours; else when to look again."""
        sent = time.monotonic()
        async with self.pool.acquire() as conn:
            lease = await cursors.acquire(
                conn, self.cfg.instance_id, self.cfg.owner, self.cfg.hold_s
            )
        if lease.token is None:
            self._forget()
            wait = (
                self.cfg.refresh_interval_s if lease.held_for_s is None else lease.held_for_s + 0.05
            )
            log.debug(
                "instance_held_elsewhere",
                **self._ctx(),
                holder=lease.holder,
                retry_in_s=round(wait, 3),
            )
            return time.time() + min(max(wait, BACKOFF_MIN_S), self.cfg.hold_s)
        if lease.token != self._token:
            log.info("instance_lease_taken", **self._ctx(), lease_term=lease.token)
        self._token = lease.token
        self._lease_until = sent + self.cfg.hold_s
        self._cursors = {res: (cursor, sent) for res, cursor in lease.cursors.items()}
        return None

    def _forget(self) -> None:
        self._token = None
        self._cursors = {}

    def _lease(self) -> LeaseRef:
        assert self._token is not None
        return LeaseRef(self.cfg.instance_id, self.cfg.owner, self._token, self.cfg.hold_s)

    # -- 2. the request --

    def _request(self, res: Resource) -> PairRequest:
        cursor, read_at = self._cursors[res.name]
        age = cursor.reconciled_age_s
        reconcile_due = (
            age is None or age + (time.monotonic() - read_at) >= self.cfg.reconcile_interval_s
        )
        return PairRequest(
            res,
            cursor.watermark if cursor.initialized else None,
            self.cfg.initial_mode,
            reconcile_due,
        )

    async def _fetch(
        self, requests: list[PairRequest], stopped: asyncio.Future[Any]
    ) -> list[PairAnswer | BaseException]:
        """The feed's answers, unless polling stops first (then the requests are cancelled)."""
        task = asyncio.ensure_future(self.feed.answer(requests))
        try:
            await asyncio.wait((task, stopped), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.cancelled():
            raise FeedClosed(self.feed.name)
        return task.result()

    # -- 3, 4. diff and commit --

    async def _commit(
        self, answered: list[tuple[Resource, PairAnswer | BaseException]]
    ) -> dict[str, Outcome]:
        outcomes: dict[str, Outcome] = {}
        failed: dict[str, BaseException] = {}
        good: list[tuple[Resource, PairAnswer]] = []
        for res, answer in answered:
            if isinstance(answer, FeedClosed | ReconnectRequired):
                outcomes[res.name] = Outcome(None, answer)
            elif isinstance(answer, BaseException):
                failed[res.name] = answer
            else:
                good.append((res, answer))
        good = await self._before_commit(good, failed)
        if not good and not failed:
            return outcomes
        wanted = {
            res.name: (
                None
                if answer.complete
                else sorted({str(o["Id"]) for o in answer.objects if "Id" in o})
            )
            for res, answer in good
            if answer.complete or answer.objects
        }
        try:
            async with self.pool.acquire() as conn:
                previous = await self._load(conn, wanted, failed)
                writes, settles, good = self._diff(good, previous, failed)
                settles += self._error_settles(failed)
                sent = time.monotonic()
                stats, written, refused = await self._write(conn, writes, settles)
        except LeaseLost as exc:
            self._forget()
            log.info("instance_lease_lost", **self._ctx(), detail=str(exc))
            retry = self.schedule.next_due(time.time())
            return outcomes | {
                res.name: Outcome(retry, exc) for res, _ in answered if res.name not in outcomes
            }
        self._lease_until = sent + self.cfg.hold_s
        for name, cursor in written.items():
            self._cursors[name] = (cursor, sent)
        failed.update(refused)
        succeeded = [(res, answer) for res, answer in good if res.name not in refused]
        qbo_now = self.feed.qbo_now()
        for res, answer in succeeded:
            outcomes[res.name] = self._succeeded(
                res, answer, stats.get(res.name, outbox.NO_WRITES), qbo_now
            )
        if succeeded:
            metrics.POLLS.labels("ok").inc(len(succeeded))
        outcomes.update(self._failed(failed))
        return outcomes

    async def _before_commit(
        self, good: list[tuple[Resource, PairAnswer]], failed: dict[str, BaseException]
    ) -> list[tuple[Resource, PairAnswer]]:
        """The test hook between QBO's answer and the commit: a pair it fails is not written."""
        if self.before_commit is None:
            return good
        kept = []
        for res, answer in good:
            try:
                await self.before_commit(self.key(res.name), answer)
            except Exception as exc:
                failed[res.name] = exc
            else:
                kept.append((res, answer))
        return kept

    async def _load(
        self,
        conn: asyncpg.Connection,
        wanted: dict[str, list[str] | None],
        failed: dict[str, BaseException],
    ) -> dict[str, dict[str, diff_mod.SnapshotRow]]:
        """The snapshot rows of all the pairs; should the database refuse the read (an object
        id it cannot hold), each pair is read alone, and a pair refused again fails alone."""
        try:
            return await outbox.load_snapshots(conn, self.cfg.instance_id, wanted)
        except asyncpg.PostgresError as exc:
            if conn.is_closed():
                raise
            if len(wanted) == 1:
                failed.update(dict.fromkeys(wanted, exc))
                return {}
        previous: dict[str, dict[str, diff_mod.SnapshotRow]] = {}
        for name, ids in wanted.items():
            try:
                previous.update(
                    await outbox.load_snapshots(conn, self.cfg.instance_id, {name: ids})
                )
            except asyncpg.PostgresError as exc:
                if conn.is_closed():
                    raise
                failed[name] = exc
        return previous

    def _diff(
        self,
        good: list[tuple[Resource, PairAnswer]],
        previous: dict[str, dict[str, diff_mod.SnapshotRow]],
        failed: dict[str, BaseException],
    ) -> tuple[list[outbox.PairWrite], list[Settle], list[tuple[Resource, PairAnswer]]]:
        writes: list[outbox.PairWrite] = []
        settles: list[Settle] = []
        kept: list[tuple[Resource, PairAnswer]] = []
        for res, answer in good:
            if res.name in failed:
                continue
            cursor, _ = self._cursors[res.name]
            if answer.objects or answer.complete:
                try:
                    result = diff_mod.diff(
                        previous.get(res.name, {}),
                        answer.objects,
                        self._context(res, cursor, answer),
                    )
                except Exception as exc:
                    failed[res.name] = exc
                    continue
                writes.append(outbox.PairWrite(res.name, result.snapshots, result.events))
            kept.append((res, answer))
            settles.append(
                Settle(
                    res.name,
                    _at(self.schedule.next_due(answer.cycle_started)),
                    Advance(
                        answer.time, None if cursor.initialized else answer.time, answer.complete
                    ),
                )
            )
        return writes, settles, kept

    def _context(self, res: Resource, cursor: Cursor, answer: PairAnswer) -> diff_mod.PairContext:
        first = not cursor.initialized
        backfill = first and self.cfg.initial_mode == "backfill"
        return diff_mod.PairContext(
            baseline=None if backfill else (answer.time if first else cursor.baseline),
            deactivated_as_deleted=self.cfg.deactivated_as_deleted,
            is_list=res.is_list,
            record_only=first and not backfill,
            complete=answer.complete,
            observed_at=answer.time,
        )

    async def _write(
        self, conn: asyncpg.Connection, writes: list[outbox.PairWrite], settles: list[Settle]
    ) -> tuple[dict[str, outbox.WriteStats], dict[str, Cursor], dict[str, Exception]]:
        """`outbox.commit` of the whole cycle. Should the database refuse one pair's rows,
        each pair is committed alone instead, so that the others still go on."""
        lease = self._lease()
        per = self.cfg.events_per_notification
        try:
            stats, written = await outbox.commit(conn, lease, writes, settles, per)
            return stats, written, {}
        except asyncpg.PostgresError as exc:
            if conn.is_closed() or all(w.empty for w in writes):
                raise
            log.warning("cycle_commit_split", **self._ctx(), error=f"{type(exc).__name__}: {exc}")
        stats, written, refused = {}, {}, {}
        alone = {w.resource: w for w in writes if not w.empty}
        for s in settles:
            if s.resource not in alone:
                continue
            try:
                one_stats, one_written = await outbox.commit(
                    conn, lease, [alone[s.resource]], [s], per
                )
            except asyncpg.PostgresError as exc:
                if conn.is_closed():
                    raise
                refused[s.resource] = exc
                continue
            stats.update(one_stats)
            written.update(one_written)
        rest = [s for s in settles if s.resource not in alone] + self._error_settles(refused)
        if rest:
            written.update(await cursors.settle(conn, lease, rest))
        return stats, written, refused

    def _retry(self, failed: dict[str, BaseException]) -> None:
        """Count one more failure of each pair and set when it is tried again (backoff). Pairs
        that failed together with as many errors retry together, in one cycle: one draw of
        the jitter per error count, not per pair."""
        now = time.time()
        draws: dict[int, float] = {}
        for name in failed:
            errors = self._errors.get(name, 0) + 1
            self._errors[name] = errors
            if errors not in draws:
                draws[errors] = now + backoff_s(errors, self.cfg.refresh_interval_s)
            self._retry_at[name] = draws[errors]

    def _error_settles(self, failed: dict[str, BaseException]) -> list[Settle]:
        """Failed pairs, as settled: the error counted, the next try after the backoff."""
        self._retry(failed)
        return [
            Settle(name, _at(self._retry_at[name]), error=f"{type(exc).__name__}: {exc}")
            for name, exc in failed.items()
        ]

    # -- outcomes --

    def _succeeded(
        self, res: Resource, answer: PairAnswer, stats: outbox.WriteStats, qbo_now: datetime
    ) -> Outcome:
        self._errors[res.name] = 0
        for kind, n in stats.by_type.items():
            metrics.EVENTS.labels(kind).inc(n)
        gauge = self._lag_gauges.get(res.name)
        if gauge is None:
            gauge = self._lag_gauges[res.name] = metrics.WATERMARK_LAG.labels(
                self.cfg.instance_name, res.name
            )
        gauge.set(max((qbo_now - answer.time).total_seconds(), 0))
        if stats.events or answer.mode is not Mode.INCREMENTAL:
            log.info(
                "pair_polled",
                **self._ctx(),
                resource=res.name,
                mode=answer.mode.value,
                objects=len(answer.objects),
                events=stats.events,
                duplicates=stats.duplicates,
                notifications=stats.notifications,
                watermark=answer.time.isoformat(),
            )
        return Outcome(self.schedule.next_due(answer.cycle_started))

    def _failed(self, failed: dict[str, BaseException]) -> dict[str, Outcome]:
        """Outcomes of failed pairs (counted by `_retry`), logged once per distinct error: a
        failed request fails all the pairs it carried with the same exception."""
        by_error: dict[int, tuple[BaseException, list[str]]] = {}
        for name, exc in failed.items():
            metrics.POLLS.labels("error").inc()
            by_error.setdefault(id(exc), (exc, []))[1].append(name)
        for exc, names in by_error.values():
            fields: dict[str, Any] = self._ctx() | {
                "resources": names,
                "error": f"{type(exc).__name__}: {exc}",
                "errors": max(self._errors.get(n, 1) for n in names),
                "retry_in_s": round(min(self._retry_at[n] for n in names) - time.time(), 3),
            }
            if isinstance(exc, QboError):
                log.warning(
                    "pair_poll_failed",
                    **fields,
                    intuit_tid=exc.fault.intuit_tid if exc.fault else None,
                )
            else:
                log.error("pair_poll_failed", **fields, exc_info=exc)
        return {name: Outcome(self._retry_at[name], exc) for name, exc in failed.items()}

    def _ctx(self) -> dict[str, object]:
        return {"instance": self.cfg.instance_name, "instance_id": self.cfg.instance_id}


def _at(wall: float) -> datetime:
    return datetime.fromtimestamp(wall, UTC)


def _resolve(
    batch: Sequence[tuple[Resource, asyncio.Future[Outcome]]],
    outcomes: dict[str, Outcome],
    default: Outcome,
) -> None:
    for res, future in batch:
        if not future.done():
            future.set_result(outcomes.get(res.name, default))


__all__ = ["DEFAULT_WINDOW_S", "BeforeCommit", "InstanceConfig", "InstanceCycles", "Outcome"]
