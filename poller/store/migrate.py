"""Numbered, forward-only SQL migrations, applied inside a blocking advisory lock.

Files are `migrations/NNNN_name.sql`. Each pending file runs in its own transaction and is
recorded in `schema_migrations`. `run` refuses a schema newer than this build knows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from poller.errors import SchemaError
from poller.logs import get_logger
from poller.store.db import Conn, store_call
from poller.store.sql import queries

log = get_logger(__name__)
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
Q = queries("migrate")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    """The migrations shipped with this build, in order."""
    folder = resources.files("poller") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise SchemaError(f"migrations are not numbered 0001.. without gaps: {versions}")
    return found


def latest_version() -> int:
    return len(available())


@store_call
async def current_version(conn: Conn) -> int:
    """The applied version (0 for an empty database)."""
    exists = await conn.fetchval(Q["table_exists"])
    if not exists:
        return 0
    return int(await conn.fetchval(Q["current_version"]) or 0)


@store_call
async def migrate(conn: Conn) -> list[int]:
    """Apply pending migrations; returns the versions applied. Safe to run concurrently."""
    applied: list[int] = []
    async with conn.transaction():
        # Blocks (never skips) while another process migrates; released at commit.
        await conn.execute(Q["lock"])
        await conn.execute(Q["create_table"])
    known = available()
    while True:
        async with conn.transaction():
            await conn.execute(Q["lock"])
            version = await current_version(conn)
            _refuse_newer(version, len(known))
            if version >= len(known):
                return applied
            step = known[version]
            await conn.execute(step.sql)
            await conn.execute(Q["record"], step.version, step.name)
            log.info("migration_applied", version=step.version, name=step.name)
            applied.append(step.version)


@store_call
async def check_current(conn: Conn) -> int:
    """Raise unless the schema is exactly the version this build knows."""
    version = await current_version(conn)
    latest = latest_version()
    _refuse_newer(version, latest)
    if version < latest:
        raise SchemaError(
            f"database schema is at version {version}, this build needs {latest}: "
            "run `qbo-poller migrate` (or set POLLER_AUTO_MIGRATE=true)"
        )
    return version


def _refuse_newer(version: int, latest: int) -> None:
    if version > latest:
        raise SchemaError(
            f"database schema is at version {version}, newer than this build knows "
            f"({latest}): upgrade qbo-poller"
        )
