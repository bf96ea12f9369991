"""Poll requests wake pairs: `InstanceCycles.wake`, and `Wakeups` in the PollerService."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg

from poller.detect.pairs import InstancePairs
from poller.store import polls
from tests.detect.harness import Driver, Env, add_instance, events, qbo_client, running_service
from tests.detect.harness import wait_until as wait_for

RESOURCES = ["customers", "invoices", "vendors"]
LONG_S = 900.0  # 15 minutes: nothing polls on its schedule during a test


@asynccontextmanager
async def running_pairs(driver: Driver) -> AsyncIterator[None]:
    """The driver's pairs, scheduled as in the service (one task sleeps until one is due)."""
    stop = asyncio.Event()
    pairs = InstancePairs(driver.cycles, [pair.resource for pair in driver.pairs])
    task = asyncio.create_task(pairs.run(stop))
    try:
        yield
    finally:
        stop.set()
        driver._stop.set()
        await asyncio.wait_for(task, 10)


async def poll_counts(pool: asyncpg.Pool, instance_id: int) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT resource, polls FROM pair_cursors WHERE instance_id = $1", instance_id
    )
    return {r["resource"]: r["polls"] for r in rows}


async def next_due(pool: asyncpg.Pool, instance_id: int) -> dict[str, datetime]:
    rows = await pool.fetch(
        "SELECT resource, next_due_at FROM pair_cursors WHERE instance_id = $1", instance_id
    )
    return {r["resource"]: r["next_due_at"] for r in rows}


def counts_are(pool: asyncpg.Pool, instance_id: int, **expected: int) -> Any:
    async def check() -> bool:
        counts = await poll_counts(pool, instance_id)
        return all(counts.get(name.replace("_", "-")) == n for name, n in expected.items())

    return check


async def stays(check: Any, wait_s: float = 0.4) -> bool:
    """`check` holds now and still after `wait_s` (nothing more happened)."""
    if not await check():
        return False
    await asyncio.sleep(wait_s)
    return bool(await check())


async def test_woken_pairs_share_one_cycle_and_keep_the_grid(env: Env) -> None:
    emu, pool = env.emu, env.pool
    realm = emu.add_realm(seed=1, per_entity=1)
    iid = await add_instance(pool, emu, realm, interval_s=LONG_S, resources=RESOURCES)
    async with env.driver(iid) as driver, running_pairs(driver):
        # The first poll is at once (the driver's schedule has no spread), then nothing is due
        # for 15 minutes.
        await wait_for(counts_are(pool, iid, customers=1, invoices=1, vendors=1))
        grid = await next_due(pool, iid)
        requests = env.qbo_requests(realm)
        customer = emu.create(realm, "Customer", {"DisplayName": "Woken Early"})
        driver.cycles.wake(["customers", "invoices"])
        await wait_for(counts_are(pool, iid, customers=2, invoices=2, vendors=1), timeout=2)
        assert await stays(counts_are(pool, iid, customers=2, invoices=2, vendors=1))
        assert env.qbo_requests(realm) == requests + 1  # both pairs in ONE request
        assert driver.cycles.cycles == 2
        # Early once, then back on the instance's grid: due with the others, as before.
        assert await next_due(pool, iid) == grid
    found = [(e.resource, e.object_id, e.event_type) for e in await events(pool, iid)]
    assert ("customers", customer["Id"], "CREATED") in found


