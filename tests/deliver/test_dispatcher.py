"""The dispatcher against real aiohttp receivers on 127.0.0.1 and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import time
from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from poller.deliver.dispatcher import RESPONSE_CAP_BYTES, Dispatcher
from poller.errors import DatabaseUnavailable
from tests.deliver.helpers import (
    BOX,
    Change,
    Received,
    Receiver,
    eventually,
    insert_instance,
    insert_many,
    insert_notification,
    running,
    settings,
    statuses,
)

WHSEC = "whsec_" + base64.b64encode(b"k" * 32).decode()
INVOICE = '{"Id":"145","SyncToken":"3","TotalAmt":100.10,"Line":[]}'
TOMBSTONE = '{"Id":"146","status":"Deleted"}'


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


async def attempts_log(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return list(await pool.fetch("SELECT * FROM delivery_attempts ORDER BY id"))


async def test_delivers_the_signed_envelope(
    pool: asyncpg.Pool, db_dsn: str, receiver: Receiver
) -> None:
    iid = await insert_instance(pool, receiver.url, key=WHSEC)
    nid, event_id = await insert_notification(
        pool,
        iid,
        [
            Change("UPDATED", "145", "2026-11-24T02:15:02-08:00", INVOICE),
            Change("DELETED", "146", "2026-11-24T02:16:00-08:00", TOMBSTONE),
        ],
    )
    async with running(Dispatcher(settings(), pool, db_dsn, BOX)):
        await eventually(lambda: len(receiver.requests) == 1)
        await eventually(lambda: _status_is(pool, nid, "delivered"))
    [req] = receiver.requests
    h = req.headers
    assert h["Content-Type"] == "application/json" and h["User-Agent"].startswith("qbo-poller/")
    assert h["Elements-Webhook-Id"] == h["webhook-id"] == event_id
    mac = hmac.new(WHSEC.encode(), req.body, hashlib.sha256).digest()
    assert h["Elements-Webhook-Signature"] == "sha256=" + base64.b64encode(mac).decode()
    message = Webhook(WHSEC).verify(req.body, h)["message"]
    assert message["eventId"] == event_id and message["instanceId"] == iid
    assert [e["objectId"] for e in message["events"]] == ["145", "146"]
    assert [e["date"] for e in message["events"]] == [
        "2026-11-24T10:15:02Z",
        "2026-11-24T10:16:00Z",
    ]
    assert b'"invoices":[' + INVOICE.encode() + b"," + TOMBSTONE.encode() + b"]" in req.body
    row = await pool.fetchrow("SELECT * FROM notifications WHERE id = $1", nid)
    assert row["body"] == req.body and row["attempts"] == 1 and row["last_status"] == 200
    [log] = await attempts_log(pool)
    assert (log["outcome"], log["status_code"], log["response_body"]) == ("delivered", 200, "ok")


async def _status_is(pool: asyncpg.Pool, nid: int, status: str) -> bool:
    return await pool.fetchval("SELECT status FROM notifications WHERE id = $1", nid) == status


async def test_unsigned_without_a_key_and_elements_only_scheme(
    pool: asyncpg.Pool, db_dsn: str, receiver: Receiver
) -> None:
    plain = await insert_instance(pool, receiver.url, name="plain")
    signed = await insert_instance(pool, receiver.url, name="signed", key="k3y-plain")
    await insert_many(pool, plain, 1)
    await insert_many(pool, signed, 1)
    async with running(Dispatcher(settings(signature_scheme="elements"), pool, db_dsn, BOX)):
        await eventually(lambda: len(receiver.requests) == 2)
    by_name = {r.json["message"]["instanceName"]: r.headers for r in receiver.requests}
    assert not any("signature" in k.lower() for k in by_name["plain"])
    assert "Elements-Webhook-Signature" in by_name["signed"]
    assert "webhook-signature" not in by_name["signed"] and "webhook-id" not in by_name["signed"]


async def test_retries_send_the_same_body_and_id(
    pool: asyncpg.Pool, db_dsn: str, receiver: Receiver
) -> None:
    receiver.respond = lambda r: web.Response(status=500 if len(receiver.requests) < 3 else 204)
    iid = await insert_instance(pool, receiver.url, key="plain-key-1")
    nid, event_id = await insert_notification(
        pool, iid, [Change("CREATED", "1", "2026-01-01T00:00:00Z", '{"Id":"1"}')]
    )
    async with running(Dispatcher(settings(retry_schedule_s=(0.05, 0.1, 0.1)), pool, db_dsn, BOX)):
        await eventually(lambda: _status_is(pool, nid, "delivered"))
    assert len(receiver.requests) == 3
    assert {r.body for r in receiver.requests} == {receiver.requests[0].body}
    assert {r.headers["webhook-id"] for r in receiver.requests} == {event_id}
    for r in receiver.requests:  # each attempt re-signed with its own timestamp
        Webhook(b"plain-key-1").verify(r.body, r.headers)
    assert [x["outcome"] for x in await attempts_log(pool)] == ["retry", "retry", "delivered"]
    gaps = [b.at - a.at for a, b in itertools.pairwise(receiver.requests)]
    assert gaps[0] >= 0.04 and gaps[1] >= 0.08  # 0.05 s and 0.1 s, −20 % jitter


async def test_redirects_are_failures_and_not_followed(
    pool: asyncpg.Pool, db_dsn: str, receiver: Receiver
) -> None:
    receiver.respond = lambda r: (
        web.Response(status=302, headers={"Location": "/elsewhere"})
        if r.path == "/hook"
        else web.Response(text="followed!")
    )
    iid = await insert_instance(pool, receiver.url)
    nid, _ = await insert_notification(
        pool, iid, [Change("CREATED", "1", "2026-01-01T00:00:00Z", "{}")]
    )
    async with running(Dispatcher(settings(retry_schedule_s=(0.05,)), pool, db_dsn, BOX)):
        await eventually(lambda: _status_is(pool, nid, "dead"))
    assert [r.path for r in receiver.requests] == ["/hook", "/hook"]
    row = await pool.fetchrow("SELECT last_status, last_error FROM notifications")
    assert (
        row["last_status"] == 302
        and "redirects are not followed (Location: /elsewhere)" in row["last_error"]
    )


async def test_410_holds_every_notification_to_that_url(
    pool: asyncpg.Pool, db_dsn: str, receiver: Receiver
) -> None:
    gone_url = receiver.url.replace("/hook", "/gone")
    receiver.respond = lambda r: web.Response(status=410 if r.path == "/gone" else 200)
    gone = await insert_instance(pool, gone_url, name="gone")
    fine = await insert_instance(pool, receiver.url, name="fine")
    await insert_many(pool, gone, 5)
    await insert_many(pool, fine, 3)
    cfg = settings(delivery_concurrency=1, delivery_per_url_concurrency=1)
    async with running(Dispatcher(cfg, pool, db_dsn, BOX)):
        await eventually(lambda: len([r for r in receiver.requests if r.path == "/hook"]) == 3)
        await eventually(lambda: _all_settled(pool))
    assert await statuses(pool) == {"held": 5, "delivered": 3}
    assert len([r for r in receiver.requests if r.path == "/gone"]) == 1
    [log] = [x for x in await attempts_log(pool) if x["outcome"] == "held"]
    assert log["status_code"] == 410


async def _all_settled(pool: asyncpg.Pool) -> bool:
    return "pending" not in await statuses(pool)


async def test_timeout_is_a_failed_attempt(
    pool: asyncpg.Pool, db_dsn: str, receiver: Receiver
) -> None:
    async def slow(_r: Received) -> web.Response:
        await asyncio.sleep(2)
        return web.Response()

    receiver.respond = slow
    iid = await insert_instance(pool, receiver.url)
    nid, _ = await insert_notification(
        pool, iid, [Change("CREATED", "1", "2026-01-01T00:00:00Z", "{}")]
    )
    cfg = settings(delivery_timeout_s=0.3, retry_schedule_s=(0.05,))
    started = time.monotonic()
    async with running(Dispatcher(cfg, pool, db_dsn, BOX)):
        await eventually(lambda: _status_is(pool, nid, "dead"))
    assert time.monotonic() - started < 1.8
    logs = await attempts_log(pool)
    assert [x["error"] for x in logs] == ["timed out after 0.3s"] * 2
    assert all(250 <= x["duration_ms"] < 1000 and x["status_code"] is None for x in logs)


async def test_response_body_is_capped(pool: asyncpg.Pool, db_dsn: str, receiver: Receiver) -> None:
    receiver.respond = lambda r: web.Response(status=500, body=b"x" * 1_000_000)
    iid = await insert_instance(pool, receiver.url)
    await insert_notification(pool, iid, [Change("CREATED", "1", "2026-01-01T00:00:00Z", "{}")])
    async with running(Dispatcher(settings(retry_schedule_s=(30.0,)), pool, db_dsn, BOX)):
        await eventually(lambda: _attempts_are(pool, 1))
    [log] = await attempts_log(pool)
    assert log["response_body"] == "x" * RESPONSE_CAP_BYTES and log["status_code"] == 500


async def _attempts_are(pool: asyncpg.Pool, n: int) -> bool:
    return await pool.fetchval("SELECT count(*) FROM delivery_attempts") == n


async def test_retry_after_is_honoured(pool: asyncpg.Pool, db_dsn: str, receiver: Receiver) -> None:
    receiver.respond = lambda r: (
        web.Response(status=429, headers={"Retry-After": "1"})
        if len(receiver.requests) == 1
        else web.Response()
    )
    iid = await insert_instance(pool, receiver.url)
    nid, _ = await insert_notification(
        pool, iid, [Change("CREATED", "1", "2026-01-01T00:00:00Z", "{}")]
    )
    async with running(Dispatcher(settings(retry_schedule_s=(0.05,)), pool, db_dsn, BOX)):
        await eventually(lambda: _status_is(pool, nid, "delivered"), timeout=4)
    first, second = receiver.requests
    assert 0.9 <= second.at - first.at < 2.0


async def test_private_callbacks_refused_when_denied(
    pool: asyncpg.Pool, db_dsn: str, receiver: Receiver
) -> None:
    literal = await insert_instance(pool, receiver.url, name="literal")
    named = await insert_instance(
        pool, receiver.url.replace("127.0.0.1", "localhost"), name="named"
    )
    await insert_many(pool, literal, 1)
    await insert_many(pool, named, 1)
    cfg = settings(callback_deny_private=True, retry_schedule_s=(0.05,))
    async with running(Dispatcher(cfg, pool, db_dsn, BOX)):
        await eventually(lambda: _all_settled(pool))
    assert receiver.requests == []
    assert await statuses(pool) == {"dead": 2}  # failed attempts, retried, then dead letters
    errors = [x["error"] for x in await attempts_log(pool)]
    assert len(errors) == 4 and all("private or reserved" in e for e in errors)
    assert any("callback address 127.0.0.1" in e for e in errors)
    assert any("callback host localhost resolves only" in e for e in errors)


async def test_concurrency_limits(pool: asyncpg.Pool, db_dsn: str, receiver: Receiver) -> None:
    active: dict[str, int] = {}
    peak: dict[str, int] = {}

    async def slow(r: Received) -> web.Response:
        active[r.path] = active.get(r.path, 0) + 1
        active["all"] = active.get("all", 0) + 1
        for k in (r.path, "all"):
            peak[k] = max(peak.get(k, 0), active[k])
        await asyncio.sleep(0.05)
        active[r.path] -= 1
        active["all"] -= 1
        return web.Response()

    receiver.respond = slow
    a = await insert_instance(pool, receiver.url.replace("/hook", "/a"), name="a")
    b = await insert_instance(pool, receiver.url.replace("/hook", "/b"), name="b")
    await insert_many(pool, a, 12)
    await insert_many(pool, b, 12)
    cfg = settings(delivery_concurrency=5, delivery_per_url_concurrency=2)
    async with running(Dispatcher(cfg, pool, db_dsn, BOX)):
        await eventually(lambda: len(receiver.requests) == 24)
    # The limit is per URL, not per host: two URLs on one host do not queue behind each other
    # (a hanging one would otherwise stall its neighbour), and the total stays within 5.
    assert peak["/a"] <= 2 and peak["/b"] <= 2 and 2 < peak["all"] <= 4


async def test_notification_without_events_fails_visibly(
    pool: asyncpg.Pool, db_dsn: str, receiver: Receiver
) -> None:
    iid = await insert_instance(pool, receiver.url)
    await pool.execute(
        "INSERT INTO notifications (event_id, instance_id, resource, event_count)"
        " VALUES (gen_random_uuid(), $1, 'invoices', 1)",
        iid,
    )
    async with running(Dispatcher(settings(retry_schedule_s=(0.05,)), pool, db_dsn, BOX)):
        await eventually(lambda: _all_settled(pool))
    assert (
        await pool.fetchval("SELECT last_error FROM notifications")
        == "the notification has no events"
    )


async def test_listen_wakes_the_dispatcher_long_before_the_poll(
    pool: asyncpg.Pool, db_dsn: str, receiver: Receiver
) -> None:
    iid = await insert_instance(pool, receiver.url)
    dispatcher = Dispatcher(settings(delivery_poll_interval_s=30.0), pool, db_dsn, BOX)
    async with running(dispatcher):
        await asyncio.sleep(0.2)  # past the start-up sweep
        t0 = time.monotonic()
        await insert_notification(pool, iid, [Change("CREATED", "1", "2026-01-01T00:00:00Z", "{}")])
        await eventually(lambda: len(receiver.requests) == 1, timeout=3)
        first = receiver.requests[0].at - t0
        # The listener's connection dies: it reconnects and still wakes the dispatcher.
        killed = await pool.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        )
        assert killed == 1
        await eventually(lambda: not dispatcher.listening.is_set(), timeout=3)
        await asyncio.wait_for(dispatcher.listening.wait(), 5)
        t1 = time.monotonic()
        await insert_notification(pool, iid, [Change("CREATED", "2", "2026-01-01T00:00:00Z", "{}")])
        await eventually(lambda: len(receiver.requests) == 2, timeout=3)
        second = receiver.requests[1].at - t1
    assert first < 1.0 and second < 1.0


async def test_shutdown_releases_unfinished_claims(
    pool: asyncpg.Pool, db_dsn: str, receiver: Receiver
) -> None:
    async def hang(_r: Received) -> web.Response:
        await asyncio.sleep(30)
        return web.Response()

    receiver.respond = hang
    iid = await insert_instance(pool, receiver.url)
    await insert_many(pool, iid, 3)
    cfg = settings(shutdown_grace_s=0.5, delivery_timeout_s=20)
    stop = asyncio.Event()
    task = asyncio.create_task(Dispatcher(cfg, pool, db_dsn, BOX).run(stop))
    await eventually(lambda: len(receiver.requests) == 3)
    assert (
        await pool.fetchval("SELECT count(*) FROM notifications WHERE locked_by IS NOT NULL") == 3
    )
    t0 = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, 3)
    assert time.monotonic() - t0 < 1.5
    rows = await pool.fetch("SELECT status, attempts, locked_by, locked_until FROM notifications")
    assert {tuple(r) for r in rows} == {("pending", 0, None, None)}


async def test_metrics_count_outcomes(pool: asyncpg.Pool, db_dsn: str, receiver: Receiver) -> None:
    from poller import metrics

    before = metrics.DELIVERIES.labels(outcome="delivered")._value.get()
    iid = await insert_instance(pool, receiver.url)
    await insert_many(pool, iid, 4)
    async with running(Dispatcher(settings(), pool, db_dsn, BOX)):
        await eventually(lambda: _all_settled(pool))
    assert metrics.DELIVERIES.labels(outcome="delivered")._value.get() - before == 4
    assert (
        orjson.loads(receiver.requests[0].body)["message"]["raw"]["invoices"][0]["TotalAmt"] == 12.5
    )


async def test_a_listen_connection_that_cannot_open_is_a_database_error(
    pool: asyncpg.Pool,
) -> None:
    unreachable = "postgresql://postgres@127.0.0.1:9/nowhere"  # discard port: refused
    dispatcher = Dispatcher(settings(), pool, unreachable, BOX)
    with pytest.raises(DatabaseUnavailable):
        await dispatcher._listener._listen_once(asyncio.Event(), missed=False)
    assert not dispatcher.listening.is_set()


async def test_a_urls_backlog_never_waits_for_the_poll_interval(
    pool: asyncpg.Pool, db_dsn: str, receiver: Receiver
) -> None:
    # A claim that finds some of the URL's permits still taken gets only the free ones; the
    # URL's backlog must be claimed again as soon as permits free up, not at the next poll
    # (here a minute away; the outbox's NOTIFY came once, before the dispatcher started).
    async def staggered(request: Received) -> web.Response:
        # Answers spread over a few milliseconds, so permits free up while a claim runs.
        await asyncio.sleep(0.003 * (len(receiver.requests) % 8))
        return web.Response(text="ok")

    receiver.respond = staggered
    iid = await insert_instance(pool, receiver.url)
    await insert_many(pool, iid, 200)
    patient = settings(delivery_poll_interval_s=60.0, delivery_concurrency=64)
    async with running(Dispatcher(patient, pool, db_dsn, BOX)):
        await eventually(lambda: len(receiver.requests) == 200, timeout=20)
