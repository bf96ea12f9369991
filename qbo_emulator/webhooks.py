"""Intuit webhooks, sent by the emulator (reference/qbo-api.md §7).

Per realm a target (URL, verifier token, format ``legacy`` | ``cloudevents``, aggregation delay).
Every write of the realm (create, update, delete, void; through the API, batch or the control
API) is collected for the aggregation delay, then sent as ONE notification (up to 100 entity
changes, as Intuit batches them): legacy ``{"eventNotifications": [{"realmId",
"dataChangeEvent": {"entities": [...]}}]}`` or a CloudEvents array, signed with
``intuit-signature = base64(HMAC-SHA256(verifier, body))``. A delivery that is not answered 200
is retried on Intuit's schedule (10 s, 20 s, 30 s, 5 m, 20 m, 2 h, 4 h, 6 h, then every 6 h;
``retry_scale`` compresses it for tests), up to ``max_attempts``.

Switches: ``drop_fraction`` (each notification is lost with that probability), ``drop_next``
(the next N are lost), ``duplicates`` (every notification is delivered twice, same bytes, as
Intuit's retries are). Counters per realm: webhook_notifications (made), webhook_dropped,
webhook_attempts, webhook_delivered, webhook_failed (non-200 or no answer), webhook_given_up.

The sender runs as a background task owned by the emulator's aiohttp app (started and stopped
with it, see ``app.create_app``); it sends in real time, whatever the emulator's clock says.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import aiohttp
import orjson

FORMATS = ("legacy", "cloudevents")
RETRY_SCHEDULE_S = (10.0, 20.0, 30.0, 300.0, 1200.0, 7200.0, 14400.0, 21600.0)
MAX_EVENTS_PER_NOTIFICATION = 100
DEFAULT_DELAY_S = 1.0
SEND_TIMEOUT_S = 3.0  # Intuit waits 3 s for the 200
LEGACY_TYPE = "application/json; charset=utf-8"
CLOUDEVENTS_TYPE = "application/cloudevents+json"
_PAST = {
    "Create": "created",
    "Update": "updated",
    "Delete": "deleted",
    "Merge": "merged",
    "Void": "voided",
    "Emailed": "emailed",
}
_PACIFIC_WINTER = timezone(timedelta(hours=-8))


@dataclass
class Target:
    """Where a realm's notifications go."""

    url: str
    verifier: str
    format: str = "legacy"
    delay_s: float = DEFAULT_DELAY_S

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError("url must be an http(s) URL")
        if not self.verifier:
            raise ValueError("verifier must be a non-empty string")
        if self.delay_s < 0:
            raise ValueError("delay_s must be >= 0")

    def public(self) -> dict[str, Any]:
        return {"url": self.url, "format": self.format, "delay_s": self.delay_s}


@dataclass(frozen=True)
class Change:
    entity: str
    object_id: str
    operation: str
    updated: int  # epoch seconds of the write (the emulator's clock)


@dataclass
class _Batch:
    deadline: float
    changes: list[Change] = field(default_factory=list)


@dataclass
class Delivery:
    """One notification on its way (and its retries)."""

    realm: str
    target: Target
    body: bytes
    content_type: str
    due: float  # monotonic
    attempts: int = 0


