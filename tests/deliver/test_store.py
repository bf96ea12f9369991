"""The outbox queries against a real PostgreSQL: claims as leases, fenced outcomes, hold,
redelivery, pruning and counts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest

from poller.errors import DatabaseError, DatabaseUnavailable, StatementRefused
from poller.store import db
from poller.store import notifications as store
from tests.deliver.helpers import insert_instance, insert_many, statuses

URL = "http://127.0.0.1:9/hook"


def attempt(outcome: str, retry_in_s: float = 0.0) -> store.Attempt:
    return store.Attempt(
        outcome=outcome,
        started_at=datetime.now(UTC),
        url=URL,
        duration_ms=3,
        status_code=500 if outcome != "delivered" else 200,
        error="HTTP 500\x00" if outcome != "delivered" else None,
        response_body="nope\x00",
        retry_in_s=retry_in_s,
    )


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
    await asyncio.sleep(0.4)  # a's lease runs out: its rows come back, b's do not
    assert sorted(c.id for c in await store.claim(pool, 10, "c", lease_s=30)) == sorted(
        c.id for c in first
    )


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
    assert not await store.record(pool, c, "old", attempt("delivered"))  # lost its lease
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
    claimed = await store.claim(pool, 1, "busy", 30)  # in flight elsewhere: left alone
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
        assert await store.redeliver_instance(conn, iid) == store.Redelivered(3)
        assert (await store.redeliver_one(conn, claims[0].id)).count in (0, 1)
        assert await store.redeliver_all_dead(conn) == store.Redelivered(1)
        assert await store.redeliver_all_dead(conn) == store.Redelivered(0)
    rows = await pool.fetch("SELECT status, attempts, finished_at FROM notifications")
    assert {(r["status"], r["attempts"], r["finished_at"]) for r in rows} == {("pending", 0, None)}


async def test_prune_deletes_old_delivered_rows_in_batches_and_keeps_dead_letters(
    pool: asyncpg.Pool,
) -> None:
    iid = await insert_instance(pool, URL)
    await insert_many(pool, iid, 30)
    claims = await store.claim(pool, 25, "me", 30)
    for i, c in enumerate(claims):
        await store.record(pool, c, "me", attempt("delivered" if i % 2 else "dead"))
    await pool.execute(
        "UPDATE notifications SET finished_at = now() - interval '2 days'"
        " WHERE id IN (SELECT id FROM notifications WHERE finished_at IS NOT NULL"
        " ORDER BY id LIMIT 20)"
    )
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


# --- gone URLs (callback_endpoints) -----------------------------------------------------------


async def _gone(pool: asyncpg.Pool, url: str) -> None:
    [c] = await store.claim(pool, 1, "me", 30)
    async with pool.acquire() as conn:
        assert (await store.record_gone(conn, c, "me", attempt_410(url)))[:2] == (True, True)


def attempt_410(url: str) -> store.Attempt:
    return store.Attempt(
        outcome="held",
        started_at=datetime.now(UTC),
        url=url,
        duration_ms=3,
        status_code=410,
        error="HTTP 410 Gone",
    )


async def test_410_marks_the_url_gone_once_and_holds_what_waits(pool: asyncpg.Pool) -> None:
    gone = await insert_instance(pool, URL, name="gone")
    other = await insert_instance(pool, "http://127.0.0.1:9/other", name="other")
    await insert_many(pool, gone, 4)
    await insert_many(pool, other, 2)
    [first] = [c for c in await store.claim(pool, 6, "me", 30) if c.instance_id == gone][:1]
    await pool.execute(
        "UPDATE notifications SET locked_by = NULL, locked_until = NULL WHERE id <> $1", first.id
    )
    async with pool.acquire() as conn:
        assert await store.record_gone(conn, first, "me", attempt_410(URL)) == (True, True, 3)
        assert await store.mark_gone(conn, URL) is False  # gone already: same gone period
    assert await statuses(pool) == {"held": 4, "pending": 2}
    row = await pool.fetchrow("SELECT * FROM callback_endpoints")
    assert (row["url"], row["status"], row["reactivated_at"]) == (URL, "gone", None)
    # A lost claim records nothing and marks nothing.
    await pool.execute("TRUNCATE callback_endpoints")
    async with pool.acquire() as conn:
        assert await store.record_gone(conn, first, "me", attempt_410(URL)) == (False, False, 0)
    assert await pool.fetchval("SELECT count(*) FROM callback_endpoints") == 0


async def test_claim_holds_due_notifications_to_a_gone_url_without_a_lease(
    pool: asyncpg.Pool,
) -> None:
    gone = await insert_instance(pool, URL, name="gone")
    other = await insert_instance(pool, "http://127.0.0.1:9/other", name="other")
    await insert_many(pool, gone, 1)
    await _gone(pool, URL)
    await insert_many(pool, gone, 3)
    await insert_many(pool, other, 2)
    batch = await store.claim_batch(pool, 10, "me", 30)
    assert batch.total == 5 and len(batch.claimed) == 2
    assert {c.instance_id for c in batch.claimed} == {other}
    assert sorted(url for _, url in batch.held) == [URL] * 3
    rows = await pool.fetch(
        "SELECT status, attempts, locked_by, target_url FROM notifications"
        " WHERE instance_id = $1 AND attempts = 0",
        gone,
    )
    assert {tuple(r) for r in rows} == {("held", 0, None, URL)}
    assert await pool.fetchval("SELECT count(*) FROM delivery_attempts") == 1  # the 410 only


async def test_claim_waits_for_a_reactivation_in_progress_and_sees_its_result(
    pool: asyncpg.Pool,
) -> None:
    iid = await insert_instance(pool, URL)
    await insert_many(pool, iid, 1)
    await _gone(pool, URL)
    await insert_many(pool, iid, 2)  # pending, to a gone URL
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("UPDATE callback_endpoints SET status = 'active'")
        claiming = asyncio.create_task(store.claim_batch(pool, 10, "me", 30))
        await asyncio.sleep(0.2)
        assert not claiming.done()  # FOR SHARE waits for the reactivation…
        await tx.commit()
    batch = await asyncio.wait_for(claiming, 5)
    assert len(batch.claimed) == 2 and batch.held == []  # …and then delivers


async def test_reactivation_releases_what_was_held_for_the_url(pool: asyncpg.Pool) -> None:
    new_url = "http://127.0.0.1:9/new"
    acme = await insert_instance(pool, URL, name="acme")
    shares = await insert_instance(pool, URL, name="shares")
    moved = await insert_instance(pool, URL, name="moved")
    bystander = await insert_instance(pool, new_url, name="bystander")
    await insert_many(pool, acme, 1)
    await _gone(pool, URL)
    for iid in (acme, shares, moved):
        await insert_many(pool, iid, 2)
    await store.claim_batch(pool, 10, "me", 30)  # all six held at claim time
    # `moved` now points elsewhere: its held notifications were held for URL all the same.
    await pool.execute("UPDATE instances SET callback_url = $1 WHERE id = $2", new_url, moved)
    await insert_many(pool, bystander, 1)
    [c] = await store.claim(pool, 1, "me", 30)
    await store.record(pool, c, "me", attempt("dead"))  # a dead letter to a URL not gone
    assert await statuses(pool) == {"held": 7, "dead": 1}
    gone = await store.gone_endpoints(pool)
    assert [(g.url, g.instances, g.held) for g in gone] == [(URL, ("acme", "shares"), 7)]
    # Filtered by instance: the URLs that concern it, each with everything held for it.
    assert [(g.url, g.held) for g in await store.gone_endpoints(pool, moved)] == [(URL, 7)]
    assert await store.gone_endpoints(pool, bystander) == []
    async with pool.acquire() as conn:
        # Redelivering what goes to an active URL reactivates nothing.
        assert await store.redeliver_all_dead(conn) == store.Redelivered(1)
        assert (await statuses(pool))["held"] == 7
        # Redelivering one notification of `shares` (its URL is gone) releases all of them.
        first = await pool.fetchval(
            "SELECT min(id) FROM notifications WHERE instance_id = $1", shares
        )
        assert await store.redeliver_one(conn, first) == store.Redelivered(1, (URL,), 6)
    assert await statuses(pool) == {"pending": 8}
    assert await pool.fetchval("SELECT status FROM callback_endpoints") == "active"
    assert await store.gone_endpoints(pool) == []


async def test_renew_skips_rows_being_written_instead_of_waiting(pool: asyncpg.Pool) -> None:
    iid = await insert_instance(pool, URL)
    await insert_many(pool, iid, 3)
    claims = await store.claim(pool, 3, "me", 30)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE notifications SET body = 'x' WHERE id = $1", claims[0].id)
        renewed = await asyncio.wait_for(store.renew(pool, [c.id for c in claims], "me", 60), 2)
    assert renewed == 2


async def test_database_failures_come_out_as_database_errors(
    pool: asyncpg.Pool, db_dsn: str
) -> None:
    """Callers catch `DatabaseError`, never a driver exception."""
    closed = await db.create_pool(db_dsn, max_size=1)
    await closed.close()
    with pytest.raises(DatabaseUnavailable):
        await store.counts(closed)
    with pytest.raises(DatabaseError):
        await store.claim_batch(closed, 10, "me", 30)
    with pytest.raises(StatementRefused):  # PostgreSQL text cannot hold NUL
        await store.instance_id(pool, "nul\x00")


async def test_claims_take_each_url_in_turn_within_its_room(pool: asyncpg.Pool) -> None:
    busy = await insert_instance(pool, URL, name="busy")
    quiet = await insert_instance(pool, URL.replace("/hook", "/quiet"), name="quiet")
    await insert_many(pool, busy, 50)  # older: a backlog in front of the quiet URL
    await insert_many(pool, quiet, 3)
    first = await store.claim_batch(pool, 4, "me", 30, per_url=2)
    assert sorted(c.instance_id for c in first.claimed) == [busy, busy, quiet, quiet]
    # The dispatcher's free permits: none left for the busy URL, one for the quiet one.
    rooms = {URL: 0, URL.replace("/hook", "/quiet"): 1}
    second = await store.claim_batch(pool, 10, "me", 30, per_url=2, rooms=rooms)
    assert [c.instance_id for c in second.claimed] == [quiet]


@pytest.mark.parametrize("instances", [3, 20], ids=["few-instances", "many-instances"])
async def test_a_url_shared_by_instances_gets_its_oldest_within_its_room(
    pool: asyncpg.Pool, instances: int
) -> None:
    # The claim reads a URL of up to 16 instances instance by instance, a larger one in one
    # walk of the due index: either way the URL's oldest come first and its room holds.
    ids = [await insert_instance(pool, URL, name=f"tenant {n}") for n in range(instances)]
    for iid in ids:
        await insert_many(pool, iid, 4)
    await pool.execute(
        "UPDATE notifications SET next_attempt_at = now() - make_interval(secs => id)"
    )  # the newest rows are the oldest due: the oldest are the last instance's last rows
    oldest = [
        r["id"]
        for r in await pool.fetch("SELECT id FROM notifications ORDER BY next_attempt_at LIMIT 5")
    ]
    batch = await store.claim_batch(pool, 50, "me", 30, per_url=5)
    assert sorted(c.id for c in batch.claimed) == sorted(oldest)
    again = await store.claim_batch(pool, 50, "me", 30, per_url=5, rooms={URL: 2})
    assert len(again.claimed) == 2
    assert not {c.id for c in again.claimed} & set(oldest)


async def test_defer_reschedules_without_an_attempt(pool: asyncpg.Pool) -> None:
    iid = await insert_instance(pool, URL)
    await insert_many(pool, iid, 3)
    [c] = await store.claim(pool, 1, "me", 30)
    assert await store.defer(pool, [c.id], "me", 60) == 1
    # Everything waiting for the URL, never earlier than it already was.
    assert await store.defer_url(pool, URL, 30) == 3
    assert await store.claim(pool, 10, "me", 30) == []
    rows = await pool.fetch(
        "SELECT attempts, locked_by, next_attempt_at - now() AS due_in FROM notifications"
    )
    assert all(r["attempts"] == 0 and r["locked_by"] is None for r in rows)
    assert sorted(round(r["due_in"].total_seconds()) for r in rows) == [30, 30, 60]
    assert await pool.fetchval("SELECT count(*) FROM delivery_attempts") == 0
