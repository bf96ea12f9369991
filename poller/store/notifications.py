"""The notifications outbox as a durable retry queue (SQL in sql/notifications.sql).

Claims are leases (`locked_by`, `locked_until`): a process that dies keeps its claims only until
the lease expires, then any dispatcher takes them again. Every outcome is one statement that
updates the row and appends to `delivery_attempts`, fenced by the claim so a process whose lease
was taken over cannot overwrite the newer result.

Claims are fair between callback URLs (each gets at most its room, oldest first, rank by rank)
so one URL's backlog cannot take another's turn; `defer` and `defer_url` move notifications of a
URL paused by the dispatcher's breaker without counting an attempt.

Per-URL state lives in `callback_endpoints`: a 410 marks the URL gone (and holds what waits for
it) in the transaction that records the attempt; while it is gone the claim holds every due
notification to it without an attempt; redelivering a notification whose instance points at a
gone URL reactivates the URL and releases everything held for it.

Every public coroutine raises `poller.errors.DatabaseError` (never a driver exception) when the
database fails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg
import orjson

from poller.store.db import Conn, Pool, store_call
from poller.store.sql import queries
from poller.vocab import DeliveryOutcome, NotificationStatus

Q = queries("notifications")
CHANNEL = "qbo_poller_outbox"
PRUNE_BATCH = 500
# Outcome → the status column; a retry keeps the row pending.
STATUS_OF_OUTCOME = {
    DeliveryOutcome.DELIVERED: NotificationStatus.DELIVERED,
    DeliveryOutcome.RETRY: NotificationStatus.PENDING,
    DeliveryOutcome.HELD: NotificationStatus.HELD,
    DeliveryOutcome.DEAD: NotificationStatus.DEAD,
}
RESPONSE_BODY_MAX_CHARS = 4096
# A claim's room for a URL when there is no per-URL bound (an int4 parameter).
UNBOUNDED_ROOM = 2**31 - 1


@dataclass(frozen=True)
class Claimed:
    """A claimed notification with what delivering it needs from its instance."""

    id: int
    event_id: str
    instance_id: int
    resource: str
    attempts: int  # attempts made before this claim
    body: bytes | None  # None until built before the first attempt
    created_at: datetime
    instance_name: str
    realm_id: str
    tags: tuple[str, ...]
    timezone: str
    callback_url: str | None
    signature_key_enc: str | None


@dataclass(frozen=True)
class StoredEvent:
    notification_id: int
    event_type: str
    object_id: str
    occurred_at: datetime
    raw: str
    changes: str | None = None  # events.changes as stored JSON text; None: no `changes` key


@dataclass(frozen=True)
class Attempt:
    """One attempt's result, as the attempt log keeps it."""

    outcome: DeliveryOutcome
    started_at: datetime
    url: str
    duration_ms: int
    status_code: int | None = None
    error: str | None = None
    response_body: str | None = None
    retry_in_s: float = 0.0  # for DeliveryOutcome.RETRY


class HeldAtClaim(NamedTuple):
    """A due notification the claim held instead of claiming: its URL is gone. Never attempted."""

    notification_id: int
    url: str


class GoneRecorded(NamedTuple):
    """What recording a 410 did (all false/0 when the claim was lost)."""

    recorded: bool
    newly_gone: bool  # the URL was not gone before this 410
    also_held: int  # other notifications to the URL held with it


@dataclass(frozen=True)
class ClaimBatch:
    """One claim: the notifications to deliver, and those held on the spot (URL gone)."""

    claimed: list[Claimed]
    held: list[HeldAtClaim]

    @property
    def total(self) -> int:
        return len(self.claimed) + len(self.held)


@dataclass(frozen=True)
class Redelivered:
    """What a redelivery queued: the notifications asked for, and, when their callback URL was
    gone, the URLs reactivated and the held notifications released with them."""

    count: int
    endpoints: tuple[str, ...] = ()
    released: int = 0


@dataclass(frozen=True)
class GoneEndpoint:
    url: str
    gone_at: datetime
    instances: tuple[str, ...]  # instances whose callback URL it is now
    held: int  # notifications held for it (released by redelivery)


def _claimed(row: asyncpg.Record) -> Claimed:
    body = row["body"]
    return Claimed(
        id=row["id"],
        event_id=str(row["event_id"]),
        instance_id=row["instance_id"],
        resource=row["resource"],
        attempts=row["attempts"],
        body=bytes(body) if body is not None else None,
        created_at=row["created_at"],
        instance_name=row["instance_name"],
        realm_id=row["realm_id"],
        tags=tuple(_tags(row["tags"])),
        timezone=row["timezone"],
        callback_url=row["callback_url"],
        signature_key_enc=row["signature_key_enc"],
    )


def _tags(value: Any) -> list[str]:
    # jsonb arrives decoded on pool connections (orjson codec); be tolerant of other shapes.
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, str):
        decoded = orjson.loads(value)
        return [str(v) for v in decoded] if isinstance(decoded, list) else []
    return []


