"""The dispatcher: claims due notifications, signs, POSTs, records the outcome (DESIGN §2, §6).

- Claims are batches taken with `FOR UPDATE SKIP LOCKED` under a lease, so any number of
  dispatchers (processes, replicas) share one outbox; the lease is renewed while a claim is held
  and simply expires if the process dies, which hands the claim to someone else.
- A dedicated connection LISTENs on `qbo_poller_outbox` (a pooled connection would UNLISTEN on
  release) and wakes the claim loop; polling every `delivery_poll_interval_s` guarantees progress
  when a notification is missed (listener reconnecting, another writer that did not notify).
- At most `delivery_concurrency` deliveries in flight, at most `delivery_per_url_concurrency` per
  callback URL, and the claim itself keeps to that: it takes, per URL, only what can start now
  (the URL's free permits), the oldest of every URL before the second of any. So one URL's
  backlog or hanging receiver holds at most its own share of the slots, and no claim waits in
  the process for a permit while other tenants' notifications wait in the table.
- A URL that keeps timing out is paused by its breaker (`breaker.py`): what waits for it is
  rescheduled to the end of the pause without spending attempts, then one probe decides.
- 410 Gone marks the URL gone (`callback_endpoints`) and holds what waits for it, in the
  transaction that records the attempt; from then on the claim itself holds due notifications
  to that URL, so no request reaches it until `qbo-poller deliveries redeliver` reactivates it.
  The URL is always the instance's `callback_url` at claim time, so a changed URL takes effect
  for the next claim, redeliveries included.
- On stop: no new claims, in-flight deliveries get most of the shutdown grace, then whatever is
  unfinished is cancelled and its claims released so another process (or the next start)
  retries them at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import math
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import aiohttp

from poller import logs, metrics
from poller.aio import sleep_unless
from poller.backoff import Backoff
from poller.config import Settings
from poller.deliver import retries
from poller.deliver.breaker import Breaker
from poller.deliver.envelope import EventRow, InstanceInfo, build_body
from poller.deliver.signing import USER_AGENT, callback_headers
from poller.deliver.ssrf import CallbackRefused, GuardedResolver, check_url, refused_in
from poller.errors import DatabaseError, PollerError
from poller.progress import Progress
from poller.store import db
from poller.store import notifications as store
from poller.store.crypto import SecretBox
from poller.store.listener import Listener
from poller.vocab import DeliveryOutcome, SignatureScheme

log = logs.get_logger(__name__)

RESPONSE_CAP_BYTES = 4096
MAX_CLAIM_BATCH = 200
RELEASE_TIMEOUT_S = 3.0
_KEY_CACHE_MAX = 1024


@dataclass(frozen=True)
class Response:
    """What one POST produced: a status (and a capped body) or a transport error."""

    status: int | None
    body: str | None = None
    retry_after: str | None = None
    location: str | None = None
    error: str | None = None
    timed_out: bool = False  # no answer within the delivery timeout (the breaker counts these)
    started_at: datetime | None = None
    duration_ms: int = 0


@dataclass(frozen=True)
class Decision:
    """What an attempt's response means: its outcome, and for a retry, when."""

    outcome: DeliveryOutcome
    retry_in_s: float = 0.0


def decide(
    response: Response,
    attempts_done: int,
    retry_schedule: Sequence[float],
    now: datetime | None = None,
) -> Decision:
    """Delivered on any 2xx, held on 410, else retry (with its delay) or dead."""
    status = response.status
    if response.error is None and status is not None and 200 <= status < 300:
        return Decision(DeliveryOutcome.DELIVERED)
    if response.error is None and status == 410:
        return Decision(DeliveryOutcome.HELD)
    delay = retries.retry_delay(retry_schedule, attempts_done, status, response.retry_after, now)
    if delay is None:
        return Decision(DeliveryOutcome.DEAD)
    return Decision(DeliveryOutcome.RETRY, delay)


