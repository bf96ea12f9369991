"""The supervisor-facing services: factory, pruner, outbox gauges, and a stop while idle."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta
from types import SimpleNamespace

import asyncpg

from poller import metrics
from poller.deliver.dispatcher import Dispatcher
from poller.deliver.upkeep import OutboxGauges, Pruner, prune_interval
from poller.progress import ProgressBoard
from poller.store import webhooks
from poller.supervisor import delivery_services
from poller.threads import ThreadedService
from tests.deliver.helpers import BOX, eventually, insert_instance, insert_many, settings, statuses

URL = "http://127.0.0.1:9/hook"


async def test_services_factory(pool: asyncpg.Pool, db_dsn: str) -> None:
    board = ProgressBoard()
    runtime = SimpleNamespace(settings=settings(), pool=pool, dsn=db_dsn, box=BOX, progress=board)
    made = delivery_services(runtime)  # type: ignore[arg-type]
    assert board.names == ["dispatcher"]  # the watchdog vouches for its claim loop
    assert [s.name for s in made] == ["deliver.dispatcher", "deliver.pruner", "deliver.gauges"]
    threaded = made[0]
    assert isinstance(threaded, ThreadedService)
    # Each returns promptly once stop is set, even with nothing to do.
    stop = asyncio.Event()
    tasks = [asyncio.create_task(s.run(stop)) for s in made]

    async def listening() -> bool:  # the dispatcher's LISTEN, from its own thread and loop
        inner = threaded.inner
        return isinstance(inner, Dispatcher) and inner.listening.is_set()

    await eventually(listening, timeout=5)
    assert threaded.thread is not None and threaded.thread is not threading.main_thread()
    assert threaded.thread.is_alive()
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


async def test_webhook_records_past_the_retention_are_pruned(pool: asyncpg.Pool) -> None:
    """Intuit notifications only deduplicate retries; unread bodies wait for inspection. Both
    go after the retention, or the tables would grow for as long as the daemon runs."""
    two_hours, one_second = timedelta(hours=2), timedelta(seconds=1)
    for n, age in enumerate([two_hours, two_hours, two_hours, one_second]):
        await pool.execute(
            "INSERT INTO webhook_notifications (dedupe_key, format, realm_id, entity,"
            " object_id, operation, received_at, notification)"
            " VALUES ($1, 'legacy', '1', 'Invoice', $2, 'Update', now() - $3::interval, '{}')",
            f"key-{n}",
            str(n),
            age,
        )
    for age in [two_hours, one_second]:
        await pool.execute(
            "INSERT INTO webhook_rejects (received_at, content_type, reason, body)"
            " VALUES (now() - $1::interval, 'application/json', 'unreadable', '\\x00')",
            age,
        )
    pruner = Pruner(pool, 3600.0, batch=2, prune_batch=webhooks.prune_batch, label="webhooks")
    assert pruner.name == "webhooks.pruner"
    assert await pruner.prune_once() == 4
    assert await pool.fetchval("SELECT array_agg(dedupe_key) FROM webhook_notifications") == [
        "key-3"
    ]
    assert await pool.fetchval("SELECT count(*) FROM webhook_rejects") == 1
