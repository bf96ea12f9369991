"""An instance's cycle: coalescing, the instance lease and its fence, isolation of a pair the
database refuses, and the database work of a cycle — against the emulator and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from poller.detect.feed import PairAnswer
from poller.errors import StatementRefused
from poller.qbo.types import QboError
from poller.resources import DEFAULT_NAMES
from poller.store import db
from poller.store.cursors import LeaseLost, PairKey
from tests.detect.harness import Env, add_instance, cursor_row, events

# The lease's owner went silent (no heartbeat, no statement under the lease) an hour ago.
LEASE_HELD = """
WITH lease AS (
    UPDATE instance_leases SET renewed_at = now() - interval '1 h' WHERE instance_id = $1
    RETURNING owner
)
UPDATE replicas SET heartbeat_at = now() - interval '1 h' WHERE id IN (SELECT owner FROM lease)
"""


async def test_pairs_due_close_together_share_one_cycle(env: Env) -> None:
    emu, pool = env.emu, env.pool
    realm = emu.add_realm(seed=1, per_entity=1)
    iid = await add_instance(pool, emu, realm, resources=["customers", "invoices", "tax-codes"])
    async with env.driver(iid) as d:
        d.cycles.window_s = 0.05
        await d.cycle()
        before, cycles = env.qbo_requests(realm), d.cycles.cycles

        async def late(n: int, delay: float) -> float:
            await asyncio.sleep(delay)
            return await d.pairs[n].poll_once()

        dues = await asyncio.gather(late(0, 0), late(1, 0.02), late(2, 0.03))
    assert d.cycles.cycles == cycles + 1 and env.qbo_requests(realm) == before + 1
    assert len(set(dues)) == 1  # and they stay together on the grid


async def test_held_instance_costs_no_request_and_a_stale_holder_is_fenced_out(env: Env) -> None:
    emu, pool = env.emu, env.pool
    realm = emu.add_realm(seed=2, per_entity=1)
    iid = await add_instance(pool, emu, realm, resources=["customers", "invoices", "tax-rates"])
    a_settings = env.settings(replica_id="replica-a")
    b_settings = env.settings(replica_id="replica-b")
    async with env.driver(iid, a_settings) as a, env.driver(iid, b_settings) as b:
        await a.cycle()
        await a.cycle()
        spent = env.qbo_requests(realm)
        held = await b.cycle()  # a holds the instance: b asks QBO nothing
        assert env.qbo_requests(realm) == spent
        assert all(time.time() + 29 < due <= time.time() + 31 for due in held)
        c1 = emu.create(realm, "Customer", {"DisplayName": "Seen By B"})
        await pool.execute(LEASE_HELD, iid)  # a stalls past its lease...
        await b.cycle()  # ...b takes the instance over
        token = await pool.fetchval("SELECT token FROM instance_leases WHERE instance_id = $1", iid)
        assert token == 2
        c2 = emu.create(realm, "Customer", {"DisplayName": "Not Written By A"})
        stale = await a.cycle(return_exceptions=True)  # a still believes it holds it: fenced
        assert all(isinstance(o, LeaseLost) for o in stale)
        assert c2["Id"] not in {e.object_id for e in await events(pool, iid)}
        spent = env.qbo_requests(realm)
        again = await a.cycle()  # a asks again: held, no request
        assert env.qbo_requests(realm) == spent and all(isinstance(o, float) for o in again)
        await b.cycle()
    got = Counter((e.object_id, e.event_type) for e in await events(pool, iid))
    assert got == Counter({(c1["Id"], "CREATED"): 1, (c2["Id"], "CREATED"): 1})
    assert (
        await pool.fetchval("SELECT owner FROM instance_leases WHERE instance_id = $1", iid)
        == "replica-b"
    )


@pytest.mark.parametrize("field", ["Id", "SyncToken"])  # refused when read, when written
async def test_rows_the_database_refuses_fail_only_their_pair(env: Env, field: str) -> None:
    emu, pool = env.emu, env.pool
    realm = emu.add_realm(seed=3, per_entity=1)
    iid = await add_instance(pool, emu, realm, resources=["customers", "invoices", "vendors"])
    poison = {"on": False}

    async def hook(key: PairKey, answer: PairAnswer) -> None:
        if poison["on"] and key.resource == "invoices":  # PostgreSQL text cannot hold NUL
            bad = {
                "Id": "7",
                "SyncToken": "0",
                "MetaData": {
                    "CreateTime": "2099-01-01T00:00:00-08:00",
                    "LastUpdatedTime": "2099-01-01T00:00:00-08:00",
                },
            }
            bad[field] += "\x00"
            answer.objects.append(bad)

    async with env.driver(iid, before_commit=hook) as d:
        await d.cycle()
        c = emu.create(realm, "Customer", {"DisplayName": "Not Held Back"})
        v = emu.create(realm, "Vendor", {"DisplayName": "Nor This"})
        poison["on"] = True
        cust, inv, vend = await d.cycle(return_exceptions=True)
        assert isinstance(cust, float) and isinstance(vend, float)
        # The store raises its own error type (issue 9), with the driver's error as the cause.
        assert isinstance(inv, StatementRefused)
        assert isinstance(inv.__cause__, asyncpg.PostgresError)
        assert sorted((e.object_id, e.resource) for e in await events(pool, iid)) == sorted(
            [(c["Id"], "customers"), (v["Id"], "vendors")]
        )
        row = await cursor_row(pool, iid, "invoices")
        assert row["consecutive_errors"] == 1 and "0x00" in row["last_error"]
        poison["on"] = False
        await d.cycle()
        assert (await cursor_row(pool, iid, "invoices"))["consecutive_errors"] == 0


@asynccontextmanager
async def counting_pool(dsn: str) -> AsyncIterator[tuple[asyncpg.Pool, list[str]]]:
    """A pool whose every statement (BEGIN, COMMIT and the reset on release included) is logged."""
    sent: list[str] = []

    async def init(conn: asyncpg.Connection) -> None:
        await db.init_connection(conn)
        conn.add_query_logger(lambda record: sent.append(record.query))

    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4, init=init)
    try:
        yield pool, sent
    finally:
        await pool.close()


async def test_database_work_of_a_cycle_with_22_resources(env: Env) -> None:
    emu, pool = env.emu, env.pool
    realm = emu.add_realm(seed=4, per_entity=2)
    iid = await add_instance(pool, emu, realm, resources=list(DEFAULT_NAMES))
    async with counting_pool(env.dsn) as (counted, sent):
        env_counted: Any = Env(emu, counted, env.dsn)
        async with env_counted.driver(iid) as d:
            await d.cycle()  # first start: takes the lease, baselines
            await d.cycle()
            emu.clock.advance(10)  # past the overlap: QBO returns nothing
            await d.cycle()
            sent.clear()
            for _ in range(3):
                await d.cycle()
            quiet = len(sent) / 3
            emu.create(realm, "Customer", {"DisplayName": "First Change"})
            await d.cycle()  # (the first use of some types costs a look-up)
            emu.clock.advance(10)
            await d.cycle()
            sent.clear()
            emu.create(realm, "Customer", {"DisplayName": "One Change"})
            await d.cycle()
            changed = len(sent)
    # Nothing new: one fenced statement (watermarks + lease) and the pool's reset.
    assert quiet <= 2, sent
    # A change: snapshots read; BEGIN, writes, notifications, settle, COMMIT; reset.
    assert changed <= 7, sent


async def test_pairs_failing_together_retry_together(env: Env) -> None:
    emu, pool = env.emu, env.pool
    realm = emu.add_realm(seed=5, per_entity=1)
    iid = await add_instance(pool, emu, realm, resources=["customers", "invoices", "tax-rates"])
    async with env.driver(iid) as d:
        await d.cycle()
        emu.inject_fault("error", endpoint="batch", realm=realm, count=10, status=503)
        failed = await d.cycle(return_exceptions=True)
    assert all(isinstance(o, QboError) for o in failed)
    rows = await pool.fetch(
        "SELECT next_due_at, consecutive_errors FROM pair_cursors WHERE instance_id = $1", iid
    )
    assert {r["consecutive_errors"] for r in rows} == {1}
    assert len({r["next_due_at"] for r in rows}) == 1  # one jitter draw: still one cycle


async def test_a_cycle_with_every_pair_queued_does_not_wait_out_the_window(env: Env) -> None:
    """The coalescing window gathers pairs due close together; once every pair of the
    instance waits, nothing more can join, so the cycle starts at once (issue 17: each idle
    cycle paid a timer and a turn of the loop). With one pair missing, it still waits."""
    emu, pool = env.emu, env.pool
    realm = emu.add_realm(seed=3, per_entity=1)
    iid = await add_instance(pool, emu, realm, resources=["customers", "invoices", "vendors"])
    async with env.driver(iid) as d:
        await d.cycle()  # the first cycle: lease, baselines
        window_s = d.cycles.window_s = 30.0  # far longer than any cycle here
        outcomes: list[str] = []
        d.cycles.attach(lambda names: None, len(d.pairs))
        d.cycles.submit([p.resource for p in d.pairs], lambda name, _: outcomes.append(name))
        started = time.monotonic()
        await asyncio.wait_for(_until(lambda: len(outcomes) == len(d.pairs)), window_s / 2)
        assert sorted(outcomes) == sorted(p.resource.name for p in d.pairs)
        assert time.monotonic() - started < window_s / 2
        outcomes.clear()
        d.cycles.submit([p.resource for p in d.pairs[:2]], lambda name, _: outcomes.append(name))
        await asyncio.sleep(0.5)
        assert outcomes == []  # two of three: the window is still open for the third


async def _until(condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0.01)
