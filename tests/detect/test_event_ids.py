"""Notification eventIds (DESIGN §6, issue 10 finding 6): globally unique, assigned once when
the notification is written, stable across retries; a replayed commit makes no new notification.

Against the real PostgreSQL, the emulator and a receiver."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp import web

from poller.deliver.dispatcher import Dispatcher
from poller.records import EventType
from poller.store import outbox
from poller.store.db import create_pool
from poller.store.event_ids import Uuid7Generator, unix_ms
from poller.store.outbox import PairWrite
from tests.conftest import _admin, with_database
from tests.deliver.helpers import BOX, Receiver, eventually, insert_instance, running, settings
from tests.detect.harness import Env, add_instance
from tests.detect.test_outbox_cursors import ev

CREATED = EventType.CREATED


@pytest.fixture
async def other_pool(pg_server_dsn: str, template_db: str) -> AsyncIterator[asyncpg.Pool]:
    """A second, freshly migrated database: another deployment, or this one rebuilt."""
    name = f"qbo_t_{uuid.uuid4().hex[:12]}"
    await _admin(pg_server_dsn, f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    pool = await create_pool(with_database(pg_server_dsn, name), max_size=4)
    try:
        yield pool
    finally:
        await pool.close()
        await _admin(pg_server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _backfill_event_ids(env: Env, pool: asyncpg.Pool, realm: str) -> list[uuid.UUID]:
    """One deployment (database `pool`) registers the company with backfill and polls once."""
    iid = await add_instance(pool, env.emu, realm, resources=["customers"], initial="backfill")
    assert iid == 1  # both deployments number their instance alike: the old ids collided
    dsn_env = Env(env.emu, pool, env.dsn)
    async with dsn_env.driver(iid) as driver:
        await driver.cycle()
    rows = await pool.fetch("SELECT event_id FROM notifications ORDER BY id")
    return [row["event_id"] for row in rows]


async def test_two_deployments_of_identical_data_never_share_an_event_id(
    env: Env, other_pool: asyncpg.Pool
) -> None:
    realm = env.emu.add_realm(seed=3, per_entity=4)
    first = await _backfill_event_ids(env, env.pool, realm)
    second = await _backfill_event_ids(env, other_pool, realm)
    # Identical objects, versions, instance ids and resources in both databases...
    events_of = "SELECT object_id, version FROM events ORDER BY id"
    assert [tuple(r) for r in await env.pool.fetch(events_of)] == [
        tuple(r) for r in await other_pool.fetch(events_of)
    ]
    assert len(first) == len(second) >= 1
    # ...and still no eventId in common: they are not derived from local ids.
    assert not set(first) & set(second)
    assert all(event_id.version == 7 for event_id in first + second)


async def test_event_ids_are_time_ordered_uuid7_in_change_order(
    pool: asyncpg.Pool,
) -> None:
    iid = await insert_instance(pool, "http://127.0.0.1:9/hook")
    events = [ev(str(i), "0", CREATED, i) for i in range(1, 8)]
    async with pool.acquire() as conn, conn.transaction():
        await outbox.write(conn, iid, [PairWrite("invoices", [], events)], 2)
    event_ids = [
        r["event_id"] for r in await pool.fetch("SELECT event_id FROM notifications ORDER BY id")
    ]
    assert len(event_ids) == 4 and len(set(event_ids)) == 4
    assert event_ids == sorted(event_ids)  # UUIDv7 sorts by creation time
    assert {event_id.version for event_id in event_ids} == {7}


async def test_replayed_commits_make_no_new_notification(pool: asyncpg.Pool) -> None:
    """A crash after COMMIT (the poll is replayed) and two replicas writing the same poll at
    once: the events' object-version key, not the eventId, keeps it to one notification."""
    iid = await insert_instance(pool, "http://127.0.0.1:9/hook")
    events = [ev(str(i), "0", CREATED, i) for i in range(1, 6)]
    writes = [PairWrite("invoices", [], events)]

    async def replica() -> outbox.WriteStats:
        async with pool.acquire() as conn, conn.transaction():
            stats = await outbox.write(conn, iid, writes, 2)
            await asyncio.sleep(0.05)  # both transactions are open at once
        return stats["invoices"]

    racing = await asyncio.gather(replica(), replica())
    assert sorted((s.events, s.notifications) for s in racing) == [(0, 0), (5, 3)]
    replay = await replica()  # the same poll again, after both committed
    assert (replay.events, replay.duplicates, replay.notifications) == (0, 5, 0)
    assert await pool.fetchval("SELECT count(*) FROM notifications") == 3
    assert await pool.fetchval("SELECT count(*) FROM events WHERE notification_id IS NULL") == 0
    # A replay that carries one new version makes one notification, for that event only.
    more = [*events, ev("1", "1", EventType.UPDATED, 9)]
    async with pool.acquire() as conn, conn.transaction():
        stats = await outbox.write(conn, iid, [PairWrite("invoices", [], more)], 2)
    assert (stats["invoices"].events, stats["invoices"].notifications) == (1, 1)
    last = await pool.fetchrow(
        "SELECT n.event_count, array_agg(e.version) AS versions FROM notifications n "
        "JOIN events e ON e.notification_id = n.id GROUP BY n.id ORDER BY n.id DESC LIMIT 1"
    )
    assert (last["event_count"], last["versions"]) == (1, ["1"])


async def test_a_retried_delivery_keeps_its_event_id(pool: asyncpg.Pool, db_dsn: str) -> None:
    receiver = await Receiver().start()
    try:
        receiver.respond = lambda _r: web.Response(
            status=503 if len(receiver.requests) < 3 else 204
        )
        iid = await insert_instance(pool, receiver.url)
        async with pool.acquire() as conn, conn.transaction():
            await outbox.write(conn, iid, [PairWrite("invoices", [], [ev("7", "0", CREATED)])], 5)
        stored = await pool.fetchval("SELECT event_id FROM notifications")
        dispatcher = Dispatcher(settings(retry_schedule_s=(0.05, 0.05, 0.05)), pool, db_dsn, BOX)
        async with running(dispatcher):
            await eventually(
                lambda: _delivered(pool),
            )
    finally:
        await receiver.stop()
    assert len(receiver.requests) == 3
    assert {r.headers["webhook-id"] for r in receiver.requests} == {str(stored)}
    assert {r.json["message"]["eventId"] for r in receiver.requests} == {str(stored)}
    assert await pool.fetchval("SELECT event_id FROM notifications") == stored


async def _delivered(pool: asyncpg.Pool) -> bool:
    return bool(await pool.fetchval("SELECT status = 'delivered' FROM notifications"))


def test_uuid7_layout_and_order_when_the_clock_repeats_or_steps_back() -> None:
    at = 1_767_268_800_123_456_789  # 2026-01-01T12:00:00.123456789Z
    readings = iter([at, at, at - 5_000_000_000])  # then the clock steps back 5 s
    generator = Uuid7Generator(lambda: next(readings), lambda n: b"\xff" * n)
    first, same, earlier = generator.new(), generator.new(), generator.new()
    assert (first.version, first.variant) == (7, uuid.RFC_4122)
    assert unix_ms(first) == at // 1_000_000
    assert (first.int >> 64) & 0xFFF == 123_456_789 % 1_000_000 * 4096 // 1_000_000
    assert first.int & ((1 << 62) - 1) == (1 << 62) - 1  # 62 random bits
    assert first < same < earlier  # strictly increasing, never moved back
    assert unix_ms(earlier) == unix_ms(first)
