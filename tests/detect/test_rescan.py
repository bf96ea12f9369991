"""The instance rescan follows what changed (NOTIFY from the database's triggers), not the
number of instances; the long-lived state is frozen once the instances have settled."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from poller.detect.schedule import INITIAL_SPREAD_CAP_S
from poller.detect.service import START_RATE, PollerOptions, PollerService
from poller.store import instance_rows
from tests.detect.harness import Env, add_instance, qbo_client, running_service, wait_until

HOUR_S = 3600.0  # neither the periodic read nor the backstop comes during a test


async def polls(pool: asyncpg.Pool, iid: int, resource: str = "customers") -> int:
    value = await pool.fetchval(
        "SELECT polls FROM pair_cursors WHERE instance_id = $1 AND resource = $2", iid, resource
    )
    return int(value or 0)


def above(pool: asyncpg.Pool, iid: int, n: int, resource: str = "customers") -> Any:
    async def check() -> bool:
        return await polls(pool, iid, resource) > n

    return check


def holds(predicate: Any) -> Any:
    async def check() -> bool:
        return bool(predicate())

    return check


async def test_instances_added_changed_and_removed_are_read_alone_by_notification(
    env: Env,
) -> None:
    emu, pool = env.emu, env.pool
    realm = emu.add_realm(seed=41, per_entity=1)
    old = await add_instance(pool, emu, realm, name="old", interval_s=0.2, resources=["customers"])
    settled: list[int] = []
    settings = env.settings()
    async with (
        qbo_client(settings, pool) as client,
        running_service(
            pool,
            settings,
            client,
            dsn=env.dsn,
            rescan_s=HOUR_S,
            full_rescan_s=HOUR_S,
            initial_spread_s=0.0,
            settle_s=0.5,
            on_settled=lambda: settled.append(len(svc.running)),
        ) as svc,
    ):
        assert svc.wakeups is not None
        await asyncio.wait_for(svc.wakeups.listener.listening.wait(), 5)
        await wait_until(above(pool, old, 0))
        await wait_until(holds(lambda: settled == [1]))  # start-up settled: one freeze
        assert (svc.full_scans, svc.partial_scans) == (1, 0)
        # Added: picked up by its notification alone.
        new = await add_instance(
            pool, emu, realm, name="new", interval_s=0.2, resources=["customers"]
        )
        await wait_until(above(pool, new, 0))
        # Changed (another resource list): restarted with its new pairs.
        await add_instance(
            pool, emu, realm, name="new", interval_s=0.2, resources=["customers", "vendors"]
        )
        await wait_until(above(pool, new, 0, "vendors"))
        # Paused: stopped; removed: gone. The other instance polls on, never restarted.
        async with pool.acquire() as conn:
            await instance_rows.set_status(conn, new, "paused", "test")
        await wait_until(holds(lambda: new not in svc.running))
        async with pool.acquire() as conn:
            await instance_rows.remove(conn, "old")
        await wait_until(holds(lambda: not svc.running))
        assert svc.full_scans == 1  # every change was read by itself
        assert svc.partial_scans >= 4
        # Settled again once the changes stopped (the supervisor refreezes then).
        await wait_until(holds(lambda: len(settled) >= 2 and settled[-1] == 0))


async def test_a_change_missed_while_the_listener_was_away_is_found_by_one_full_read(
    env: Env,
) -> None:
    emu, pool = env.emu, env.pool
    realm = emu.add_realm(seed=42, per_entity=1)
    settings = env.settings()
    async with (
        qbo_client(settings, pool) as client,
        running_service(
            pool,
            settings,
            client,
            dsn=env.dsn,
            rescan_s=HOUR_S,
            full_rescan_s=HOUR_S,
            initial_spread_s=0.0,
        ) as svc,
    ):
        assert svc.wakeups is not None
        listener = svc.wakeups.listener
        await asyncio.wait_for(listener.listening.wait(), 5)
        await wait_until(holds(lambda: svc.full_scans == 1))  # the start-up read
        killed = await pool.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        )
        assert killed == 1
        # Added before the listener is back: its notification is lost.
        iid = await add_instance(pool, emu, realm, name="late", interval_s=0.2)
        await wait_until(above(pool, iid, 0), timeout=15)
        # Found by the one full read after the reconnect (or, had the listener been back
        # before the instance was added, by its notification): either way one more full read.
        await wait_until(holds(lambda: listener.connections == 2 and svc.full_scans == 2))
        await asyncio.sleep(0.3)
        assert svc.full_scans == 2


def test_many_instances_started_together_spread_their_first_polls_further(env: Env) -> None:
    settings = env.settings()
    service = PollerService(env.pool, settings, lambda *_: None)  # type: ignore[arg-type,return-value]
    assert service._spread_s(1) == INITIAL_SPREAD_CAP_S  # one new instance: within 30 s
    # A fleet at start-up: no more than START_RATE first polls (and token refreshes) a second.
    assert service._spread_s(4500) == 4500 / START_RATE > INITIAL_SPREAD_CAP_S
    fixed = PollerService(
        env.pool,
        settings,
        lambda *_: None,  # type: ignore[arg-type,return-value]
        PollerOptions(initial_spread_s=0.0),
    )
    assert fixed._spread_s(4500) == 0.0
