"""The versions a pair's snapshot is known to hold, in memory: re-reading the overlap for free.

Every poll re-reads part of what the last one read (the overlap, DESIGN §5). An object QBO
answers again at a SyncToken the snapshot already holds produces nothing, but finding that out
costs a snapshot read, a diff and, during a burst, most of the cycle's work. `SeenVersions`
remembers, per pair, the version of each object committed recently (object id → SyncToken, or
deleted), filled from the answers the cycle committed; the feed drops from an incremental
answer the versions it names before the cycle sees them: a dictionary lookup per object.

It can only skip work, never events: it is filled only after the commit (so the snapshot holds
at least that version), it drops only what the diff would drop itself (the same SyncToken or an
older one, any copy of a deleted object; a tombstone of a live object is kept), and complete
listings are never filtered (their set difference needs every object). Should the snapshot move
on without us (another replica), the cached version is older than the snapshot's, and the diff
still decides. Entries older than `horizon` (how far any later poll can reach back) are dropped,
so the memory is what changed recently, not the size of the company.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from poller.qbo import times
from poller.qbo.types import QboObject

_DELETED = ""  # the cached "version" of a deleted object (a SyncToken is never empty)


def _is_tombstone(obj: QboObject) -> bool:
    return str(obj.get("status", "")).lower() == "deleted"


def _covers(cached: str, token: object) -> bool:
    """The snapshot holding `cached` makes this live version old news (diff's `_newer` rule)."""
    if cached == _DELETED:
        return True  # deletion is terminal: a later live copy is stale
    if token is None:
        return False
    text = str(token)
    if text.isdigit() and cached.isdigit():
        return int(text) <= int(cached)
    return text == cached


class SeenVersions:
    """Per pair: object id → (newest version committed, its LastUpdatedTime)."""

    def __init__(self, horizon: timedelta) -> None:
        self.horizon = horizon
        self._pairs: dict[str, dict[str, tuple[str, datetime]]] = {}
        self.skipped = 0  # objects dropped so far (for the bench and tests)

    def __len__(self) -> int:
        return sum(len(seen) for seen in self._pairs.values())

    def unseen(self, resource: str, objects: list[QboObject]) -> list[QboObject]:
        """`objects` without the versions the pair's snapshot already holds."""
        seen = self._pairs.get(resource)
        if not seen:
            return objects
        kept: list[QboObject] = []
        for obj in objects:
            object_id = obj.get("Id")
            cached = seen.get(str(object_id)) if object_id is not None else None
            if cached is not None:
                if _is_tombstone(obj):
                    if cached[0] == _DELETED:
                        continue
                elif _covers(cached[0], obj.get("SyncToken")):
                    continue
            kept.append(obj)
        self.skipped += len(objects) - len(kept)
        return kept

    def remember(self, resource: str, objects: Sequence[QboObject], now: datetime) -> None:
        """The pair's answer was committed: its snapshot holds at least these versions."""
        if not objects and resource not in self._pairs:
            return  # the idle cycle's case: nothing to remember, nothing to prune
        cutoff = times.floor_to_second(now - self.horizon)
        seen = self._pairs.setdefault(resource, {})
        for obj in objects:
            object_id = obj.get("Id")
            updated = times.last_updated_time(obj)
            if object_id is None or updated is None or updated < cutoff:
                continue
            key = str(object_id)
            version = _DELETED if _is_tombstone(obj) else str(obj.get("SyncToken", ""))
            if not version and not _is_tombstone(obj):
                continue  # no SyncToken: nothing to compare a later copy with
            seen.pop(key, None)  # re-inserted at the end: the dict stays in arrival order
            seen[key] = (version, updated)
        self._prune(seen, cutoff)
        if not seen:
            del self._pairs[resource]

    def forget(self, resource: str) -> None:
        self._pairs.pop(resource, None)

    @staticmethod
    def _prune(seen: dict[str, tuple[str, datetime]], cutoff: datetime) -> None:
        # Arrival order is close to LastUpdatedTime order (answers are sorted by it): drop from
        # the front until a recent entry; a stray old one behind it goes in a later prune.
        while seen:
            key = next(iter(seen))
            if seen[key][1] >= cutoff:
                return
            del seen[key]
