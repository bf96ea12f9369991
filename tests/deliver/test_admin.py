"""`qbo-poller deliveries list|redeliver` through the function the CLI calls."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp import web

from poller.cli import build_parser
from poller.deliver.admin import run_command
from poller.deliver.dispatcher import Dispatcher
from tests.deliver.helpers import (
    BOX,
    Receiver,
    eventually,
    insert_instance,
    insert_many,
    running,
    settings,
    statuses,
)


async def cli(pool: asyncpg.Pool, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = await run_command(pool, build_parser().parse_args(["deliveries", *argv]), out)
    return code, out.getvalue()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


async def test_dead_letters_listed_then_redelivered(
    pool: asyncpg.Pool, db_dsn: str, receiver: Receiver
) -> None:
    receiver.respond = lambda r: web.Response(status=503, text="down for\nmaintenance")
    acme = await insert_instance(pool, receiver.url, name="acme")
    other = await insert_instance(pool, receiver.url, name="other")
    await insert_many(pool, acme, 2)
    await insert_many(pool, other, 1)
    cfg = settings(retry_schedule_s=(0.05, 0.05))
    async with running(Dispatcher(cfg, pool, db_dsn, BOX)):
        await eventually(lambda: _settled(pool))
        # Dead after the last attempt: 1 + 2 retries.
        assert await statuses(pool) == {"dead": 3}
        assert len(receiver.requests) == 9
        code, text = await cli(pool, "list", "--dead", "--instance", "acme")
        assert code == 0
        lines = text.splitlines()
        assert lines[0].split()[:7] == [
            "ID",
            "INSTANCE",
            "RESOURCE",
            "EVENTS",
            "STATUS",
            "ATTEMPTS",
            "NEXT",
        ]
        assert len(lines) == 3 and all("acme" in ln and " dead " in ln for ln in lines[1:])
        assert lines[1].rstrip().endswith("  HTTP 503")
        receiver.respond = lambda r: web.Response(text="ok")
        first_id = int(lines[1].split()[0])
        assert await cli(pool, "redeliver", str(first_id)) == (
            0,
            f"notification {first_id} queued for redelivery\n",
        )
        await eventually(lambda: _count(pool, "delivered", 1))
        code, text = await cli(pool, "redeliver", "--instance", "acme")
        assert (code, text) == (0, "1 dead or held notification(s) of acme queued for redelivery\n")
        await eventually(lambda: _count(pool, "delivered", 2))
        assert await cli(pool, "redeliver", "--all-dead") == (
            0,
            "1 dead notification(s) queued for redelivery\n",
        )
        await eventually(lambda: _count(pool, "delivered", 3))
    # Redelivery keeps the eventId and the body.
    ids = receiver.event_ids()
    assert len(set(ids)) == 3 and len(ids) == 12
    rows = await pool.fetch("SELECT attempts FROM notifications")
    assert {r["attempts"] for r in rows} == {1}
    code, text = await cli(pool, "list", "--limit", "2")
    assert code == 0 and len(text.splitlines()) == 3 and " delivered " in text


async def _settled(pool: asyncpg.Pool) -> bool:
    return "pending" not in await statuses(pool)


async def _count(pool: asyncpg.Pool, status: str, n: int) -> bool:
    return (await statuses(pool)).get(status, 0) == n


async def test_errors_and_empty(pool: asyncpg.Pool, capsys: pytest.CaptureFixture[str]) -> None:
    assert await cli(pool, "list") == (0, "no notifications\n")
    assert (await cli(pool, "list", "--instance", "nope"))[0] == 1
    assert (await cli(pool, "redeliver", "--instance", "nope"))[0] == 1
    assert (await cli(pool, "redeliver", "42"))[0] == 1
    err = capsys.readouterr().err
    assert "no instance named 'nope'" in err and "notification 42 not found" in err
