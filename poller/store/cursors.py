"""Pair cursors and instance leases: watermarks, schedules, error counts (DESIGN §5, §8).

All the pairs of an instance are polled by one replica at a time, under the instance's lease.
A lease is live while its owner heartbeats (`poller.store.replicas`) within the replica
timeout, however long its cycles last; then any replica may take it over. `acquire` takes (or
renews) it and reads every pair's cursor in one statement; taking it over bumps the lease
token. `settle` ends a cycle: it writes every polled pair's cursor and renews the lease, in one
statement fenced by that token — inside the cycle's transaction when there is anything else to
write — so a replica that lost the instance mid-cycle cannot commit.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from poller.instances import InitialMode, VendorType
from poller.store.db import Conn, store_call
from poller.store.sql import queries

Q = queries("cursors")


class LeaseLost(Exception):
    """Another replica owns the instance now (or we released it): abort the transaction."""


class InstanceRemoved(LeaseLost):
    """The instance (or the pair) was removed while it was being polled: its rows are gone, so
    the cycle's results have nowhere to go (nothing was written)."""


@dataclass(frozen=True, slots=True)
class PairKey:
    instance_id: int
    resource: str

    def __str__(self) -> str:
        return f"{self.instance_id}/{self.resource}"


@dataclass(frozen=True, slots=True)
class Cursor:
    """A pair's state as last read or written."""

    watermark: datetime | None
    baseline: datetime | None
    initialized: bool
    reconciled_age_s: float | None  # seconds since the last full listing (None: never)
    consecutive_errors: int
    next_due_at: datetime


@dataclass(frozen=True, slots=True)
class LeaseRef:
    """The lease a cycle writes under: who, and which token."""

    instance_id: int
    owner: str
    token: int


@dataclass(frozen=True, slots=True)
class Lease:
    """What `acquire` found."""

    token: int | None  # ours (the fencing token); None: held elsewhere
    holder: str | None
    held_for_s: float | None  # held elsewhere: seconds until it lapses, unless its owner beats
    cursors: dict[str, Cursor]
    due_in_s: float | None = None  # held elsewhere: seconds until its first pair is due


@dataclass(frozen=True, slots=True)
class Advance:
    """What a successful poll writes to its cursor."""

    watermark: datetime  # QBO `time` of the answer (never moves backwards)
    baseline: datetime | None  # set once, by the pair's first answer
    reconciled: bool  # the answer was a full listing


@dataclass(frozen=True, slots=True)
class Settle:
    """How one pair's poll ended: `advance` on success, else `error`."""

    resource: str
    next_due_at: datetime
    advance: Advance | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class PollableInstance:
    id: int
    name: str
    realm_id: str
    refresh_interval_s: float
    initial_mode: InitialMode
    deactivated_as_deleted: bool
    config_version: int
    resources: tuple[str, ...]
    vendor_type: VendorType = VendorType.POLLING
    changes: bool = False  # event.poller.changes


# NOTIFYed with an instance's id whenever its polling may have to start, stop or restart
# (migration 0011's triggers: the instance or its pairs added or removed, its config_version,
# status or events switch changed).
INSTANCES_CHANNEL = "qbo_poller_instances"


@store_call
async def pollable_instances(
    conn: Conn, ids: Sequence[int] | None = None
) -> list[PollableInstance]:
    """The instances to poll: all of them, or those of `ids` (the others of `ids` are not)."""
    if ids is None:
        rows = await conn.fetch(Q["pollable_instances"])
    else:
        rows = await conn.fetch(Q["pollable_instances_by_id"], list(ids))
    return [
        PollableInstance(
            row["id"],
            row["name"],
            row["realm_id"],
            row["refresh_interval_s"],
            InitialMode(row["initial_mode"]),
            row["deactivated_as_deleted"],
            row["config_version"],
            tuple(sys.intern(name) for name in row["resources"]),  # see `acquire`
            VendorType(row["vendor_type"]),
            row["changes"],
        )
        for row in rows
    ]


