"""Intuit webhook notifications in PostgreSQL (DESIGN §11).

The receiver (`poller.web.webhooks`) records every notification it accepted here, in the
request's transaction, before it answers 200: one row per entity change, deduplicated on a key
(CloudEvents `id`, or realm + entity + id + operation + time), so Intuit's retries and
duplicates are recorded once. Bodies that are signed but unreadable are kept raw. A webhook
`Delete` of a TimeActivity (QBO has no CDC for it) is written as a DELETED event through the
outbox in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from poller.records import Event, SnapshotRow
from poller.store import outbox
from poller.store.crypto import SecretBox
from poller.store.db import Conn, Pool, store_call
from poller.store.sql import queries

Q = queries("webhooks")
TIME_ACTIVITIES = "time-activities"


@dataclass(frozen=True, slots=True)
class Notification:
    """One entity change announced by Intuit."""

    dedupe_key: str
    format: str  # "legacy" or "cloudevents"
    realm_id: str
    entity: str  # as Intuit named it: "Invoice", or "invoice" from a CloudEvents type
    object_id: str
    operation: str  # Create, Update, Delete, Merge, Void, Emailed
    occurred_at: datetime | None
    raw: Any  # the entity change (legacy) or the event (CloudEvents) as sent


@store_call
async def verifier_tokens(conn: Conn, box: SecretBox) -> list[str]:
    """The verifier tokens instances name, in clear."""
    tokens = [
        box.open(row["webhook_verifier_enc"]) for row in await conn.fetch(Q["verifier_tokens"])
    ]
    return [token for token in tokens if token]


@store_call
async def record(conn: Conn, notifications: Sequence[Notification]) -> list[Notification]:
    """Store the notifications; those not seen before (by dedupe key), in their order."""
    if not notifications:
        return []
    rows = await conn.fetch(
        Q["record"],
        [n.dedupe_key for n in notifications],
        [n.format for n in notifications],
        [n.realm_id for n in notifications],
        [n.entity for n in notifications],
        [n.object_id for n in notifications],
        [n.operation for n in notifications],
        [n.occurred_at for n in notifications],
        [orjson.dumps(n.raw).decode() for n in notifications],
    )
    new = {row["dedupe_key"] for row in rows}
    first: dict[str, Notification] = {}
    for notification in notifications:
        if notification.dedupe_key in new:
            first.setdefault(notification.dedupe_key, notification)
    return list(first.values())


@store_call
async def record_reject(conn: Conn, content_type: str | None, reason: str, body: bytes) -> None:
    await conn.execute(Q["record_reject"], content_type, reason[:500], body)


@store_call
async def realm_known(conn: Conn, realm_id: str) -> bool:
    """Whether any instance (of any status) is connected to this realm."""
    return bool(await conn.fetchval(Q["realm_known"], realm_id))


@store_call
async def write_deletes(
    conn: Conn, deletes: Sequence[tuple[str, Event]], events_per_notification: int
) -> int:
    """DELETED events of TimeActivity objects (realm, event), for every instance of their realm
    that watches TimeActivity, inside the caller's transaction; the number of new events (an
    object version already in the outbox is not written again)."""
    if not deletes:
        return 0
    realms = sorted({realm for realm, _ in deletes})
    written = 0
    for row in await conn.fetch(Q["time_activity_instances"], realms):
        events = [event for realm, event in deletes if realm == row["realm_id"]]
        snapshots = [
            SnapshotRow(event.object_id, None, event.occurred_at, None, True) for event in events
        ]
        stats = await outbox.write(
            conn,
            row["id"],
            [outbox.PairWrite(TIME_ACTIVITIES, snapshots, events)],
            events_per_notification,
        )
        written += sum(stat.events for stat in stats.values())
    return written


@store_call
async def prune_batch(conn: Conn | Pool, retention_s: float, batch: int) -> int:
    """Delete up to `batch` notifications (and as many raw rejects) received more than
    `retention_s` ago; the number of rows deleted."""
    deleted = await conn.fetchval(Q["prune"], retention_s, batch)
    return int(deleted or 0)
