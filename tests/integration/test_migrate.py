"""Migrations: forward-only files, advisory lock, version table, refusing newer schemas."""

from __future__ import annotations

import asyncio

import pytest

from poller.errors import SchemaError
from poller.store import db, migrate


async def test_migrates_an_empty_database_and_is_idempotent(empty_db_dsn: str) -> None:
    conn = await db.connect(empty_db_dsn)
    try:
        assert await migrate.current_version(conn) == 0
        with pytest.raises(SchemaError, match="run `qbo-poller migrate`"):
            await migrate.check_current(conn)
        applied = await migrate.migrate(conn)
        assert applied == list(range(1, migrate.latest_version() + 1))
        assert await migrate.migrate(conn) == []
        assert await migrate.check_current(conn) == migrate.latest_version()
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        assert {
            "instances",
            "oauth_credentials",
            "pair_cursors",
            "object_snapshots",
            "events",
            "notifications",
            "delivery_attempts",
            "schema_migrations",
        } <= tables
    finally:
        await conn.close()


async def test_concurrent_migrations_apply_each_file_once(empty_db_dsn: str) -> None:
    conns = [await db.connect(empty_db_dsn) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate.migrate(c) for c in conns))
        applied = sorted(v for r in results for v in r)
        assert applied == list(range(1, migrate.latest_version() + 1))
        count = await conns[0].fetchval("SELECT count(*) FROM schema_migrations")
        assert count == migrate.latest_version()
    finally:
        for c in conns:
            await c.close()


async def test_refuses_a_schema_newer_than_it_knows(db_dsn: str) -> None:
    conn = await db.connect(db_dsn)
    try:
        await conn.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, 'future')",
            migrate.latest_version() + 1,
        )
        with pytest.raises(SchemaError, match="newer than this build knows"):
            await migrate.check_current(conn)
        with pytest.raises(SchemaError, match="newer than this build knows"):
            await migrate.migrate(conn)
    finally:
        await conn.close()


async def test_event_uniqueness_is_a_database_constraint(pool) -> None:  # type: ignore[no-untyped-def]
    import asyncpg

    iid = await pool.fetchval(
        "INSERT INTO instances (name, realm_id, client_id, client_secret_enc, refresh_interval_s,"
        " resources, provider_fingerprint)"
        " VALUES ('a', '1', 'c', 'plain:s', 60, '{customers}', 'f')"
        " RETURNING id"
    )
    insert = (
        "INSERT INTO events"
        " (instance_id, resource, object_id, version, event_type, occurred_at, raw)"
        " VALUES ($1, 'customers', '7', '3', 'UPDATED', now(), '{}')"
    )
    await pool.execute(insert, iid)
    with pytest.raises(asyncpg.UniqueViolationError):
        await pool.execute(insert, iid)
