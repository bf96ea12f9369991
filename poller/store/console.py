"""The console's sessions and its per-instance counts in PostgreSQL (DESIGN §10).

Sessions are found by the SHA-256 of their id (the id itself lives only in the cookie);
a lookup is also the idle check and restarts the idle clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from poller.store.db import Conn, store_call
from poller.store.sql import queries

Q = queries("console")


@dataclass(frozen=True)
class SessionRow:
    user_id: int
    user_name: str
    admin: bool
    oauth_state_hash: str | None
    oauth_purpose: str | None
    pending_code_enc: str | None
    pending_realm_id: str | None


@dataclass(frozen=True)
class InstanceCounts:
    events_24h: int
    pending: int
    dead: int
    held: int


@store_call
async def create_session(conn: Conn, id_hash: str, user_id: int, idle_s: float) -> None:
    await conn.execute(Q["prune_sessions"], idle_s)
    await conn.execute(Q["create_session"], id_hash, user_id)


@store_call
async def touch_session(conn: Conn, id_hash: str, idle_s: float) -> SessionRow | None:
    row = await conn.fetchrow(Q["touch_session"], id_hash, idle_s)
    if row is None:
        return None
    return SessionRow(
        row["id"],
        row["name"],
        row["admin"],
        row["oauth_state_hash"],
        row["oauth_purpose"],
        row["pending_code_enc"],
        row["pending_realm_id"],
    )


@store_call
async def end_session(conn: Conn, id_hash: str) -> None:
    await conn.execute(Q["end_session"], id_hash)


@store_call
async def start_oauth(conn: Conn, id_hash: str, state_hash: str, purpose: str) -> None:
    await conn.execute(Q["start_oauth"], id_hash, state_hash, purpose)


@store_call
async def finish_oauth(
    conn: Conn, id_hash: str, state_hash: str, code_enc: str | None, realm_id: str | None
) -> str | None:
    """The flow's purpose, or None when this session did not start a flow with that state."""
    purpose = await conn.fetchval(Q["finish_oauth"], id_hash, state_hash, code_enc, realm_id)
    return None if purpose is None else str(purpose)


@store_call
async def clear_oauth(conn: Conn, id_hash: str) -> None:
    await conn.execute(Q["clear_oauth"], id_hash)


@store_call
async def instance_counts(
    conn: Conn, instance_ids: Sequence[int], owner: int | None
) -> dict[int, InstanceCounts]:
    rows = await conn.fetch(Q["instance_counts"], list(instance_ids), owner)
    return {
        row["id"]: InstanceCounts(row["events_24h"], row["pending"], row["dead"], row["held"])
        for row in rows
    }
