"""Opening the database, the one way every command does it (DESIGN §4, §8).

`open_database` starts the embedded PostgreSQL when `DATABASE_URL` is unset (else makes sure
the URL can work and waits for its server, `poller.store.probe`), opens a pool,
applies pending migrations (unless told not to, or `POLLER_AUTO_MIGRATE=false`), refuses a
schema newer than this build, and closes everything in reverse order on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from poller.logs import get_logger
from poller.store import db, migrate, probe
from poller.store.embedded import embedded_postgres

log = get_logger(__name__)
POOL_CLOSE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Database:
    """An open database: its DSN (for dedicated connections such as LISTEN) and the pool."""

    dsn: str
    pool: db.Pool
    schema_version: int
    applied: list[int] = field(default_factory=list)  # migrations applied while opening


@contextlib.asynccontextmanager
async def open_database(
    database_url: str | None,
    data_dir: Path,
    *,
    pool_size: int,
    migrate_first: bool = True,
    startup_timeout_s: float = 0.0,
    stop: asyncio.Event | None = None,
    exclusive: bool = False,
) -> AsyncIterator[Database]:
    """The database for a command or the daemon, migrated and checked (see the module doc).
    An unreachable DATABASE_URL server is retried for `startup_timeout_s` (0: one attempt), or
    until `stop` is set (`StartupStopped`). `exclusive` (the daemon): an embedded server another
    process owns is refused, not joined."""
    async with contextlib.AsyncExitStack() as stack:
        dsn = database_url
        if dsn is None:
            dsn = await stack.enter_async_context(embedded_postgres(data_dir, exclusive=exclusive))
        else:
            await probe.wait_until_reachable(dsn, startup_timeout_s, stop)
        with db.translated():  # a server gone between the probe and the pool: one line
            pool = await db.create_pool(dsn, max_size=pool_size)
        stack.push_async_callback(close_pool, pool)
        async with db.acquire(pool) as conn:
            applied = await migrate.migrate(conn) if migrate_first else []
            version = await migrate.check_current(conn)
        yield Database(dsn, pool, version, applied)


async def close_pool(pool: db.Pool) -> None:
    """Close gracefully, then forcibly: a connection stuck in a query must not hang shutdown."""
    try:
        await asyncio.wait_for(pool.close(), POOL_CLOSE_TIMEOUT_S)
    except TimeoutError:
        pool.terminate()
