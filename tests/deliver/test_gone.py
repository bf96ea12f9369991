"""410 Gone stops delivery to that URL (DESIGN §6): per-URL state in `callback_endpoints`,
notifications held without a request while the URL is gone, redelivery reactivating it."""

from __future__ import annotations

import asyncio
import collections
import io
import re
from collections.abc import AsyncIterator

import asyncpg
import pytest
import structlog
import structlog.testing
from aiohttp import web

from poller.cli import build_parser
from poller.deliver.admin import run_command
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


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


async def cli(pool: asyncpg.Pool, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = await run_command(pool, build_parser().parse_args(["deliveries", *argv]), out)
    return code, out.getvalue()


async def endpoint(pool: asyncpg.Pool, url: str) -> asyncpg.Record | None:
    return await pool.fetchrow("SELECT * FROM callback_endpoints WHERE url = $1", url)


async def count(pool: asyncpg.Pool, status: str, n: int) -> bool:
    return (await statuses(pool)).get(status, 0) == n


async def settled(pool: asyncpg.Pool) -> bool:
    """Nothing pending and no claim alive: every notification reached a resting state."""
    return (
        await pool.fetchval(
            "SELECT count(*) FROM notifications WHERE status = 'pending' OR locked_by IS NOT NULL"
        )
        == 0
    )


def is_gone_line(line: str, url: str, held: int, users: str) -> bool:
    """One gone URL's line of `deliveries list`."""
    return (
        re.fullmatch(
            rf"  {re.escape(url)}  gone since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\dZ"
            rf"  held {held}  \({re.escape(users)}\)",
            line,
        )
        is not None
    )


def gone_and_hook(receiver: Receiver) -> tuple[str, dict[str, int]]:
    """The receiver answers 410 on /gone while state['code'] says so; the URL of /gone."""
    state = {"code": 410}
    receiver.respond = lambda r: web.Response(status=state["code"] if r.path == "/gone" else 200)
    return receiver.url.replace("/hook", "/gone"), state


async def test_after_410_later_notifications_are_held_without_a_request(
    pool: asyncpg.Pool, db_dsn: str, receiver: Receiver
) -> None:
    url, state = gone_and_hook(receiver)
    iid = await insert_instance(pool, url, name="acme")
    await insert_many(pool, iid, 1)
    async with running(Dispatcher(settings(), pool, db_dsn, BOX)):
        await eventually(lambda: count(pool, "held", 1))
        row = await endpoint(pool, url)
        assert row["status"] == "gone" and row["gone_at"] is not None
        state["code"] = 200  # even a receiver that is back gets nothing until redelivery
        # Created after the 410, one at a time: each is held at claim time, never sent.
        for _ in range(5):
            await insert_many(pool, iid, 1)
            await asyncio.sleep(0.02)
        await eventually(lambda: count(pool, "held", 6))
        await eventually(lambda: settled(pool))
        await asyncio.sleep(0.2)  # a few more poll intervals: still nothing sent
    assert len(receiver.requests) == 1
    assert await pool.fetchval("SELECT count(*) FROM delivery_attempts") == 1
    rows = await pool.fetch("SELECT attempts, target_url, locked_by FROM notifications ORDER BY id")
    assert [r["attempts"] for r in rows] == [1, 0, 0, 0, 0, 0]
    assert {(r["target_url"], r["locked_by"]) for r in rows} == {(url, None)}
    code, text = await cli(pool, "list")
    lines = text.splitlines()
    assert code == 0 and len(lines) == 1 + 6 + 2
    assert all(
        " held " in ln and "on redelivery" in ln and f"410 Gone from {url}" in ln
        for ln in lines[1:7]
    )
    assert lines[7] == (
        "gone URLs: 1 answered 410 Gone; 6 held notification(s) wait for "
        "`qbo-poller deliveries redeliver`"
    )
    assert is_gone_line(lines[8], url, 6, "acme")


async def test_redelivery_reactivates_and_delivers_all_then_the_url_stays_active(
    pool: asyncpg.Pool, db_dsn: str, receiver: Receiver
) -> None:
    url, state = gone_and_hook(receiver)
    acme = await insert_instance(pool, url, name="acme")
    other = await insert_instance(pool, url, name="other")  # shares the URL, so its state
    await insert_many(pool, acme, 1)
    async with running(Dispatcher(settings(), pool, db_dsn, BOX)):
        await eventually(lambda: count(pool, "held", 1))
        await insert_many(pool, acme, 3)
        await insert_many(pool, other, 2)
        await eventually(lambda: count(pool, "held", 6))
        await eventually(lambda: settled(pool))
        assert len(receiver.requests) == 1
        state["code"] = 200
        first = await pool.fetchval("SELECT min(id) FROM notifications")
        code, text = await cli(pool, "redeliver", str(first))
        assert code == 0 and text == (
            f"notification {first} queued for redelivery\n"
            f"reactivated gone URL(s) {url}: 5 more held notification(s) queued for redelivery\n"
        )
        await eventually(lambda: count(pool, "delivered", 6))
        row = await endpoint(pool, url)
        assert row["status"] == "active" and row["reactivated_at"] is not None
        # Answering 200 again, it stays active: later notifications are simply delivered.
        await insert_many(pool, acme, 2)
        await insert_many(pool, other, 2)
        await eventually(lambda: count(pool, "delivered", 10))
    assert (await endpoint(pool, url))["status"] == "active"
    sent = collections.Counter(r.event_id for r in receiver.requests)
    assert len(sent) == 10 and sum(sent.values()) == 11  # the first one twice: 410, then 200
    assert await pool.fetchval("SELECT count(*) FROM notifications WHERE attempts = 1") == 10
    assert (await cli(pool, "list"))[1].count("gone URLs") == 0
    # Nothing left to reactivate: a second redelivery prints no reactivation line.
    assert await cli(pool, "redeliver", str(first)) == (
        0,
        f"notification {first} queued for redelivery\n",
    )


async def test_redeliver_all_dead_reactivates_the_url_of_a_dead_letter(
    pool: asyncpg.Pool, db_dsn: str, receiver: Receiver
) -> None:
    state = {"code": 503}
    receiver.respond = lambda r: web.Response(status=state["code"])
    iid = await insert_instance(pool, receiver.url, name="acme")
    await insert_many(pool, iid, 1)
    async with running(Dispatcher(settings(retry_schedule_s=(0.05,)), pool, db_dsn, BOX)):
        await eventually(lambda: count(pool, "dead", 1))  # 2 attempts
        state["code"] = 410
        await insert_many(pool, iid, 1)
        await eventually(lambda: count(pool, "held", 1))  # 1 attempt: the URL is gone
        await insert_many(pool, iid, 2)
        await eventually(lambda: count(pool, "held", 3))
        await eventually(lambda: settled(pool))
        assert len(receiver.requests) == 3
        state["code"] = 200
        # Only the dead letter is asked for; its URL is gone, so the held ones come along.
        assert await cli(pool, "redeliver", "--all-dead") == (
            0,
            (
                "1 dead notification(s) queued for redelivery\n"
                f"reactivated gone URL(s) {receiver.url}: 3 more held notification(s) queued for "
                "redelivery\n"
            ),
        )
        await eventually(lambda: count(pool, "delivered", 4))
    assert len(receiver.requests) == 3 + 4
    assert (await endpoint(pool, receiver.url))["status"] == "active"


async def test_held_notifications_follow_a_changed_callback_url(
    pool: asyncpg.Pool, db_dsn: str, receiver: Receiver
) -> None:
    url, _ = gone_and_hook(receiver)
    iid = await insert_instance(pool, url, name="acme")
    await insert_many(pool, iid, 3)
    cfg = settings(delivery_concurrency=1, delivery_per_url_concurrency=1)
    async with running(Dispatcher(cfg, pool, db_dsn, BOX)):
        await eventually(lambda: count(pool, "held", 3))
        await eventually(lambda: settled(pool))
        # The operator points the instance at its new URL: new notifications go there at once
        # (the URL is read from the instance at claim time)...
        await pool.execute(
            "UPDATE instances SET callback_url = $1, config_version ="
            " config_version + 1 WHERE id = $2",
            receiver.url,
            iid,
        )
        await insert_many(pool, iid, 1)
        await eventually(lambda: count(pool, "delivered", 1))
        # ...the held ones wait for redelivery, and the listing says where they would go.
        code, text = await cli(pool, "list", "--instance", "acme")
        held_lines = [ln for ln in text.splitlines() if "on redelivery" in ln]
        assert len(held_lines) == 3 and all(
            ln.endswith(f"410 Gone from {url}; redelivery goes to {receiver.url}")
            for ln in held_lines
        )
        assert is_gone_line(text.splitlines()[-1], url, 3, "no instance now")
        code, text = await cli(pool, "redeliver", "--instance", "acme")
        # The instance's URL is not gone: nothing to reactivate; its held go to the new URL.
        assert (code, text) == (0, "3 dead or held notification(s) of acme queued for redelivery\n")
        await eventually(lambda: count(pool, "delivered", 4))
    assert [r.path for r in receiver.requests] == ["/gone"] + ["/hook"] * 4
    assert (await endpoint(pool, url))["status"] == "gone"  # nobody asked for that URL back
    assert "gone URLs" not in (await cli(pool, "list"))[1]  # and nothing depends on it


async def test_redeliver_instance_reactivates_its_gone_url_even_with_nothing_waiting(
    pool: asyncpg.Pool, receiver: Receiver
) -> None:
    url = receiver.url
    iid = await insert_instance(pool, url, name="acme")
    await pool.execute("INSERT INTO callback_endpoints (url, gone_at) VALUES ($1, now())", url)
    code, text = await cli(pool, "list")
    lines = text.splitlines()
    assert code == 0 and lines[:2] == [
        "no notifications",
        "gone URLs: 1 answered 410 Gone; 0 held notification(s) wait for "
        "`qbo-poller deliveries redeliver`",
    ]
    assert len(lines) == 3 and is_gone_line(lines[2], url, 0, "acme")
    assert await cli(pool, "redeliver", "--instance", "acme") == (
        0,
        (
            "0 dead or held notification(s) of acme queued for redelivery\n"
            f"reactivated gone URL(s) {url}: 0 more held notification(s) queued for redelivery\n"
        ),
    )
    assert (await endpoint(pool, url))["status"] == "active"
    assert iid and await cli(pool, "list") == (0, "no notifications\n")


async def test_two_dispatchers_racing_on_a_410_lose_nothing(
    db_dsn: str, receiver: Receiver
) -> None:
    """Both dispatchers have many deliveries in flight when the URL starts answering 410, and
    new notifications keep arriving: every notification ends held (attempted at most once, each
    410 recorded, no deadlock or lost claim), then redelivery delivers every one exactly once."""
    state = {"code": 410}
    answers: collections.Counter[tuple[str, int]] = collections.Counter()

    async def respond(r: Received) -> web.Response:
        await asyncio.sleep(0.03)  # keep many requests in flight at once
        answers[(r.event_id, state["code"])] += 1
        return web.Response(status=state["code"])

    receiver.respond = respond
    pool_a = await db.create_pool(db_dsn, max_size=6)
    pool_b = await db.create_pool(db_dsn, max_size=6)
    conc = 16
    try:
        a_iid = await insert_instance(pool_a, receiver.url, name="a")
        b_iid = await insert_instance(pool_a, receiver.url, name="b")
        await insert_many(pool_a, a_iid, 150, notify=False)
        await insert_many(pool_a, b_iid, 150, notify=False)
        a = Dispatcher(
            settings(replica_id="a", delivery_concurrency=conc, delivery_per_url_concurrency=conc),
            pool_a,
            db_dsn,
            BOX,
        )
        b = Dispatcher(
            settings(replica_id="b", delivery_concurrency=conc, delivery_per_url_concurrency=conc),
            pool_b,
            db_dsn,
            BOX,
        )
        with structlog.testing.capture_logs() as logged:
            async with running(a), running(b):
                for _ in range(10):  # new notifications while the 410s are being recorded
                    await insert_many(pool_b, a_iid, 5)
                    await insert_many(pool_b, b_iid, 5)
                    await asyncio.sleep(0.01)
                total = 400
                await eventually(lambda: count(pool_a, "held", total), timeout=15)
                await eventually(lambda: settled(pool_a))
                sent_410 = sum(answers.values())
                held_logged = await pool_a.fetchval(
                    "SELECT count(*) FROM delivery_attempts WHERE outcome = 'held'"
                    " AND status_code = 410"
                )
                # Every 410 was recorded, by the dispatcher that got it, once per notification.
                assert sent_410 == held_logged == a.outcomes["held"] + b.outcomes["held"]
                assert set(answers.values()) == {1}
                # Only what was in flight (or claimed in the same instant) was ever sent.
                assert sent_410 <= 4 * conc
                state["code"] = 200
                code, text = await cli(pool_a, "redeliver", "--instance", "b")
                assert (code, text) == (
                    0,
                    (
                        "200 dead or held notification(s) of b queued for redelivery\n"
                        f"reactivated gone URL(s) {receiver.url}: 200 more held notification(s) "
                        "queued for redelivery\n"
                    ),
                )
                await eventually(lambda: count(pool_a, "delivered", total), timeout=15)
        problems = [
            e
            for e in logged
            if e["event"]
            in (
                "delivery_record_failed",
                "delivery_claim_lost",
                "outbox_claim_failed",
                "lease_renew_failed",
                "delivery_crashed",
            )
        ]
        assert problems == []
        # Only the first 410 started the gone period; the others found it gone already.
        assert [e["url"] for e in logged if e["event"] == "callback_url_gone"] == [receiver.url]
        delivered = {eid for (eid, code), n in answers.items() if code == 200}
        ids = {str(r["event_id"]) for r in await pool_a.fetch("SELECT event_id FROM notifications")}
        assert delivered == ids and len(ids) == total
        assert all(n == 1 for (_, code), n in answers.items() if code == 200)
        assert (await endpoint(pool_a, receiver.url))["status"] == "active"
    finally:
        await pool_a.close()
        await pool_b.close()
