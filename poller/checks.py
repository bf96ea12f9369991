"""`qbo-poller check-config`: what would stop `run`, found without starting anything.

The environment and the instances file are checked by loading them (as `run` does). Then,
unless `--offline`, the database: DATABASE_URL is connected to once (no retry, no migration,
nothing written), its schema version compared with this build's, and POLLER_SECRET_KEY checked
against the secrets stored there (`check_secret_key`, the check `run` makes at start-up). Each
problem raises `ConfigError` (exit 2); a server that cannot be reached raises
`DatabaseUnavailable` (exit 1): the configuration may be right.
Embedded: the directory is checked; when it already holds a database, the same two checks run
on it (through the running daemon's server when there is one, else a server started for the
check and stopped after it: poller.store.embedded). A directory with no database yet has
nothing stored to check.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from poller.config import Settings, masked_dsn
from poller.errors import ConfigError
from poller.store import db, migrate, probe, sealed
from poller.store.crypto import SecretBox
from poller.store.embedded import embedded_postgres
from poller.store.sealed import Inventory


@dataclass(frozen=True)
class DatabaseReport:
    """What the database looks like to `run`: a description for the "configuration ok" line and
    what the secret key check found (None: not checked, e.g. the embedded database)."""

    description: str
    secrets: Inventory | None


async def check_database(settings: Settings) -> DatabaseReport:
    """The database as `run` would find it; `ConfigError` for what would stop `run`."""
    if settings.database_url is None:
        return await check_embedded(settings)
    dsn = settings.database_url
    await probe.wait_until_reachable(dsn, 0.0)
    where = f"DATABASE_URL={masked_dsn(dsn)}"
    schema, secrets = await check_stored(dsn, settings, where)
    return DatabaseReport(f"{masked_dsn(dsn)} ({schema})", secrets)


async def check_embedded(settings: Settings) -> DatabaseReport:
    """The embedded database's directory, and what it stores if it holds a database yet."""
    data_dir = settings.data_dir
    described = check_data_dir(data_dir)
    if not (data_dir / "pgdata" / "PG_VERSION").exists():
        return DatabaseReport(f"{described}, no database yet", None)
    where = f"POLLER_DATA_DIR={str(data_dir)!r}"
    async with embedded_postgres(data_dir) as dsn:
        schema, secrets = await check_stored(dsn, settings, where)
    return DatabaseReport(f"{described} ({schema})", secrets)


async def check_stored(dsn: str, settings: Settings, where: str) -> tuple[str, Inventory | None]:
    """One connection: the schema's state and the secret key check."""
    with db.translated():
        conn = await db.connect(dsn)
    try:
        schema = await check_schema(conn, settings, where)
        secrets = await check_secret_key(conn, settings)
    finally:
        await conn.close()
    return schema, secrets


async def check_schema(conn: db.Conn, settings: Settings, where: str) -> str:
    """The schema's state, or `ConfigError` (naming `where`) when `run` would refuse it."""
    version = await migrate.current_version(conn)
    latest = migrate.latest_version()
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


async def check_secret_key(conn: db.Conn, settings: Settings) -> Inventory | None:
    """POLLER_SECRET_KEY (and POLLER_SECRET_KEY_PREVIOUS) against the secrets already stored
    (DESIGN §7): `SecretKeyError` (exit 2) when they cannot all be opened, as `run` would at
    start-up. None when the schema is not current: `run` would migrate first, and the schema
    check reports that."""
    if await migrate.current_version(conn) != migrate.latest_version():
        return None
    box = SecretBox(settings.secret_key, settings.secret_key_previous)
    return await sealed.check_readable(conn, box)


def check_data_dir(data_dir: Path) -> str:
    """The embedded database's directory can be created and written (not started here)."""
    existing = data_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"POLLER_DATA_DIR={str(data_dir)!r}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"POLLER_DATA_DIR={str(data_dir)!r}: {existing} is not writable")
    return f"embedded in {data_dir}"
