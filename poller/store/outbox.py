"""The transactional outbox (DESIGN §2): the results of a poll cycle, committed atomically.

One instance cycle (see `poller.detect.cycle`) reads the snapshot rows its diffs need with
`load_snapshots` (one statement for all its pairs), diffs each pair (pure), and `commit`s:
- nothing to write (the common case: no change, or only versions already seen): the fenced
  `cursors.settle` alone — one statement advancing every pair's watermark and renewing the
  instance's lease;
- otherwise ONE transaction: snapshot upserts and event inserts of all pairs (one statement;
  ON CONFLICT DO NOTHING on the object-version key, so only new events go on); notifications
  grouping up to `events_per_notification` new events of one pair in change order, with their
  events attached and one pg_notify (one statement); then the same fenced `settle`.
A crash or a stale lease token anywhere before COMMIT leaves nothing behind; the next poll
re-reads from the old watermarks and the snapshot plus the unique key make the replay exact.

Each notification gets a new UUIDv7 `eventId` here, once (`poller.store.event_ids`); it is stored
and every retry sends it. What keeps a replayed poll (a crash after COMMIT, two replicas racing)
from making a second notification is not the id but the events' unique object-version key: a
replayed event is not inserted, so it is not returned, so no notification is made for it.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg
import orjson

from poller.errors import StatementRefused
from poller.records import UNTRACKED, Changes, Event, QboObject, SnapshotRow
from poller.store import cursors
from poller.store.cursors import InstanceRemoved, LeaseRef, Settle
from poller.store.db import Conn, store_call
from poller.store.event_ids import uuid7
from poller.store.sql import queries

Q = queries("outbox")


@dataclass(frozen=True, slots=True)
class PairWrite:
    """What one pair's diff produced."""

    resource: str
    snapshots: Sequence[SnapshotRow]
    events: Sequence[Event]
    # `event.poller.changes` instances: the full object each live snapshot row keeps, by object
    # id (DESIGN §12). None: the rows keep none (and any kept before is freed).
    objects: Mapping[str, QboObject] | None = None

    @property
    def empty(self) -> bool:
        return not self.snapshots and not self.events


@dataclass(frozen=True, slots=True)
class WriteStats:
    events: int  # newly inserted events
    duplicates: int  # events already in the outbox (skipped)
    notifications: int
    by_type: dict[str, int]


NO_WRITES = WriteStats(0, 0, 0, {})


@store_call
async def load_snapshots(
    conn: Conn, instance_id: int, wanted: Mapping[str, Sequence[str] | None]
) -> dict[str, dict[str, SnapshotRow]]:
    """Snapshot rows per resource: the given object ids, or (None) every object of the pair."""
    whole = [res for res, ids in wanted.items() if ids is None]
    some_res: list[str] = []
    some_ids: list[str] = []
    for resource, ids in wanted.items():
        if ids is not None:
            some_res.extend([resource] * len(ids))
            some_ids.extend(ids)
    found: dict[str, dict[str, SnapshotRow]] = {res: {} for res in wanted}
    if not whole and not some_ids:
        return found
    rows = await conn.fetch(Q["snapshots"], instance_id, whole, some_res, some_ids)
    for row in rows:
        found[row["resource"]][row["object_id"]] = SnapshotRow(
            row["object_id"], row["sync_token"], row["last_updated"], row["active"], row["deleted"]
        )
    return found


@store_call
async def load_objects(
    conn: Conn, instance_id: int, wanted: Mapping[str, Sequence[str]]
) -> dict[str, dict[str, str]]:
    """The full objects the snapshot keeps (`event.poller.changes`), as their JSON text, per
    resource and object id; objects without one are left out."""
    res = [resource for resource, ids in wanted.items() for _ in ids]
    ids = [object_id for object_ids in wanted.values() for object_id in object_ids]
    found: dict[str, dict[str, str]] = {resource: {} for resource in wanted}
    if not ids:
        return found
    for row in await conn.fetch(Q["objects"], instance_id, res, ids):
        try:
            found[row["resource"]][row["object_id"]] = unpack_object(row["object"])
        except (zlib.error, UnicodeDecodeError):
            continue  # unreadable: as if none was kept ("changes": null), never a stuck pair
    return found


@store_call
async def count_live_before(
    conn: Conn, instance_id: int, resource: str, before: datetime, excluding: Sequence[str]
) -> tuple[int, int]:
    """Live snapshot rows of a pair except `excluding`: (last changed before `before`, since)."""
    row = await conn.fetchrow(
        Q["count_live_before"], instance_id, resource, before, list(excluding)
    )
    assert row is not None  # an aggregate always answers one row
    return int(row["before"]), int(row["since"])


