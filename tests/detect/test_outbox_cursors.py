"""The outbox transaction and pair leases, against the real PostgreSQL."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest

from poller.detect.diff import CREATED, DELETED, UPDATED, Event, SnapshotRow
from poller.instances import parse_instance
from poller.store import cursors, outbox
from poller.store import instances as instance_store
from poller.store.crypto import SecretBox
from poller.store.cursors import LeaseLost, PairKey

UTC = timezone.utc
T0 = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)
BODY = {"name": "one", "providerData": {"refreshToken": "r", "realmId": "1"},
        "configuration": {"oauth.api.key": "k", "oauth.api.secret": "s",
                          "event.notification.enabled": True,
                          "event.notification.callback.url": "http://x.test/h",
                          "event.poller.urls": "customers|invoices"}}
KEY = PairKey(1, "customers")


@pytest.fixture
async def instance(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        return (await instance_store.upsert(conn, parse_instance(BODY), SecretBox(None))).instance_id


def ev(oid: str, version: str, kind: str = UPDATED, seconds: int = 0) -> Event:
    return Event(oid, version, kind, T0 + timedelta(seconds=seconds),
                 {"Id": oid, "SyncToken": version, "Amount": 337.5, "Name": "Zoë"})


def adv(seconds: int = 0) -> cursors.Advance:
    return cursors.Advance(T0 + timedelta(seconds=seconds), T0, False, T0 + timedelta(minutes=15))


async def commit(pool: asyncpg.Pool, key: PairKey, token: int, events: list[Event],
                 snapshots: list[SnapshotRow] = (), per: int = 3) -> outbox.WriteStats:
    async with pool.acquire() as conn, conn.transaction():
        await cursors.lock(conn, key, token)
        return await outbox.write(conn, key, token, list(snapshots), events, adv(), per)


async def test_events_grouped_into_notifications_in_change_order(pool: asyncpg.Pool, instance: int) -> None:
    key = PairKey(instance, "customers")
    async with pool.acquire() as conn:
        cur = await cursors.acquire(conn, key, "a", 30)
    events = [ev(str(i), "0", CREATED, i) for i in range(1, 8)]
    stats = await commit(pool, key, cur.lease_token, events)
    assert (stats.events, stats.notifications, stats.by_type) == (7, 3, {CREATED: 7})
    rows = await pool.fetch("SELECT e.object_id, e.position, n.event_count, n.id AS nid "
                            "FROM events e JOIN notifications n ON n.id = e.notification_id "
                            "ORDER BY n.id, e.position")
    assert [r["object_id"] for r in rows] == [str(i) for i in range(1, 8)]
    assert [r["position"] for r in rows] == [0, 1, 2, 0, 1, 2, 0]
    assert [r["event_count"] for r in rows] == [3, 3, 3, 3, 3, 3, 1]
    event_ids = await pool.fetch("SELECT event_id FROM notifications ORDER BY id")
    assert event_ids[0]["event_id"] == outbox.event_id_for(key, events[0])
    raw = await pool.fetchval("SELECT raw::text FROM events WHERE object_id = '1'")
    assert raw == '{"Id":"1","SyncToken":"0","Amount":337.5,"Name":"Zoë"}'


async def test_duplicates_are_skipped_and_not_notified_again(pool: asyncpg.Pool, instance: int) -> None:
    key = PairKey(instance, "customers")
    async with pool.acquire() as conn:
        cur = await cursors.acquire(conn, key, "a", 30)
    await commit(pool, key, cur.lease_token, [ev("1", "0", CREATED), ev("2", "0", CREATED)])
    stats = await commit(pool, key, cur.lease_token,
                         [ev("1", "0", CREATED), ev("2", "1", UPDATED, 5), ev("2", "deleted", DELETED, 9)])
    assert (stats.events, stats.duplicates, stats.notifications) == (2, 1, 1)
    assert await pool.fetchval("SELECT count(*) FROM events") == 4
    assert await pool.fetchval("SELECT count(*) FROM notifications") == 2
    assert await pool.fetchval("SELECT count(*) FROM events WHERE notification_id IS NULL") == 0


async def test_snapshot_upsert_and_load(pool: asyncpg.Pool, instance: int) -> None:
    key = PairKey(instance, "customers")
    async with pool.acquire() as conn:
        cur = await cursors.acquire(conn, key, "a", 30)
    rows = [SnapshotRow("1", "0", T0, True), SnapshotRow("2", None, T0, None, True)]
    await commit(pool, key, cur.lease_token, [], rows)
    await commit(pool, key, cur.lease_token, [], [SnapshotRow("1", "4", T0 + timedelta(seconds=3), False)])
    async with pool.acquire() as conn:
        some = await outbox.load_snapshots(conn, key, ["1", "3"])
        every = await outbox.load_snapshots(conn, key, None)
        none = await outbox.load_snapshots(conn, key, [])
    assert some == {"1": SnapshotRow("1", "4", T0 + timedelta(seconds=3), False, False)}
    assert set(every) == {"1", "2"} and every["2"].deleted and none == {}


async def test_watermark_written_with_fencing_token(pool: asyncpg.Pool, instance: int) -> None:
    key = PairKey(instance, "customers")
    async with pool.acquire() as conn:
        cur = await cursors.acquire(conn, key, "a", 30)
        await commit(pool, key, cur.lease_token, [ev("1", "0")])
        row = await conn.fetchrow("SELECT watermark, baseline, initialized, polls FROM pair_cursors "
                                  "WHERE instance_id = $1 AND resource = 'customers'", instance)
    assert (row["watermark"], row["baseline"], row["initialized"], row["polls"]) == (T0, T0, True, 1)
    # A stale token: the lock refuses, and so does the final fenced UPDATE on its own.
    with pytest.raises(LeaseLost):
        await commit(pool, key, cur.lease_token + 1, [ev("9", "0")])
    async with pool.acquire() as conn:
        with pytest.raises(LeaseLost):
            async with conn.transaction():
                await outbox.write(conn, key, cur.lease_token + 1, [], [ev("9", "0")], adv(60), 3)
    assert await pool.fetchval("SELECT count(*) FROM events WHERE object_id = '9'") == 0


async def test_commit_wakes_the_dispatcher_once(pool: asyncpg.Pool, instance: int, db_dsn: str) -> None:
    key = PairKey(instance, "customers")
    listener = await asyncpg.connect(db_dsn)
    got: list[str] = []
    await listener.add_listener("qbo_poller_outbox", lambda *args: got.append(args[2]))
    try:
        async with pool.acquire() as conn:
            cur = await cursors.acquire(conn, key, "a", 30)
        await commit(pool, key, cur.lease_token, [ev(str(i), "0") for i in range(7)])
        await commit(pool, key, cur.lease_token, [])          # nothing new: no wake-up
        await asyncio.sleep(0.2)
    finally:
        await listener.close()
    assert got == ["qbo_poller_outbox"]


async def test_leases_renew_take_over_after_expiry_and_release(pool: asyncpg.Pool, instance: int) -> None:
    key = PairKey(instance, "customers")
    async with pool.acquire() as conn:
        a1 = await cursors.acquire(conn, key, "a", 30)
        a2 = await cursors.acquire(conn, key, "a", 30)       # renewal keeps the token
        assert a1 is not None and a2 is not None and a2.lease_token == a1.lease_token
        assert await cursors.acquire(conn, key, "b", 30) is None
        assert 29 < await cursors.lease_expires_in(conn, key) <= 30
        await conn.execute("UPDATE pair_cursors SET lease_expires_at = now() - interval '1 s' "
                           "WHERE instance_id = $1 AND resource = 'customers'", instance)
        b = await cursors.acquire(conn, key, "b", 30)         # takeover bumps the token
        assert b is not None and b.lease_token == a1.lease_token + 1
        with pytest.raises(LeaseLost):                        # a's late commit is fenced out
            async with conn.transaction():
                await cursors.lock(conn, key, a1.lease_token)
        await cursors.release(conn, key, "b", b.lease_token)
        a3 = await cursors.acquire(conn, key, "a", 30)
        assert a3 is not None and a3.lease_token == b.lease_token + 1
        other = await cursors.acquire(conn, PairKey(instance, "invoices"), "b", 30)
        assert other is not None                              # leases are per pair


async def test_record_error_and_pollable_instances(pool: asyncpg.Pool, instance: int) -> None:
    key = PairKey(instance, "customers")
    async with pool.acquire() as conn:
        cur = await cursors.acquire(conn, key, "a", 30)
        n = await cursors.record_error(conn, key, cur.lease_token, "ServerError: boom", T0)
        assert n == 1
        listed = await cursors.pollable_instances(conn)
        assert [(i.id, i.resources) for i in listed] == [(instance, ("customers", "invoices"))]
        assert await cursors.mark_needs_reconnect(conn, instance, "invalid_grant")
        assert await cursors.pollable_instances(conn) == []
