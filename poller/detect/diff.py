"""The diff (DESIGN §5): previous snapshot + fetched objects → events + new snapshot rows.

A pure function: no I/O, no clock. Rules:
- the first answer of a `now` pair is recorded silently, up to the baseline's second;
- an object whose SyncToken we already saw (or an older one) → nothing: overlap windows are safe;
- not in the snapshot: `MetaData.CreateTime` ≥ baseline (second precision) → CREATED, else
  UPDATED; but an unseen object last changed *before* the baseline is existing data and only
  enters the snapshot (it has not changed since we started watching, so nothing is owed);
- a tombstone (`status: "Deleted"`) → DELETED, also for a never-seen object, if its deletion time
  is ≥ baseline; older tombstones of unseen objects are ignored; a tombstone for an object
  already deleted → nothing. Deletion is terminal: later live copies of a deleted Id are stale;
- name lists: `Active` true→false is UPDATED, or DELETED with `deactivated_as_deleted`;
- several versions of one object in one answer fold into the latest;
- a complete listing (`PairContext.complete`) also deletes snapshot objects it lacks, with a
  tombstone shaped like QBO's, dated with QBO's `time` of the listing;
- events are ordered by LastUpdatedTime, then Id.
Timestamps carry offsets; they are compared as instants.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from poller.qbo import times
from poller.records import DELETED_VERSION, Event, EventType, QboObject, SnapshotRow


@dataclass(frozen=True, slots=True)
class PairContext:
    """What the diff needs to know about the pair and the answer."""

    # QBO `time` of the pair's first answer; None = backfill: every unseen object is CREATED.
    baseline: datetime | None
    deactivated_as_deleted: bool = False
    is_list: bool = False
    # First answer in `now` mode: record what exists, emit nothing for what changed up to the
    # baseline's second (later changes, met by a listing's later pages, follow the rules).
    record_only: bool = False
    # The fetched objects are every live object of the entity (a full listing).
    complete: bool = False
    # QBO `time` of the answer: dates synthesized tombstones and objects lacking MetaData.
    observed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DiffResult:
    events: list[Event] = field(default_factory=list)
    snapshots: list[SnapshotRow] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Version:
    """One fetched object, with the fields the rules look at parsed once."""

    obj: QboObject
    object_id: str
    tombstone: bool
    last_updated: datetime
    sync_token: str | None

    def order_key(self) -> tuple[bool, datetime, int]:
        # A tombstone is terminal; among live versions the SyncToken is the truth, the time
        # breaks ties only for non-numeric tokens.
        return (self.tombstone, self.last_updated, _token_number(self.sync_token))


def is_tombstone(obj: Mapping[str, Any]) -> bool:
    return str(obj.get("status", "")).lower() == "deleted"


def tombstone(object_id: str, deleted_at: datetime) -> QboObject:
    """A tombstone shaped like QBO's CDC ones, for deletes found by set difference."""
    return {
        "domain": "QBO",
        "status": "Deleted",
        "Id": object_id,
        "MetaData": {"LastUpdatedTime": times.format_qbo_time(deleted_at, times.PACIFIC)},
    }


def diff(
    previous: Mapping[str, SnapshotRow], fetched: Iterable[QboObject], ctx: PairContext
) -> DiffResult:
    """Events owed for `fetched` given what the snapshot held (see the module docstring)."""
    latest = fold(fetched, ctx.observed_at)
    if ctx.complete:
        latest.update(_missing_as_tombstones(previous, latest, ctx))
    events: list[Event] = []
    snapshots: list[SnapshotRow] = []
    for version in latest.values():
        prev = previous.get(version.object_id)
        step = (
            _tombstone_step(prev, version, ctx)
            if version.tombstone
            else _live_step(prev, version, ctx)
        )
        if step is None:
            continue
        event, snapshot = step
        snapshots.append(snapshot)
        if event is not None:
            events.append(event)
    events.sort(key=lambda e: (e.occurred_at, _id_key(e.object_id)))
    return DiffResult(events, snapshots)


def fold(fetched: Iterable[QboObject], observed_at: datetime | None = None) -> dict[str, _Version]:
    """Several versions of one object (query pages, overlapping answers) → the latest one."""
    latest: dict[str, _Version] = {}
    for obj in fetched:
        version = _parse(obj, observed_at)
        if version is None:
            continue
        seen = latest.get(version.object_id)
        if seen is None or version.order_key() > seen.order_key():
            latest[version.object_id] = version
    return latest


