"""Whole-queue scenarios: a long receiver outage, a delivering process killed hard, and two
dispatchers sharing one database."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web

from poller.deliver.dispatcher import Dispatcher
from poller.store import db
from tests.deliver.helpers import (
    BOX,
    Received,
    Receiver,
    eventually,
    insert_instance,
    insert_many,
    running,
    settings,
    statuses,
)

ROOT = Path(__file__).resolve().parents[2]
# Compressed POLLER_RETRY_SCHEDULE: long enough in total (~25 s) that nothing dies in the test.
OUTAGE_SCHEDULE = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


async def all_event_ids(pool: asyncpg.Pool) -> set[str]:
    return {str(r["event_id"]) for r in await pool.fetch("SELECT event_id FROM notifications")}


@pytest.mark.slow
async def test_outage_then_recovery_delivers_everything(
    pool: asyncpg.Pool, db_dsn: str, receiver: Receiver
) -> None:
    n = 10_000
    state = {"down": True}
    delivered: collections.Counter[str] = collections.Counter()

    def respond(r: Received) -> web.Response:
        if state["down"]:
            return web.Response(status=500, text="outage")
        assert r.json["message"]["eventId"] == r.event_id == r.headers["webhook-id"]
        delivered[r.event_id] += 1
        return web.Response(status=204)

    receiver.respond = respond
    iid = await insert_instance(pool, receiver.url, key="outage-key")
    await insert_many(pool, iid, n, events_per=2)
    cfg = settings(
        retry_schedule_s=OUTAGE_SCHEDULE,
        delivery_concurrency=64,
        delivery_per_url_concurrency=64,
        delivery_poll_interval_s=0.1,
    )
    async with running(Dispatcher(cfg, pool, db_dsn, BOX)) as dispatcher:
        # Down until every notification has failed at least once.
        await eventually(lambda: _none_untried(pool), timeout=40, interval=0.2)
        failed_attempts = len(receiver.requests)
        state["down"] = False
        t0 = time.monotonic()
        await eventually(lambda: len(delivered) == n, timeout=40, interval=0.05)
        drain_s = time.monotonic() - t0
        await eventually(lambda: _count(pool, "delivered", n), timeout=5)
    assert set(delivered) == await all_event_ids(pool)
    assert dispatcher.outcomes["dead"] == 0
    dupes = sum(c - 1 for c in delivered.values())
    print(
        f"\noutage: {n} notifications, {failed_attempts} failed attempts during the outage; "
        f"after recovery all delivered in {drain_s:.2f}s ({n / drain_s:.0f}/s, including "
        f"backoff waits); duplicates: {dupes}"
    )


async def _none_untried(pool: asyncpg.Pool) -> bool:
    return await pool.fetchval("SELECT count(*) FROM notifications WHERE attempts = 0") == 0


async def _count(pool: asyncpg.Pool, status: str, n: int) -> bool:
    return (await statuses(pool)).get(status, 0) == n


async def test_a_killed_dispatcher_loses_nothing(
    pool: asyncpg.Pool, db_dsn: str, receiver: Receiver
) -> None:
    n, lease_s = 200, 1.5
    state = {"hang": True}
    delivered: collections.Counter[str] = collections.Counter()

    async def respond(r: Received) -> web.Response:
        if state["hang"]:
            await asyncio.sleep(60)  # the doomed process is mid-delivery when it dies
        delivered[r.event_id] += 1
        return web.Response()

    receiver.respond = respond
    iid = await insert_instance(pool, receiver.url)
    await insert_many(pool, iid, n)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.deliver.crash_child",
        db_dsn,
        str(lease_s),
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        await eventually(lambda: len(receiver.requests) == n, timeout=15)
        assert (
            await pool.fetchval(
                "SELECT count(*) FROM notifications WHERE locked_by LIKE 'doomed/%'"
            )
            == n
        )
        child.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        await child.wait()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    state["hang"] = False
    survivor = Dispatcher(settings(replica_id="survivor"), pool, db_dsn, BOX)
    async with running(survivor):
        await eventually(lambda: len(delivered) == n, timeout=10)
        first_redelivery = min(r.at for r in receiver.requests[n:])
        await eventually(lambda: _count(pool, "delivered", n), timeout=5)
    # Nothing was taken from the dead process before its lease ran out.
    assert first_redelivery - killed_at >= lease_s * 0.5
    assert set(delivered) == await all_event_ids(pool)
    assert (
        await pool.fetchval("SELECT count(*) FROM notifications WHERE locked_by IS NOT NULL") == 0
    )
    # The dead process never recorded an attempt: the survivor's is attempt 1.
    assert await pool.fetchval("SELECT max(attempt) FROM delivery_attempts") == 1


async def test_two_dispatchers_deliver_each_notification_once(
    db_dsn: str, receiver: Receiver
) -> None:
    n = 2000
    delivered: collections.Counter[str] = collections.Counter()

    def respond(r: Received) -> web.Response:
        delivered[r.event_id] += 1
        return web.Response()

    receiver.respond = respond
    pool_a = await db.create_pool(db_dsn, max_size=4)
    pool_b = await db.create_pool(db_dsn, max_size=4)
    try:
        iid = await insert_instance(pool_a, receiver.url, key="shared-key")
        await insert_many(pool_a, iid, n)
        a = Dispatcher(settings(replica_id="a", delivery_concurrency=32), pool_a, db_dsn, BOX)
        b = Dispatcher(settings(replica_id="b", delivery_concurrency=32), pool_b, db_dsn, BOX)
        async with running(a), running(b):
            await eventually(lambda: _count(pool_a, "delivered", n), timeout=20)
        assert set(delivered) == await all_event_ids(pool_a)
        assert set(delivered.values()) == {1} and len(receiver.requests) == n
        assert a.outcomes["delivered"] + b.outcomes["delivered"] == n
        assert a.outcomes["delivered"] > 0 and b.outcomes["delivered"] > 0
    finally:
        await pool_a.close()
        await pool_b.close()
