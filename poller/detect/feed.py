"""The per-instance ChangeFeed (DESIGN §2, §5): serve the pairs of one cycle with as few QBO
requests as possible.

The instance's cycle (`poller.detect.cycle`) gathers its due pairs and asks `answer(requests)`
once per cycle:
- one `/batch` holding a `CDCQuery` item for every CDC entity plus `Query` items for the
  entities without CDC (reference §2.3.1): ONE request per cycle;
- for a realm whose batch answers a Fault for the CDCQuery item, `/cdc` + `/batch` (two), the
  refusal remembered per realm for `BATCH_CDC_RETRY_S`;
- a lone CDC item goes to `/cdc` and a lone query to `/query` (a batch of one buys nothing
  and Intuit meters batches separately, 40/min).
The combined CDC asks from the earliest pair window; each pair keeps only its own window.
Watermarks are QBO's `time` of the answer that covered the pair, never the local clock, but
only as far as the evidence goes (`poller.detect.qbo_clock`): an answer whose `time` runs
ahead of the clock tracked from earlier answers (local monotonic time since) and of its
objects' newest LastUpdatedTime by more than the tolerance moves no watermark past
`evidence + tolerance`, and is logged and counted as a clock jump; a stored watermark ahead of
that clock is not trusted either (the window starts from the clock).

A cycle runs in rounds: the first round sends the above; answers may ask for more (query pages,
per-entity CDC after a possibly truncated answer, listings) and those go out together in the
next round. Special cases (DESIGN §5):
- Hard deletes whatever their count. A CDC answer keeps at most 1000 objects and CDC's only
  knob is `changedSince` (no upper bound, no paging): a window whose tombstones alone exceed
  the cap, for example 1,100 invoices deleted in the same second, can never be read from CDC,
  however the window is sliced. So the snapshot of an entity with hard deletes knows every id
  that exists: at its first poll a `now` pair lists the entity (silently: it is the baseline;
  one query page per 1000 objects, once per pair lifetime, inside the cycle's batch), and from
  then on every object created shows up in CDC or in a listing. A pair started before this
  (`snapshot_complete` False: no full listing ever) lists once, merged with that cycle's CDC
  answer (whose tombstones a listing cannot show). Steady state costs nothing more: one CDC.
- 1000-object cap: a CDC answer with ≥ `cdc_cap` objects may be truncated; it is not used. With
  several entities each is asked alone; an entity still at the cap is paged by LastUpdatedTime
  from its window (one query per 1000 changed objects; name lists have no tombstones, so that
  is complete). For entities with hard deletes the pages are merged with the objects the cut
  answer held and checked with one `count(*)` beside the first page (`_check_deletes`): when
  the snapshot accounts for every object QBO counts, no delete was missed; otherwise (and
  for a snapshot not yet complete) a full listing, merged the same way, diffed against the
  snapshot: every id it knows and the listing lacks was deleted (DELETED, dated with the
  listing's time). The watermark is the earliest answer's time (complete as of then).
- Overlap (README "Overlap"): most cycles ask from `watermark − min(5 s, overlap)`; every
  `overlap / 2` a long pass asks from `overlap` before the watermark the last committed long
  pass reached (`committed`), so every stretch is re-read with the whole overlap once and a
  change QBO exposes up to `overlap` late is still found. Versions the cycle committed are
  remembered (`poller.detect.seen`) and dropped from incremental answers before the diff.
- 30-day limit: a watermark older than `CDC_MAX_AGE` (29 days by QBO's clock as trusted) is
  served by a full listing, diffed the same way. If QBO still refuses the window ("older than
  fixed days"), QBO's clock is at least `since + 30 d`; the clock is raised and the pairs
  re-planned.
  What stays impossible for both listings: an object created AND hard-deleted inside one
  truncated (or > 30-day) window was never seen and its tombstone is unreadable, so it yields
  no event unless the cut answer happened to hold it; a delete found by set difference carries
  the listing's time, not QBO's deletion time; and a pair started before the snapshot learned
  its ids whose very first window after the upgrade is truncated may miss the deletes of
  pre-baseline objects in that window (those the cut answer held are found).
- non-CDC entities: `LastUpdatedTime >= from ORDERBY LastUpdatedTime MAXRESULTS 1000`, paged by
  moving `from` to the last LastUpdatedTime seen and dropping versions already seen
  (STARTPOSITION only to step through one timestamp); `Active IN (true,false)` for list entities.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from poller.detect.qbo_clock import QboClock
from poller.detect.seen import SeenVersions
from poller.logs import get_logger
from poller.qbo import faults, times
from poller.qbo.types import (
    BatchItem,
    BatchResult,
    CdcItem,
    CdcResult,
    Fault,
    MalformedResponse,
    QboError,
    QboObject,
    QueryItem,
    QueryResult,
    RealmApi,
)
from poller.resources import DeleteMode, Resource

log = get_logger(__name__)
T = TypeVar("T")

CDC_CAP = 1000  # objects per CDC answer (reference §1.2)
CDC_WINDOW = timedelta(days=30)  # QBO refuses changedSince older than this
CDC_MAX_AGE = timedelta(days=29)  # beyond this we reconcile by query instead
PAGE_SIZE = 1000  # MAXRESULTS limit (reference §2.3)
BATCH_MAX_ITEMS = 30
BATCH_CDC_RETRY_S = 3600.0  # re-probe a realm that refused CDCQuery after this
MAX_PAGES = 100_000  # a runaway guard, never reached by a sane company
# The overlap policy (README "Overlap"): most cycles reach back SHORT_OVERLAP before the
# watermark; every LONG_EVERY (a share of POLLER_OVERLAP_SECONDS) one long pass reaches back the
# whole POLLER_OVERLAP_SECONDS before the watermark the previous long pass committed.
SHORT_OVERLAP = timedelta(seconds=5)
LONG_EVERY_SHARE = 0.5


class Mode(StrEnum):
    INCREMENTAL = "incremental"  # changes since watermark − overlap
    INITIAL = "initial"  # first answer of a `now` pair: only QBO's time matters
    LISTING = "listing"  # every object (backfill, reconcile, cap fallback)


@dataclass(frozen=True, slots=True)
class PairRequest:
    resource: Resource
    watermark: datetime | None  # None: the pair has never been polled
    initial_mode: str = "now"  # "now" | "backfill"
    reconcile_due: bool = False  # non-CDC entities with hard deletes: full re-listing due
    # The snapshot holds every live object of the entity (a full listing was diffed into it
    # once: `last_reconciled_at` is set). False only for pairs started before the snapshot of a
    # `now` pair learned the ids existing at its baseline.
    snapshot_complete: bool = True


@dataclass(frozen=True, slots=True)
class PairAnswer:
    mode: Mode
    objects: list[QboObject]
    time: datetime  # QBO's clock, as far as the evidence allows: the pair's new watermark
    complete: bool  # `objects` are every live object: missing ones were deleted
    cycle_started: float  # wall clock (time.time()) when the cycle began
    long_pass: bool = False  # reached back the whole overlap (see ChangeFeed.committed)


class SnapshotCounter(Protocol):
    """Live snapshot rows of a pair, leaving out `excluding`: (those last changed before
    `before`, the others). When no delete was missed, the first is what QBO's `count(*) ...
    LastUpdatedTime < before` says and the second is 0."""

    async def __call__(
        self, resource: str, before: datetime, excluding: list[str]
    ) -> tuple[int, int]: ...


class FeedClosed(Exception):
    """Polling stopped (shutdown or instance removed) before the pair was answered."""


class BatchCdcMemory:
    """Realms whose /batch refused a CDCQuery item, remembered across feeds (per process)."""

    def __init__(self, retry_s: float = BATCH_CDC_RETRY_S) -> None:
        self.retry_s = retry_s
        self._refused_until: dict[str, float] = {}

    def allowed(self, realm_id: str) -> bool:
        return self._refused_until.get(realm_id, 0.0) <= time.monotonic()

    def refuse(self, realm_id: str) -> None:
        self._refused_until[realm_id] = time.monotonic() + self.retry_s


@dataclass(eq=False, slots=True)
class _Pending:
    """A pair's request in this cycle and, once known, its answer or error (the first one
    given wins). A plain slot, not a future: nobody awaits a single pair; `answer` reads them
    all when the cycle's rounds are done."""

    request: PairRequest
    outcome: PairAnswer | BaseException | None = None

    def resolve(self, answer: PairAnswer) -> None:
        if self.outcome is None:
            self.outcome = answer

    def fail(self, error: BaseException) -> None:
        if self.outcome is None:
            self.outcome = error

    def settled(self, name: str) -> PairAnswer | BaseException:
        """The answer or error; a pair left without one fails (never waits forever)."""
        if self.outcome is None:
            return FeedClosed(name)
        return self.outcome


def is_window_error(error: BaseException | Fault) -> bool:
    """QBO's refusal of a CDC window older than 30 days ("...older than fixed days...")."""
    fault = error if isinstance(error, Fault) else getattr(error, "fault", None)
    text = f"{fault.message} {fault.detail}" if fault is not None else str(error)
    return "older than" in text.lower()


def query_statement(
    resource: Resource, since: datetime, start: int = 1, page_size: int = PAGE_SIZE
) -> str:
    """`select * from E where [Active IN (true,false) and] LastUpdatedTime >= 'T' ...`.

    Built only from the resource table and a timestamp we format: never from input.
    """
    where = ["Active IN (true,false)"] if resource.is_list else []
    where.append(f"MetaData.LastUpdatedTime >= '{times.format_qbo_time(since, times.PACIFIC)}'")
    statement = (
        f"select * from {resource.entity} where {' and '.join(where)} "
        f"ORDERBY MetaData.LastUpdatedTime"
    )
    if start > 1:
        statement += f" STARTPOSITION {start}"
    return statement + f" MAXRESULTS {page_size}"


def count_statement(resource: Resource, before: datetime) -> str:
    """`select count(*) from E where LastUpdatedTime < 'T'`: the live objects unchanged since
    `before` (the cap path's check that no delete went unseen)."""
    where = ["Active IN (true,false)"] if resource.is_list else []
    where.append(f"MetaData.LastUpdatedTime < '{times.format_qbo_time(before, times.PACIFIC)}'")
    return f"select count(*) from {resource.entity} where {' and '.join(where)}"


# --- jobs: one piece of a cycle's work, answered by one batch item or request --------------


class _Job(Protocol):
    """Sends one item per round until it is done; then its pairs have their answers.

    `_CdcJob` and `_QueryJob` subclass it explicitly and inherit `fail`."""

    def item(self, bid: str) -> BatchItem: ...

    def pendings(self) -> list[_Pending]: ...

    def fail(self, error: BaseException) -> None:
        for pending in self.pendings():
            pending.fail(error)


@dataclass(frozen=True, slots=True)
class _Answered:
    """One job's answer of a round: a result, a `Fault`, or the exception the request raised."""

    job: _Job
    answer: Any
    via_batch: bool  # answered as an item of /batch (a refusal then says "no CDCQuery here")


@dataclass(eq=False)
class _CdcEntry:
    pending: _Pending
    mode: Mode  # INCREMENTAL or INITIAL
    since: datetime
    then_list: bool = False  # also list the entity once, merged: the snapshot learns its ids
    long_pass: bool = False

    @property
    def resource(self) -> Resource:
        return self.pending.request.resource


@dataclass(eq=False)
class _CdcJob(_Job):
    entries: list[_CdcEntry]
    direct: bool = False  # send to /cdc rather than inside a batch

    @property
    def since(self) -> datetime:
        return min(e.since for e in self.entries)

    def item(self, bid: str) -> CdcItem:
        return CdcItem(bid, tuple(e.resource.entity for e in self.entries), self.since)

    def pendings(self) -> list[_Pending]:
        return [e.pending for e in self.entries]


@dataclass(eq=False)
class _QueryJob(_Job):
    """LastUpdatedTime paging of one entity: incremental (`since`) or a full listing."""

    pending: _Pending
    mode: Mode
    since: datetime
    complete: bool  # a full listing: the set difference applies
    page_size: int = PAGE_SIZE
    cursor: datetime = field(init=False)
    start: int = 1
    pages: int = 0
    first_time: datetime | None = None
    seen: set[tuple[str, str | None]] = field(default_factory=set)
    objects: list[QboObject] = field(default_factory=list)
    # A CDC answer of the same cycle, merged into this listing: its tombstones are deletes a
    # listing cannot show, and the watermark is the earlier of the two times.
    carried: list[QboObject] = field(default_factory=list)
    carried_time: datetime | None = None
    long_pass: bool = False
    # The cap path of an entity with hard deletes: paged, then checked against a count (see
    # ChangeFeed._check_deletes) before it is trusted; `qbo_count` is QBO's answer to it.
    check_deletes: bool = False
    qbo_count: int | None = None

    def __post_init__(self) -> None:
        self.cursor = self.since

    @property
    def resource(self) -> Resource:
        return self.pending.request.resource

    def item(self, bid: str) -> QueryItem:
        return QueryItem(
            bid, query_statement(self.resource, self.cursor, self.start, self.page_size)
        )

    def pendings(self) -> list[_Pending]:
        return [self.pending]

    def accept(self, result: QueryResult) -> bool:
        """Take one page; True when the paging is finished."""
        self.pages += 1
        self.first_time = self.first_time or result.time
        for row in result.rows:
            version = (str(row.get("Id")), _token(row))
            if version not in self.seen:
                self.seen.add(version)
                self.objects.append(row)
        if len(result.rows) < self.page_size or self.pages >= MAX_PAGES:
            return True
        self._next_page(result.rows)
        return False

    @property
    def watermark(self) -> datetime:
        assert self.first_time is not None
        if self.carried_time is not None:
            return min(self.first_time, self.carried_time)
        return self.first_time

    def answer(self, started: float) -> PairAnswer:
        # What the CDC answer adds to the listing: tombstones, and versions since replaced.
        extra = [obj for obj in self.carried if (str(obj.get("Id")), _token(obj)) not in self.seen]
        objects = self.objects + extra
        long_pass = self.long_pass or self.complete  # a listing sees everything visible
        return PairAnswer(self.mode, objects, self.watermark, self.complete, started, long_pass)

    def _next_page(self, rows: list[QboObject]) -> None:
        # Re-read from the last timestamp seen (versions already seen are dropped) instead of
        # growing STARTPOSITION: a row updated mid-scan moves to the end and would shift later
        # rows past us. Only a page that is entirely one timestamp needs STARTPOSITION.
        last = times.last_updated_time(rows[-1])
        if last is not None and last > self.cursor:
            self.cursor, self.start = last, 1
        else:
            self.start += len(rows)


@dataclass(eq=False)
class _CountJob(_Job):
    """QBO's count of the objects unchanged since a cap-path job's window began."""

    owner: _QueryJob

    def item(self, bid: str) -> QueryItem:
        return QueryItem(bid, count_statement(self.owner.resource, self._before))

    @property
    def _before(self) -> datetime:
        return times.floor_to_second(self.owner.since)

    def pendings(self) -> list[_Pending]:
        return []  # a failed count fails no pair: the owner falls back to a listing


def _token(obj: QboObject) -> str | None:
    token = obj.get("SyncToken")
    return None if token is None else str(token)


# --- the feed --------------------------------------------------------------------------------


class ChangeFeed:
    """One per instance: answers its pairs' requests, one `answer` call per cycle."""

    def __init__(
        self,
        realm: RealmApi,
        *,
        overlap_s: float,
        batch_cdc: BatchCdcMemory | None = None,
        cdc_cap: int = CDC_CAP,
        page_size: int = PAGE_SIZE,
        name: str = "",
    ) -> None:
        self.realm = realm
        self.overlap = timedelta(seconds=overlap_s)
        self.batch_cdc = batch_cdc or BatchCdcMemory()
        self.cdc_cap = cdc_cap
        self.page_size = page_size
        self.name = name or realm.realm_id
        self.clock = QboClock(self.overlap, name=self.name)
        self.cycles = 0
        # The overlap policy: short passes, and a long one every `long_every` (module constants).
        self.short_overlap = min(self.overlap, SHORT_OVERLAP)
        self.long_every = self.overlap * LONG_EVERY_SHARE
        # pair → QBO time of the last long pass committed (the long pass reaches back from it)
        self._long_marks: dict[str, datetime] = {}
        # How far back any later poll can reach: versions older than that are never re-read.
        self.seen = SeenVersions(2 * self.overlap + self.short_overlap)
        # Set by the instance's cycles: the cap path's delete check needs the snapshot.
        self.snapshots: SnapshotCounter | None = None
        self._checks: list[_QueryJob] = []
        # CDC objects answered this cycle, and whether the next one asks per entity from the
        # start: after a cycle whose CDC reached the cap (a burst inside the window), a
        # combined CDC would only be cut again, decoded and thrown away.
        self._cdc_objects = 0
        self._split_next = False

    async def answer(self, requests: Sequence[PairRequest]) -> list[PairAnswer | BaseException]:
        """One cycle for these pairs: each gets its answer, or the QboError that concerns it.

        Cancelling it (shutdown) cancels the requests in flight.
        """
        batch = [_Pending(r) for r in requests]
        try:
            await self.serve(batch)
        except Exception as exc:  # every pair got it too; logged once here
            log.error(
                "feed_cycle_failed",
                feed=self.name,
                error=f"{type(exc).__name__}: {exc}",
                exc_info=exc,
            )
        finally:
            outcomes = [p.settled(self.name) for p in batch]
        return outcomes

    def committed(self, resource: str, answer: PairAnswer) -> None:
        """The cycle committed this answer of the pair: its snapshot now holds at least the
        versions it carried (they need no snapshot read when re-read), and a long pass moves
        the point the next long pass reaches back from."""
        if answer.long_pass:
            self._long_marks[resource] = answer.time
        self.seen.remember(resource, answer.objects, answer.time)

    def forget(self, resource: str) -> None:
        """The pair's snapshot changed outside this feed's view (tests, manual repair)."""
        self._long_marks.pop(resource, None)
        self.seen.forget(resource)

    def qbo_now(self) -> datetime:
        """QBO's clock as trusted, moved on by the time elapsed since (local clock if none)."""
        return self.clock.now()

    async def serve(self, batch: list[_Pending]) -> None:
        """One cycle: plan, then rounds of requests until every pair has its answer."""
        self.cycles += 1
        started = time.time()
        self._cdc_objects = 0
        try:
            jobs = self._plan(batch)
            while jobs:
                jobs = await self._round(jobs, started)
            self._split_next = self._cdc_objects >= self.cdc_cap
        except BaseException as exc:  # never leave a pair waiting, whatever happened
            for pending in batch:
                pending.fail(exc if isinstance(exc, Exception) else FeedClosed(self.name))
            raise

    # -- planning --

    def _long_due(self, batch: Sequence[_Pending], now: datetime) -> bool:
        """A long pass this cycle: some pair's last long pass is `long_every` old (or none in
        this process). All pairs then go long: they share the CDC request anyway."""
        for pending in batch:
            mark = self._long_marks.get(pending.request.resource.name)
            if pending.request.watermark is not None and (
                mark is None or now - mark >= self.long_every
            ):
                return True
        return False

    def _since(self, req: PairRequest, watermark: datetime, long_pass: bool) -> datetime:
        """Where an incremental poll starts (README "Overlap"): a short pass reaches back the
        short overlap; a long one the whole overlap before the last long pass committed (so
        every span between long passes is re-read with the full overlap). With no long pass in
        this process yet, the last one (by a previous process) may be `long_every` older."""
        if not long_pass:
            return watermark - self.short_overlap
        mark = self._long_marks.get(req.resource.name)
        start = watermark - self.long_every if mark is None else min(mark, watermark)
        return start - self.overlap

    def _plan(self, batch: Sequence[_Pending]) -> list[_Job]:
        entries: list[_CdcEntry] = []
        jobs: list[_Job] = []
        now = self.qbo_now()  # one reading for the cycle's pairs
        long_pass = self._long_due(batch, now)
        for pending in batch:
            planned = self._plan_one(pending, long_pass=long_pass, now=now)
            if isinstance(planned, _CdcEntry):
                entries.append(planned)
            else:
                jobs.append(planned)
        if len(entries) > 1 and self._split_next and self.batch_cdc.allowed(self.realm.realm_id):
            # Still a burst in the window: one CDCQuery item per entity, in one /batch.
            jobs[:0] = [_CdcJob([entry]) for entry in entries]
        elif entries:
            jobs.insert(0, _CdcJob(entries))
        return jobs

    def _plan_one(
        self,
        pending: _Pending,
        *,
        force_listing: bool = False,
        long_pass: bool = True,
        now: datetime | None = None,
    ) -> _CdcEntry | _Job:
        req = pending.request
        res = req.resource
        now = self.qbo_now() if now is None else now
        if req.watermark is None:
            # backfill lists everything; an entity with hard deletes is listed silently once,
            # so that the snapshot knows every id existing at the baseline: a delete too many
            # for CDC (the cap) or too old for it (30 days) is then found by set difference.
            if req.initial_mode == "backfill" or res.delete == DeleteMode.HARD:
                return self._listing(pending)
            return self._incremental(pending, Mode.INITIAL, now - self.overlap)
        # A watermark ahead of QBO's clock as trusted (stored from a jumped answer by an older
        # version, or a skew this process has not learned yet) is not trusted either.
        since = self._since(req, min(req.watermark, now), long_pass)
        if force_listing:
            return self._listing(pending)
        # Judged by QBO's clock only: before the first answer, CDC is tried and QBO's own
        # refusal ("older than fixed days") decides (see _replan_after_window_error).
        if res.cdc and self.clock.seen and now - req.watermark > CDC_MAX_AGE:
            log.info(
                "cdc_window_exceeded",
                feed=self.name,
                resource=res.name,
                watermark=req.watermark.isoformat(),
                action="full reconciliation by query",
            )
            return self._listing(pending)
        if not res.cdc and req.reconcile_due and res.delete == DeleteMode.HARD:
            return self._listing(pending)
        if res.cdc and res.delete == DeleteMode.HARD and not req.snapshot_complete:
            return _CdcEntry(pending, Mode.INCREMENTAL, since, then_list=True, long_pass=long_pass)
        return self._incremental(pending, Mode.INCREMENTAL, since, long_pass)

    def _incremental(
        self, pending: _Pending, mode: Mode, since: datetime, long_pass: bool = False
    ) -> _CdcEntry | _Job:
        if pending.request.resource.cdc:
            return _CdcEntry(pending, mode, since, long_pass=long_pass)
        return _QueryJob(
            pending, mode, since, complete=False, page_size=self.page_size, long_pass=long_pass
        )

    def _listing(
        self, pending: _Pending, carried: Sequence[QboObject] = (), at: datetime | None = None
    ) -> _QueryJob:
        return _QueryJob(
            pending,
            Mode.LISTING,
            times.EPOCH,
            complete=True,
            page_size=self.page_size,
            carried=list(carried),
            carried_time=at,
        )

    # -- one round --

    async def _round(self, jobs: list[_Job], started: float) -> list[_Job]:
        cdc_jobs = [j for j in jobs if isinstance(j, _CdcJob)]
        use_batch_cdc = (
            self.batch_cdc.allowed(self.realm.realm_id)
            and len(jobs) >= 2
            and not any(j.direct for j in cdc_jobs)
        )
        direct: list[_Job] = [] if use_batch_cdc else list(cdc_jobs)
        batched = [j for j in jobs if j not in direct]
        if len(batched) == 1 and isinstance(batched[0], _CdcJob):
            direct, batched = direct + batched, []
        calls: list[Awaitable[list[_Answered]]] = [self._send_cdc(j) for j in direct]
        if len(batched) == 1:
            calls.append(self._send_query(batched[0]))
        for chunk_start in range(0, len(batched) if len(batched) > 1 else 0, BATCH_MAX_ITEMS):
            calls.append(self._send_batch(batched[chunk_start : chunk_start + BATCH_MAX_ITEMS]))
        # One request is the common case: awaited as it is, without gather's task and future.
        groups = [await calls[0]] if len(calls) == 1 else await asyncio.gather(*calls)
        answered = [one for group in groups for one in group]
        follow: list[_Job] = []
        self._checks = []
        for one in answered:
            follow.extend(self._handle(one.job, one.answer, one.via_batch, started))
        checks, self._checks = self._checks, []
        for job in checks:  # after the whole round: a job's count may come after its last page
            follow.extend(await self._check_deletes(job, started))
        return follow

    async def _send_cdc(self, job: _Job) -> list[_Answered]:
        item = job.item("cdc")
        assert isinstance(item, CdcItem)
        answer = await _outcome(self.realm.cdc(item.entities, item.changed_since))
        if isinstance(answer, CdcResult):
            answer = replace(answer, time=self.clock.accept(answer.time, _objects_of(answer)))
        return [_Answered(job, answer, via_batch=False)]

    async def _send_query(self, job: _Job) -> list[_Answered]:
        item = job.item("q")
        assert isinstance(item, QueryItem)
        answer = await _outcome(self.realm.query(item.statement))
        if isinstance(answer, QueryResult):
            answer = replace(answer, time=self.clock.accept(answer.time, answer.rows))
        return [_Answered(job, answer, via_batch=False)]

    async def _send_batch(self, jobs: list[_Job]) -> list[_Answered]:
        items = [job.item(str(n)) for n, job in enumerate(jobs)]
        result = await _outcome(self.realm.batch(items))
        if isinstance(result, BaseException):
            # The request itself failed (5xx, throttled, transport): no item was judged, so
            # this says nothing about the realm's support for CDCQuery items.
            return [_Answered(job, result, via_batch=False) for job in jobs]
        assert isinstance(result, BatchResult)
        # One clock reading for the whole batch, with the evidence of every item's objects.
        evidence = [obj for answer in result.answers.values() for obj in _objects_of(answer)]
        accepted = self.clock.accept(result.time, evidence)
        answers = [result.answers.get(str(n), _missing(n)) for n in range(len(jobs))]
        return [
            _Answered(job, _timed(answer, accepted), via_batch=True)
            for job, answer in zip(jobs, answers, strict=True)
        ]

    # -- answers --

    def _handle(self, job: _Job, answer: Any, via_batch: bool, started: float) -> list[_Job]:
        if isinstance(job, _CdcJob):
            return self._handle_cdc(job, answer, via_batch, started)
        if isinstance(job, _CountJob):
            error = _as_error(answer, QueryResult)
            job.owner.qbo_count = None if error is not None else answer.total_count
            return []
        assert isinstance(job, _QueryJob)
        return self._handle_query(job, answer, started)

    def _handle_query(self, job: _QueryJob, answer: Any, started: float) -> list[_Job]:
        error = _as_error(answer, QueryResult)
        if error is not None:
            job.fail(error)
            return []
        if not job.accept(answer):
            return [job]
        if job.check_deletes:
            self._checks.append(job)
        else:
            self._resolve(job.pending, job.answer(started))
        return []

    def _resolve(self, pending: _Pending, answer: PairAnswer) -> None:
        """Hand a pair its answer, without the versions its snapshot is known to hold (an
        incremental answer only: a complete listing's set difference needs every object)."""
        if answer.mode is Mode.INCREMENTAL and not answer.complete:
            unseen = self.seen.unseen(pending.request.resource.name, answer.objects)
            if len(unseen) != len(answer.objects):
                answer = replace(answer, objects=unseen)
        pending.resolve(answer)

    async def _check_deletes(self, job: _QueryJob, started: float) -> list[_Job]:
        """The cap path of an entity with hard deletes, paged by LastUpdatedTime: trusted when
        no delete can have gone unseen, else a full listing (as before issue 17).

        Paging shows every live object changed since `since`; the cut CDC answer some of the
        tombstones. The snapshot (complete: it knows every id) accounts for every other object:
        a live row last changed at or after `since` that this answer lacks was deleted (a live
        one would be in the pages); and every live row last changed before `since` must still
        exist unchanged, so QBO's count of the objects with LastUpdatedTime < since (asked in
        the first page's round, after the CDC answer) must equal the snapshot's live rows older
        than `since`, less the ids this answer holds. A delete the cut answer lacked breaks one
        of the two; an object changed between the count and a later page breaks them too (a
        listing then, the safe side)."""
        before = times.floor_to_second(job.since)
        ids = sorted({str(obj["Id"]) for obj in job.objects + job.carried if "Id" in obj})
        counted: tuple[int, int] | None = None
        if job.qbo_count is not None and self.snapshots is not None:
            try:
                counted = await self.snapshots(job.resource.name, before, ids)
            except Exception as exc:  # the database is not needed to be right: list instead
                log.warning("cdc_cap_check_failed", feed=self.name, error=f"{exc!r}")
        if counted is not None and counted == (job.qbo_count, 0):
            self._resolve(job.pending, job.answer(started))
            return []
        log.info(
            "cdc_cap_check_mismatch",
            feed=self.name,
            resource=job.resource.name,
            qbo_count=job.qbo_count,
            snapshot_unchanged=counted[0] if counted else None,
            snapshot_unaccounted=counted[1] if counted else None,
            action="full listing",
        )
        return [self._listing(job.pending, job.objects + job.carried, job.watermark)]

    def _handle_cdc(self, job: _CdcJob, answer: Any, via_batch: bool, started: float) -> list[_Job]:
        error = _as_error(answer, CdcResult)
        if error is not None:
            return self._cdc_failed(job, error, via_batch)
        self._cdc_objects += answer.count
        if answer.count < self.cdc_cap:
            return self._deliver_cdc(job.entries, answer, started)
        return self._split_truncated(job, answer, started)

    def _cdc_failed(self, job: _CdcJob, error: QboError, via_batch: bool) -> list[_Job]:
        if is_window_error(error):
            return self._replan_after_window_error(job)
        if via_batch:
            # The realm's batch refused (or garbled) the CDCQuery item: remember, use /cdc.
            fault = error.fault
            log.info(
                "batch_cdc_refused",
                feed=self.name,
                realm=self.realm.realm_id,
                fault=f"{fault.type} {fault.code} {fault.message}".strip() if fault else str(error),
                action="falling back to /cdc + /batch",
            )
            self.batch_cdc.refuse(self.realm.realm_id)
            job.direct = True
            return [job]
        job.fail(error)
        return []

    def _replan_after_window_error(self, job: _CdcJob) -> list[_Job]:
        # QBO's clock is at least `since + 30 days`: raise our estimate and re-plan; the pair(s)
        # at the failed `since` are listed whatever the estimate says, so this always ends.
        self.clock.raise_to(job.since + CDC_WINDOW)
        oldest = job.since
        entries: list[_CdcEntry] = []
        follow: list[_Job] = []
        for entry in job.entries:
            if entry.mode == Mode.INITIAL:
                planned: _CdcEntry | _Job = _CdcEntry(
                    entry.pending, Mode.INITIAL, self.qbo_now() - self.overlap
                )
            else:
                planned = self._plan_one(entry.pending, force_listing=entry.since <= oldest)
            if isinstance(planned, _CdcEntry):
                entries.append(planned)
            else:
                follow.append(planned)
        if entries:
            follow.insert(0, _CdcJob(entries, direct=job.direct))
        return follow

    def _split_truncated(self, job: _CdcJob, answer: CdcResult, started: float) -> list[_Job]:
        # INITIAL entries only need QBO's time; the others cannot trust a possibly cut answer.
        initial = [e for e in job.entries if e.mode == Mode.INITIAL]
        self._deliver_cdc(initial, answer, started)
        rest = [e for e in job.entries if e.mode != Mode.INITIAL]
        log.info(
            "cdc_cap_reached",
            feed=self.name,
            count=answer.count,
            entities=[e.resource.entity for e in rest],
        )
        if len(rest) > 1:
            return [_CdcJob([e], direct=job.direct) for e in rest]
        return [job for e in rest for job in self._cap_fallback(e, answer)]

    def _cap_fallback(self, entry: _CdcEntry, answer: CdcResult) -> list[_Job]:
        """One entity still at the cap: page it by LastUpdatedTime (one query per 1000 changed
        objects, not per 1000 objects of the company). An entity with hard deletes is paged
        too, merged with the tombstones the cut answer held, and checked against a count
        (`_check_deletes`); a full listing diffed against the snapshot (which knows every id
        since the baseline) only when the check fails, or the snapshot is not complete yet."""
        res = entry.resource
        objects = _entity_objects(entry, _by_entity(answer))
        if res.delete == DeleteMode.HARD and (
            entry.then_list or not entry.pending.request.snapshot_complete or not self.snapshots
        ):
            return [self._listing(entry.pending, objects, answer.time)]
        paged = _QueryJob(
            entry.pending,
            Mode.INCREMENTAL,
            entry.since,
            complete=False,
            page_size=self.page_size,
            long_pass=entry.long_pass,
        )
        if res.delete != DeleteMode.HARD:
            return [paged]
        paged.carried, paged.carried_time, paged.check_deletes = objects, answer.time, True
        return [paged, _CountJob(paged)]

    def _deliver_cdc(
        self, entries: Sequence[_CdcEntry], answer: CdcResult, started: float
    ) -> list[_Job]:
        follow: list[_Job] = []
        by_entity = _by_entity(answer)
        for entry in entries:
            objects = _entity_objects(entry, by_entity)
            if entry.then_list:
                follow.append(self._listing(entry.pending, objects, answer.time))
                continue
            found = PairAnswer(entry.mode, objects, answer.time, False, started, entry.long_pass)
            self._resolve(entry.pending, found)
        return follow


def _by_entity(answer: CdcResult) -> dict[str, list[QboObject]]:
    """A CDC answer's objects by lower-cased entity name (QBO's casing varies)."""
    return {name.lower(): objects for name, objects in answer.objects.items()}


def _entity_objects(entry: _CdcEntry, by_entity: dict[str, list[QboObject]]) -> list[QboObject]:
    """The entry's entity in a CDC answer (`_by_entity` of it); an incremental entry keeps
    only its own window."""
    objects = by_entity.get(entry.resource.entity.lower(), [])
    if entry.mode == Mode.INCREMENTAL:
        objects = [o for o in objects if _in_window(o, entry.since)]
    return objects


def _objects_of(answer: object) -> list[QboObject]:
    if isinstance(answer, CdcResult):
        return [obj for objects in answer.objects.values() for obj in objects]
    if isinstance(answer, QueryResult):
        return answer.rows
    return []


def _timed(answer: Any, accepted: datetime) -> Any:
    """A batch item's answer carrying the accepted time of its batch."""
    if isinstance(answer, CdcResult | QueryResult):
        return replace(answer, time=accepted)
    return answer


def _in_window(obj: QboObject, since: datetime) -> bool:
    updated = times.last_updated_time(obj)
    return updated is None or updated >= times.floor_to_second(since)


def _missing(n: int) -> MalformedResponse:
    return MalformedResponse(f"batch answer has no item bId={n}")


def _as_error(answer: Any, expected: type) -> QboError | None:
    """A batch item's Fault, a raised error, or an answer of the wrong kind → a QboError."""
    if isinstance(answer, expected):
        return None
    if isinstance(answer, Fault):
        return faults.error_for(answer.status, answer)
    if isinstance(answer, QboError):
        return answer
    if isinstance(answer, BaseException):
        raise answer
    return MalformedResponse(f"expected {expected.__name__}, got {type(answer).__name__}")


async def _outcome(call: Awaitable[T]) -> T | QboError:
    """QBO errors become values (they belong to the pairs of that request); others propagate."""
    try:
        return await call
    except QboError as exc:
        return exc


__all__ = [
    "BatchCdcMemory",
    "ChangeFeed",
    "FeedClosed",
    "Mode",
    "PairAnswer",
    "PairRequest",
    "SnapshotCounter",
    "count_statement",
    "is_window_error",
    "query_statement",
]