def _clean_text(text: str | None, limit: int) -> str | None:
    # PostgreSQL text cannot hold NUL; receivers' bodies and errors may.
    if text is None:
        return None
    return text[:limit].replace("\x00", "\ufffd")


@store_call
async def claim_batch(
    conn: Conn | Pool,
    limit: int,
    owner: str,
    lease_s: float,
    per_url: int | None = None,
    rooms: Mapping[str, int] | None = None,
) -> ClaimBatch:
    """Claim up to `limit` due notifications under a lease of `lease_s` seconds, fairly between
    callback URLs: at most `rooms[url]` for a URL listed there, `per_url` for any other (None:
    no per-URL bound), and the oldest of every URL before the second oldest of any. Those whose
    callback URL is gone are held instead (no lease, no attempt) and reported apart."""
    room_of = dict(rooms or {})
    rows = await conn.fetch(
        Q["claim"],
        limit,
        owner,
        lease_s,
        per_url if per_url is not None else UNBOUNDED_ROOM,
        list(room_of),
        [max(0, room) for room in room_of.values()],
    )
    return ClaimBatch(
        claimed=[_claimed(r) for r in rows if not r["held"]],
        held=[HeldAtClaim(r["id"], r["callback_url"]) for r in rows if r["held"]],
    )


@store_call
async def claim(conn: Conn | Pool, limit: int, owner: str, lease_s: float) -> list[Claimed]:
    """`claim_batch` without the held ones (and without a per-URL bound)."""
    return (await claim_batch(conn, limit, owner, lease_s)).claimed


@store_call
async def defer(conn: Conn | Pool, ids: Sequence[int], owner: str, delay_s: float) -> int:
    """Give claims back unattempted, due in `delay_s` (their URL is paused)."""
    if not ids:
        return 0
    return _count(await conn.execute(Q["defer"], list(ids), owner, float(delay_s)))


@store_call
async def defer_url(conn: Conn | Pool, url: str, delay_s: float) -> int:
    """Nothing waiting for `url` is due for `delay_s` (its breaker opened); attempts unchanged.
    Returns how many notifications were rescheduled."""
    return _count(await conn.execute(Q["defer_url"], url, float(delay_s)))


@store_call
async def events_of(
    conn: Conn | Pool, notification_ids: Sequence[int]
) -> dict[int, list[StoredEvent]]:
    """Each notification's events in position order."""
    rows = await conn.fetch(Q["events_of"], list(notification_ids))
    grouped: dict[int, list[StoredEvent]] = {}
    for row in rows:
        event = StoredEvent(
            row["notification_id"],
            row["event_type"],
            row["object_id"],
            row["occurred_at"],
            row["raw"],
            row["changes"],
        )
        grouped.setdefault(row["notification_id"], []).append(event)
    return grouped


@store_call
async def set_bodies(conn: Conn | Pool, bodies: dict[int, bytes], owner: str) -> None:
    if bodies:
        await conn.execute(Q["set_bodies"], list(bodies), list(bodies.values()), owner)


@store_call
async def record(conn: Conn | Pool, claimed: Claimed, owner: str, attempt: Attempt) -> bool:
    """Record one attempt; False when the claim was lost (lease expired and taken over)."""
    recorded = await conn.fetchval(
        Q["record_attempt"], claimed.id, owner, claimed.attempts, *_attempt_values(attempt)
    )
    return recorded is not None


def _attempt_values(attempt: Attempt) -> tuple[Any, ...]:
    """An attempt's recorded values, in the parameter order record_attempt and record_many
    share after the claim's id (and owner) and attempt count."""
    return (
        STATUS_OF_OUTCOME[attempt.outcome],
        float(attempt.retry_in_s),
        attempt.started_at,
        attempt.url,
        attempt.status_code,
        _clean_text(attempt.error, 1000),
        attempt.duration_ms,
        _clean_text(attempt.response_body, RESPONSE_BODY_MAX_CHARS),
        attempt.outcome,
    )


@store_call
async def record_many(
    conn: Conn | Pool, owner: str, items: Sequence[tuple[Claimed, Attempt]]
) -> set[int]:
    """Record many attempts in one statement; returns the ids recorded (others lost their claim)."""
    if not items:
        return set()
    columns: list[list[Any]] = [[] for _ in range(11)]
    for claimed, attempt in items:
        values = (claimed.id, claimed.attempts, *_attempt_values(attempt))
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    rows = await conn.fetch(Q["record_attempts"], owner, *columns)
    return {r["notification_id"] for r in rows}


@store_call
async def mark_gone(conn: Conn | Pool, url: str) -> bool:
    """`url` answered 410 Gone: gone until redelivered. True when it was not gone before."""
    return bool(await conn.fetchval(Q["mark_gone"], url))


@store_call
async def hold_url(conn: Conn | Pool, url: str) -> int:
    """Hold every unclaimed pending notification to `url` (it answered 410 Gone)."""
    return _count(await conn.execute(Q["hold_url"], url))