class WebhookSender:
    """Collects writes per realm and delivers signed notifications."""

    def __init__(self, *, seed: int | None = None) -> None:
        self.targets: dict[str, Target] = {}
        self.default_target: Target | None = None  # the CLI's --webhook-url, for every realm
        self.drop_fraction = 0.0
        self.drop_next = 0
        self.duplicates = False
        self.retry_scale = 1.0
        self.max_attempts = 20
        self.counters: dict[str, Counter[str]] = {}
        self.log: deque[dict[str, Any]] = deque(maxlen=1000)
        self._random = random.Random(seed)
        self._batches: dict[str, _Batch] = {}
        self._deliveries: list[Delivery] = []
        self._wake = asyncio.Event()
        self._stopping = False

    # ------------------------------------------------------------ configuration
    def configure(
        self,
        realm: str,
        url: str,
        verifier: str,
        *,
        format: str = "legacy",
        delay_s: float = DEFAULT_DELAY_S,
    ) -> Target:
        target = Target(url, verifier, format, float(delay_s))
        self.targets[str(realm)] = target
        return target

    def remove(self, realm: str) -> None:
        self.targets.pop(str(realm), None)

    def target(self, realm: str) -> Target | None:
        return self.targets.get(str(realm), self.default_target)

    def set_switches(
        self,
        *,
        drop_fraction: float | None = None,
        drop_next: int | None = None,
        duplicates: bool | None = None,
        retry_scale: float | None = None,
        max_attempts: int | None = None,
    ) -> dict[str, Any]:
        if drop_fraction is not None:
            if not 0.0 <= float(drop_fraction) <= 1.0:
                raise ValueError("drop_fraction must be between 0 and 1")
            self.drop_fraction = float(drop_fraction)
        if drop_next is not None:
            if int(drop_next) < 0:
                raise ValueError("drop_next must be >= 0")
            self.drop_next = int(drop_next)
        if duplicates is not None:
            self.duplicates = bool(duplicates)
        if retry_scale is not None:
            if float(retry_scale) <= 0:
                raise ValueError("retry_scale must be > 0")
            self.retry_scale = float(retry_scale)
        if max_attempts is not None:
            if int(max_attempts) < 1:
                raise ValueError("max_attempts must be >= 1")
            self.max_attempts = int(max_attempts)
        return self.switches()

    def switches(self) -> dict[str, Any]:
        return {
            "drop_fraction": self.drop_fraction,
            "drop_next": self.drop_next,
            "duplicates": self.duplicates,
            "retry_scale": self.retry_scale,
            "max_attempts": self.max_attempts,
        }

    def pending(self) -> int:
        """Changes waiting for their batch plus notifications not yet delivered."""
        return sum(len(b.changes) for b in self._batches.values()) + len(self._deliveries)

    def reset(self) -> None:
        self.targets.clear()
        self.default_target = None
        self.drop_fraction, self.drop_next, self.duplicates = 0.0, 0, False
        self.retry_scale, self.max_attempts = 1.0, 20
        self.counters.clear()
        self.log.clear()
        self._batches.clear()
        self._deliveries.clear()

    # ------------------------------------------------------------ writes
    def recorder(self, realm: str) -> Callable[[str, str, str, int], None]:
        """The callback a realm calls on every write."""

        def on_change(entity: str, object_id: str, operation: str, updated: int) -> None:
            self.record(realm, Change(entity, object_id, operation, updated))

        return on_change

    def record(self, realm: str, change: Change) -> None:
        target = self.target(realm)
        if target is None:
            return
        batch = self._batches.get(realm)
        if batch is None:
            batch = self._batches[realm] = _Batch(time.monotonic() + target.delay_s)
        batch.changes.append(change)
        self._wake.set()

    # ------------------------------------------------------------ the task
    async def run(self) -> None:
        """Send until `stop()`; owned by the app (see app.create_app)."""
        self._stopping = False
        self._wake = asyncio.Event()  # of this loop (an Emulator may be served again later)
        timeout = aiohttp.ClientTimeout(total=SEND_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self._stopping:
                self._wake.clear()
                now = time.monotonic()
                self._seal(now)
                due = [d for d in self._deliveries if d.due <= now]
                if due:
                    await asyncio.gather(*(self._send(session, d) for d in due))
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._wait_s(now))

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def _wait_s(self, now: float) -> float:
        moments = [b.deadline for b in self._batches.values()]
        moments.extend(d.due for d in self._deliveries)
        return max(0.0, min(moments, default=now + 1.0) - now)

    def _seal(self, now: float) -> None:
        """Batches whose delay has passed → notifications (or dropped ones)."""
        for realm in [r for r, b in self._batches.items() if b.deadline <= now]:
            batch = self._batches.pop(realm)
            target = self.target(realm)
            if target is None:
                continue
            changes = batch.changes
            for start in range(0, len(changes), MAX_EVENTS_PER_NOTIFICATION):
                chunk = changes[start : start + MAX_EVENTS_PER_NOTIFICATION]
                self._make(realm, target, chunk, now)

    def _make(self, realm: str, target: Target, chunk: list[Change], now: float) -> None:
        counts = self.counters.setdefault(realm, Counter())
        counts["webhook_notifications"] += 1
        if self._drops():
            counts["webhook_dropped"] += 1
            self.log.append({"realm": realm, "outcome": "dropped", "changes": len(chunk)})
            return
        if target.format == "cloudevents":
            body, content_type = cloudevents_body(realm, chunk), CLOUDEVENTS_TYPE
        else:
            body, content_type = legacy_body(realm, chunk), LEGACY_TYPE
        copies = 2 if self.duplicates else 1
        for _ in range(copies):
            self._deliveries.append(Delivery(realm, target, body, content_type, now))

    def _drops(self) -> bool:
        if self.drop_next > 0:
            self.drop_next -= 1
            return True
        return self.drop_fraction > 0 and self._random.random() < self.drop_fraction

    async def _send(self, session: aiohttp.ClientSession, delivery: Delivery) -> None:
        counts = self.counters.setdefault(delivery.realm, Counter())
        counts["webhook_attempts"] += 1
        delivery.attempts += 1
        status: int | None = None
        error: str | None = None
        try:
            async with session.post(
                delivery.target.url, data=delivery.body, headers=headers(delivery)
            ) as response:
                status = response.status
                await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = type(exc).__name__
        self.log.append(
            {
                "realm": delivery.realm,
                "outcome": "delivered" if status == 200 else "failed",
                "attempt": delivery.attempts,
                "status": status,
                "error": error,
                "size": len(delivery.body),
            }
        )
        if status == 200:
            counts["webhook_delivered"] += 1
            self._deliveries.remove(delivery)
            return
        counts["webhook_failed"] += 1
        if delivery.attempts >= self.max_attempts:
            counts["webhook_given_up"] += 1
            self._deliveries.remove(delivery)
            return
        step = RETRY_SCHEDULE_S[min(delivery.attempts, len(RETRY_SCHEDULE_S)) - 1]
        delivery.due = time.monotonic() + step * self.retry_scale


