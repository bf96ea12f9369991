"""The outbox commit and instance leases, against the real PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from poller.instances import parse_instance
from poller.records import Event, EventType, SnapshotRow
from poller.store import cursors, instance_rows, outbox
from poller.store.crypto import SecretBox
from poller.store.cursors import Advance, LeaseLost, LeaseRef, Settle
from poller.store.outbox import PairWrite

CREATED, UPDATED, DELETED = EventType.CREATED, EventType.UPDATED, EventType.DELETED
UTC = UTC
T0 = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)
DUE = T0 + timedelta(minutes=15)
BODY = {
    "name": "one",
    "providerData": {"refreshToken": "r", "realmId": "1"},
    "configuration": {
        "oauth.api.key": "k",
        "oauth.api.secret": "s",
        "event.notification.enabled": True,
        "event.notification.callback.url": "http://x.test/h",
        "event.poller.urls": "customers|invoices",
    },
}

# The lease's owner went silent (no heartbeat, no statement under the lease) an hour ago.
LAPSED = """
WITH lease AS (
    UPDATE instance_leases SET renewed_at = now() - interval '1 h' WHERE instance_id = $1
    RETURNING owner
)
UPDATE replicas SET heartbeat_at = now() - interval '1 h' WHERE id IN (SELECT owner FROM lease)
"""


@pytest.fixture
async def instance(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        return (await instance_rows.upsert(conn, parse_instance(BODY), SecretBox(None))).instance_id


def ev(oid: str, version: str, kind: str = UPDATED, seconds: int = 0) -> Event:
    return Event(
        oid,
        version,
        kind,
        T0 + timedelta(seconds=seconds),
        {"Id": oid, "SyncToken": version, "Amount": 337.5, "Name": "Zoë"},
    )


def ok(resource: str, seconds: int = 0) -> Settle:
    return Settle(resource, DUE, Advance(T0 + timedelta(seconds=seconds), T0, False))


async def take(pool: asyncpg.Pool, instance: int, owner: str = "a") -> LeaseRef:
    async with pool.acquire() as conn:
        lease = await cursors.acquire(conn, instance, owner, 30)
    assert lease.token is not None
    return LeaseRef(instance, owner, lease.token)


async def commit(
    pool: asyncpg.Pool, lease: LeaseRef, writes: list[PairWrite], per: int = 3
) -> dict[str, outbox.WriteStats]:
    async with pool.acquire() as conn:
        stats, _ = await outbox.commit(conn, lease, writes, [ok(w.resource) for w in writes], per)
    return stats


async def test_events_grouped_into_notifications_in_change_order(
    pool: asyncpg.Pool, instance: int
) -> None:
    lease = await take(pool, instance)
    events = [ev(str(i), "0", CREATED, i) for i in range(1, 8)]
    stats = await commit(pool, lease, [PairWrite("customers", [], events)])
    s = stats["customers"]
    assert (s.events, s.notifications, s.by_type) == (7, 3, {CREATED: 7})
    rows = await pool.fetch(
        "SELECT e.object_id, e.position, n.event_count, n.id AS nid "
        "FROM events e JOIN notifications n ON n.id = e.notification_id "
        "ORDER BY n.id, e.position"
    )
    assert [r["object_id"] for r in rows] == [str(i) for i in range(1, 8)]
    assert [r["position"] for r in rows] == [0, 1, 2, 0, 1, 2, 0]
    assert [r["event_count"] for r in rows] == [3, 3, 3, 3, 3, 3, 1]
    # Each notification's eventId is a new UUIDv7 (DESIGN §6), in change order.
    event_ids = [
        r["event_id"] for r in await pool.fetch("SELECT event_id FROM notifications ORDER BY id")
    ]
    assert len(set(event_ids)) == 3 and event_ids == sorted(event_ids)
    assert {event_id.version for event_id in event_ids} == {7}
    raw = await pool.fetchval("SELECT raw::text FROM events WHERE object_id = '1'")
    assert raw == '{"Id":"1","SyncToken":"0","Amount":337.5,"Name":"Zoë"}'


async def test_several_pairs_in_one_commit_keep_their_own_notifications(
    pool: asyncpg.Pool, instance: int
) -> None:
    lease = await take(pool, instance)
    cust = [ev(str(i), "0", CREATED, i) for i in range(1, 5)]
    inv = [ev(str(i), "3", UPDATED, i) for i in range(1, 3)]
    snaps = [SnapshotRow("1", "0", T0, True)]
    async with pool.acquire() as conn:
        stats, written = await outbox.commit(
            conn,
            lease,
            [PairWrite("customers", snaps, cust), PairWrite("invoices", [], inv)],
            [ok("customers", 5), ok("invoices", 7)],
            3,
        )
    assert {r: (s.events, s.notifications) for r, s in stats.items()} == {
        "customers": (4, 2),
        "invoices": (2, 1),
    }
    assert sorted(written) == ["customers", "invoices"]
    assert {r: c.watermark for r, c in (await read_cursors(pool, instance)).items()} == {
        "customers": T0 + timedelta(seconds=5),
        "invoices": T0 + timedelta(seconds=7),
    }
    rows = await pool.fetch(
        "SELECT n.resource, n.event_count, e.resource AS er, e.object_id "
        "FROM notifications n JOIN events e ON e.notification_id = n.id "
        "ORDER BY n.id, e.position"
    )
    assert all(r["resource"] == r["er"] for r in rows)
    assert [(r["resource"], r["object_id"]) for r in rows] == [
        ("customers", "1"),
        ("customers", "2"),
        ("customers", "3"),
        ("customers", "4"),
        ("invoices", "1"),
        ("invoices", "2"),
    ]
    assert (
        await pool.fetchval("SELECT count(*) FROM object_snapshots WHERE resource = 'customers'")
        == 1
    )


async def test_duplicates_are_skipped_and_not_notified_again(
    pool: asyncpg.Pool, instance: int
) -> None:
    lease = await take(pool, instance)
    await commit(
        pool, lease, [PairWrite("customers", [], [ev("1", "0", CREATED), ev("2", "0", CREATED)])]
    )
    stats = await commit(
        pool,
        lease,
        [
            PairWrite(
                "customers",
                [],
                [ev("1", "0", CREATED), ev("2", "1", UPDATED, 5), ev("2", "deleted", DELETED, 9)],
            )
        ],
    )
    s = stats["customers"]
    assert (s.events, s.duplicates, s.notifications) == (2, 1, 1)
    assert await pool.fetchval("SELECT count(*) FROM events") == 4
    assert await pool.fetchval("SELECT count(*) FROM notifications") == 2
    assert await pool.fetchval("SELECT count(*) FROM events WHERE notification_id IS NULL") == 0


async def test_snapshot_upsert_and_load(pool: asyncpg.Pool, instance: int) -> None:
    lease = await take(pool, instance)
    rows = [SnapshotRow("1", "0", T0, True), SnapshotRow("2", None, T0, None, True)]
    await commit(
        pool,
        lease,
        [PairWrite("customers", rows, []), PairWrite("invoices", [SnapshotRow("1", "7", T0)], [])],
    )
    await commit(
        pool,
        lease,
        [PairWrite("customers", [SnapshotRow("1", "4", T0 + timedelta(seconds=3), False)], [])],
    )
    async with pool.acquire() as conn:
        got = await outbox.load_snapshots(
            conn, instance, {"customers": ["1", "3"], "invoices": None}
        )
        every = await outbox.load_snapshots(conn, instance, {"customers": None})
        none = await outbox.load_snapshots(conn, instance, {"customers": []})
    assert got == {
        "customers": {"1": SnapshotRow("1", "4", T0 + timedelta(seconds=3), False, False)},
        "invoices": {"1": SnapshotRow("1", "7", T0, None, False)},
    }
    assert set(every["customers"]) == {"1", "2"} and every["customers"]["2"].deleted
    assert none == {"customers": {}}


async def test_watermark_written_with_fencing_token(pool: asyncpg.Pool, instance: int) -> None:
    lease = await take(pool, instance)
    await commit(pool, lease, [PairWrite("customers", [], [ev("1", "0")])])
    row = await pool.fetchrow(
        "SELECT watermark, baseline, initialized, polls FROM pair_cursors "
        "WHERE instance_id = $1 AND resource = 'customers'",
        instance,
    )
    assert (row["watermark"], row["baseline"], row["initialized"], row["polls"]) == (
        T0,
        T0,
        True,
        1,
    )
    # A stale token: the fenced settle refuses, and takes the whole transaction with it.
    stale = LeaseRef(instance, "a", lease.token + 1)
    with pytest.raises(LeaseLost):
        await commit(
            pool, stale, [PairWrite("customers", [SnapshotRow("9", "0", T0)], [ev("9", "0")])]
        )
    async with pool.acquire() as conn:
        with pytest.raises(LeaseLost):  # and alone, with nothing else to write
            await outbox.commit(
                conn, stale, [PairWrite("customers", [], [])], [ok("customers", 60)], 3
            )
    assert await pool.fetchval("SELECT count(*) FROM events WHERE object_id = '9'") == 0
    assert await pool.fetchval("SELECT count(*) FROM object_snapshots WHERE object_id = '9'") == 0
    assert await pool.fetchval("SELECT count(*) FROM notifications") == 1
    assert (
        await pool.fetchval(
            "SELECT polls FROM pair_cursors WHERE instance_id = $1 AND resource = 'customers'",
            instance,
        )
        == 1
    )


async def test_commit_wakes_the_dispatcher_once(
    pool: asyncpg.Pool, instance: int, db_dsn: str
) -> None:
    listener = await asyncpg.connect(db_dsn)
    got: list[str] = []
    await listener.add_listener("qbo_poller_outbox", lambda *args: got.append(args[2]))
    try:
        lease = await take(pool, instance)
        await commit(
            pool,
            lease,
            [
                PairWrite("customers", [], [ev(str(i), "0") for i in range(7)]),
                PairWrite("invoices", [], [ev("1", "0")]),
            ],
        )
        await commit(pool, lease, [PairWrite("customers", [], [ev("1", "0")])])  # nothing new
        await asyncio.sleep(0.2)
    finally:
        await listener.close()
    assert got == ["qbo_poller_outbox"]


async def test_instance_lease_renew_take_over_after_expiry_and_release(
    pool: asyncpg.Pool, instance: int
) -> None:
    async with pool.acquire() as conn:
        a1 = await cursors.acquire(conn, instance, "a", 30)
        a2 = await cursors.acquire(conn, instance, "a", 30)  # renewal keeps the token
        assert a1.token is not None and a2.token == a1.token
        assert set(a1.cursors) == {"customers", "invoices"}  # every pair's cursor with it
        b0 = await cursors.acquire(conn, instance, "b", 30)  # held: not taken, no token
        assert b0.token is None and b0.holder == "a" and 29 < b0.held_for_s <= 30
        await conn.execute(
            LAPSED,
            instance,
        )
        b = await cursors.acquire(conn, instance, "b", 30)  # takeover bumps the token
        assert b.token == a1.token + 1
        with pytest.raises(LeaseLost):  # a's late commit is fenced out
            await cursors.settle(conn, LeaseRef(instance, "a", a1.token), [ok("customers")])
        assert await cursors.release(conn, instance, "b")
        with pytest.raises(LeaseLost):  # released: b's too
            await cursors.settle(conn, LeaseRef(instance, "b", b.token), [ok("customers")])
        a3 = await cursors.acquire(conn, instance, "a", 30)
        assert a3.token == b.token + 1
        # The lease lapsed while still ours and nobody took it: taken again, with a new token.
        await conn.execute(
            LAPSED,
            instance,
        )
        a4 = await cursors.acquire(conn, instance, "a", 30)
        assert a4.token == a3.token + 1
        assert await conn.fetchval("SELECT count(*) FROM instance_leases") == 1


async def test_concurrent_takers_one_wins(pool: asyncpg.Pool, instance: int, db_dsn: str) -> None:
    conns = [await asyncpg.connect(db_dsn) for _ in range(6)]
    try:
        for _ in range(5):
            await pool.execute("UPDATE instance_leases SET renewed_at = now() - interval '1 h'")
            leases = await asyncio.gather(
                *(cursors.acquire(c, instance, f"r{n}", 30) for n, c in enumerate(conns))
            )
            winners = [lease for lease in leases if lease.token is not None]
            assert len(winners) == 1
    finally:
        for c in conns:
            await c.close()


async def read_cursors(pool: asyncpg.Pool, instance: int) -> dict[str, cursors.Cursor]:
    async with pool.acquire() as conn:
        return (await cursors.acquire(conn, instance, "a", 30)).cursors


def same_cursor(mine: cursors.Cursor, stored: cursors.Cursor) -> bool:
    """What `cursors.written` computed is what the database holds (the age of a listing
    within the second the test takes)."""
    ages = [age for age in (mine.reconciled_age_s, stored.reconciled_age_s) if age is not None]
    if len(ages) == 1 or (len(ages) == 2 and abs(ages[0] - ages[1]) >= 1.0):
        return False
    without_age = dataclasses.replace(mine, reconciled_age_s=None)
    return without_age == dataclasses.replace(stored, reconciled_age_s=None)


async def test_settle_records_errors_beside_successes(pool: asyncpg.Pool, instance: int) -> None:
    lease = await take(pool, instance)
    first = [ok("customers"), Settle("invoices", DUE, error="ServerError: boom")]
    second = [
        Settle(
            "customers", DUE, Advance(T0 + timedelta(seconds=9), T0 + timedelta(seconds=3), True)
        ),
        Settle("invoices", DUE, error="ServerError: boom"),
    ]
    before = await read_cursors(pool, instance)
    async with pool.acquire() as conn:
        written = await cursors.settle(conn, lease, first)
    after_first = await read_cursors(pool, instance)
    async with pool.acquire() as conn:
        again = await cursors.settle(conn, lease, second)
    after_second = await read_cursors(pool, instance)
    assert sorted(written) == sorted(again) == ["customers", "invoices"]
    assert after_first["customers"].initialized and after_first["customers"].consecutive_errors == 0
    assert not after_first["invoices"].initialized and after_first["invoices"].watermark is None
    assert after_second["invoices"].consecutive_errors == 2
    # The cycle keeps its cursors without reading them back: `written` must say what the
    # statement wrote, for a success, a failure, a second success (the baseline stays, a
    # listing restarts the age) and a second failure.
    for settle in first:
        old = before[settle.resource]
        mine = cursors.written(old, settle, old.reconciled_age_s)
        assert same_cursor(mine, after_first[settle.resource]), (mine, after_first)
    for settle in second:
        old = after_first[settle.resource]
        mine = cursors.written(old, settle, old.reconciled_age_s)
        assert same_cursor(mine, after_second[settle.resource]), (mine, after_second)
    assert after_second["customers"].baseline == T0 and after_second["customers"].watermark == (
        T0 + timedelta(seconds=9)
    )
    row = await pool.fetchrow(
        "SELECT last_error, polls, next_due_at FROM pair_cursors "
        "WHERE instance_id = $1 AND resource = 'invoices'",
        instance,
    )
    assert (row["last_error"], row["polls"], row["next_due_at"]) == ("ServerError: boom", 0, DUE)
    async with pool.acquire() as conn:
        assert await cursors.schedule(conn, instance) == {"customers": DUE, "invoices": DUE}


async def test_pollable_instances_and_needs_reconnect(pool: asyncpg.Pool, instance: int) -> None:
    async with pool.acquire() as conn:
        listed = await cursors.pollable_instances(conn)
        assert [(i.id, i.resources) for i in listed] == [(instance, ("customers", "invoices"))]
        assert await instance_rows.mark_needs_reconnect(conn, instance, "invalid_grant")
        assert await cursors.pollable_instances(conn) == []