@store_call
async def record_gone(conn: Conn, claimed: Claimed, owner: str, attempt: Attempt) -> GoneRecorded:
    """A 410, in one transaction: record the attempt (held), mark its URL gone, hold every
    unclaimed notification waiting for that URL. Nothing changes when the claim was lost."""
    async with conn.transaction():
        if not await record(conn, claimed, owner, attempt):
            return GoneRecorded(recorded=False, newly_gone=False, also_held=0)
        newly_gone = await mark_gone(conn, attempt.url)
        held = await hold_url(conn, attempt.url)
    return GoneRecorded(recorded=True, newly_gone=newly_gone, also_held=held)


@store_call
async def renew(conn: Conn | Pool, ids: Sequence[int], owner: str, lease_s: float) -> int:
    return _count(await conn.execute(Q["renew"], list(ids), owner, lease_s))


@store_call
async def release(conn: Conn | Pool, ids: Sequence[int], owner: str) -> int:
    if not ids:
        return 0
    return _count(await conn.execute(Q["release"], list(ids), owner))


@store_call
async def instance_id(conn: Conn | Pool, name: str) -> int | None:
    found = await conn.fetchval(Q["instance_id"], name)
    return int(found) if found is not None else None


@store_call
async def redeliver_one(conn: Conn, notification_id: int) -> Redelivered:
    """One held, dead or delivered notification back to pending, attempts 0."""
    async with conn.transaction():
        iid = await conn.fetchval(Q["redeliver_one"], notification_id)
        if iid is None:
            return Redelivered(0)
        return await _reactivate_and_wake(conn, 1, [iid])


@store_call
async def redeliver_instance(conn: Conn, iid: int) -> Redelivered:
    """The instance's dead and held notifications back to pending, attempts 0. Its callback URL
    is reactivated if gone, even when nothing of it was waiting."""
    async with conn.transaction():
        count = await conn.fetchval(Q["redeliver_instance"], iid)
        return await _reactivate_and_wake(conn, int(count), [iid])


@store_call
async def redeliver_all_dead(conn: Conn) -> Redelivered:
    """Every dead letter back to pending, attempts 0."""
    async with conn.transaction():
        rows = await conn.fetch(Q["redeliver_all_dead"])
        return await _reactivate_and_wake(
            conn, sum(r["n"] for r in rows), [r["instance_id"] for r in rows]
        )


async def _reactivate_and_wake(conn: Conn, count: int, instance_ids: Sequence[int]) -> Redelivered:
    """Inside the redelivery's transaction: the instances' gone URLs become active, whatever is
    held for them goes back to pending, and dispatchers are woken."""
    urls = [r["url"] for r in await conn.fetch(Q["reactivate"], sorted(set(instance_ids)))]
    released = _count(await conn.execute(Q["release_held"], urls)) if urls else 0
    await conn.execute(Q["wake"])
    return Redelivered(count, tuple(sorted(urls)), released)


@store_call
async def prune_batch(conn: Conn | Pool, retention_s: float, batch: int = PRUNE_BATCH) -> int:
    """Delete up to `batch` delivered notifications finished more than `retention_s` ago, with
    their events and (ON DELETE CASCADE) attempt logs. Dead letters stay until redelivered."""
    return _count(await conn.execute(Q["prune"], retention_s, batch))


@store_call
async def prune(conn: Conn | Pool, retention_s: float, batch: int = PRUNE_BATCH) -> int:
    """Prune everything past retention, one small batch per statement."""
    total = 0
    while True:
        deleted = await prune_batch(conn, retention_s, batch)
        total += deleted
        if deleted < batch:
            return total


@store_call
async def counts(conn: Conn | Pool) -> dict[str, int]:
    row = await conn.fetchrow(Q["counts"])
    if row is None:  # an aggregate always returns a row; this only satisfies the types
        return {"pending": 0, "held": 0, "dead": 0}
    return {"pending": row["pending"], "held": row["held"], "dead": row["dead"]}


@store_call
async def listing(
    conn: Conn | Pool, dead_only: bool, iid: int | None, limit: int
) -> list[asyncpg.Record]:
    return list(await conn.fetch(Q["list"], dead_only, iid, limit))


@store_call
async def gone_endpoints(conn: Conn | Pool, iid: int | None = None) -> list[GoneEndpoint]:
    """Gone URLs some instance points at or notifications are held for (of `iid` only, if
    given), oldest first."""
    rows = await conn.fetch(Q["gone_endpoints"], iid)
    return [GoneEndpoint(r["url"], r["gone_at"], tuple(r["instances"]), r["held"]) for r in rows]


@store_call
async def ping(conn: Conn) -> None:
    await conn.fetchval(Q["ping"])


def _count(status: str) -> int:
    """The row count of an `UPDATE n` / `DELETE n` command tag."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except (ValueError, IndexError):
        return 0
