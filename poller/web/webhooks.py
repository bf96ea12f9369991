"""Intuit webhooks (DESIGN §11): the receiver, and the intake that turns notifications into polls.

`WebhookReceiver` serves `POST /elements/api-v2/events/quickbooks[/]` on the daemon's listener:
1. the body is read (at most `MAX_BODY_BYTES`, else 413) and its `intuit-signature` checked
   against every verifier token (QBO_WEBHOOK_VERIFIER_TOKEN and instances'
   `event.webhook.verifier.token`) in constant time: no match → 401, nothing recorded;
2. it is parsed as either format (legacy `eventNotifications`, or a CloudEvents array); a signed
   body that is neither is kept raw (`webhook_rejects`), logged, counted and answered 200, since
   a 4xx makes Intuit re-send the whole batch;
3. its entity changes are recorded in PostgreSQL, deduplicated, in one transaction that also
   writes the DELETED events of TimeActivity deletes (no CDC for them), then 200 — all within
   `RECORD_TIMEOUT_S` (Intuit waits 3 s, then retries: a 503 costs only a retry);
4. the new changes go to the `WebhookIntake`.

`WebhookIntake` (a service the supervisor runs) collects the changes of each realm for
POLLER_WEBHOOK_COALESCE, then makes the named entities' pairs of every instance of that realm due
with one `request_poll`: PostgreSQL NOTIFYs, and the replica holding each instance's lease polls
(one CDC request for the whole burst). Events still come from the diff, exactly as when polling.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from poller import logs, metrics
from poller.detect.diff import tombstone
from poller.errors import DatabaseError
from poller.records import DELETED_VERSION, Event, EventType
from poller.store import db, polls, webhooks
from poller.store.crypto import SecretBox
from poller.store.webhooks import Notification

log = logs.get_logger(__name__)

PATH = "/elements/api-v2/events/quickbooks"
SIGNATURE_HEADER = "intuit-signature"
MAX_BODY_BYTES = 1024 * 1024  # Intuit: up to 100 events and about 1 MB per notification
RECORD_TIMEOUT_S = 0.9  # the 200 goes out within 1 s, or a 503 (Intuit retries)
TOKEN_CACHE_S = 5.0  # instances' verifier tokens are re-read this often
UNKNOWN_REALM_LOG_S = 3600.0  # one log line per unknown realm and hour
INTAKE_TICK_S = 0.25  # the intake notices `stop` at least this often
LEGACY, CLOUDEVENTS = "legacy", "cloudevents"
TIME_ACTIVITY = "timeactivity"
# CloudEvents `type` verbs → the legacy operation names.
_VERBS = {
    "created": "Create",
    "updated": "Update",
    "deleted": "Delete",
    "merged": "Merge",
    "voided": "Void",
    "emailed": "Emailed",
}


class Unreadable(ValueError):
    """A signed body that is neither webhook format."""


# --- the signature and the formats (pure) ------------------------------------------------------


def signature(token: str, body: bytes) -> str:
    """Intuit's `intuit-signature`: base64(HMAC-SHA256(verifier token, raw body))."""
    digest = hmac.new(token.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def signed_by_any(header: str | None, body: bytes, tokens: Iterable[str]) -> bool:
    """Whether `header` is the signature of `body` under one of `tokens` (constant time each;
    every token is tried, so the answer's timing does not tell which one matched)."""
    if not header:
        return False
    given = header.strip().encode()
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(given, signature(token, body).encode())
    return matched


def parse_body(body: bytes) -> tuple[str, list[Notification]]:
    """The body's format and its entity changes; raises Unreadable."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Unreadable(f"not JSON: {exc}") from None
    try:
        if isinstance(document, dict) and "eventNotifications" in document:
            return LEGACY, _legacy(document["eventNotifications"])
        if isinstance(document, dict) and "specversion" in document:
            return CLOUDEVENTS, _cloudevents([document])  # a single (non-batch) event
        if isinstance(document, list):
            return CLOUDEVENTS, _cloudevents(document)
    except (KeyError, TypeError, AttributeError) as exc:
        raise Unreadable(f"unexpected shape: {type(exc).__name__}: {exc}") from None
    raise Unreadable("neither eventNotifications nor a CloudEvents array")


def _legacy(items: Any) -> list[Notification]:
    found: list[Notification] = []
    for item in _as_list(items, "eventNotifications"):
        realm = _text(item["realmId"], "realmId")
        for change in _as_list(item["dataChangeEvent"]["entities"], "entities"):
            entity = _text(change["name"], "name")
            object_id = _text(change["id"], "id")
            operation = _text(change["operation"], "operation")
            last = change.get("lastUpdated")
            key = f"legacy:{realm}:{entity.lower()}:{object_id}:{operation.lower()}:{last}"
            found.append(
                Notification(key, LEGACY, realm, entity, object_id, operation, _time(last), change)
            )
    return found


def _cloudevents(events: list[Any]) -> list[Notification]:
    found: list[Notification] = []
    for event in events:
        if not isinstance(event, dict):
            raise TypeError("a CloudEvents array holds objects")
        event_type = _text(event["type"], "type")
        parts = event_type.split(".")
        if len(parts) < 3 or parts[0] != "qbo":
            raise TypeError(f"type {event_type[:80]!r} is not qbo.<entity>.<verb>.v1")
        entity, verb = parts[1], parts[2]
        found.append(
            Notification(
                "ce:" + _text(event["id"], "id"),
                CLOUDEVENTS,
                _text(event["intuitaccountid"], "intuitaccountid"),
                entity,
                _text(event["intuitentityid"], "intuitentityid"),
                _VERBS.get(verb.lower(), verb.capitalize()),
                _time(event.get("time")),
                event,
            )
        )
    return found


def _as_list(value: Any, key: str) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"{key} is not an array")
    return value


def _text(value: Any, key: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value).strip() == "":
        raise TypeError(f"{key} is not a non-empty string")
    return str(value).strip()


def _time(value: Any) -> datetime | None:
    """`lastUpdated` / `time`: `...-0700`, `....000Z`, nanoseconds...; None when unreadable."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def is_time_activity_delete(notification: Notification) -> bool:
    return notification.entity.lower() == TIME_ACTIVITY and notification.operation == "Delete"


def deleted_event(notification: Notification, received_at: datetime) -> Event:
    """A TimeActivity `Delete` as its DELETED event (raw: the tombstone shape; date: the
    notification's time)."""
    when = notification.occurred_at or received_at
    return Event(
        notification.object_id,
        DELETED_VERSION,
        EventType.DELETED,
        when,
        tombstone(notification.object_id, when),
    )


# --- the intake: notifications → poll requests --------------------------------------------------


@dataclass
class _Pending:
    """One realm's notifications collected for one poll request."""

    deadline: float
    entities: set[str] = field(default_factory=set)
    arrivals: list[float] = field(default_factory=list)  # monotonic time of each change


class WebhookIntake:
    """Coalesces notifications per realm and requests the polls (a supervised service)."""

    name = "webhook-intake"

    def __init__(self, pool: db.Pool, coalesce_s: float) -> None:
        self.pool = pool
        self.coalesce_s = coalesce_s
        self.queue: asyncio.Queue[tuple[str, str, float]] = asyncio.Queue()
        self._unknown_logged: dict[str, float] = {}

    def submit(self, notifications: Sequence[Notification], arrived: float) -> None:
        """Queue the changes (the receiver's call; never blocks)."""
        for notification in notifications:
            self.queue.put_nowait((notification.realm_id, notification.entity, arrived))

    async def run(self, stop: asyncio.Event) -> None:
        pending: dict[str, _Pending] = {}
        while not stop.is_set():
            now = time.monotonic()
            wait_s = min([INTAKE_TICK_S, *(p.deadline - now for p in pending.values())])
            with contextlib.suppress(TimeoutError):
                realm, entity, arrived = await asyncio.wait_for(self.queue.get(), max(wait_s, 0.0))
                self._add(pending, realm, entity, arrived)
                self._drain_queue(pending)
            now = time.monotonic()
            for realm in [r for r, p in pending.items() if p.deadline <= now]:
                await self._request(realm, pending.pop(realm))
        self._drain_queue(pending)
        for realm, batch in pending.items():  # requested now rather than left to the backstop
            await self._request(realm, batch)

    def _add(self, pending: dict[str, _Pending], realm: str, entity: str, arrived: float) -> None:
        batch = pending.get(realm)
        if batch is None:
            batch = pending[realm] = _Pending(deadline=arrived + self.coalesce_s)
        batch.entities.add(entity)
        batch.arrivals.append(arrived)

    def _drain_queue(self, pending: dict[str, _Pending]) -> None:
        while not self.queue.empty():
            realm, entity, arrived = self.queue.get_nowait()
            self._add(pending, realm, entity, arrived)

    async def _request(self, realm: str, batch: _Pending) -> None:
        try:
            async with db.acquire(self.pool) as conn:
                result = await polls.request_poll(
                    conn, realm_id=realm, entities=sorted(batch.entities)
                )
                known = result.pairs > 0 or await webhooks.realm_known(conn, realm)
        except DatabaseError as exc:
            # The notifications are recorded; the backstop poll will find the changes.
            log.warning("webhook_poll_request_failed", realm_id=realm, error=str(exc))
            return
        done = time.monotonic()
        for arrived in batch.arrivals:
            metrics.WEBHOOK_POLL_LATENCY.observe(done - arrived)
        if result.pairs > 0:
            log.info(
                "webhook_poll_requested",
                realm_id=realm,
                entities=sorted(batch.entities),
                notifications=len(batch.arrivals),
                pairs=result.pairs,
                instances=list(result.instance_ids),
            )
            return
        reason = "unwatched" if known else "unknown_realm"
        metrics.WEBHOOK_DROPPED.labels(reason).inc(len(batch.arrivals))
        if not known:
            self._log_unknown(realm, len(batch.arrivals))

    def _log_unknown(self, realm: str, count: int) -> None:
        now = time.monotonic()
        last = self._unknown_logged.get(realm)
        if last is not None and now - last < UNKNOWN_REALM_LOG_S:
            return
        self._unknown_logged[realm] = now
        log.warning(
            "webhook_unknown_realm",
            realm_id=realm,
            notifications=count,
            hint="no instance is connected to this company; dropped (logged once an hour)",
        )


# --- the receiver ---------------------------------------------------------------------------------


class WebhookReceiver:
    """`POST /elements/api-v2/events/quickbooks[/]` (a WebPart)."""

    def __init__(
        self,
        pool: db.Pool,
        box: SecretBox,
        intake: WebhookIntake | None,
        *,
        verifier_token: str | None,
        events_per_notification: int,
    ) -> None:
        self.pool = pool
        self.box = box
        self.intake = intake
        self.verifier_token = verifier_token
        self.events_per_notification = events_per_notification
        self._instance_tokens: list[str] = []
        self._tokens_read_at = -TOKEN_CACHE_S
        self._said_no_token = False

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(PATH, self.receive)
        app.router.add_post(PATH + "/", self.receive)

    async def receive(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        body = await _read_bounded(request, MAX_BODY_BYTES)
        try:
            tokens = await self._tokens()
        except DatabaseError as exc:
            log.warning("webhook_not_recorded", reason="database", error=str(exc))
            return _answer(503, "database unavailable")
        if not tokens:
            self._say_no_token()
            metrics.WEBHOOK_SIGNATURE_FAILURES.inc()
            return _answer(401, "no verifier token configured")
        if not signed_by_any(request.headers.get(SIGNATURE_HEADER), body, tokens):
            metrics.WEBHOOK_SIGNATURE_FAILURES.inc()
            log.warning("webhook_signature_refused", peer=request.remote, size=len(body))
            return _answer(401, "signature does not match")
        try:
            kind, notifications = parse_body(body)
        except Unreadable as exc:
            return await self._keep_unreadable(request, body, str(exc))
        try:
            new = await self._record(notifications)
        except (DatabaseError, TimeoutError) as exc:
            log.warning("webhook_not_recorded", reason=type(exc).__name__, error=str(exc))
            return _answer(503, "not recorded; retry")
        metrics.WEBHOOK_NOTIFICATIONS.labels(kind, "recorded").inc(len(new))
        metrics.WEBHOOK_NOTIFICATIONS.labels(kind, "duplicate").inc(len(notifications) - len(new))
        to_poll = [n for n in new if not is_time_activity_delete(n)]
        if self.intake is not None:
            self.intake.submit(to_poll, arrived)
        log.info(
            "webhook_received",
            format=kind,
            notifications=len(notifications),
            new=len(new),
            realms=sorted({n.realm_id for n in notifications}),
        )
        return web.json_response({"received": len(notifications), "new": len(new)})

    async def _record(self, notifications: Sequence[Notification]) -> list[Notification]:
        """Record (deduplicated) and write TimeActivity deletes, in one transaction."""
        received_at = datetime.now(UTC)
        async with (
            asyncio.timeout(RECORD_TIMEOUT_S),
            db.acquire(self.pool) as conn,
            conn.transaction(),
        ):
            new = await webhooks.record(conn, notifications)
            deletes = [
                (n.realm_id, deleted_event(n, received_at))
                for n in new
                if is_time_activity_delete(n)
            ]
            written = await webhooks.write_deletes(conn, deletes, self.events_per_notification)
        if written:
            metrics.EVENTS.labels(EventType.DELETED).inc(written)
        return new

    async def _keep_unreadable(
        self, request: web.Request, body: bytes, reason: str
    ) -> web.Response:
        metrics.WEBHOOK_NOTIFICATIONS.labels("unknown", "unparseable").inc()
        log.warning(
            "webhook_unreadable",
            reason=reason,
            content_type=request.content_type,
            size=len(body),
            hint="kept raw in webhook_rejects; answered 200 so Intuit does not re-send it",
        )
        try:
            async with asyncio.timeout(RECORD_TIMEOUT_S), db.acquire(self.pool) as conn:
                await webhooks.record_reject(conn, request.content_type, reason, body)
        except (DatabaseError, TimeoutError) as exc:
            log.warning("webhook_reject_not_kept", error=str(exc) or type(exc).__name__)
        return _answer(200, "unreadable; kept for inspection")

    async def _tokens(self) -> list[str]:
        now = time.monotonic()
        if now - self._tokens_read_at >= TOKEN_CACHE_S:
            async with asyncio.timeout(RECORD_TIMEOUT_S), db.acquire(self.pool) as conn:
                self._instance_tokens = await webhooks.verifier_tokens(conn, self.box)
            self._tokens_read_at = now
        env = [self.verifier_token] if self.verifier_token else []
        return [*env, *self._instance_tokens]

    def _say_no_token(self) -> None:
        if self._said_no_token:
            return
        self._said_no_token = True
        log.warning(
            "webhook_no_verifier_token",
            hint="set QBO_WEBHOOK_VERIFIER_TOKEN (or an instance's event.webhook.verifier.token)"
            " to the verifier token of your Intuit app; until then every webhook gets 401",
        )


async def _read_bounded(request: web.Request, limit: int) -> bytes:
    """The raw body (the signature is over these bytes), refused past `limit` with 413."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=declared)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(status: int, message: str) -> web.Response:
    return web.json_response({"status": status, "message": message}, status=status)
