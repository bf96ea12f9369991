"""The outbox as the events API reads it (DESIGN §9): notifications, their events and their
delivery attempts."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from poller.store.db import Conn, store_call
from poller.store.sql import queries

Q = queries("api_events")


@dataclass(frozen=True)
class RecordFilter:
    instance_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    object_type: str | None = None
    stored_status: str | None = None
    attempted: bool | None = None
    event_type: str | None = None
    object_id: str | None = None


@store_call
async def records(
    conn: Conn, owner: int | None, where: RecordFilter, before_id: int, limit: int
) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            Q["records"],
            owner,
            where.instance_id,
            where.since,
            where.until,
            where.object_type,
            where.stored_status,
            where.attempted,
            where.event_type,
            before_id,
            where.object_id,
            limit,
        )
    )


@store_call
async def record(
    conn: Conn, owner: int | None, event_id: uuid.UUID, instance_id: int | None
) -> asyncpg.Record | None:
    return await conn.fetchrow(Q["record"], owner, event_id, instance_id)


@store_call
async def attempts(conn: Conn, notification_ids: Sequence[int]) -> list[asyncpg.Record]:
    return list(await conn.fetch(Q["attempts"], list(notification_ids)))


@store_call
async def queued(
    conn: Conn, owner: int | None, statuses: Sequence[str], url: str | None, limit: int
) -> list[asyncpg.Record]:
    return list(await conn.fetch(Q["queued"], owner, list(statuses), url, limit))
