"""The pool hands connections back without a reset round trip (issue 17)."""

from __future__ import annotations

from poller.store import db


async def test_release_sends_no_reset_query(db_dsn: str) -> None:
    pool = await db.create_pool(db_dsn, max_size=1)
    try:
        async with db.acquire(pool) as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            # Session state no store function leaves behind, set here only to see whether
            # asyncpg's default reset (`RESET ALL`, ...) ran at release.
            await conn.execute("SET application_name = 'kept-across-release'")
        async with db.acquire(pool) as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == pid  # the same connection
            assert await conn.fetchval("SHOW application_name") == "kept-across-release"
    finally:
        await pool.close()