def _parse(obj: QboObject, observed_at: datetime | None) -> _Version | None:
    object_id = obj.get("Id")
    if object_id is None:
        return None
    updated = times.last_updated_time(obj) or observed_at
    if updated is None:
        return None
    token = obj.get("SyncToken")
    return _Version(
        obj, str(object_id), is_tombstone(obj), updated, None if token is None else str(token)
    )


def _missing_as_tombstones(
    previous: Mapping[str, SnapshotRow], listed: Mapping[str, _Version], ctx: PairContext
) -> dict[str, _Version]:
    """Snapshot objects a complete listing lacks were hard-deleted (or merged away)."""
    if ctx.observed_at is None:
        raise ValueError("a complete listing needs observed_at (QBO's time) to date deletes")
    gone: dict[str, _Version] = {}
    for object_id, row in previous.items():
        if row.deleted or object_id in listed:
            continue
        gone[object_id] = _Version(
            tombstone(object_id, ctx.observed_at),
            object_id,
            True,
            times.floor_to_second(ctx.observed_at),
            None,
        )
    return gone


def _tombstone_step(
    prev: SnapshotRow | None, version: _Version, ctx: PairContext
) -> tuple[Event | None, SnapshotRow] | None:
    if prev is not None and prev.deleted:
        return None
    snapshot = SnapshotRow(version.object_id, None, version.last_updated, None, True)
    if ctx.record_only:
        return None, snapshot
    if prev is None and _before_baseline(version.last_updated, ctx):
        return None  # deleted before we started watching: not ours to report
    event = Event(
        version.object_id, DELETED_VERSION, EventType.DELETED, version.last_updated, version.obj
    )
    return event, snapshot


def _live_step(
    prev: SnapshotRow | None, version: _Version, ctx: PairContext
) -> tuple[Event | None, SnapshotRow] | None:
    if prev is not None and (prev.deleted or not _newer(version.sync_token, prev.sync_token)):
        return None  # already seen (overlap), stale, or a copy of a deleted object
    active = _active(version.obj) if ctx.is_list else None
    snapshot = SnapshotRow(version.object_id, version.sync_token, version.last_updated, active)
    if (ctx.record_only and not _after_baseline_second(version.last_updated, ctx)) or (
        prev is None and _before_baseline(version.last_updated, ctx)
    ):
        return None, snapshot
    kind = _event_type(prev, version, active, ctx)
    event = Event(
        version.object_id, version.sync_token or "", kind, version.last_updated, version.obj
    )
    return event, snapshot


def _event_type(
    prev: SnapshotRow | None, version: _Version, active: bool | None, ctx: PairContext
) -> EventType:
    if ctx.baseline is None and prev is None:
        return EventType.CREATED  # backfill: every existing object, inactive ones too
    was_active = prev.active if prev is not None else None
    if ctx.is_list and ctx.deactivated_as_deleted and active is False and was_active is not False:
        return EventType.DELETED  # a name list's "delete" is Active=false
    if prev is None:
        created = times.create_time(version.obj)
        if created is not None and created >= _baseline_s(ctx):
            return EventType.CREATED
    return EventType.UPDATED


def _before_baseline(instant: datetime, ctx: PairContext) -> bool:
    return ctx.baseline is not None and instant < _baseline_s(ctx)


def _after_baseline_second(instant: datetime, ctx: PairContext) -> bool:
    """Certainly changed after the baseline: in a later second (a listing of several pages
    meets changes made while it runs; they are owed like any other)."""
    return ctx.baseline is not None and times.floor_to_second(instant) > _baseline_s(ctx)


def _baseline_s(ctx: PairContext) -> datetime:
    assert ctx.baseline is not None
    return times.floor_to_second(ctx.baseline)


def _active(obj: QboObject) -> bool | None:
    value = obj.get("Active")
    return value if isinstance(value, bool) else None


def _token_number(token: str | None) -> int:
    return int(token) if token is not None and token.isdigit() else -1


def _newer(token: str | None, seen: str | None) -> bool:
    """SyncTokens are counters: only a higher one is news (a stale read is not)."""
    if seen is None:
        return True
    if token is not None and token.isdigit() and seen.isdigit():
        return int(token) > int(seen)
    return token != seen


def _id_key(object_id: str) -> tuple[int, int, str]:
    """Numeric Ids in numeric order ("9" before "10"), others after, by text."""
    return (0, int(object_id), "") if object_id.isdigit() else (1, 0, object_id)
