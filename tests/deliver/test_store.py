"""The outbox queries against a real PostgreSQL: claims as leases, fenced outcomes, hold,
redelivery, pruning and counts."""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg

from poller.store import notifications as store
from tests.deliver.helpers import insert_instance, insert_many, statuses

URL = "http://127.0.0.1:9/hook"


def attempt(outcome: str, retry_in_s: float = 0.0) -> store.Attempt:
    return store.Attempt(outcome=outcome, started_at=datetime.now(UTC), url=URL, duration_ms=3,
                         status_code=500 if outcome != "delivered" else 200,
                         error="HTTP 500\x00" if outcome != "delivered" else None,
                         response_body="nope\x00", retry_in_s=retry_in_s)


async def test_claim_is_a_lease_that_others_skip_until_it_expires(pool: asyncpg.Pool) -> None:
    iid = await insert_instance(pool, URL)
    await insert_many(pool, iid, 5)
    first = await store.claim(pool, 3, "a", lease_s=0.3)
    second = await store.claim(pool, 10, "b", lease_s=30)
    assert len(first) == 3 and len(second) == 2
    assert not {c.id for c in first} & {c.id for c in second}
    assert first[0].instance_name == "API Instance" and first[0].tags == ("Docs",)
    assert first[0].body is None and first[0].attempts == 0
    assert await store.claim(pool, 10, "c", lease_s=30) == []
    await asyncio.sleep(0.4)   # a's lease runs out: its rows come back, b's do not
    assert sorted(c.id for c in await store.claim(pool, 10, "c", lease_s=30)) == \
        sorted(c.id for c in first)


async def test_concurrent_claims_never_overlap(pool: asyncpg.Pool) -> None:
    iid = await insert_instance(pool, URL)
    await insert_many(pool, iid, 300)
    batches = await asyncio.gather(*(store.claim(pool, 40, f"w{i}", 30) for i in range(8)))
    ids = [c.id for b in batches for c in b]
    assert len(ids) == len(set(ids)) == 300


async def test_outcomes_are_fenced_by_the_claim(pool: asyncpg.Pool) -> None:
    iid = await insert_instance(pool, URL)
    await insert_many(pool, iid, 1)
    [c] = await store.claim(pool, 1, "old", lease_s=0.05)
    await asyncio.sleep(0.1)
    [again] = await store.claim(pool, 1, "new", lease_s=30)
    assert not await store.record(pool, c, "old", attempt("delivered"))   # lost its lease
    assert await store.record(pool, again, "new", attempt("retry", 60))
    row = await pool.fetchrow("SELECT * FROM notifications")
    assert row["status"] == "pending" and row["attempts"] == 1 and row["locked_by"] is None
    assert row["last_error"] == "HTTP 500\ufffd" and row["target_url"] == URL
    assert 55 < (row["next_attempt_at"] - datetime.now(UTC)).total_seconds() <= 60
    log = await pool.fetch("SELECT * FROM delivery_attempts")
    assert [(r["attempt"], r["outcome"], r["status_code"]) for r in log] == [(1, "retry", 500)]
    assert log[0]["response_body"] == "nope\ufffd"


async def test_delivered_and_dead_finish(pool: asyncpg.Pool) -> None:
    iid = await insert_instance(pool, URL)
    await insert_many(pool, iid, 2)
    a, b = await store.claim(pool, 2, "me", 30)
    assert await store.record(pool, a, "me", attempt("delivered"))
    assert await store.record(pool, b, "me", attempt("dead"))
    rows = await pool.fetch("SELECT status, finished_at FROM notifications ORDER BY id")
    assert [r["status"] for r in rows] == ["delivered", "dead"]
    assert all(r["finished_at"] is not None for r in rows)


async def test_body_is_written_once(pool: asyncpg.Pool) -> None:
    iid = await insert_instance(pool, URL)
    await insert_many(pool, iid, 1)
    [c] = await store.claim(pool, 1, "me", 30)
    await store.set_bodies(pool, {c.id: b"first"}, "me")
    await store.set_bodies(pool, {c.id: b"second"}, "me")
    assert await pool.fetchval("SELECT body FROM notifications") == b"first"


async def test_hold_url_holds_unclaimed_pending_to_that_url_only(pool: asyncpg.Pool) -> None:
    gone = await insert_instance(pool, URL, name="gone")
    other = await insert_instance(pool, "http://127.0.0.1:9/other", name="other")
    await insert_many(pool, gone, 4)
    await insert_many(pool, other, 2)
    claimed = await store.claim(pool, 1, "busy", 30)   # in flight elsewhere: left alone
    assert await store.hold_url(pool, URL) == (3 if claimed[0].instance_id == gone else 4)
    assert (await statuses(pool))["pending"] == (3 if claimed[0].instance_id == gone else 2)


async def test_redeliver_resets_attempts(pool: asyncpg.Pool) -> None:
    iid = await insert_instance(pool, URL)
    other = await insert_instance(pool, URL, name="other")
    await insert_many(pool, iid, 3)
    await insert_many(pool, other, 1)
    claims = await store.claim(pool, 4, "me", 30)
    for c in claims:
        await store.record(pool, c, "me", attempt("dead"))
    async with pool.acquire() as conn:
        assert await store.redeliver_instance(conn, iid) == 3
        assert await store.redeliver_one(conn, claims[0].id) in (0, 1)
        assert await store.redeliver_all_dead(conn) == 1
        assert await store.redeliver_all_dead(conn) == 0
    rows = await pool.fetch("SELECT status, attempts, finished_at FROM notifications")
    assert {(r["status"], r["attempts"], r["finished_at"]) for r in rows} == {("pending", 0, None)}


async def test_prune_deletes_old_delivered_rows_in_batches_and_keeps_dead_letters(pool: asyncpg.Pool) -> None:
    iid = await insert_instance(pool, URL)
    await insert_many(pool, iid, 30)
    claims = await store.claim(pool, 25, "me", 30)
    for i, c in enumerate(claims):
        await store.record(pool, c, "me", attempt("delivered" if i % 2 else "dead"))
    await pool.execute("UPDATE notifications SET finished_at = now() - interval '2 days'"
                       " WHERE id IN (SELECT id FROM notifications WHERE finished_at IS NOT NULL"
                       " ORDER BY id LIMIT 20)")
    # Of the 20 old finished rows, the 10 delivered go; the 10 dead letters wait for redelivery.
    assert await store.prune(pool, retention_s=86400, batch=7) == 10
    assert await statuses(pool) == {"pending": 5, "delivered": 2, "dead": 13}
    # Attempt logs and events go with their notifications; nothing is left unlinked.
    assert await pool.fetchval("SELECT count(*) FROM delivery_attempts") == 15
    assert await pool.fetchval("SELECT count(*) FROM events") == 20
    assert await pool.fetchval("SELECT count(*) FROM events WHERE notification_id IS NULL") == 0


async def test_counts(pool: asyncpg.Pool) -> None:
    iid = await insert_instance(pool, URL)
    await insert_many(pool, iid, 4)
    [c] = await store.claim(pool, 1, "me", 30)
    await store.record(pool, c, "me", attempt("dead"))
    assert await store.counts(pool) == {"pending": 3, "held": 0, "dead": 1}