async def test_a_pair_in_the_cycle_polls_again_and_a_waiting_one_just_stays(env: Env) -> None:
    emu, pool = env.emu, env.pool
    realm = emu.add_realm(seed=2, per_entity=1)
    iid = await add_instance(pool, emu, realm, interval_s=LONG_S, resources=RESOURCES[:2])
    inside = asyncio.Event()
    gate = asyncio.Event()
    holding = [True]

    async def before_commit(*_: object) -> None:
        if holding[0]:
            inside.set()
            await gate.wait()

    async with env.driver(iid, before_commit=before_commit) as driver, running_pairs(driver):
        await asyncio.wait_for(inside.wait(), 5)
        # The first cycle has its answer from QBO and has not committed: a request now may
        # name a change that answer does not hold, so the pair polls again afterwards.
        driver.cycles.wake(["customers"])
        holding[0] = False
        gate.set()
        await wait_for(counts_are(pool, iid, customers=2, invoices=1), timeout=2)
        assert await stays(counts_are(pool, iid, customers=2, invoices=1))
        assert driver.cycles.cycles == 2
        # Woken, then named again while it waits for its cycle: that cycle serves both.
        driver.cycles.wake(["customers"])
        for _ in range(3):
            await asyncio.sleep(0)  # the pair wakes and joins the queue
        driver.cycles.wake(["customers", "invoices", "no-such-resource"])
        await wait_for(counts_are(pool, iid, customers=3, invoices=2), timeout=2)
        assert await stays(counts_are(pool, iid, customers=3, invoices=2))
        assert driver.cycles.cycles == 3


async def test_request_poll_reaches_the_service_within_a_second(env: Env) -> None:
    emu, pool = env.emu, env.pool
    realm = emu.add_realm(seed=3, per_entity=1)
    iid = await add_instance(pool, emu, realm, interval_s=LONG_S, resources=RESOURCES)
    other = await add_instance(
        pool, emu, emu.add_realm(seed=4), name="other", interval_s=LONG_S, resources=RESOURCES
    )
    settings = env.settings()
    async with (
        qbo_client(settings, pool) as client,
        running_service(pool, settings, client, dsn=env.dsn, initial_spread_s=0.0) as service,
    ):
        assert service.wakeups is not None
        await wait_for(counts_are(pool, iid, customers=1, invoices=1, vendors=1))
        await wait_for(counts_are(pool, other, customers=1, invoices=1, vendors=1))
        await asyncio.wait_for(service.wakeups.listener.listening.wait(), 5)
        requests = env.qbo_requests(realm)
        invoice_id = emu.ids(realm, "Invoice")[0]
        emu.update(realm, "Invoice", {"Id": invoice_id, "PrivateNote": "poll me"})
        sent = time.monotonic()
        async with pool.acquire() as conn:
            result = await polls.request_poll(conn, realm_id=realm, entities=["Invoice", "Bill"])
        assert result == polls.PollRequest(1, (iid,), ())
        await wait_for(counts_are(pool, iid, customers=1, invoices=2, vendors=1), timeout=2)
        latency = time.monotonic() - sent
        assert latency < 2.0
        assert await stays(counts_are(pool, iid, customers=1, invoices=2, vendors=1))
        assert env.qbo_requests(realm) == requests + 1
        assert await poll_counts(pool, other) == {"customers": 1, "invoices": 1, "vendors": 1}
    found = [(e.resource, e.object_id, e.event_type) for e in await events(pool, iid)]
    assert ("invoices", invoice_id, "UPDATED") in found


async def test_a_request_missed_while_reconnecting_is_found_by_the_due_times(env: Env) -> None:
    emu, pool = env.emu, env.pool
    realm = emu.add_realm(seed=5, per_entity=1)
    iid = await add_instance(pool, emu, realm, interval_s=LONG_S, resources=RESOURCES)
    settings = env.settings()
    async with (
        qbo_client(settings, pool) as client,
        running_service(pool, settings, client, dsn=env.dsn, initial_spread_s=0.0) as service,
    ):
        assert service.wakeups is not None
        listener = service.wakeups.listener
        await wait_for(counts_are(pool, iid, customers=1, invoices=1, vendors=1))
        await asyncio.wait_for(listener.listening.wait(), 5)
        assert listener.connections == 1
        # The server drops the LISTEN connection; the request comes before it is back.
        killed = await pool.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        )
        assert killed == 1
        async with pool.acquire() as conn:
            await polls.request_poll(conn, instance_id=iid, entities=["Vendor"])
        await wait_for(counts_are(pool, iid, customers=1, invoices=1, vendors=2), timeout=5)
        assert listener.connections == 2
        assert await stays(counts_are(pool, iid, customers=1, invoices=1, vendors=2))
