"""The embedded PostgreSQL (the `pgserver` package) used when DATABASE_URL is unset.

It lives in `<POLLER_DATA_DIR>/pgdata`, listens only on a unix socket, and is stopped when
the owner exits the context (pgserver also stops it at interpreter exit as a last resort).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from poller.logs import get_logger

log = get_logger(__name__)
DATABASE_NAME = "qbo_poller"


def _start(pgdata: Path) -> Any:
    from pgserver.postgres_server import get_server  # lazily: only the embedded path needs it

    pgdata.mkdir(parents=True, exist_ok=True)
    return get_server(pgdata, cleanup_mode="stop")


def _ensure_database(server: Any) -> None:
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE_NAME};")


@contextlib.asynccontextmanager
async def embedded_postgres(data_dir: Path) -> AsyncIterator[str]:
    """Start (or join) the private server; yield its DSN; stop it on exit."""
    pgdata = data_dir / "pgdata"
    log.info("embedded_postgres_starting", pgdata=str(pgdata))
    server = await asyncio.to_thread(_start, pgdata)
    try:
        await asyncio.to_thread(_ensure_database, server)
        dsn = server.get_uri(DATABASE_NAME)
        log.info("embedded_postgres_ready", pid=server.get_pid())
        yield dsn
    finally:
        await asyncio.to_thread(server.cleanup)
        log.info("embedded_postgres_stopped")
