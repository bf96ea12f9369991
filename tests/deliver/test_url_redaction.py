"""Callback URLs carry credentials (`user:password@`) and tokens (`?token=`): the log lines of
real deliveries and `deliveries list` show them as `http://***@host/path?***` (issue 16)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from poller import logs
from poller.deliver.dispatcher import Dispatcher
from tests.deliver.helpers import (
    BOX,
    Receiver,
    eventually,
    insert_instance,
    insert_many,
    running,
    settings,
)
from tests.deliver.test_gone import cli, count

PASSWORD, TOKEN = "s3cr3t-pass", "tok-abc123"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


@contextlib.contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """The daemon's real log pipeline (JSON lines, info and up) into a buffer; the conftest
    fixture restores structlog afterwards, this restores the stdlib root logger."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    out = io.StringIO()
    logs.configure("info", "json", stream=out)
    try:
        yield out
    finally:
        root.handlers[:], root.level = handlers, level


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def with_credentials(receiver: Receiver, path: str) -> str:
    return f"http://alice:{PASSWORD}@127.0.0.1:{receiver.port}{path}?token={TOKEN}"


async def test_a_gone_url_is_logged_and_listed_without_credentials_or_query(
    pool: asyncpg.Pool, db_dsn: str, receiver: Receiver
) -> None:
    receiver.respond = lambda _r: web.Response(status=410)
    url = with_credentials(receiver, "/gone")
    shown = f"http://***@127.0.0.1:{receiver.port}/gone?***"
    iid = await insert_instance(pool, url, name="acme")
    await insert_many(pool, iid, 1)
    with captured_logs() as out:
        async with running(Dispatcher(settings(), pool, db_dsn, BOX)):
            await eventually(lambda: count(pool, "held", 1))
            await insert_many(pool, iid, 1)  # held at claim time: logged with its URL
            await eventually(lambda: count(pool, "held", 2))
            await eventually(
                lambda: any(r["event"] == "delivery_held_url_gone" for r in lines(out))
            )
    assert receiver.requests[0].headers["Authorization"].startswith("Basic ")  # it was used
    text = out.getvalue()
    assert PASSWORD not in text and TOKEN not in text
    by_event = {r["event"]: r for r in lines(out)}
    assert by_event["callback_url_gone"]["url"] == shown
    assert by_event["delivery_held_url_gone"]["url"] == shown
    code, listed = await cli(pool, "list")
    assert code == 0 and PASSWORD not in listed and TOKEN not in listed
    rows = listed.splitlines()
    assert all(row.endswith(f"410 Gone from {shown}") for row in rows[1:3]), listed
    assert rows[4].startswith(f"  {shown}  gone since ")
    code, redelivered = await cli(pool, "redeliver", "--instance", "acme")
    assert code == 0 and redelivered.splitlines()[1].startswith(f"reactivated gone URL(s) {shown}:")


async def test_error_texts_that_quote_the_url_are_redacted_where_recorded(
    pool: asyncpg.Pool, db_dsn: str, receiver: Receiver
) -> None:
    """aiohttp's InvalidUrlClientError is the whole URL; a receiver's redirect names another.
    Both reach the log line, the stored attempt and `deliveries list` without secrets."""
    bad_port = f"http://alice:{PASSWORD}@127.0.0.1:99999/hook?token={TOKEN}"
    receiver.respond = lambda _r: web.Response(
        status=302, headers={"Location": f"https://bob:{PASSWORD}@elsewhere.example/x?sig={TOKEN}"}
    )
    invalid = await insert_instance(pool, bad_port, name="invalid")
    redirected = await insert_instance(pool, with_credentials(receiver, "/hook"), name="moved")
    await insert_many(pool, invalid, 1)
    await insert_many(pool, redirected, 1)
    with captured_logs() as out:
        async with running(Dispatcher(settings(retry_schedule_s=(30.0,)), pool, db_dsn, BOX)):
            await eventually(lambda: sum(r["event"] == "delivery_retry" for r in lines(out)) >= 2)
    text = out.getvalue()
    assert PASSWORD not in text and TOKEN not in text
    errors = sorted(r["error"] for r in lines(out) if r["event"] == "delivery_retry")
    assert errors == [
        "HTTP 302: redirects are not followed (Location: https://***@elsewhere.example/x?***)",
        "InvalidUrlClientError: http://***@127.0.0.1:99999/hook?***",
    ]
    stored = await pool.fetchval("SELECT string_agg(error, ' ') FROM delivery_attempts")
    assert PASSWORD not in stored and TOKEN not in stored
    code, listed = await cli(pool, "list")
    assert code == 0 and PASSWORD not in listed and TOKEN not in listed
    assert "InvalidUrlClientError: http://***@127.0.0.1:99999/hook?***" in listed
