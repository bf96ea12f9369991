"""The supervisor-facing services: factory, pruner, outbox gauges, and a stop while idle."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import asyncpg

from poller import metrics
from poller.deliver.dispatcher import Dispatcher
from poller.deliver.upkeep import OutboxGauges, Pruner, prune_interval
from poller.supervisor import delivery_services
from tests.deliver.helpers import BOX, eventually, insert_instance, insert_many, settings, statuses

URL = "http://127.0.0.1:9/hook"


async def test_services_factory(pool: asyncpg.Pool, db_dsn: str) -> None:
    runtime = SimpleNamespace(settings=settings(), pool=pool, dsn=db_dsn, box=BOX)
    made = delivery_services(runtime)  # type: ignore[arg-type]
    assert [s.name for s in made] == ["deliver.dispatcher", "deliver.pruner", "deliver.gauges"]
    assert isinstance(made[0], Dispatcher)
    # Each returns promptly once stop is set, even with nothing to do.
    stop = asyncio.Event()
    tasks = [asyncio.create_task(s.run(stop)) for s in made]
    await asyncio.wait_for(made[0].listening.wait(), 5)  # type: ignore[attr-defined]
    t0 = time.monotonic()
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 3)
    assert time.monotonic() - t0 < 1.0


async def test_pruner_service_removes_old_finished_rows(pool: asyncpg.Pool) -> None:
    iid = await insert_instance(pool, URL)
    await insert_many(pool, iid, 12)
    await pool.execute(
        "UPDATE notifications SET status = 'delivered', finished_at = now()"
        " - interval '1 hour' WHERE id <= 10"
    )
    await pool.execute(
        "UPDATE notifications SET status = 'dead', finished_at = now() WHERE id = 11"
    )
    stop = asyncio.Event()
    task = asyncio.create_task(Pruner(pool, retention_s=60, interval_s=0.05, batch=3).run(stop))
    await eventually(lambda: _total(pool, 2))
    stop.set()
    await asyncio.wait_for(task, 2)
    assert await statuses(pool) == {"dead": 1, "pending": 1}
    assert prune_interval(7 * 86400) == 300 and prune_interval(5) == 1


async def _total(pool: asyncpg.Pool, n: int) -> bool:
    return await pool.fetchval("SELECT count(*) FROM notifications") == n


async def test_gauges(pool: asyncpg.Pool) -> None:
    iid = await insert_instance(pool, URL)
    await insert_many(pool, iid, 5)
    await pool.execute("UPDATE notifications SET status = 'dead' WHERE id <= 2")
    assert await OutboxGauges(pool).refresh() == {"pending": 3, "held": 0, "dead": 2}
    assert metrics.OUTBOX_DEPTH._value.get() == 3 and metrics.DEAD_LETTERS._value.get() == 2
