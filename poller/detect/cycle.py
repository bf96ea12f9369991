"""An instance's poll cycles (DESIGN §2, §5, §8): lease, one QBO request, one commit.

The instance's pair schedule (`poller.detect.pairs.InstancePairs`, one task per instance)
hands every pair due to the instance's `InstanceCycles` with `submit` (`poll` for one pair).
Pairs of one instance share a schedule grid, so they come due together; after a short
coalescing window (none when every pair of the instance is already waiting) the instance
serves every pair that arrived as ONE cycle:
1. the lease. An instance's pairs are polled by one replica, under one lease with a fencing
   token. The lease is live while the replica heartbeats (`poller.detect.heartbeat`), so a
   replica that keeps polling an instance holds it without another statement, however long
   its cycles last; otherwise ONE statement takes (or renews) it and reads every pair's
   cursor. Held elsewhere: the pairs look again when the holder's heartbeat would be older
   than the replica timeout, or when the instance is next due, whichever is later.
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
`ReconnectRequired` is handed to the pair schedule, which stops the instance. Pairs that failed
because the database could not be reached retry as soon as the heartbeat reaches it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from poller import metrics
from poller.detect import changes as changes_mod
from poller.detect import diff as diff_mod
from poller.detect.failures import CycleFailures, ErrorCounts, Outcome
from poller.detect.feed import ChangeFeed, FeedClosed, Mode, PairAnswer, PairRequest
from poller.detect.heartbeat import Liveness
from poller.detect.schedule import BACKOFF_MIN_S, InstanceSchedule
from poller.errors import DatabaseError, DatabaseUnavailable, StatementRefused
from poller.instances import InitialMode
from poller.logs import get_logger
from poller.qbo.types import ReconnectRequired
from poller.records import SnapshotRow
from poller.resources import Resource
from poller.store import cursors, db, outbox
from poller.store.cursors import (
    Advance,
    Cursor,
    InstanceRemoved,
    LeaseLost,
    LeaseRef,
    PairKey,
    Settle,
)

log = get_logger(__name__)
UTC = UTC

DEFAULT_WINDOW_S = 0.1
# A lease is believed held until this share of the replica timeout before others may take it.
HOLD_MARGIN = 0.2
BeforeCommit = Callable[[PairKey, PairAnswer], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class InstanceConfig:
    """What an instance's cycles need to know (from its instance row and the Settings)."""

    instance_id: int
    instance_name: str
    refresh_interval_s: float
    initial_mode: InitialMode = InitialMode.NOW
    deactivated_as_deleted: bool = False
    reconcile_interval_s: float = 6 * 3600.0
    events_per_notification: int = 10
    replica_timeout_s: float = 15.0  # POLLER_REPLICA_TIMEOUT: a lease outlives its owner so long
    owner: str = "replica"
    per_instance_metrics: bool = False  # POLLER_METRICS_PER_INSTANCE: a lag gauge per pair
    changes: bool = False  # event.poller.changes: UPDATED events carry field-level changes


class OutcomeSink(Protocol):
    """Where a queued pair's outcome goes: a future (`poll`), or the pair schedule (`submit`)."""

    def done(self) -> bool: ...

    def set_result(self, result: Outcome, /) -> None: ...


@dataclass(eq=False, slots=True)
class _Handoff:
    """`submit`'s sink: the outcome goes straight to the pair schedule's callback, with no
    future and no extra turn of the event loop per pair (22 of each per cycle, issue 17)."""

    name: str
    callback: Callable[[str, Outcome], None]
    given: bool = False

    def done(self) -> bool:
        return self.given

    def set_result(self, result: Outcome, /) -> None:
        self.given = True
        self.callback(self.name, result)


