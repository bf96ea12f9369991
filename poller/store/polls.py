"""Poll requests: make pairs due now, through PostgreSQL (DESIGN §2, §8, §11).

Whoever learns that QBO data changed (an Intuit webhook, "poll now" in the console, a resource
changed through the HTTP API) calls `request_poll`. One statement sets `next_due_at = now()` on
the matching pairs of active, events-enabled instances and NOTIFYs `CHANNEL` with their
instance ids; every replica LISTENs (`poller.detect.wakeups`) and the one holding an instance's
lease polls the named pairs in its next cycle, about a second later. The request does not
need to know which replica that is, nor whether one is running at all: the due time stays in
the database, and a replica that missed the notification finds it there.

The payload is JSON: `{"instances": [ids] | null, "resources": [names] | null}`; null
instances means "every instance" (more than a payload can name), null resources "every pair".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson

from poller import resources
from poller.store.db import Conn, store_call
from poller.store.sql import queries

Q = queries("polls")
CHANNEL = "qbo_poller_poll"


@dataclass(frozen=True, slots=True)
class PollRequest:
    """What `request_poll` did."""

    pairs: int  # pairs made due now
    instance_ids: tuple[int, ...]  # the instances they belong to (each was notified)
    unknown_entities: tuple[str, ...] = ()  # entity names that match no resource (ignored)


@dataclass(frozen=True, slots=True)
class Wakeup:
    """A parsed notification of `CHANNEL`: None means every instance, or every resource."""

    instance_ids: frozenset[int] | None
    resources: frozenset[str] | None


def resources_for(entities: Iterable[str]) -> tuple[list[str], list[str]]:
    """QBO entity names (any case, e.g. "Invoice") as resource names, and the unknown names."""
    names: list[str] = []
    unknown: list[str] = []
    for entity in entities:
        resource = resources.by_entity(entity)
        if resource is None:
            unknown.append(entity)
        elif resource.name not in names:
            names.append(resource.name)
    return names, unknown


@store_call
async def request_poll(
    conn: Conn,
    *,
    instance_id: int | None = None,
    realm_id: str | None = None,
    entities: Sequence[str] | None = None,
) -> PollRequest:
    """Make pairs due now: those of one instance, or of every instance of a realm; only the
    pairs of `entities` (QBO entity names), or (None) every pair. Paused, disconnected and
    events-disabled instances are left alone. Inside the caller's transaction the notification
    goes out at its COMMIT. Raises `DatabaseError`; ValueError without instance or realm."""
    if (instance_id is None) == (realm_id is None):
        raise ValueError("request_poll needs exactly one of instance_id and realm_id")
    wanted: list[str] | None = None
    unknown: list[str] = []
    if entities is not None:
        wanted, unknown = resources_for(entities)
        if not wanted:
            return PollRequest(0, (), tuple(unknown))
    row = await conn.fetchrow(Q["request_poll"], instance_id, realm_id, wanted)
    assert row is not None  # an aggregate always returns its row
    return PollRequest(int(row["pairs"]), tuple(row["ids"]), tuple(unknown))


@store_call
async def due_pairs(conn: Conn, instance_ids: Sequence[int]) -> dict[int, list[str]]:
    """The pairs of these instances whose stored due time has come, per instance."""
    due: dict[int, list[str]] = {}
    for row in await conn.fetch(Q["due_pairs"], list(instance_ids)):
        due.setdefault(row["instance_id"], []).append(row["resource"])
    return due


def parse_wakeup(payload: str) -> Wakeup:
    """A notification's payload; ValueError when it is not one of ours."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {payload[:80]!r}") from exc
    if not isinstance(body, dict):
        raise ValueError(f"not an object: {payload[:80]!r}")
    ids = body.get("instances")
    names = body.get("resources")
    try:
        return Wakeup(
            None if ids is None else frozenset(int(i) for i in ids),
            None if names is None else frozenset(str(n) for n in names),
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"unexpected fields: {payload[:80]!r}") from exc


__all__ = [
    "CHANNEL",
    "PollRequest",
    "Wakeup",
    "due_pairs",
    "parse_wakeup",
    "request_poll",
    "resources_for",
]
