"""API users in PostgreSQL (DESIGN §9): names, secret hashes, the admin flag."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from poller.store.db import Conn, store_call
from poller.store.sql import queries

Q = queries("users")


@dataclass(frozen=True)
class UserRow:
    id: int
    name: str
    admin: bool
    secret_hash: str


@dataclass(frozen=True)
class UserListing:
    id: int
    name: str
    admin: bool
    created_at: datetime
    rotated_at: datetime | None
    instances: int


@store_call
async def add(conn: Conn, name: str, secret_hash: str, admin: bool) -> int | None:
    """The new user's id; None when the name is taken."""
    user_id = await conn.fetchval(Q["add"], name, secret_hash, admin)
    return None if user_id is None else int(user_id)


@store_call
async def list_all(conn: Conn) -> list[UserListing]:
    return [
        UserListing(
            row["id"],
            row["name"],
            row["admin"],
            row["created_at"],
            row["rotated_at"],
            row["instances"],
        )
        for row in await conn.fetch(Q["list"])
    ]


@store_call
async def rotate(conn: Conn, name: str, secret_hash: str) -> bool:
    return await conn.fetchval(Q["rotate"], name, secret_hash) is not None


@store_call
async def remove(conn: Conn, name: str) -> bool:
    return await conn.fetchval(Q["remove"], name) is not None


@store_call
async def by_hash(conn: Conn, secret_hash: str) -> UserRow | None:
    row = await conn.fetchrow(Q["by_hash"], secret_hash)
    if row is None:
        return None
    return UserRow(row["id"], row["name"], row["admin"], row["secret_hash"])
