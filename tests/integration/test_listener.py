"""`poller.store.listener.Listener`: LISTEN on a dedicated connection, kept alive."""

from __future__ import annotations

import asyncio
from functools import partial

import asyncpg

from poller.store import db
from poller.store.listener import Listener

CHANNEL = "qbo_poller_test"


async def test_listens_reconnects_and_reports_what_may_have_been_missed(
    pool: asyncpg.Pool, db_dsn: str
) -> None:
    payloads: asyncio.Queue[str] = asyncio.Queue()
    hooks: list[bool] = []

    def handler(payload: str) -> None:
        if payload == "boom":
            raise RuntimeError("a handler's bug")  # logged; the LISTEN goes on
        payloads.put_nowait(payload)

    async def on_listening(missed: bool) -> None:
        hooks.append(missed)

    listener = Listener(
        partial(db.connect, db_dsn), {CHANNEL: handler}, name="test", on_listening=on_listening
    )
    stop = asyncio.Event()
    task = asyncio.create_task(listener.run(stop))
    try:
        await asyncio.wait_for(listener.listening.wait(), 5)
        await pool.execute("SELECT pg_notify($1, 'boom'), pg_notify($1, 'one')", CHANNEL)
        assert await asyncio.wait_for(payloads.get(), 2) == "one"
        await pool.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        )
        while listener.connections < 2:
            await asyncio.sleep(0.02)
        await asyncio.wait_for(listener.listening.wait(), 5)
        await pool.execute("SELECT pg_notify($1, 'two')", CHANNEL)
        assert await asyncio.wait_for(payloads.get(), 2) == "two"
        assert hooks == [False, True]
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert not listener.listening.is_set()


async def test_an_unreachable_server_is_retried_until_stop() -> None:
    attempts = 0

    async def refused() -> asyncpg.Connection:
        nonlocal attempts
        attempts += 1
        raise ConnectionRefusedError("nobody listens on that port")

    listener = Listener(refused, {CHANNEL: print}, name="test", retry_max_s=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(listener.run(stop))
    await asyncio.sleep(1.2)  # 0.5 s, then 0.05 s apart
    stop.set()
    await asyncio.wait_for(task, 2)
    assert attempts >= 5