# ------------------------------------------------------------------ bodies


def signature(verifier: str, body: bytes) -> str:
    digest = hmac.new(verifier.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def headers(delivery: Delivery) -> dict[str, str]:
    """As recorded from an Intuit delivery (samples/responses/webhook_legacy_request_headers)."""
    created = datetime.now(_PACIFIC_WINTER).strftime("%Y-%m-%dT%H:%M:%S%z")
    return {
        "Content-Type": delivery.content_type,
        "Accept": "application/json",
        "intuit-signature": signature(delivery.target.verifier, delivery.body),
        "intuit-t-id": str(uuid.uuid4()),
        "intuit-created-time": created,
        "intuit-notification-schema-version": "0.1",
        "User-Agent": "intuit_notification_server/0.1",
    }


def legacy_body(realm: str, changes: list[Change]) -> bytes:
    entities = [
        {
            "name": change.entity,
            "id": change.object_id,
            "operation": change.operation,
            "lastUpdated": _utc(change.updated).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        }
        for change in changes
    ]
    return orjson.dumps(
        {"eventNotifications": [{"realmId": realm, "dataChangeEvent": {"entities": entities}}]}
    )


def cloudevents_body(realm: str, changes: list[Change]) -> bytes:
    events = [
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "intuit.qbo-emulator",
            "type": f"qbo.{change.entity.lower()}.{_past(change.operation)}.v1",
            "datacontenttype": "application/json",
            "time": _utc(change.updated).strftime("%Y-%m-%dT%H:%M:%S.000000000Z"),
            "intuitentityid": change.object_id,
            "intuitaccountid": realm,
            "data": {},
        }
        for change in changes
    ]
    return orjson.dumps(events)


def _past(operation: str) -> str:
    return _PAST.get(operation, operation.lower() + "d")


def _utc(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
