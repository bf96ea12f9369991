"""Shared fixtures: a real PostgreSQL with one isolated database per test.

The server is TEST_DATABASE_URL, else DATABASE_URL, else 127.0.0.1:5432, else an embedded
pgserver started for the session. A migrated template database is built once per session;
each test gets `CREATE DATABASE … TEMPLATE` (fast) and it is dropped afterwards.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import structlog

from poller import logs
from poller.store import db, migrate

LOCAL_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def with_database(dsn: str, name: str) -> str:
    """The same server DSN pointing at database `name` (works for socket DSNs too)."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


async def _reachable(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


@pytest.fixture(scope="session")
def pg_server_dsn() -> Iterator[str]:
    """A DSN (to a maintenance database) of a server that tests may create databases on."""
    for var in ("TEST_DATABASE_URL", "DATABASE_URL"):
        if os.environ.get(var):
            yield os.environ[var]
            return
    if asyncio.run(_reachable(LOCAL_DSN)):
        yield LOCAL_DSN
        return
    import pgserver

    folder = tempfile.mkdtemp(prefix="qbo-poller-test-pg-")
    server = pgserver.get_server(folder, cleanup_mode="stop")
    try:
        yield server.get_uri("postgres")
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


async def _admin(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _migrate(dsn: str) -> None:
    conn = await db.connect(dsn)
    try:
        await migrate.migrate(conn)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def template_db(pg_server_dsn: str) -> Iterator[str]:
    name = f"qbo_tmpl_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(pg_server_dsn, f'CREATE DATABASE "{name}"'))
    asyncio.run(_migrate(with_database(pg_server_dsn, name)))
    try:
        yield name
    finally:
        asyncio.run(_admin(pg_server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def db_dsn(pg_server_dsn: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for this test only."""
    name = f"qbo_t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(pg_server_dsn, f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"'))
    try:
        yield with_database(pg_server_dsn, name)
    finally:
        asyncio.run(_admin(pg_server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def empty_db_dsn(pg_server_dsn: str) -> Iterator[str]:
    """A fresh database with no schema at all (migration tests)."""
    name = f"qbo_e_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(pg_server_dsn, f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(pg_server_dsn, name)
    finally:
        asyncio.run(_admin(pg_server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def pool(db_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(db_dsn, max_size=8)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """A test that configures logging (an in-process demo or CLI call) must not change what
    later tests see: structlog's filtering level decides what `capture_logs` can capture."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests never see the developer's POLLER_*/QBO_* variables or registered secrets."""
    for key in list(os.environ):
        if key.startswith(("POLLER_", "QBO_")) or key == "NOTIFY_SOCKET":
            monkeypatch.delenv(key)
    logs.secrets.clear()
    yield
    logs.secrets.clear()


# --- tiers ------------------------------------------------------------------------------------
# `pytest -m unit` runs the pure tests in seconds; `-m "not e2e"` skips the subprocess ones.
_E2E_FOLDERS = frozenset({"e2e", "product"})
_IO_FIXTURES = frozenset({"pg_server_dsn", "db_dsn", "empty_db_dsn", "pool", "template_db"})


def _tier(item: pytest.Item) -> str:
    folder = item.path.parent.name
    if folder in _E2E_FOLDERS:
        return "e2e"
    if folder == "unit":
        return "unit"
    fixtures = set(getattr(item, "fixturenames", ()))
    # An async test talks to something real on loopback (PostgreSQL, the emulator, a server).
    is_async = inspect.iscoroutinefunction(getattr(item, "function", None))
    return "integration" if fixtures & _IO_FIXTURES or is_async else "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(getattr(pytest.mark, _tier(item)))
