"""Instances as the HTTP API sees them (DESIGN §9): pages, one, ownership, tokens, deletes.

`owner` is the caller's user id, or None for an admin (every instance is visible).
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from poller.qbo.auth import TokenSet
from poller.store.crypto import SecretBox
from poller.store.db import Conn, store_call
from poller.store.sql import queries

Q = queries("api_instances")


@store_call
async def page(conn: Conn, owner: int | None, after_id: int, limit: int) -> list[asyncpg.Record]:
    return list(await conn.fetch(Q["page"], owner, after_id, limit))


@store_call
async def one(conn: Conn, instance_id: int, owner: int | None) -> asyncpg.Record | None:
    return await conn.fetchrow(Q["one"], instance_id, owner)


@store_call
async def editable(conn: Conn, instance_id: int, owner: int | None) -> asyncpg.Record | None:
    return await conn.fetchrow(Q["editable"], instance_id, owner)


@store_call
async def name_taken(conn: Conn, name: str) -> bool:
    return bool(await conn.fetchval(Q["name_taken"], name))


@store_call
async def by_token_hash(conn: Conn, token_hash: str, owner: int | None) -> int | None:
    found = await conn.fetchval(Q["by_token_hash"], token_hash, owner)
    return None if found is None else int(found)


@store_call
async def set_owner_token(
    conn: Conn, instance_id: int, owner: int | None, token_enc: str | None, token_hash: str | None
) -> None:
    await conn.execute(Q["set_owner_token"], instance_id, owner, token_enc, token_hash)


@store_call
async def save_exchanged_tokens(
    conn: Conn, instance_id: int, tokens: TokenSet, box: SecretBox
) -> None:
    await conn.execute(
        Q["save_exchanged_tokens"],
        instance_id,
        box.seal(tokens.access_token),
        tokens.access_expires_at,
        box.seal(tokens.refresh_token),
        tokens.refresh_expires_at,
        tokens.refresh_hard_expires_at,
        tokens.obtained_at,
    )


@store_call
async def undelivered(conn: Conn, instance_id: int) -> int:
    return int(await conn.fetchval(Q["undelivered"], instance_id))


@store_call
async def delete(conn: Conn, instance_id: int) -> tuple[str, Sequence[str]] | None:
    row = await conn.fetchrow(Q["delete"], instance_id)
    return None if row is None else (row["name"], list(row["resources"]))


@store_call
async def set_paused(conn: Conn, instance_id: int, paused: bool) -> bool:
    """True when this call changed the status."""
    result = await conn.execute(Q["pause" if paused else "resume"], instance_id)
    return str(result).endswith(" 1")
