"""The asyncpg pool, with orjson codecs for jsonb.

`json` columns (raw QBO objects) are left as text on purpose: what goes in comes out
byte for byte, so callbacks carry the object exactly as it was stored.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

POOL_COMMAND_TIMEOUT_S = 60.0


def _encode_jsonb(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


async def init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb", encoder=_encode_jsonb, decoder=orjson.loads, schema="pg_catalog"
    )


async def create_pool(dsn: str, max_size: int = 10, min_size: int = 1) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=init_connection,
        command_timeout=POOL_COMMAND_TIMEOUT_S,
    )
    assert pool is not None
    return pool


async def connect(dsn: str) -> asyncpg.Connection:
    """A dedicated connection (LISTEN, session locks): never returned to a pool."""
    conn = await asyncpg.connect(dsn, command_timeout=POOL_COMMAND_TIMEOUT_S)
    await init_connection(conn)
    return conn
