"""`qbo-poller check-config`: what would stop `run`, found without starting anything.

The environment and the instances file are checked by loading them (as `run` does). Then,
unless `--offline`, the database: DATABASE_URL is connected to once (no retry, no migration,
nothing written), its schema version compared with this build's, and `check_secret_key` called
(the hook for POLLER_SECRET_KEY against the secrets stored there; a no-op for now). Each
problem raises `ConfigError` (exit 2); a server that cannot be reached raises
`DatabaseUnavailable` (exit 1): the configuration may be right.
The embedded database is not started: only its directory is checked.
"""

from __future__ import annotations

import os
from pathlib import Path

from poller.config import Settings, masked_dsn
from poller.errors import ConfigError
from poller.store import db, migrate, probe


async def check_database(settings: Settings) -> str:
    """What the database looks like to `run`, for the "configuration ok" line."""
    if settings.database_url is None:
        return check_data_dir(settings.data_dir)
    dsn = settings.database_url
    await probe.wait_until_reachable(dsn, 0.0)
    with db.translated():
        conn = await db.connect(dsn)
    try:
        schema = await check_schema(conn, settings)
        await check_secret_key(conn, settings)
    finally:
        await conn.close()
    return f"{masked_dsn(dsn)} ({schema})"


async def check_schema(conn: db.Conn, settings: Settings) -> str:
    """The schema's state, or `ConfigError` when `run` would refuse it."""
    version = await migrate.current_version(conn)
    latest = migrate.latest_version()
    where = f"DATABASE_URL={masked_dsn(settings.database_url or '')}"
    if version > latest:
        raise ConfigError(
            f"{where}: database schema is at version {version}, newer than this build knows "
            f"({latest}): upgrade qbo-poller"
        )
    if version == latest:
        return f"schema version {version}, up to date"
    if not settings.auto_migrate:
        raise ConfigError(
            f"{where}: database schema is at version {version}, this build needs {latest} and "
            "POLLER_AUTO_MIGRATE=false: run `qbo-poller migrate`"
        )
    return f"schema version {version}, {latest - version} migration(s) pending, applied by run"


async def check_secret_key(conn: db.Conn, settings: Settings) -> None:
    """POLLER_SECRET_KEY against the secrets already stored (DESIGN §7): raise `ConfigError`
    when it cannot decrypt them.

    NOT WRITTEN YET, on purpose: the key-rotation part of issue 16 fills this in with the same
    check `run` makes at start-up. Until then it passes every key without reading anything.
    """
    del conn, settings


def check_data_dir(data_dir: Path) -> str:
    """The embedded database's directory can be created and written (not started here)."""
    existing = data_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"POLLER_DATA_DIR={str(data_dir)!r}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"POLLER_DATA_DIR={str(data_dir)!r}: {existing} is not writable")
    return f"embedded in {data_dir} (not started by check-config)"