class InstanceCycles:
    """One per instance: `run` serves the cycles; the pair schedule calls `submit`."""

    def __init__(
        self,
        pool: db.Pool,
        feed: ChangeFeed,
        cfg: InstanceConfig,
        schedule: InstanceSchedule,
        *,
        window_s: float = DEFAULT_WINDOW_S,
        before_commit: BeforeCommit | None = None,
        liveness: Liveness | None = None,
    ) -> None:
        self.pool = pool
        self.feed = feed
        self.cfg = cfg
        self.schedule = schedule
        self.window_s = window_s
        self.before_commit = before_commit
        self.cycles = 0
        self._queue: list[tuple[Resource, OutcomeSink]] = []
        self._wake: asyncio.Future[None] | None = None  # set by the first `poll` of a cycle
        self._waker: Callable[[Iterable[str]], None] | None = None  # the pair schedule's wake
        self._pair_count: int | None = None  # the pair schedule's pairs (None: not attached)
        self._grid: tuple[float, float, datetime] | None = None  # see `_next_on_grid`
        self._closed = False
        self._token: int | None = None  # our lease token, while we believe we hold it
        # monotonic: the lease certainly lasts until then (taken or committed), or until the
        # replica's heartbeats say (`liveness`; without one, the lease lives from its statements)
        self._lease_until = 0.0
        self.liveness = liveness or Liveness(cfg.replica_timeout_s)
        self._database_failed: set[str] = set()  # pairs whose last poll the database failed
        self._cursors: dict[str, tuple[Cursor, float]] = {}  # cursor, monotonic when read
        self._error_counts = ErrorCounts(cfg.refresh_interval_s)
        feed.snapshots = self._count_live_before  # the feed's cap path checks deletes with it

    def key(self, resource: str) -> PairKey:
        return PairKey(self.cfg.instance_id, resource)

    # -- the pairs' side --

    async def stored_schedule(self) -> dict[str, datetime]:
        """Every pair's stored next due time (one query; empty when the database cannot be
        reached: the pairs then start on the schedule's own anchor)."""
        try:
            async with db.acquire(self.pool) as conn:
                return await cursors.schedule(conn, self.cfg.instance_id)
        except DatabaseError:
            return {}

    @property
    def closed(self) -> bool:
        """The cycle loop has ended: every poll from now on ends with `FeedClosed`."""
        return self._closed

    def attach(self, waker: Callable[[Iterable[str]], None], pair_count: int) -> None:
        """The instance's pair schedule (`poller.detect.pairs.InstancePairs.wake`, and how
        many pairs it has): told of poll requests, and woken (with no names) when the cycle
        loop closes."""
        self._waker = waker
        self._pair_count = pair_count

    def wake(self, resources: Iterable[str]) -> None:
        """Make the named pairs poll in the next cycle, as if they were due now (a poll request,
        DESIGN §2); the pair schedule decides what that means for each pair. Names of pairs
        this instance does not have are ignored."""
        if not self._closed and self._waker is not None:
            self._waker(resources)

    def queued(self) -> set[str]:
        """The pairs waiting for the next cycle (it has not taken them yet)."""
        return {res.name for res, future in self._queue if not future.done()}

    async def poll(self, resource: Resource) -> Outcome:
        """Poll the pair in the next cycle; returns when that cycle has committed."""
        if self._closed:
            return Outcome(None, FeedClosed(self.feed.name))
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.append((resource, future))
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
        return await future

    def submit(
        self, resources: Sequence[Resource], on_outcome: Callable[[str, Outcome], None]
    ) -> None:
        """Poll the pairs together in the next cycle: `on_outcome(name, outcome)` for each, when
        that cycle has committed (called from the cycle; at once when the loop is closed)."""
        if self._closed:
            for res in resources:
                on_outcome(res.name, Outcome(None, FeedClosed(self.feed.name)))
            return
        self._queue.extend((res, _Handoff(res.name, on_outcome)) for res in resources)
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def release(self) -> None:
        """Graceful stop: free the instance so another replica need not wait for expiry."""
        self._forget()
        try:
            async with db.acquire(self.pool) as conn:
                await cursors.release(conn, self.cfg.instance_id, self.cfg.owner)
        except DatabaseError as exc:
            log.warning("lease_release_failed", instance=self.cfg.instance_name, error=str(exc))

    # -- the cycle loop --

    async def run(self, stop: asyncio.Event) -> None:
        """Serve cycles until `stop`; pairs still waiting or sleeping are then let go."""
        loop = asyncio.get_running_loop()
        stopped = asyncio.ensure_future(stop.wait())
        unsubscribe = self.liveness.subscribe(self._database_back)
        try:
            while not stopped.done():
                if not self._queue:
                    self._wake = loop.create_future()
                    await asyncio.wait((self._wake, stopped), return_when=asyncio.FIRST_COMPLETED)
                    if stopped.done():
                        break
                if not self._all_queued():
                    await asyncio.wait((stopped,), timeout=self.window_s)  # coalescing window
                    if stopped.done():
                        break
                await self._cycle(stopped)
        finally:
            unsubscribe()
            stopped.cancel()
            self._closed = True
            queue, self._queue = self._queue, []
            _resolve(queue, {}, Outcome(None, FeedClosed(self.feed.name)))
            if self._waker is not None:
                self._waker(())  # a sleeping pair schedule sees the loop closed

    def _all_queued(self) -> bool:
        """Every pair of the instance waits for the cycle (a scheduled cycle): no other can
        join it, so it need not wait out the coalescing window."""
        if self._pair_count is None:
            return False
        return len({res.name for res, future in self._queue if not future.done()}) >= (
            self._pair_count
        )

    async def _cycle(self, stopped: asyncio.Future[Any]) -> None:
        """One cycle for the pairs queued now. The batch lives in this frame only: a sleeping
        instance keeps none of its last cycle (22 sinks and tuples, issue 17)."""
        batch, self._queue = [(r, f) for r, f in self._queue if not f.done()], []
        if not batch:
            return
        self.cycles += 1
        pairs = list({res.name: res for res, _ in batch}.values())
        failures = CycleFailures(self._error_counts, self._ctx())
        self._database_failed.difference_update(res.name for res in pairs)
        try:
            outcomes = await self._serve(stopped, pairs, failures)
        except FeedClosed as exc:
            outcomes = {res.name: Outcome(None, exc) for res in pairs}
        except Exception as exc:  # the database failed us: every pair of the cycle fails
            self._forget()
            for res in pairs:
                failures.add(res.name, exc)
            if isinstance(exc, DatabaseUnavailable):  # retried when the heartbeat gets through
                self._database_failed.update(res.name for res in pairs)
            outcomes = failures.outcomes()
        missing = [res.name for res in pairs if res.name not in outcomes]
        if missing:  # never leave a pair without its next due time: it would stop polling
            log.error("cycle_outcome_missing", **self._ctx(), resources=missing)
        _resolve(batch, outcomes, Outcome(self.schedule.next_due(time.time())))

    async def _serve(
        self, stopped: asyncio.Future[Any], pairs: list[Resource], failures: CycleFailures
    ) -> dict[str, Outcome]:
        if not self._holding(pairs):
            held_until = await self._acquire()
            if held_until is not None:
                return {res.name: Outcome(held_until) for res in pairs}
        known = [res for res in pairs if res.name in self._cursors]
        for res in pairs:
            if res.name not in self._cursors:
                failures.add(res.name, LookupError(f"pair {self.key(res.name)} is gone"))
        answers = await self._fetch([self._request(res) for res in known], stopped)
        return await self._commit(list(zip(known, answers, strict=True)), failures)

    # -- 1. the lease --

    def _holding(self, pairs: Sequence[Resource]) -> bool:
        """We hold the lease for long enough (no other replica may take it for a while yet:
        our heartbeat, or our last statement under it, is recent), and know every cursor."""
        timeout = self.cfg.replica_timeout_s
        held_until = max(self._lease_until, self.liveness.alive_until())
        return (
            self._token is not None
            and time.monotonic() < held_until - timeout * HOLD_MARGIN
            and all(res.name in self._cursors for res in pairs)
        )

    async def _acquire(self) -> float | None:
        """Take or renew the lease, reading every cursor. None: ours; else when to look again:
        when the holder's heartbeat would be too old, or when the instance is next due (by the
        holder's schedule), whichever is later."""
        timeout = self.cfg.replica_timeout_s
        sent = time.monotonic()
        async with db.acquire(self.pool) as conn:
            lease = await cursors.acquire(conn, self.cfg.instance_id, self.cfg.owner, timeout)
        if lease.token is None:
            self._forget()
            lapses_in = timeout if lease.held_for_s is None else lease.held_for_s + 0.05
            wait = max(lapses_in, lease.due_in_s or 0.0)
            log.debug(
                "instance_held_elsewhere",
                **self._ctx(),
                holder=lease.holder,
                retry_in_s=round(wait, 3),
            )
            cap = max(self.cfg.refresh_interval_s, timeout)
            return time.time() + min(max(wait, BACKOFF_MIN_S), cap)
        if lease.token != self._token:
            log.info("instance_lease_taken", **self._ctx(), lease_term=lease.token)
        self._token = lease.token
        self._lease_until = sent + timeout
        self._cursors = {res: (cursor, sent) for res, cursor in lease.cursors.items()}
        return None

    def _forget(self) -> None:
        self._token = None
        self._cursors = {}

    def _lease(self) -> LeaseRef:
        assert self._token is not None
        return LeaseRef(self.cfg.instance_id, self.cfg.owner, self._token)

    def _database_back(self) -> None:
        """The heartbeat reached the database again: the pairs it failed retry now, with
        their backoff reset (an outage is not the pairs' fault)."""
        failed, self._database_failed = self._database_failed, set()
        if not failed or self._closed:
            return
        for name in failed:
            self._error_counts.reset(name)
        log.info("pairs_retry_after_database_outage", **self._ctx(), resources=sorted(failed))
        self.wake(failed)

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
            snapshot_complete=age is not None,
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

    async def _count_live_before(
        self, resource: str, before: datetime, excluding: list[str]
    ) -> tuple[int, int]:
        async with db.acquire(self.pool) as conn:
            return await outbox.count_live_before(
                conn, self.cfg.instance_id, resource, before, excluding
            )

    # -- 3, 4. diff and commit --

    async def _commit(
        self,
        answered: list[tuple[Resource, PairAnswer | BaseException]],
        failures: CycleFailures,
    ) -> dict[str, Outcome]:
        outcomes: dict[str, Outcome] = {}
        good: list[tuple[Resource, PairAnswer]] = []
        for res, answer in answered:
            if isinstance(answer, FeedClosed | ReconnectRequired):
                outcomes[res.name] = Outcome(None, answer)
            elif isinstance(answer, BaseException):
                failures.add(res.name, answer)
            else:
                good.append((res, answer))
        good = await self._before_commit(good, failures)
        answered_names = [res.name for res, _ in answered]
        if not good and not any(name in failures for name in answered_names):
            return outcomes | failures.outcomes()
        try:
            async with db.acquire(self.pool) as conn:
                previous = await self._load(conn, _snapshot_ids(good), failures)
                writes, settles, good = self._diff(good, previous, failures)
                if self.cfg.changes:
                    writes = await self._with_changes(conn, writes)
                settles += failures.settles([name for name in answered_names if name in failures])
                sent = time.monotonic()
                stats, written = await self._write(conn, writes, settles, failures)
        except LeaseLost as exc:
            self._forget()
            removed = isinstance(exc, InstanceRemoved)
            event_name = "instance_removed_during_poll" if removed else "instance_lease_lost"
            log.info(event_name, **self._ctx(), detail=str(exc))
            retry = Outcome(self.schedule.next_due(time.time()), exc)
            lost = {name: retry for name in answered_names if name not in outcomes}
            not_answered = [name for name in failures.names() if name not in answered_names]
            return failures.outcomes(not_answered) | outcomes | lost
        self._lease_until = sent + self.cfg.replica_timeout_s
        for settle in written.values():
            self._wrote(settle, sent)
        succeeded = [(res, answer) for res, answer in good if res.name not in failures]
        qbo_now = self.feed.qbo_now()
        for res, answer in succeeded:
            self.feed.committed(res.name, answer)  # re-reading these versions costs nothing now
            pair_stats = stats.get(res.name, outbox.NO_WRITES)
            outcomes[res.name] = self._succeeded(res, answer, pair_stats, qbo_now)
        if succeeded:
            metrics.POLLS.labels("ok").inc(len(succeeded))
        return outcomes | failures.outcomes()

    def _wrote(self, settle: Settle, sent: float) -> None:
        """Our cursor of a pair after `settle` committed (sent at `sent`, monotonic): what the
        statement wrote, known without reading it back. A pair we had no cursor of is left
        out, so that the next cycle reads every cursor again (`_holding`)."""
        known = self._cursors.get(settle.resource)
        if known is None:
            return
        old, read_at = known
        age = old.reconciled_age_s
        if age is not None:
            age += sent - read_at
        self._cursors[settle.resource] = (cursors.written(old, settle, age), sent)

    async def _before_commit(
        self, good: list[tuple[Resource, PairAnswer]], failures: CycleFailures
    ) -> list[tuple[Resource, PairAnswer]]:
        """The test hook between QBO's answer and the commit: a pair it fails is not written."""
        if self.before_commit is None:
            return good
        kept = []
        for res, answer in good:
            try:
                await self.before_commit(self.key(res.name), answer)
            except Exception as exc:  # as a crash of that pair's poll
                failures.add(res.name, exc)
            else:
                kept.append((res, answer))
        return kept

    async def _load(
        self,
        conn: db.Conn,
        wanted: dict[str, list[str] | None],
        failures: CycleFailures,
    ) -> dict[str, dict[str, SnapshotRow]]:
        """The snapshot rows of all the pairs; should the database refuse the read (an object
        id it cannot hold), each pair is read alone, and a pair refused again fails alone."""
        try:
            return await outbox.load_snapshots(conn, self.cfg.instance_id, wanted)
        except StatementRefused as exc:
            if conn.is_closed():
                raise
            if len(wanted) == 1:
                failures.add_all(dict.fromkeys(wanted, exc))
                return {}
        previous: dict[str, dict[str, SnapshotRow]] = {}
        for name, ids in wanted.items():
            try:
                one = await outbox.load_snapshots(conn, self.cfg.instance_id, {name: ids})
            except StatementRefused as exc:
                if conn.is_closed():
                    raise
                failures.add(name, exc)
                continue
            previous.update(one)
        return previous

    def _diff(
        self,
        good: list[tuple[Resource, PairAnswer]],
        previous: dict[str, dict[str, SnapshotRow]],
        failures: CycleFailures,
    ) -> tuple[list[outbox.PairWrite], list[Settle], list[tuple[Resource, PairAnswer]]]:
        writes: list[outbox.PairWrite] = []
        settles: list[Settle] = []
        kept: list[tuple[Resource, PairAnswer]] = []
        for res, answer in good:
            if res.name in failures:
                continue
            cursor, _ = self._cursors[res.name]
            if answer.objects or answer.complete:
                try:
                    result = diff_mod.diff(
                        previous.get(res.name, {}),
                        answer.objects,
                        self._context(res, cursor, answer),
                    )
                except Exception as exc:  # a bad object fails its pair only
                    failures.add(res.name, exc)
                    continue
                objects = (
                    changes_mod.kept_objects(result.snapshots, answer.objects)
                    if self.cfg.changes
                    else None
                )
                writes.append(outbox.PairWrite(res.name, result.snapshots, result.events, objects))
            kept.append((res, answer))
            settles.append(self._advance(res, cursor, answer))
        return writes, settles, kept

    async def _with_changes(
        self, conn: db.Conn, writes: list[outbox.PairWrite]
    ) -> list[outbox.PairWrite]:
        """`event.poller.changes`: each UPDATED event compared with the object its snapshot
        row kept (read before this cycle's commit replaces it), DESIGN §12."""
        wanted = {w.resource: changes_mod.updated_ids(w.events) for w in writes}
        wanted = {resource: ids for resource, ids in wanted.items() if ids}
        if not wanted:
            return writes
        kept = await outbox.load_objects(conn, self.cfg.instance_id, wanted)
        return [
            dataclasses.replace(w, events=changes_mod.annotate(w.events, kept.get(w.resource, {})))
            if w.resource in wanted
            else w
            for w in writes
        ]

    def _advance(self, res: Resource, cursor: Cursor, answer: PairAnswer) -> Settle:
        """A successful poll, as settled: the watermark advanced, due again on the grid."""
        baseline = None if cursor.initialized else answer.time
        advance = Advance(answer.time, baseline, answer.complete)
        return Settle(res.name, self._next_on_grid(answer.cycle_started)[1], advance)

    def _next_on_grid(self, cycle_started: float) -> tuple[float, datetime]:
        """The grid point after a cycle's start, as wall time and as stored: computed once per
        cycle (its pairs share the start), not once per pair."""
        if self._grid is None or self._grid[0] != cycle_started:
            due = self.schedule.next_due(cycle_started)
            self._grid = (cycle_started, due, _at(due))
        return self._grid[1], self._grid[2]

    def _context(self, res: Resource, cursor: Cursor, answer: PairAnswer) -> diff_mod.PairContext:
        first = not cursor.initialized
        backfill = first and self.cfg.initial_mode == InitialMode.BACKFILL
        return diff_mod.PairContext(
            baseline=None if backfill else (answer.time if first else cursor.baseline),
            deactivated_as_deleted=self.cfg.deactivated_as_deleted,
            is_list=res.is_list,
            record_only=first and not backfill,
            complete=answer.complete,
            observed_at=answer.time,
        )

    async def _write(
        self,
        conn: db.Conn,
        writes: list[outbox.PairWrite],
        settles: list[Settle],
        failures: CycleFailures,
    ) -> tuple[dict[str, outbox.WriteStats], dict[str, Settle]]:
        """`outbox.commit` of the whole cycle: the stats, and each pair settled with how.
        Should the database refuse one pair's rows, each pair is committed alone instead, so
        that the others still go on; a pair refused again fails alone."""
        lease = self._lease()
        per_notification = self.cfg.events_per_notification
        by_name = {settle.resource: settle for settle in settles}
        try:
            stats, names = await outbox.commit(conn, lease, writes, settles, per_notification)
            return stats, {name: by_name[name] for name in names}
        except StatementRefused as exc:
            if conn.is_closed() or all(write.empty for write in writes):
                raise
            log.warning("cycle_commit_split", **self._ctx(), error=f"{type(exc).__name__}: {exc}")
        stats = {}
        written: dict[str, Settle] = {}
        alone = {write.resource: write for write in writes if not write.empty}
        refused: list[str] = []
        for settle in settles:
            if settle.resource not in alone:
                continue
            try:
                one_stats, one_names = await outbox.commit(
                    conn, lease, [alone[settle.resource]], [settle], per_notification
                )
            except StatementRefused as exc:
                if conn.is_closed():
                    raise
                failures.add(settle.resource, exc)
                refused.append(settle.resource)
                continue
            stats.update(one_stats)
            written.update((name, settle) for name in one_names)
        rest = [settle for settle in settles if settle.resource not in alone]
        rest += failures.settles(refused)
        rest_by_name = {settle.resource: settle for settle in rest}
        if rest:
            names = await cursors.settle(conn, lease, rest)
            written.update((name, rest_by_name[name]) for name in names)
        return stats, written

    # -- outcomes --

    def _succeeded(
        self, res: Resource, answer: PairAnswer, stats: outbox.WriteStats, qbo_now: datetime
    ) -> Outcome:
        self._error_counts.reset(res.name)
        for kind, n in stats.by_type.items():
            metrics.EVENTS.labels(kind).inc(n)
        lag = (qbo_now - answer.time).total_seconds()  # negative: shown, never hidden
        metrics.watermark_lag(res.name).observe(lag)
        if self.cfg.per_instance_metrics:
            metrics.INSTANCE_WATERMARK_LAG.labels(self.cfg.instance_name, res.name).set(lag)
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
        return Outcome(self._next_on_grid(answer.cycle_started)[0])

    def _ctx(self) -> dict[str, object]:
        return {"instance": self.cfg.instance_name, "instance_id": self.cfg.instance_id}


def _snapshot_ids(good: list[tuple[Resource, PairAnswer]]) -> dict[str, list[str] | None]:
    """The snapshot rows each pair's diff needs: all of them for a complete listing (None),
    else those of the fetched objects; pairs that fetched nothing need none."""
    wanted: dict[str, list[str] | None] = {}
    for res, answer in good:
        if answer.complete:
            wanted[res.name] = None
        elif answer.objects:
            wanted[res.name] = sorted({str(obj["Id"]) for obj in answer.objects if "Id" in obj})
    return wanted


def _at(wall: float) -> datetime:
    return datetime.fromtimestamp(wall, UTC)


def _resolve(
    batch: Sequence[tuple[Resource, OutcomeSink]],
    outcomes: dict[str, Outcome],
    default: Outcome,
) -> None:
    for res, future in batch:
        if not future.done():
            future.set_result(outcomes.get(res.name, default))


__all__ = ["DEFAULT_WINDOW_S", "BeforeCommit", "InstanceConfig", "InstanceCycles", "Outcome"]
