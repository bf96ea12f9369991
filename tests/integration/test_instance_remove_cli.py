"""`qbo-poller instances remove NAME [--force]` (issue 10 finding 8): refused while the instance
has undelivered notifications, unless --force, which says what it cancelled."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import asyncpg
import pytest
import structlog

from poller import cli
from poller.store import db
from tests.deliver.helpers import insert_instance, insert_many


async def _instance_with_undelivered(dsn: str, pending: int, dead: int) -> None:
    pool = await db.create_pool(dsn, max_size=2)
    try:
        iid = await insert_instance(pool, "http://127.0.0.1:9/hook", name="acme")
        await insert_many(pool, iid, pending + dead, notify=False)
        await pool.execute(
            "UPDATE notifications SET status = 'dead' WHERE id IN "
            "(SELECT id FROM notifications ORDER BY id LIMIT $1)",
            dead,
        )
        await insert_instance(pool, None, name="quiet")
    finally:
        await pool.close()


async def _counts(dsn: str) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        instances = await conn.fetchval("SELECT count(*) FROM instances")
        notifications = await conn.fetchval("SELECT count(*) FROM notifications")
    finally:
        await conn.close()
    return instances, notifications


@pytest.fixture
def _logging_restored() -> Iterator[None]:
    """`cli.main` configures logging onto capsys's stderr, closed after the test: later tests
    get the configuration they had."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.usefixtures("_logging_restored")
def test_remove_refuses_undelivered_notifications_unless_forced(
    db_dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_instance_with_undelivered(db_dsn, pending=3, dead=1))
    monkeypatch.setenv("DATABASE_URL", db_dsn)

    assert cli.main(["instances", "remove", "acme"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert "acme has 3 pending, 0 held and 1 dead notification(s) not delivered" in err
    assert "--force" in err and "deliveries list --instance acme" in err
    assert asyncio.run(_counts(db_dsn)) == (2, 4)  # nothing removed

    assert cli.main(["instances", "remove", "acme", "--force"]) == 0
    out, err = capsys.readouterr()
    assert out == "removed: acme, cancelled 3 pending, 0 held and 1 dead notification(s)\n"
    assert asyncio.run(_counts(db_dsn)) == (1, 0)

    # Nothing undelivered: removed without --force, as before.
    assert cli.main(["instances", "remove", "quiet"]) == 0
    assert capsys.readouterr().out == "removed: quiet\n"
    assert cli.main(["instances", "remove", "quiet"]) == 1
    assert capsys.readouterr().err == "qbo-poller: no instance named 'quiet'\n"
