"""The transactional outbox (DESIGN §2): one transaction per poll result.

A poll's transaction (opened by the caller, see `poller.detect.pairs`) runs:
  cursors.lock → load_snapshots → diff (pure) → `write`:
    snapshot upserts; event inserts (ON CONFLICT DO NOTHING on the object-version key, so only
    new events go on); notifications grouping up to `events_per_notification` new events of the
    pair in change order; the fenced watermark write; one pg_notify so the dispatcher wakes.
A crash anywhere before COMMIT leaves nothing behind; the next poll re-reads from the old
watermark and the snapshot plus the unique key make the replay exact.
"""
from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import orjson

from poller.detect.diff import Event, SnapshotRow
from poller.store import cursors
from poller.store.cursors import PairKey
from poller.store.sql import queries

Q = queries("outbox")
# Namespace of notification event ids: uuid5 of the first event's identity, so a replayed
# commit would produce the same id (and the unique index would refuse it).
EVENT_ID_NAMESPACE = uuid.UUID("5b0c5f6e-8f3a-4c1e-9a0f-6d2f8e7b9c41")


@dataclass(frozen=True, slots=True)
class WriteStats:
    events: int                  # newly inserted events
    duplicates: int              # events already in the outbox (skipped)
    notifications: int
    by_type: dict[str, int]


async def load_snapshots(conn: asyncpg.Connection, key: PairKey,
                         object_ids: Sequence[str] | None) -> dict[str, SnapshotRow]:
    """Snapshot rows of the given objects (None: every object of the pair)."""
    if object_ids is None:
        rows = await conn.fetch(Q["snapshots_all"], key.instance_id, key.resource)
    elif not object_ids:
        return {}
    else:
        rows = await conn.fetch(Q["snapshots_for"], key.instance_id, key.resource,
                                list(object_ids))
    return {r["object_id"]: SnapshotRow(r["object_id"], r["sync_token"], r["last_updated"],
                                        r["active"], r["deleted"]) for r in rows}


async def write(conn: asyncpg.Connection, key: PairKey, token: int,
                snapshots: Sequence[SnapshotRow], events: Sequence[Event],
                advance: cursors.Advance, events_per_notification: int) -> WriteStats:
    """Everything a poll produced, inside the caller's transaction (see module docstring)."""
    await _upsert_snapshots(conn, key, snapshots)
    inserted = await _insert_events(conn, key, events)
    notifications = await _notify_groups(conn, key, inserted, events_per_notification)
    await cursors.advance(conn, key, token, advance)
    if notifications:
        await conn.execute(Q["wake_dispatcher"])
    by_type: dict[str, int] = {}
    for event, _ in inserted:
        by_type[event.event_type] = by_type.get(event.event_type, 0) + 1
    return WriteStats(len(inserted), len(events) - len(inserted), notifications, by_type)


def event_id_for(key: PairKey, first: Event) -> uuid.UUID:
    """A notification's stable id: derived from its first event (unique per object version)."""
    return uuid.uuid5(EVENT_ID_NAMESPACE,
                      f"{key.instance_id}\x1f{key.resource}\x1f{first.object_id}\x1f{first.version}")


def serialize(obj: object) -> str:
    """The object as text for the `json` column; orjson keeps QBO's key order."""
    return orjson.dumps(obj).decode()


async def _upsert_snapshots(conn: asyncpg.Connection, key: PairKey,
                            rows: Sequence[SnapshotRow]) -> None:
    if not rows:
        return
    await conn.execute(Q["upsert_snapshots"], key.instance_id, key.resource,
                       [r.object_id for r in rows], [r.sync_token for r in rows],
                       [r.last_updated for r in rows], [r.active for r in rows],
                       [r.deleted for r in rows])


async def _insert_events(conn: asyncpg.Connection, key: PairKey,
                         events: Sequence[Event]) -> list[tuple[Event, int]]:
    """Insert in change order; returns the newly inserted ones (in that order) with their ids."""
    if not events:
        return []
    rows = await conn.fetch(Q["insert_events"], key.instance_id, key.resource,
                            [e.object_id for e in events], [e.version for e in events],
                            [e.event_type for e in events], [e.occurred_at for e in events],
                            [serialize(e.raw) for e in events])
    ids = {(r["object_id"], r["version"]): r["id"] for r in rows}
    return [(e, ids[(e.object_id, e.version)]) for e in events if (e.object_id, e.version) in ids]


async def _notify_groups(conn: asyncpg.Connection, key: PairKey,
                         inserted: Sequence[tuple[Event, int]], per_notification: int) -> int:
    """Notification rows of up to `per_notification` events each, in change order."""
    if not inserted:
        return 0
    groups = [inserted[i:i + per_notification] for i in range(0, len(inserted), per_notification)]
    event_ids = [event_id_for(key, group[0][0]) for group in groups]
    rows = await conn.fetch(Q["insert_notifications"], key.instance_id, key.resource, event_ids,
                            [len(g) for g in groups])
    notification_of = {r["event_id"]: r["id"] for r in rows}
    ev_ids: list[int] = []
    n_ids: list[int] = []
    positions: list[int] = []
    for event_id, group in zip(event_ids, groups, strict=True):
        for position, (_, row_id) in enumerate(group):
            ev_ids.append(row_id)
            n_ids.append(notification_of[event_id])
            positions.append(position)
    await conn.execute(Q["attach_events"], ev_ids, n_ids, positions)
    return len(groups)
