"""The records that flow one way through the pipeline: detection produces them, the store keeps
them, delivery reads them back. A neutral module: it imports nothing of ours, so `store` needs
nothing from `detect` (DESIGN §14)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum, StrEnum
from typing import Any, Final, Literal, TypeAlias

# An object as QuickBooks returned it (parsed JSON; decimal literals kept verbatim).
QboObject = dict[str, Any]

DELETED_VERSION = "deleted"  # events.version of a tombstone (it has no SyncToken)


# One field-level change of an UPDATED event (DESIGN §12): {"path", "old"?, "new"?}.
Change = dict[str, Any]


class _Untracked(Enum):
    UNTRACKED = "untracked"


# `Event.changes` of an event that carries no `changes` key: CREATED and DELETED events, and
# every event of an instance without `event.poller.changes`.
UNTRACKED: Final = _Untracked.UNTRACKED
# A list of changes; None: "changes": null (no full previous object to compare with).
Changes: TypeAlias = list[Change] | Literal[_Untracked.UNTRACKED] | None


class EventType(StrEnum):
    """`eventType` of a callback's event, as Open Connectors spelled it (stored as text)."""

    CREATED = "CREATED"
    UPDATED = "UPDATED"
    DELETED = "DELETED"


@dataclass(frozen=True, slots=True)
class SnapshotRow:
    """What we keep per object (table object_snapshots)."""

    object_id: str
    sync_token: str | None  # None once deleted
    last_updated: datetime
    active: bool | None = None  # name lists only
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class Event:
    """One change of one object, as written to the outbox."""

    object_id: str
    version: str  # SyncToken, or DELETED_VERSION for a tombstone
    event_type: EventType
    occurred_at: datetime  # LastUpdatedTime (deletion time for a tombstone)
    raw: QboObject  # the object as QBO returned it, or the tombstone
    changes: Changes = UNTRACKED  # field-level changes (poller.detect.changes)
