"""Pair cursors: leases with fencing tokens, watermarks, schedules, error counts (DESIGN §8).

Each instance-resource pair is polled by one replica at a time. A replica takes the pair with
`acquire` (a lease of `pair_lease_s`); taking over an expired lease bumps `lease_token`, and
every watermark write checks that token (`lock` at the start of a poll's transaction and
`advance` at its end), so a replica that lost its lease mid-poll cannot commit.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from poller.store.sql import queries

Q = queries("cursors")


class LeaseLost(Exception):
    """Another replica owns the pair now (its lease_token moved on): abort the transaction."""


@dataclass(frozen=True, slots=True)
class PairKey:
    instance_id: int
    resource: str

    def __str__(self) -> str:
        return f"{self.instance_id}/{self.resource}"


@dataclass(frozen=True, slots=True)
class Cursor:
    """A pair's state as read when its lease was taken."""

    lease_token: int
    watermark: datetime | None
    baseline: datetime | None
    initialized: bool
    reconciled_age_s: float | None    # seconds since the last full listing (None: never)
    consecutive_errors: int
    next_due_at: datetime


@dataclass(frozen=True, slots=True)
class Advance:
    """What a successful poll writes to its cursor."""

    watermark: datetime          # QBO `time` of the answer (never moves backwards)
    baseline: datetime | None    # set once, by the pair's first answer
    reconciled: bool             # the answer was a full listing
    next_due_at: datetime


@dataclass(frozen=True, slots=True)
class PollableInstance:
    id: int
    name: str
    realm_id: str
    refresh_interval_s: float
    initial_mode: str
    deactivated_as_deleted: bool
    config_version: int
    resources: tuple[str, ...]


async def pollable_instances(conn: asyncpg.Connection) -> list[PollableInstance]:
    rows = await conn.fetch(Q["pollable_instances"])
    return [PollableInstance(r["id"], r["name"], r["realm_id"], r["refresh_interval_s"],
                             r["initial_mode"], r["deactivated_as_deleted"], r["config_version"],
                             tuple(r["resources"])) for r in rows]


async def acquire(conn: asyncpg.Connection, key: PairKey, owner: str,
                  lease_s: float) -> Cursor | None:
    """Take or renew the pair's lease; None when another replica holds a live lease."""
    row = await conn.fetchrow(Q["acquire_lease"], key.instance_id, key.resource, owner,
                              float(lease_s))
    if row is None:
        return None
    return Cursor(row["lease_token"], row["watermark"], row["baseline"], row["initialized"],
                  row["reconciled_age_s"], row["consecutive_errors"], row["next_due_at"])


async def lease_expires_in(conn: asyncpg.Connection, key: PairKey) -> float | None:
    """Seconds until the current holder's lease lapses (None: free or the pair is gone)."""
    row = await conn.fetchrow(Q["lease_holder"], key.instance_id, key.resource)
    if row is None or row["expires_in_s"] is None:
        return None
    return max(0.0, row["expires_in_s"])


async def release(conn: asyncpg.Connection, key: PairKey, owner: str, token: int) -> None:
    """Give the pair up (graceful stop) so another replica need not wait for expiry."""
    await conn.execute(Q["release_lease"], key.instance_id, key.resource, owner, token)


async def lock(conn: asyncpg.Connection, key: PairKey, token: int) -> None:
    """Inside a transaction: hold the pair row while we still own it, else LeaseLost."""
    row = await conn.fetchrow(Q["lock_pair"], key.instance_id, key.resource, token)
    if row is None:
        raise LeaseLost(f"pair {key}: lease token {token} is no longer current")


async def advance(conn: asyncpg.Connection, key: PairKey, token: int, adv: Advance) -> None:
    """The fenced watermark write; raises LeaseLost (aborting the transaction) on 0 rows."""
    status = await conn.execute(Q["advance"], key.instance_id, key.resource, token,
                                adv.watermark, adv.baseline, adv.reconciled, adv.next_due_at)
    if status != "UPDATE 1":
        raise LeaseLost(f"pair {key}: lease token {token} is no longer current")


async def record_error(conn: asyncpg.Connection, key: PairKey, token: int, error: str,
                       next_due_at: datetime) -> int | None:
    """Count a failed poll and push the pair's schedule back; the error count, or None."""
    return await conn.fetchval(Q["record_error"], key.instance_id, key.resource, token,
                               error[:1000], next_due_at)


async def reschedule(conn: asyncpg.Connection, key: PairKey, next_due_at: datetime) -> None:
    await conn.execute(Q["reschedule"], key.instance_id, key.resource, next_due_at)


async def mark_needs_reconnect(conn: asyncpg.Connection, instance_id: int, reason: str) -> bool:
    """The OAuth grant is gone: stop polling the instance until it is reconnected."""
    status = await conn.execute(Q["set_instance_status"], instance_id, "needs_reconnect",
                                reason[:500])
    return status == "UPDATE 1"


async def next_due_at(conn: asyncpg.Connection, key: PairKey) -> datetime | None:
    return await conn.fetchval(Q["next_due_at"], key.instance_id, key.resource)


async def token_held_by(conn: asyncpg.Connection, key: PairKey, owner: str) -> int | None:
    """Our lease token if we are the pair's recorded holder (for fenced bookkeeping)."""
    return await conn.fetchval(Q["token_held_by"], key.instance_id, key.resource, owner)