def _cursor(row: asyncpg.Record, seen: dict[datetime, datetime]) -> Cursor:
    """A pair's cursor, its times shared with the other pairs of the read that hold the same
    (`seen`): cursors live as long as their instance polls, and the pairs of one instance
    mostly hold one watermark, baseline and due time, where asyncpg decodes an object for
    every field (issue 17: ~1 KB per instance)."""
    return Cursor(
        _shared(seen, row["watermark"]),
        _shared(seen, row["baseline"]),
        row["initialized"],
        row["reconciled_age_s"],
        row["consecutive_errors"],
        seen.setdefault(row["next_due_at"], row["next_due_at"]),
    )


def _shared(seen: dict[datetime, datetime], value: datetime | None) -> datetime | None:
    return None if value is None else seen.setdefault(value, value)


@store_call
async def acquire(conn: Conn, instance_id: int, owner: str, timeout_s: float) -> Lease:
    """Take or renew the instance's lease, live while `owner` heartbeats within `timeout_s`
    (the replica timeout); with it, every pair's cursor."""
    rows = await conn.fetch(Q["acquire"], instance_id, owner, float(timeout_s))
    first = rows[0]
    token = first["lease_token"]
    if token is None:
        held = first["held_for_s"]
        held_for_s = None if held is None else max(0.0, held)
        return Lease(None, first["holder"], held_for_s, {}, first["due_in_s"])
    seen: dict[datetime, datetime] = {}
    # Resource names interned: a fixed set of 22, kept as keys by every instance.
    found = {sys.intern(r["resource"]): _cursor(r, seen) for r in rows if r["resource"]}
    return Lease(token, owner, None, found)


@store_call
async def settle(conn: Conn, lease: LeaseRef, settles: Sequence[Settle]) -> list[str]:
    """The fenced end of a cycle (see module docstring): the pairs written (a pair removed
    meanwhile is not among them). Their cursors are now `written(old, settle, ...)`: the lease
    keeps anyone else from writing them.

    Raises LeaseLost when the token is no longer current (nothing was written).
    """
    ok = [s.advance is not None for s in settles]
    rows = await conn.fetch(
        Q["settle"],
        lease.instance_id,
        lease.owner,
        lease.token,
        [s.resource for s in settles],
        ok,
        [s.advance.watermark if s.advance else None for s in settles],
        [s.advance.baseline if s.advance else None for s in settles],
        [s.advance.reconciled if s.advance else False for s in settles],
        [s.next_due_at for s in settles],
        [None if s.error is None else s.error[:1000] for s in settles],
    )
    if not rows and settles:
        raise LeaseLost(
            f"instance {lease.instance_id}: lease token {lease.token} is no longer "
            f"held by {lease.owner}"
        )
    return [r["resource"] for r in rows]


def written(old: Cursor, settle: Settle, reconciled_age_s: float | None) -> Cursor:
    """The cursor `settle` leaves over `old` (the `settle` statement's SET, for the lease
    holder). `reconciled_age_s`: the age of `old`'s last full listing as of the settle."""
    advance = settle.advance
    if advance is None:
        errors = old.consecutive_errors + 1
        return Cursor(
            old.watermark,
            old.baseline,
            old.initialized,
            reconciled_age_s,
            errors,
            settle.next_due_at,
        )
    watermark = advance.watermark
    if old.watermark is not None:
        watermark = max(old.watermark, watermark)
    baseline = old.baseline if old.baseline is not None else advance.baseline
    age = 0.0 if advance.reconciled else reconciled_age_s
    return Cursor(watermark, baseline, True, age, 0, settle.next_due_at)


@store_call
async def release(conn: Conn, instance_id: int, owner: str) -> bool:
    """Give the instance up (graceful stop) so another replica need not wait for the timeout."""
    return await conn.execute(Q["release"], instance_id, owner) == "UPDATE 1"


@store_call
async def schedule(conn: Conn, instance_id: int) -> dict[str, datetime]:
    """Every pair's stored next due time (to resume the schedule after a restart)."""
    return {r["resource"]: r["next_due_at"] for r in await conn.fetch(Q["schedule"], instance_id)}
