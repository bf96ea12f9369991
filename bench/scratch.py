"""A scratch database for a bench script: created and migrated on `server` (a DSN of a
maintenance database), dropped at the end. Shared by the scripts beside it."""

from __future__ import annotations

import uuid

import asyncpg

from poller.store import db, migrate


async def empty_database(server: str, prefix: str = "qbo_bench") -> str:
    """A new, empty database on the server (a daemon under test migrates it); its DSN."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(server)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    return server.rsplit("/", 1)[0] + "/" + name


async def scratch_database(server: str) -> str:
    """A new, migrated database on the server; its DSN."""
    dsn = await empty_database(server)
    conn = await db.connect(dsn)
    await migrate.migrate(conn)
    await conn.close()
    return dsn


async def drop_database(server: str, dsn: str) -> None:
    conn = await asyncpg.connect(server)
    await conn.execute(f'DROP DATABASE IF EXISTS "{dsn.rsplit("/", 1)[1]}" WITH (FORCE)')
    await conn.close()
