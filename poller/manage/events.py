"""Event records (DESIGN §9): one per callback message, read from the outbox; redelivery of
one event and of queued (dead or held) deliveries. Visibility as for instances."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import asyncpg
import orjson

from poller.manage.errors import InvalidRequest, NotFound
from poller.manage.instances import page_cursor, parse_cursor
from poller.manage.users import Caller
from poller.manage.views import iso
from poller.qbo.parse import loads_verbatim
from poller.store import api_events, api_instances, db, notifications
from poller.store.api_events import RecordFilter

# The record's status from the stored one (and whether an attempt was made).
STATUSES = {
    "NEW": ("pending", False),
    "DISPATCHED": ("pending", True),
    "NOTIFIED": ("delivered", None),
    "FAILED": ("dead", None),
    "HELD": ("held", None),
}
EVENT_TYPES = ("CREATED", "UPDATED", "DELETED")
MAX_QUEUED = 1000
_CLAUSE = re.compile(r"^\s*(status|config\.url|channel)\s*=\s*'((?:[^']|'')*)'\s*$", re.IGNORECASE)
_QUEUED = {"queued": ("dead", "held"), "dead": ("dead",), "held": ("held",)}


def record_status(stored: str, attempts: int) -> str:
    if stored == "pending":
        return "DISPATCHED" if attempts > 0 else "NEW"
    return {"delivered": "NOTIFIED", "dead": "FAILED", "held": "HELD"}.get(stored, stored)


def _time(name: str, raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"{name}={raw[:40]!r}: expected an ISO-8601 time") from None
    if moment.tzinfo is None:
        raise InvalidRequest(f"{name}={raw[:40]!r}: give an offset (Z or +hh:mm)")
    return moment


def record_filter(query: Mapping[str, str], instance_id: int | None) -> RecordFilter:
    status = query.get("status")
    stored, attempted = (None, None)
    if status:
        if status.upper() not in STATUSES:
            raise InvalidRequest(f"status={status[:20]!r}: expected one of {', '.join(STATUSES)}")
        stored, attempted = STATUSES[status.upper()]
    event_type = query.get("eventType")
    if event_type and event_type.upper() not in EVENT_TYPES:
        raise InvalidRequest(f"eventType={event_type[:20]!r}: expected CREATED, UPDATED or DELETED")
    return RecordFilter(
        instance_id=instance_id,
        since=_time("from", query.get("from")),
        until=_time("to", query.get("to")),
        object_type=query.get("objectType") or None,
        stored_status=stored,
        attempted=attempted,
        event_type=event_type.upper() if event_type else None,
        object_id=query.get("objectId") or None,
    )


@dataclass(frozen=True)
class Queued:
    statuses: tuple[str, ...]
    url: str | None


def parse_where(where: str | None) -> Queued:
    """`status = 'queued'|'dead'|'held'` and `config.url = '<url>'`, joined by `and`
    (`channel = 'webhook'`, which Open Connectors' scripts send, is accepted too)."""
    if not where or not where.strip():
        raise InvalidRequest("where: required, e.g. status = 'queued'")
    statuses: tuple[str, ...] = ("dead", "held")
    url = None
    for clause in re.split(r"\s+and\s+", where.strip(), flags=re.IGNORECASE):
        match = _CLAUSE.match(clause)
        if match is None:
            raise InvalidRequest(f"where: cannot filter on {clause.strip()[:80]!r}")
        key, value = match.group(1).lower(), match.group(2).replace("''", "'")
        if key == "status":
            if value.lower() not in _QUEUED:
                raise InvalidRequest(f"where: status {value[:20]!r}: expected queued, dead, held")
            statuses = _QUEUED[value.lower()]
        elif key == "config.url":
            url = value
        elif value.lower() != "webhook":
            raise InvalidRequest(f"where: channel {value[:20]!r}: only webhook")
    return Queued(statuses, url)


def _event_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound(f"no event with id {raw[:40]!r}") from None


class EventManager:
    def __init__(self, pool: db.Pool) -> None:
        self.pool = pool

    async def search(
        self,
        caller: Caller,
        instance_id: int | None,
        query: Mapping[str, str],
        page_size: int,
        next_page: str | None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        where = record_filter(query, instance_id)
        before = parse_cursor(next_page) or 2**63 - 1
        async with db.acquire(self.pool) as conn:
            if instance_id is not None:
                await self._visible(conn, caller, instance_id)
            rows = await api_events.records(conn, caller.owner_filter, where, before, page_size + 1)
            more = len(rows) > page_size
            rows = rows[:page_size]
            records = await self._records(conn, rows)
        return records, page_cursor(rows[-1]["id"]) if more else None

    async def get(
        self, caller: Caller, event_id: str, instance_id: int | None = None
    ) -> dict[str, Any]:
        async with db.acquire(self.pool) as conn:
            row = await api_events.record(
                conn, caller.owner_filter, _event_id(event_id), instance_id
            )
            if row is None:
                raise NotFound(f"no event with id {event_id[:40]!r}")
            return (await self._records(conn, [row]))[0]

    async def redeliver(self, caller: Caller, instance_id: int, event_id: str) -> int:
        async with db.acquire(self.pool) as conn:
            row = await api_events.record(
                conn, caller.owner_filter, _event_id(event_id), instance_id
            )
            if row is None:
                raise NotFound(f"no event with id {event_id[:40]!r}")
            redelivered = await notifications.redeliver_one(_connection(conn), row["id"])
        return redelivered.count

    async def queued(self, caller: Caller, where: str | None) -> list[dict[str, Any]]:
        wanted = parse_where(where)
        async with db.acquire(self.pool) as conn:
            rows = await api_events.queued(
                conn, caller.owner_filter, wanted.statuses, wanted.url, MAX_QUEUED
            )
        return [
            {
                "notificationId": row["id"],
                "eventId": str(row["event_id"]),
                "instanceId": row["instance_id"],
                "status": "queued",
                "reason": "dead" if row["status"] == "dead" else "held",
                "createdDate": iso(row["created_at"]),
                "updatedDate": iso(row["last_attempt_at"]),
                "config": {"url": row["url"]},
            }
            for row in rows
        ]

    async def redeliver_queued(self, caller: Caller, where: str | None) -> int:
        deliveries = await self.queued(caller, where)
        count = 0
        async with db.acquire(self.pool) as conn:
            for delivery in deliveries:
                result = await notifications.redeliver_one(
                    _connection(conn), delivery["notificationId"]
                )
                count += result.count
        return count

    async def _visible(self, conn: db.Conn, caller: Caller, instance_id: int) -> None:
        if await api_instances.one(conn, instance_id, caller.owner_filter) is None:
            raise NotFound(f"no instance with id {instance_id}")

    async def _records(self, conn: db.Conn, rows: Sequence[asyncpg.Record]) -> list[dict[str, Any]]:
        ids = [row["id"] for row in rows]
        events = await notifications.events_of(_connection(conn), ids)
        attempts: dict[int, list[dict[str, Any]]] = {}
        for attempt in await api_events.attempts(conn, ids):
            attempts.setdefault(attempt["notification_id"], []).append(
                {
                    "date": iso(attempt["started_at"]),
                    "statusCode": attempt["status_code"],
                    "error": attempt["error"],
                    "durationMs": attempt["duration_ms"],
                }
            )
        records = []
        for row in rows:
            stored = events.get(row["id"], [])
            resource = row["resource"]
            raw = (
                b'{"instance_id":%d,"objectType":%s,%s:[%s]}'
                % (
                    row["instance_id"],
                    orjson.dumps(resource),
                    orjson.dumps(resource),
                    b",".join(event.raw.encode() for event in stored),
                )
            ).decode()
            records.append(
                {
                    "id": str(row["event_id"]),
                    "eventDate": iso(row["created_at"]),
                    "status": record_status(row["status"], row["attempts"]),
                    "instanceId": row["instance_id"],
                    "objectType": resource,
                    "events": [_event(event, resource) for event in stored],
                    "providerData": raw,
                    "notifiedData": attempts.get(row["id"], []),
                }
            )
        return records


def _event(event: notifications.StoredEvent, resource: str) -> dict[str, Any]:
    """One event of a record: the callback's event, `changes` included when it has them
    (DESIGN §12), their values decoded so that QBO's decimal literals stay as written."""
    entry: dict[str, Any] = {
        "elementKey": "quickbooks",
        "eventType": event.event_type,
        "objectType": resource,
        "objectId": event.object_id,
        "date": iso(event.occurred_at),
    }
    if event.changes is not None:
        entry["changes"] = loads_verbatim(event.changes.encode())
    return entry


def _connection(conn: db.Conn) -> asyncpg.Connection:
    """The outbox store's functions are typed for a plain connection; a pooled one behaves
    the same."""
    return cast(asyncpg.Connection, conn)