def describe_failure(response: Response) -> str | None:
    """The `last_error` text of an attempt (None for a success)."""
    if response.error is not None:
        return response.error
    status = response.status
    if status is None or 200 <= status < 300:
        return None
    if 300 <= status < 400:
        # The receiver's Location may carry credentials or a token too.
        location = logs.redact_url(response.location)[:200] if response.location else ""
        where = f" (Location: {location})" if location else ""
        return f"HTTP {status}: redirects are not followed{where}"
    if status == 410:
        return "HTTP 410 Gone: delivery to this URL is held until redelivered"
    return f"HTTP {status}"


async def read_capped(content: aiohttp.StreamReader, cap: int) -> bytes:
    """At most `cap` bytes of a response body; the rest is never read (nor buffered)."""
    chunks: list[bytes] = []
    size = 0
    while size < cap:
        chunk = await content.read(cap - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def make_session(settings: Settings) -> aiohttp.ClientSession:
    """The callback HTTP client, separate from the QBO one: no proxies from the environment,
    no cookies kept between receivers, explicit timeouts, and the filtering resolver when
    private addresses are denied.

    The connection limit is the dispatcher's concurrency, with no per-host limit: the dispatcher
    bounds each URL itself. A per-host limit would make URLs on one host (tenants on one
    receiver, different paths) queue behind each other's hanging requests, and that wait would
    count against their own timeout."""
    resolver = GuardedResolver() if settings.callback_deny_private else None
    connector = aiohttp.TCPConnector(
        limit=settings.delivery_concurrency,
        limit_per_host=0,
        ttl_dns_cache=30,
        resolver=resolver,
    )
    timeout = aiohttp.ClientTimeout(
        total=settings.delivery_timeout_s, connect=min(settings.delivery_timeout_s, 10.0)
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        raise_for_status=False,
        headers={"User-Agent": USER_AGENT},
    )


@dataclass(frozen=True)
class _OutcomeToWrite:
    """An outcome waiting for the next group commit, and who waits for it to be written."""

    claimed: store.Claimed
    attempt: store.Attempt
    written: asyncio.Future[bool]  # True when recorded, False when the claim was lost


class Recorder:
    """Group commit of outcomes: whatever finished while the previous write ran goes into the
    next one, as one statement. No timer and no added latency when idle; under load one WAL
    flush and one round trip serve many deliveries."""

    def __init__(self, pool: db.Pool, owner: str, max_batch: int = 256) -> None:
        self.pool = pool
        self.owner = owner
        self.max_batch = max_batch
        self._queue: list[_OutcomeToWrite] = []
        self._wake = asyncio.Event()
        self._closing = False

    async def record(self, claimed: store.Claimed, attempt: store.Attempt) -> bool:
        """True when recorded, False when the claim was lost; raises `DatabaseError`."""
        written: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append(_OutcomeToWrite(claimed, attempt, written))
        self._wake.set()
        # If the delivery is cancelled now, the outcome is still written: the POST happened.
        return await written

    async def run(self) -> None:
        """Write until closed and drained."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                await self._write(batch)
            if self._closing:
                return

    async def _write(self, batch: list[_OutcomeToWrite]) -> None:
        items = [(item.claimed, item.attempt) for item in batch]
        try:
            recorded = await store.record_many(self.pool, self.owner, items)
        except Exception as exc:
            failure = exc if isinstance(exc, DatabaseError) else self._crashed(exc)
            for item in batch:
                if not item.written.done():
                    item.written.set_exception(failure)
            return
        for item in batch:
            if not item.written.done():
                item.written.set_result(item.claimed.id in recorded)

    @staticmethod
    def _crashed(exc: Exception) -> DatabaseError:
        """A bug while writing: logged, and reported to the waiters as a database failure so
        each delivery handles it as an unrecorded outcome (its lease runs out, it is retried)."""
        log.error("outcomes_write_crashed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
        return DatabaseError(f"recording failed: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        self._closing = True
        self._wake.set()


class _UrlSlot:
    def __init__(self, size: int) -> None:
        self.semaphore = asyncio.Semaphore(size)
        self.users = 0


class Dispatcher:
    """Delivers the outbox. One per process is the norm; tests run several side by side."""

    name = "deliver.dispatcher"

    def __init__(
        self,
        settings: Settings,
        pool: db.Pool,
        dsn: str,
        box: SecretBox,
        owner: str | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.settings = settings
        # Each turn of the claim loop, for the systemd watchdog (poller.progress).
        self.progress = progress or Progress(self.name)
        self.pool = pool
        self.dsn = dsn
        self.box = box
        # Unique per dispatcher: a restarted container can reuse hostname:pid, a claim cannot.
        self.owner = owner or f"{settings.replica_id}/{secrets.token_hex(3)}"
        self.capacity = settings.delivery_concurrency
        # With a backlog, claim again only when a quarter of the slots are free: one claim
        # query per finished delivery would cost more than the deliveries.
        self.refill_at = max(1, self.capacity // 4)
        self.per_url = settings.delivery_per_url_concurrency
        # Likewise per URL: a URL whose permits were all taken is claimed for again once a
        # quarter of them are free.
        self.url_refill_at = max(1, self.per_url // 4)
        self.breaker = Breaker(
            settings.delivery_breaker_timeouts,
            Backoff(
                base_s=settings.delivery_breaker_pause_s,
                cap_s=max(settings.delivery_breaker_pause_s, settings.delivery_breaker_max_pause_s),
            ),
            probe_wait_s=settings.delivery_timeout_s,
        )
        self.lease_s = settings.delivery_lease_s
        self.signature_scheme = SignatureScheme(settings.signature_scheme)
        self._listener = Listener(
            functools.partial(db.connect, dsn),
            {store.CHANNEL: self._notified},
            name="outbox",
            on_listening=self._listening,
        )
        self.listening = self._listener.listening  # set while LISTEN is active (tests wait on it)
        self._wake = asyncio.Event()
        self._claims: dict[int, store.Claimed] = {}  # claimed, outcome not yet recorded
        self._tasks: set[asyncio.Task[None]] = set()  # one per delivery in flight
        self._url_slots: dict[str, _UrlSlot] = {}
        self._saturated: set[str] = set()  # URLs whose permits the latest claim used up
        self._keys: dict[str, str] = {}
        self._backlog = False
        self._next_due = math.inf  # monotonic time of the earliest retry this process scheduled
        self._http: aiohttp.ClientSession | None = None
        # Recorded outcomes, by outcome.
        self.outcomes: collections.Counter[DeliveryOutcome] = collections.Counter()
        self._recorder = Recorder(pool, self.owner)

    # --- lifecycle ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self._http = make_session(self.settings)
        recorder = asyncio.create_task(self._recorder.run(), name="deliver:record")
        helpers = [
            asyncio.create_task(self._listener.run(stop), name="deliver:listen"),
            asyncio.create_task(self._renew_leases(), name="deliver:renew"),
            asyncio.create_task(self._wake_when(stop), name="deliver:stop-watch"),
        ]
        log.info(
            "dispatcher_started",
            owner=self.owner,
            concurrency=self.capacity,
            per_url=self.settings.delivery_per_url_concurrency,
            signature_scheme=self.settings.signature_scheme,
        )
        try:
            await self._claim_loop(stop)
            await self._finish_in_flight()
        finally:
            for helper in helpers:
                helper.cancel()
            await self._cancel_deliveries()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self._close_recorder(recorder)
            await self._release_unfinished()
            await self._http.close()
            log.info("dispatcher_stopped", owner=self.owner)

    async def _finish_in_flight(self) -> None:
        """Let deliveries in flight finish within most of the shutdown grace."""
        if not self._tasks:
            return
        grace = self.settings.shutdown_grace_s
        budget = max(grace * 0.8, grace - 1.0)
        _, late = await asyncio.wait(set(self._tasks), timeout=budget)
        if late:
            log.warning("deliveries_interrupted", count=len(late), reason="shutdown grace")

    async def _cancel_deliveries(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _close_recorder(self, recorder: asyncio.Task[None]) -> None:
        """Write the outcomes already queued (their POSTs happened), then stop."""
        self._recorder.close()
        try:
            await asyncio.wait_for(recorder, RELEASE_TIMEOUT_S)
        except (TimeoutError, DatabaseError) as exc:
            log.warning("outcomes_not_written", error=f"{type(exc).__name__}: {exc}")

    async def _release_unfinished(self) -> None:
        """Give back claims whose outcome was never recorded, so they are retried at once."""
        ids = list(self._claims)
        if not ids:
            return
        try:
            released = await asyncio.wait_for(
                store.release(self.pool, ids, self.owner), RELEASE_TIMEOUT_S
            )
            log.info("claims_released", count=released)
        except (TimeoutError, DatabaseError) as exc:
            log.warning(
                "claims_release_failed",
                count=len(ids),
                error=str(exc),
                note="they come back when their lease expires",
            )
        self._claims.clear()

    async def _wake_when(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake.set()

    # --- claiming -----------------------------------------------------------------------------

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.progress.beat()
            self._wake.clear()
            free = self.capacity - len(self._tasks)
            if free >= (self.refill_at if self._backlog else 1):
                want = min(free, MAX_CLAIM_BATCH)
                got = await self._claim_batch(want)
                if got < 0:  # database trouble: back off for a poll interval
                    self.progress.idle()
                    await sleep_unless(stop, self.settings.delivery_poll_interval_s)
                    continue
                self._backlog = got == want
                if self._backlog and len(self._tasks) < self.capacity:
                    continue
            self.progress.idle()
            await self._wait(self._wait_timeout())

    def _wait_timeout(self) -> float:
        poll = self.settings.delivery_poll_interval_s
        now = time.monotonic()
        if self._next_due <= now:
            self._next_due = math.inf
            return 0.0
        return min(poll, self._next_due - now)

    async def _wait(self, timeout: float) -> None:
        if timeout <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def _claim_batch(self, want: int) -> int:
        """Claim up to `want`, make sure each has its body, start their deliveries.
        Returns how many rows the claim took (held ones included: the queue may hold more),
        or -1 when the database failed."""
        rooms = self._rooms()
        try:
            batch = await store.claim_batch(
                self.pool, want, self.owner, self.lease_s, self.per_url, rooms
            )
        except DatabaseError as exc:
            log.warning("outbox_claim_failed", error=f"{type(exc).__name__}: {exc}")
            return -1
        if batch.held:
            self._log_held(batch.held)
        claims = batch.claimed
        if not claims:
            return batch.total
        for claim in claims:
            self._claims[claim.id] = claim
        try:
            claims = await self._with_bodies(claims)
        except DatabaseError as exc:
            log.warning("outbox_body_failed", error=f"{type(exc).__name__}: {exc}")
            for claim in claims:
                self._claims.pop(claim.id, None)
            with contextlib.suppress(DatabaseError):
                await store.release(self.pool, [claim.id for claim in claims], self.owner)
            return -1
        for claim in claims:
            self._claims[claim.id] = claim
            self._start(claim)
        self._saturated = self._limited(claims, rooms)
        return batch.total

    def _limited(self, claims: Sequence[store.Claimed], rooms: dict[str, int]) -> set[str]:
        """The URLs that may have more waiting: every permit taken, or the claim took all the
        room it had for them. (Deliveries that finished while the claim ran leave a URL
        with permits free and a backlog behind it: it must be claimed for again when the next
        permits free up, not at the next poll.)"""
        taken = collections.Counter(claim.callback_url or "" for claim in claims)
        filled = {url for url, count in taken.items() if count >= rooms.get(url, self.per_url)}
        full = {url for url, slot in self._url_slots.items() if slot.users >= self.per_url}
        return filled | full

    def _rooms(self) -> dict[str, int]:
        """Free permits of the URLs this dispatcher has in flight or has paused; any other URL
        has all `per_url` of them."""
        rooms: dict[str, int] = {}
        for url in {*self._url_slots, *self.breaker.urls()}:
            slot = self._url_slots.get(url)
            in_flight = slot.users if slot is not None else 0
            rooms[url] = max(0, self.breaker.room(url, self.per_url) - in_flight)
        metrics.PAUSED_CALLBACK_URLS.set(self.breaker.open_count())
        return rooms

    @staticmethod
    def _log_held(held: Sequence[store.HeldAtClaim]) -> None:
        """Notifications the claim held because their URL is gone: no request was sent."""
        by_url: dict[str, list[int]] = {}
        for notification in held:
            by_url.setdefault(notification.url, []).append(notification.notification_id)
        for url, ids in by_url.items():
            log.info(
                "delivery_held_url_gone",
                url=logs.redact_url(url),
                count=len(ids),
                notification_ids=ids[:20],
                note="not attempted: the URL answered 410; `deliveries redeliver` resumes",
            )

    async def _with_bodies(self, claims: list[store.Claimed]) -> list[store.Claimed]:
        """Build and store the body of every claim that has none yet (its first attempt)."""
        missing = [claim for claim in claims if claim.body is None]
        if not missing:
            return claims
        events = await store.events_of(self.pool, [claim.id for claim in missing])
        bodies = {
            claim.id: self._build(claim, events[claim.id])
            for claim in missing
            if events.get(claim.id)
        }
        await store.set_bodies(self.pool, bodies, self.owner)
        return [
            replace(claim, body=bodies.get(claim.id)) if claim.body is None else claim
            for claim in claims
        ]

    @staticmethod
    def _build(claim: store.Claimed, events: Sequence[store.StoredEvent]) -> bytes:
        instance = InstanceInfo(
            claim.instance_id, claim.instance_name, claim.tags, claim.realm_id, claim.timezone
        )
        rows = [
            EventRow(e.event_type, e.object_id, e.occurred_at, e.raw, e.changes) for e in events
        ]
        return build_body(instance, claim.resource, claim.event_id, rows)

    async def _renew_leases(self) -> None:
        """Keep held claims alive (a claim may wait for its URL's slot longer than a lease)."""
        interval = max(0.05, self.lease_s / 3)
        while True:
            await asyncio.sleep(interval)
            ids = list(self._claims)
            if not ids:
                continue
            try:
                await store.renew(self.pool, ids, self.owner, self.lease_s)
            except DatabaseError as exc:
                log.warning("lease_renew_failed", count=len(ids), error=str(exc))

    # --- delivering ---------------------------------------------------------------------------

    def _start(self, claim: store.Claimed) -> None:
        # The URL's permit is counted from now until the outcome is recorded, so the next
        # claim (which may run before this task does) already sees it taken.
        url = claim.callback_url or ""
        slot = self._url_slots.get(url)
        if slot is None:
            slot = self._url_slots[url] = _UrlSlot(self.per_url)
        slot.users += 1
        task = asyncio.create_task(self._deliver(claim), name=f"deliver:{claim.id}")
        self._tasks.add(task)
        task.add_done_callback(self._delivery_done)
        task.add_done_callback(functools.partial(self._leave_url_slot, url, slot))

    def _leave_url_slot(self, url: str, slot: _UrlSlot, _task: asyncio.Task[None]) -> None:
        slot.users -= 1
        if url in self._saturated and self.per_url - slot.users >= self.url_refill_at:
            # Its backlog may be waiting for exactly these permits.
            self._saturated.discard(url)
            self._wake.set()
        if slot.users == 0 and self._url_slots.get(url) is slot:
            del self._url_slots[url]

    def _delivery_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error(
                "delivery_crashed",
                task=task.get_name(),
                error=f"{type(exc).__name__}: {exc}",
                exc_info=exc,
            )
        if self._backlog and self.capacity - len(self._tasks) >= self.refill_at:
            self._wake.set()

    async def _deliver(self, claim: store.Claimed) -> None:
        try:
            url = claim.callback_url or ""
            response = await self._attempt(claim, url)
            if response is None:
                await self._defer(claim, url)
                return
            decision = decide(response, claim.attempts + 1, self.settings.retry_schedule_s)
            attempt = store.Attempt(
                outcome=decision.outcome,
                started_at=response.started_at or datetime.now(UTC),
                url=url,
                duration_ms=response.duration_ms,
                status_code=response.status,
                error=describe_failure(response),
                response_body=response.body,
                retry_in_s=decision.retry_in_s,
            )
            await self._record(claim, attempt)
        except Exception:
            # A bug, not a delivery failure: stop renewing the claim so its lease runs out and
            # the notification is retried (logged by _delivery_done).
            self._claims.pop(claim.id, None)
            raise

    async def _attempt(self, claim: store.Claimed, url: str) -> Response | None:
        """The attempt's response; None when its URL is paused and nothing was sent."""
        if not url:
            return Response(None, error="the instance has no callback URL")
        if claim.body is None:
            return Response(None, error="the notification has no events")
        try:
            key = self._signature_key(claim.signature_key_enc)
        except (PollerError, ValueError) as exc:
            return Response(None, error=f"cannot open the signature key: {exc}")
        # A safety net: the claim took only free permits, so this does not wait.
        async with self._url_slots[url].semaphore:
            if self.breaker.admit(url) > 0:
                return None
            started = time.monotonic()
            try:
                response = await self._post(url, claim.event_id, claim.body, key)
            except BaseException:  # cancelled: no result, another probe may go
                self.breaker.abandon(url, started)
                raise
            pause_s = self.breaker.record(url, started, response.timed_out)
            if pause_s is not None:
                await self._pause(url, pause_s)
            return response

    async def _pause(self, url: str, pause_s: float) -> None:
        """The URL's breaker opened: what waits for it is due when the pause ends."""
        metrics.CALLBACK_PAUSES.inc()
        self._next_due = min(self._next_due, time.monotonic() + pause_s)
        try:
            moved: int | None = await store.defer_url(self.pool, url, pause_s)
        except DatabaseError as exc:
            # Then the claims skip the URL until the pause ends (its room is 0) all the same.
            log.warning(
                "callback_pause_reschedule_failed", url=logs.redact_url(url), error=str(exc)
            )
            moved = None
        log.warning(
            "callback_url_paused",
            url=logs.redact_url(url),
            pause_s=round(pause_s, 3),
            rescheduled=moved,
            note="it keeps timing out: no request to it until the pause ends, then one probe; "
            "its notifications keep their attempts",
        )

    async def _defer(self, claim: store.Claimed, url: str) -> None:
        """A claim whose URL is paused: back to the queue unattempted, due when the pause
        ends (or, behind a probe in flight, once the probe has had its time)."""
        wait_s = max(self.breaker.admit(url), 0.05)
        self._next_due = min(self._next_due, time.monotonic() + wait_s)
        try:
            await store.defer(self.pool, [claim.id], self.owner, wait_s)
        except DatabaseError as exc:
            log.warning("delivery_defer_failed", notification_id=claim.id, error=str(exc))
        self._claims.pop(claim.id, None)  # deferred, or its lease runs out: either way not ours
        log.info(
            "delivery_deferred_url_paused",
            notification_id=claim.id,
            url=logs.redact_url(url),
            wait_s=wait_s,
        )

    async def _post(self, url: str, event_id: str, body: bytes, key: str | None) -> Response:
        assert self._http is not None
        headers = callback_headers(event_id, body, key, self.signature_scheme, int(time.time()))
        started_at, t0 = datetime.now(UTC), time.monotonic()
        response = await self._send(url, body, headers)
        return replace(
            response, started_at=started_at, duration_ms=int((time.monotonic() - t0) * 1000)
        )

    async def _send(self, url: str, body: bytes, headers: dict[str, str]) -> Response:
        assert self._http is not None
        try:
            if self.settings.callback_deny_private:
                check_url(url)
            async with self._http.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                text = await self._response_text(resp)
                return Response(
                    resp.status, text, resp.headers.get("Retry-After"), resp.headers.get("Location")
                )
        except TimeoutError:
            return Response(
                None,
                error=f"timed out after {self.settings.delivery_timeout_s:g}s",
                timed_out=True,
            )
        except CallbackRefused as exc:
            return Response(None, error=str(exc))
        except aiohttp.ClientError as exc:
            # aiohttp's messages may quote the URL (InvalidURL, a redirect): the error is
            # logged, stored and listed, so its URLs lose credentials and query here.
            refused = refused_in(exc)
            text = str(refused) if refused else f"{type(exc).__name__}: {exc}"
            return Response(None, error=logs.redact_urls(text))
        except (OSError, ValueError) as exc:
            return Response(None, error=logs.redact_urls(f"{type(exc).__name__}: {exc}"))

    @staticmethod
    async def _response_text(resp: aiohttp.ClientResponse) -> str:
        # The status already decided the outcome; a body that stalls or breaks only loses text.
        try:
            data = await read_capped(resp.content, RESPONSE_CAP_BYTES)
        except (TimeoutError, aiohttp.ClientError):
            return ""
        return data.decode("utf-8", errors="replace")

    def _signature_key(self, sealed: str | None) -> str | None:
        """The instance's key in clear, registered as a secret the first time it is opened."""
        if not sealed:
            return None
        key = self._keys.get(sealed)
        if key is None:
            key = self.box.open(sealed) or ""
            logs.register_secret(key)
            if len(self._keys) >= _KEY_CACHE_MAX:
                self._keys.clear()
            self._keys[sealed] = key
        return key or None

    # --- recording ----------------------------------------------------------------------------

    async def _record(self, claim: store.Claimed, attempt: store.Attempt) -> None:
        held, newly_gone = 0, False
        try:
            if attempt.outcome == DeliveryOutcome.HELD:
                async with db.acquire(self.pool) as conn:
                    gone = await store.record_gone(conn, claim, self.owner, attempt)
                recorded, newly_gone, held = gone.recorded, gone.newly_gone, gone.also_held
            else:
                recorded = await self._recorder.record(claim, attempt)
        except DatabaseError as exc:
            # Unrecorded: the lease runs out and the notification is delivered again (same
            # eventId). Stop renewing it so that happens.
            self._claims.pop(claim.id, None)
            log.warning("delivery_record_failed", notification_id=claim.id, error=str(exc))
            return
        self._claims.pop(claim.id, None)
        if not recorded:
            log.warning(
                "delivery_claim_lost",
                notification_id=claim.id,
                event_id=claim.event_id,
                note="the lease expired and another dispatcher took it over",
            )
            return
        self._observe(claim, attempt, held)
        if newly_gone:
            log.warning(
                "callback_url_gone",
                url=logs.redact_url(attempt.url),
                instance_id=claim.instance_id,
                note="410 Gone: its notifications are held without an attempt until "
                "`qbo-poller deliveries redeliver`",
            )

    def _observe(self, claim: store.Claimed, attempt: store.Attempt, held: int) -> None:
        metrics.DELIVERIES.labels(outcome=attempt.outcome).inc()
        self.outcomes[attempt.outcome] += 1
        fields = dict(
            notification_id=claim.id,
            event_id=claim.event_id,
            instance_id=claim.instance_id,
            attempt=claim.attempts + 1,
            status=attempt.status_code,
            error=attempt.error,
        )
        if attempt.outcome == DeliveryOutcome.DELIVERED:
            metrics.DELIVERY_LATENCY.observe(
                max(0.0, (datetime.now(UTC) - claim.created_at).total_seconds())
            )
            log.debug("delivery_delivered", **fields)
        elif attempt.outcome == DeliveryOutcome.RETRY:
            self._next_due = min(self._next_due, time.monotonic() + attempt.retry_in_s)
            log.info("delivery_retry", retry_in_s=round(attempt.retry_in_s, 3), **fields)
        elif attempt.outcome == DeliveryOutcome.HELD:
            log.warning("delivery_held", also_held=held, **fields)
        else:
            log.warning("delivery_dead", **fields)

    def _notified(self, _payload: str) -> None:
        self._wake.set()

    async def _listening(self, _missed: bool) -> None:
        self._wake.set()  # whatever was committed while nobody listened
