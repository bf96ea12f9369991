"""The Open Connectors callback envelope (DESIGN §6), built as bytes.

The QBO objects are spliced in as the exact text stored in `events.raw` (a `json` column keeps
its input text byte for byte), and so are an event's field-level changes (`events.changes`,
DESIGN §12: their values are QBO's literals too): re-serialising them would reorder keys,
change number formats and escapes, and the contract promises "the QBO object exactly as
QuickBooks returned it". Everything else is small and ours, so orjson writes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

ELEMENT_KEY = "quickbooks"
_UTC_NAMES = frozenset({"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Zulu", "Etc/Zulu", "GMT", "Etc/GMT"})


@dataclass(frozen=True)
class InstanceInfo:
    """What the envelope says about the instance."""

    id: int
    name: str
    tags: Sequence[str]
    realm_id: str
    timezone: str = "UTC"


@dataclass(frozen=True)
class EventRow:
    """One `events` row, in its notification's order."""

    event_type: str
    object_id: str
    occurred_at: datetime  # the object's LastUpdatedTime
    raw: str  # the QBO object (or tombstone) as stored: valid JSON text
    # `changes` (DESIGN §12) as stored JSON text (`null` or a list); None: the event has no
    # `changes` key (CREATED, DELETED, instances without `event.poller.changes`).
    changes: str | None = None


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo | None:
    if name in _UTC_NAMES:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None  # validated when the instance was loaded; UTC is the safe reading


def format_date(when: datetime, timezone: str = "UTC") -> str:
    """`2026-11-24T10:15:02Z` in UTC, or with the instance zone's offset (`…-08:00`).

    QBO timestamps have whole seconds; fractions, if a row has any, are kept rather than lost.
    """
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    zone = _zone(timezone)
    spec = "seconds" if when.microsecond == 0 else "microseconds"
    if zone is None:
        return when.astimezone(UTC).replace(tzinfo=None).isoformat(timespec=spec) + "Z"
    return when.astimezone(zone).isoformat(timespec=spec)


def _dumps(value: object) -> bytes:
    return orjson.dumps(value)


def _event(event: EventRow, resource: str, timezone: str) -> bytes:
    """One `events` entry; its `changes`, when it has them, spliced in as stored."""
    entry = _dumps(
        {
            "elementKey": ELEMENT_KEY,
            "eventType": event.event_type,
            "objectType": resource,
            "objectId": event.object_id,
            "date": format_date(event.occurred_at, timezone),
        }
    )
    if event.changes is None:
        return entry
    return entry[:-1] + b',"changes":' + event.changes.encode() + b"}"


def build_body(
    instance: InstanceInfo, resource: str, event_id: str, events: Sequence[EventRow]
) -> bytes:
    """The callback body: one `raw[resource]` record and one `events` entry per event, in order."""
    iid = str(int(instance.id)).encode()
    raw_list = b"[" + b",".join(e.raw.encode() for e in events) + b"]"
    normalized = b"[" + b",".join(_event(e, resource, instance.timezone) for e in events) + b"]"
    resource_key = _dumps(resource)
    return b"".join(
        (
            b'{"message":{"elementKey":',
            _dumps(ELEMENT_KEY),
            b',"accountId":0,"companyId":0,"userId":0,"instanceId":',
            iid,
            b',"instance_id":',
            iid,
            b',"instanceName":',
            _dumps(instance.name),
            b',"instanceTags":',
            _dumps(list(instance.tags)),
            b',"realmId":',
            _dumps(instance.realm_id),
            b',"eventId":',
            _dumps(str(event_id)),
            b',"raw":{"instance_id":',
            iid,
            b',"objectType":',
            resource_key,
            b",",
            resource_key,
            b":",
            raw_list,
            b'},"events":',
            normalized,
            b"}}",
        )
    )
