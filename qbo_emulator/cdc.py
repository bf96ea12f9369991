"""Change Data Capture (reference §1).

``GET /v3/company/{realm}/cdc?entities=a,b&changedSince=T`` returns, per
requested entity (in request order), every object whose LastUpdatedTime is at
or after ``changedSince``, each once in its current state, sorted by
LastUpdatedTime (ties by Id), with the tombstones of hard-deleted objects after
the live ones.

- ``entities`` is case-insensitive; an unknown entity, or one CDC does not
  cover (JournalCode, TaxAgency, TimeActivity, TaxCode, TaxRate), is refused
  with a 400 fault (the exact code is UNCONFIRMED; we answer "Unsupported
  Operation", code 500, in the style of the 30-day message).
- ``changedSince`` may carry an offset; a bare timestamp is US Pacific, a bare
  date is midnight Pacific; fractional seconds are floored because QBO's
  timestamps have whole seconds (so nothing that changed in that second is
  missed).  Older than 30 days → 400 "Operation cdc with changedSince date ...
  which is older than fixed days is not supported." (code 500, UNCONFIRMED).
- The 1000-object cap counts across all entities.  Beyond it we truncate
  silently and deterministically: groups are filled in request order, each
  group's live objects then tombstones, oldest first, until the cap is reached.
  (Intuit does not document what happens; truncation is the safe assumption.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from . import faults
from .clock import TimestampError, parse_timestamp
from .entities import CDC_UNSUPPORTED, ENTITIES, canonical_entity
from .store import Realm, Record

CDC_MAX_OBJECTS = 1000
CDC_WINDOW_DAYS = 30


@dataclass(slots=True)
class Group:
    entity: str
    records: list[Record]


def parse_entities(text: str | None) -> list[str]:
    if not text or not text.strip():
        raise faults.required_param("entities")
    names: list[str] = []
    for raw in text.split(","):
        raw = raw.strip()
        if not raw:
            continue
        name = canonical_entity(raw)
        unsupported = next((u for u in CDC_UNSUPPORTED if u.lower() == raw.lower()), None)
        if unsupported or name is None or not ENTITIES[name].cdc:
            raise faults.unsupported_operation(
                f"Operation cdc for entity {unsupported or name or raw} is not supported."
            )
        if name not in names:
            names.append(name)
    if not names:
        raise faults.required_param("entities")
    return names


def parse_changed_since(
    text: str | None, now: datetime, window_days: float = CDC_WINDOW_DAYS
) -> datetime:
    if not text:
        raise faults.required_param("changedSince")
    try:
        since = parse_timestamp(text)
    except TimestampError:
        raise faults.invalid_request_body(
            "Property Name:changedSince specified is unsupported or invalid"
        ) from None
    if since < now - timedelta(days=window_days):
        raise faults.unsupported_operation(
            f"Operation cdc with changedSince date {text} "
            "which is older than fixed days is not supported."
        )
    return since


def collect(
    realm: Realm, entities: list[str], since: datetime, cap: int = CDC_MAX_OBJECTS
) -> list[Group]:
    """The groups of a CDC answer, truncated to ``cap`` objects in total."""
    since_epoch = int(since.timestamp() // 1)
    budget = cap
    groups: list[Group] = []
    for entity in entities:
        if budget <= 0:
            break
        live, dead = realm.tables[entity].changed_since(since_epoch)
        records = (live + dead)[:budget]
        if records:
            groups.append(Group(entity, records))
            budget -= len(records)
    return groups


def query_responses(groups: list[Group]) -> list[dict[str, Any]]:
    """The ``QueryResponse`` array of a CDC answer (``[{}]`` when empty)."""
    if not groups:
        return [{}]
    return [
        {
            g.entity: [orjson.Fragment(r.json()) for r in g.records],
            "startPosition": 1,
            "maxResults": len(g.records),
        }
        for g in groups
    ]
