"""The embedded PostgreSQL (the `pgserver` package) used when DATABASE_URL is unset.

It lives in `<POLLER_DATA_DIR>/pgdata`, listens only on a unix socket, and is stopped when
the owner exits the context (pgserver also stops it at interpreter exit as a last resort).
"""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from poller.errors import ConfigError
from poller.logs import get_logger

log = get_logger(__name__)
DATABASE_NAME = "qbo_poller"


def _import_pgserver() -> Any:
    """pgserver, imported lazily (only the embedded path needs it) and quietly.

    Its PostgresServer class body asks platformdirs for the user's runtime directory, for an
    inter-process lock file, at import. Without XDG_RUNTIME_DIR (ssh without a login session,
    containers, sudo, systemd services) platformdirs warns on stderr and falls back to
    /tmp/runtime-<uid>, a private directory that serves a lock file as well: the warning tells
    the user nothing they can act on. Only that warning, only during this import, is ignored.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR", category=UserWarning)
        from pgserver import postgres_server
    return postgres_server


def _start(pgdata: Path, server_module: Any) -> Any:
    try:
        pgdata.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a POLLER_DATA_DIR the daemon cannot use: configuration, exit 2
        raise ConfigError(
            f"POLLER_DATA_DIR={str(pgdata.parent)!r}: cannot create {pgdata}: {exc.strerror}"
        ) from None
    return server_module.get_server(pgdata, cleanup_mode="stop")


def _ensure_database(server: Any) -> None:
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE_NAME};")


@contextlib.asynccontextmanager
async def embedded_postgres(data_dir: Path) -> AsyncIterator[str]:
    """Start (or join) the private server; yield its DSN; stop it on exit."""
    pgdata = data_dir / "pgdata"
    log.info("embedded_postgres_starting", pgdata=str(pgdata))
    # Imported in the loop's thread: warnings.catch_warnings is process-wide, not thread-safe.
    server = await asyncio.to_thread(_start, pgdata, _import_pgserver())
    try:
        await asyncio.to_thread(_ensure_database, server)
        dsn = server.get_uri(DATABASE_NAME)
        log.info("embedded_postgres_ready", pid=server.get_pid())
        yield dsn
    finally:
        await asyncio.to_thread(server.cleanup)
        log.info("embedded_postgres_stopped")
