"""`request_poll`: pairs made due now in PostgreSQL, and one NOTIFY naming their instances."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import asyncpg
import pytest

from poller.errors import DatabaseError
from poller.store import db, instance_rows, polls
from poller.store.polls import PollRequest, Wakeup
from tests.detect.harness import Env, add_instance

LATER = timedelta(hours=1)
RESOURCES = ["customers", "invoices", "vendors"]


class Heard:
    """A LISTEN on the poll channel, on a dedicated connection of the test's own."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.payloads: asyncio.Queue[str] = asyncio.Queue()

    def notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.payloads.put_nowait(payload)

    async def next(self, timeout: float = 2.0) -> Wakeup:
        return polls.parse_wakeup(await asyncio.wait_for(self.payloads.get(), timeout))

    async def nothing(self, wait_s: float = 0.3) -> bool:
        await asyncio.sleep(wait_s)
        return self.payloads.empty()


@pytest.fixture
async def heard(db_dsn: str) -> AsyncIterator[Heard]:
    conn = await db.connect(db_dsn)
    heard = Heard(conn)
    await conn.add_listener(polls.CHANNEL, heard.notified)
    try:
        yield heard
    finally:
        await conn.close()


async def push_back(pool: asyncpg.Pool) -> datetime:
    """Every pair due an hour from now (nothing would poll soon); that time."""
    later: datetime = await pool.fetchval("SELECT now() + $1::interval", LATER)
    await pool.execute("UPDATE pair_cursors SET next_due_at = $1", later)
    return later


async def due_now(pool: asyncpg.Pool) -> set[tuple[int, str]]:
    rows = await pool.fetch(
        "SELECT instance_id, resource FROM pair_cursors WHERE next_due_at <= now()"
    )
    return {(r["instance_id"], r["resource"]) for r in rows}


async def three_instances(env: Env) -> tuple[str, int, int, int]:
    """Two instances of one realm (a, b) and one of another (c); all pairs due later."""
    realm = env.emu.add_realm(seed=1)
    other = env.emu.add_realm(seed=2)
    a = await add_instance(env.pool, env.emu, realm, name="a", resources=RESOURCES)
    b = await add_instance(env.pool, env.emu, realm, name="b", resources=["invoices", "bills"])
    c = await add_instance(env.pool, env.emu, other, name="c", resources=RESOURCES)
    await push_back(env.pool)
    return realm, a, b, c


async def test_one_instance_every_pair(env: Env, heard: Heard) -> None:
    _, a, _, _ = await three_instances(env)
    async with env.pool.acquire() as conn:
        result = await polls.request_poll(conn, instance_id=a)
    assert result == PollRequest(3, (a,), ())
    assert await due_now(env.pool) == {(a, name) for name in RESOURCES}
    assert await heard.next() == Wakeup(frozenset({a}), None)
    assert await heard.nothing()  # one notification per request


async def test_a_realm_names_every_instance_of_it(env: Env, heard: Heard) -> None:
    realm, a, b, _ = await three_instances(env)
    async with env.pool.acquire() as conn:
        result = await polls.request_poll(conn, realm_id=realm, entities=["Invoice"])
    assert result == PollRequest(2, (a, b), ())
    assert await due_now(env.pool) == {(a, "invoices"), (b, "invoices")}
    assert await heard.next() == Wakeup(frozenset({a, b}), frozenset({"invoices"}))


async def test_entity_names_map_to_resources_and_unknown_ones_are_reported(
    env: Env, heard: Heard
) -> None:
    realm, a, b, _ = await three_instances(env)
    async with env.pool.acquire() as conn:
        # Any case; "Bill" is only b's; "Estimate" is a resource nobody here polls; "Gadget"
        # is no QBO entity we know; a repeated name counts once.
        result = await polls.request_poll(
            conn,
            realm_id=realm,
            entities=["customer", "Bill", "Estimate", "Gadget", "Customer"],
        )
    assert result == PollRequest(2, (a, b), ("Gadget",))
    assert await due_now(env.pool) == {(a, "customers"), (b, "bills")}
    wakeup = await heard.next()
    assert wakeup.instance_ids == {a, b}
    assert wakeup.resources == {"customers", "bills", "estimates"}


async def test_nothing_matched_nothing_notified(env: Env, heard: Heard) -> None:
    realm, a, _, _ = await three_instances(env)
    async with env.pool.acquire() as conn:
        assert await polls.request_poll(conn, realm_id=realm, entities=["Gadget"]) == (
            PollRequest(0, (), ("Gadget",))
        )
        assert await polls.request_poll(conn, realm_id="no-such-realm") == PollRequest(0, (), ())
        assert await polls.request_poll(conn, instance_id=a, entities=["Bill"]) == PollRequest(
            0, (), ()
        )
    assert await due_now(env.pool) == set()
    assert await heard.nothing()


@pytest.mark.parametrize("change", ["paused", "needs_reconnect", "events disabled"])
async def test_inactive_instances_are_left_alone(env: Env, heard: Heard, change: str) -> None:
    realm, a, b, _ = await three_instances(env)
    async with env.pool.acquire() as conn:
        if change == "events disabled":
            await conn.execute("UPDATE instances SET events_enabled = false WHERE id = $1", a)
        else:
            await instance_rows.set_status(conn, a, change, "test")
        before = await conn.fetch(
            "SELECT resource, next_due_at FROM pair_cursors WHERE instance_id = $1", a
        )
        assert await polls.request_poll(conn, instance_id=a) == PollRequest(0, (), ())
        assert await heard.nothing()
        result = await polls.request_poll(conn, realm_id=realm)
        after = await conn.fetch(
            "SELECT resource, next_due_at FROM pair_cursors WHERE instance_id = $1", a
        )
    assert result == PollRequest(2, (b,), ())
    assert await heard.next() == Wakeup(frozenset({b}), None)
    assert after == before


async def test_inside_a_transaction_the_notification_waits_for_commit(
    env: Env, heard: Heard
) -> None:
    _, a, _, _ = await three_instances(env)
    async with env.pool.acquire() as conn:
        async with conn.transaction():
            await polls.request_poll(conn, instance_id=a, entities=["Vendor"])
            assert await heard.nothing()
        assert await heard.next() == Wakeup(frozenset({a}), frozenset({"vendors"}))


async def test_rolled_back_request_neither_makes_due_nor_notifies(env: Env, heard: Heard) -> None:
    _, a, _, _ = await three_instances(env)
    async with env.pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await polls.request_poll(conn, instance_id=a)
                raise RuntimeError("the caller's transaction fails")
    assert await due_now(env.pool) == set()
    assert await heard.nothing()


async def test_errors_are_the_store_s(env: Env, db_dsn: str) -> None:
    _, a, _, _ = await three_instances(env)
    conn = await db.connect(db_dsn)
    await conn.close()
    with pytest.raises(DatabaseError):
        await polls.request_poll(conn, instance_id=a)
    async with env.pool.acquire() as live:
        with pytest.raises(ValueError, match="exactly one"):
            await polls.request_poll(live)
        with pytest.raises(ValueError, match="exactly one"):
            await polls.request_poll(live, instance_id=a, realm_id="1")


def test_payloads_that_are_not_ours_are_refused() -> None:
    assert polls.parse_wakeup('{"instances": null, "resources": ["bills"]}') == Wakeup(
        None, frozenset({"bills"})
    )
    for payload in ("", "[]", "{", '{"instances": "x"}', '{"instances": [{}]}'):
        with pytest.raises(ValueError):
            polls.parse_wakeup(payload)