@store_call
async def commit(
    conn: Conn,
    lease: LeaseRef,
    writes: Sequence[PairWrite],
    settles: Sequence[Settle],
    events_per_notification: int,
) -> tuple[dict[str, WriteStats], list[str]]:
    """A cycle's results (see module docstring): per-pair stats and the pairs settled.

    Raises LeaseLost (nothing written) when the lease token is no longer current, and its
    InstanceRemoved when the instance or the pair was removed meanwhile.
    """
    writes = [w for w in writes if not w.empty]
    if not writes:
        return {}, await cursors.settle(conn, lease, settles)
    try:
        async with conn.transaction():
            stats = await write(conn, lease.instance_id, writes, events_per_notification)
            written = await cursors.settle(conn, lease, settles)
    except StatementRefused as exc:
        # SQLSTATE 23503 (a foreign key): `instances remove`, or a resource dropped from the
        # instance, committed during the poll, so the rows these results belong to are gone.
        # Not a refusal worth retrying pair by pair.
        if not isinstance(exc.__cause__, asyncpg.ForeignKeyViolationError):
            raise
        raise InstanceRemoved(f"instance {lease.instance_id}: removed during the poll") from exc
    return stats, written


@store_call
async def write(
    conn: Conn,
    instance_id: int,
    writes: Sequence[PairWrite],
    events_per_notification: int,
) -> dict[str, WriteStats]:
    """Snapshots, events and notifications of several pairs, inside the caller's transaction."""
    inserted = await _write_changes(conn, instance_id, writes)
    groups: list[tuple[str, list[tuple[Event, int]]]] = []
    for w in writes:
        new = inserted.get(w.resource, [])
        groups.extend(
            (w.resource, new[i : i + events_per_notification])
            for i in range(0, len(new), events_per_notification)
        )
    if groups:
        await _notify(conn, instance_id, groups)
    stats: dict[str, WriteStats] = {}
    for w in writes:
        new = inserted.get(w.resource, [])
        by_type: dict[str, int] = {}
        for event, _ in new:
            by_type[event.event_type] = by_type.get(event.event_type, 0) + 1
        stats[w.resource] = WriteStats(
            len(new), len(w.events) - len(new), -(-len(new) // events_per_notification), by_type
        )
    return stats


def serialize(obj: object) -> str:
    """The object as text for the `json` column; orjson keeps QBO's key order."""
    return orjson.dumps(obj).decode()


def serialize_changes(changes: Changes) -> str | None:
    """`events.changes`: SQL NULL for no `changes` key, JSON `null`, or the list."""
    return None if changes is UNTRACKED else serialize(changes)


def pack_object(obj: QboObject) -> bytes:
    """A kept object as stored: its JSON text, zlib-compressed. PostgreSQL would store it
    whole (TOAST compresses only rows over ~2 kB; QBO objects are 0.6-1.3 kB); zlib halves
    it for ~25 µs (bench/changes.py)."""
    return zlib.compress(orjson.dumps(obj))


def unpack_object(stored: bytes) -> str:
    return zlib.decompress(stored).decode()


def _kept(write: PairWrite, row: SnapshotRow) -> bytes | None:
    obj = None if write.objects is None else write.objects.get(row.object_id)
    return None if obj is None else pack_object(obj)


async def _write_changes(
    conn: Conn, instance_id: int, writes: Sequence[PairWrite]
) -> dict[str, list[tuple[Event, int]]]:
    """Upsert snapshots, insert events in change order; the newly inserted events (in that
    order) with their row ids, per resource."""
    snaps = [(w, s) for w in writes for s in w.snapshots]
    evs = [(w.resource, e) for w in writes for e in w.events]
    rows = await conn.fetch(
        Q["write_changes"],
        instance_id,
        [w.resource for w, _ in snaps],
        [s.object_id for _, s in snaps],
        [s.sync_token for _, s in snaps],
        [s.last_updated for _, s in snaps],
        [s.active for _, s in snaps],
        [s.deleted for _, s in snaps],
        [res for res, _ in evs],
        [e.object_id for _, e in evs],
        [e.version for _, e in evs],
        [e.event_type for _, e in evs],
        [e.occurred_at for _, e in evs],
        [serialize(e.raw) for _, e in evs],
        [_kept(w, s) for w, s in snaps],
        [serialize_changes(e.changes) for _, e in evs],
    )
    ids = {(r["resource"], r["object_id"], r["version"]): r["id"] for r in rows}
    inserted: dict[str, list[tuple[Event, int]]] = {}
    for resource, event in evs:
        row_id = ids.get((resource, event.object_id, event.version))
        if row_id is not None:
            inserted.setdefault(resource, []).append((event, row_id))
    return inserted


async def _notify(
    conn: Conn,
    instance_id: int,
    groups: Sequence[tuple[str, Sequence[tuple[Event, int]]]],
) -> None:
    """Notification rows for the groups, their events attached; wakes the dispatcher.

    `groups` holds only events this transaction inserted (see `write`), so each gets exactly
    one notification, with a fresh eventId made in change order."""
    event_ids = [uuid7() for _ in groups]
    row_ids: list[int] = []
    of: list[UUID] = []
    positions: list[int] = []
    for event_id, (_, group) in zip(event_ids, groups, strict=True):
        for position, (_, row_id) in enumerate(group):
            row_ids.append(row_id)
            of.append(event_id)
            positions.append(position)
    await conn.fetchrow(
        Q["notify"],
        instance_id,
        event_ids,
        [res for res, _ in groups],
        [len(g) for _, g in groups],
        row_ids,
        of,
        positions,
    )
