"""Fairness between callback URLs (issue 10, finding 1): a receiver that accepts and never
answers must not delay another tenant's callbacks, and its own notifications wait out a paused
breaker without spending their attempts."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
import pytest
from aiohttp import web

from poller.deliver.dispatcher import Dispatcher
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
)

TIMEOUT_S = 1.0
BREAKER_PAUSE_S = 2.0
# Long enough in total (~60 s) that nothing of the hanging URL dies during the test.
SCHEDULE = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
HEALTHY_COUNT = 40
HEALTHY_EVERY_S = 0.15
HANGING_BACKLOG = 40


@dataclass
class Latencies:
    """When each healthy notification was committed, and when its callback arrived."""

    inserted: dict[str, float] = field(default_factory=dict)
    received: dict[str, float] = field(default_factory=dict)

    def values(self) -> list[float]:
        return sorted(self.received[eid] - self.inserted[eid] for eid in self.received)

    def p99(self) -> float:
        values = self.values()
        return values[min(len(values) - 1, int(len(values) * 0.99))]

    def median(self) -> float:
        return statistics.median(self.values())


@pytest.fixture
async def receivers() -> AsyncIterator[tuple[Receiver, Receiver]]:
    healthy = await Receiver().start()
    hanging = await Receiver().start()
    yield healthy, hanging
    await hanging.stop()
    await healthy.stop()


async def feed_healthy(pool: asyncpg.Pool, iid: int, latencies: Latencies) -> None:
    """One notification every HEALTHY_EVERY_S, as a steady poller of instance B would write."""
    for number in range(HEALTHY_COUNT):
        change = Change("UPDATED", str(number), "2026-11-24T10:00:00Z", f'{{"Id":"{number}"}}')
        _, event_id = await insert_notification(pool, iid, [change])
        latencies.inserted[event_id] = time.monotonic()
        await asyncio.sleep(HEALTHY_EVERY_S)


async def waiting_untried(pool: asyncpg.Pool, iid: int) -> int:
    """Healthy notifications pending for more than a second without a single attempt."""
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM notifications WHERE instance_id = $1 AND status = 'pending'"
            " AND attempts = 0 AND created_at < now() - interval '1 second'",
            iid,
        )
    )


async def hanging_attempts(pool: asyncpg.Pool, iid: int) -> int:
    return int(
        await pool.fetchval(
            "SELECT coalesce(sum(attempts), 0) FROM notifications WHERE instance_id = $1", iid
        )
    )


async def run_healthy_phase(
    pool: asyncpg.Pool, iid: int, healthy: Receiver, monitor_iid: int
) -> tuple[Latencies, int]:
    """Feed the healthy instance, wait for every callback; returns the latencies and the most
    healthy notifications seen waiting untried at once."""
    latencies = Latencies()
    worst_untried = 0
    feeder = asyncio.create_task(feed_healthy(pool, iid, latencies))
    try:
        while not feeder.done() or len(latencies.received) < HEALTHY_COUNT:
            worst_untried = max(worst_untried, await waiting_untried(pool, monitor_iid))
            for request in healthy.requests:
                latencies.received.setdefault(request.event_id, request.at)
            if feeder.done() and time.monotonic() - max(latencies.inserted.values()) > 120:
                break
            await asyncio.sleep(0.05)
    finally:
        await feeder
    healthy.requests.clear()
    return latencies, worst_untried


@pytest.mark.timeout(180)
async def test_a_hanging_receiver_does_not_stall_another_tenant(
    pool: asyncpg.Pool, db_dsn: str, receivers: tuple[Receiver, Receiver]
) -> None:
    healthy, hanging = receivers
    recovered = asyncio.Event()

    async def hang(_r: Received) -> web.Response:
        await recovered.wait()  # accepts the request and never answers, until it recovers
        return web.Response(text="ok")

    hanging.respond = hang
    b_iid = await insert_instance(pool, healthy.url, name="healthy")
    a_iid = await insert_instance(pool, hanging.url, name="hanging")
    cfg = settings(
        delivery_timeout_s=TIMEOUT_S,
        delivery_concurrency=4,
        delivery_per_url_concurrency=2,
        retry_schedule_s=SCHEDULE,
        delivery_poll_interval_s=0.2,
        delivery_breaker_timeouts=3,
        delivery_breaker_pause_s=BREAKER_PAUSE_S,
        delivery_breaker_max_pause_s=2 * BREAKER_PAUSE_S,
    )
    dispatcher = Dispatcher(cfg, pool, db_dsn, BOX)
    async with running(dispatcher):
        # The healthy receiver's usual latency, with nobody hanging.
        usual, _ = await run_healthy_phase(pool, b_iid, healthy, b_iid)
        # Instance A's receiver hangs with a backlog, and A keeps producing.
        await insert_many(pool, a_iid, HANGING_BACKLOG)
        await asyncio.sleep(0.3)
        stalled, untried = await run_healthy_phase(pool, b_iid, healthy, b_iid)
        usual_p99, stalled_p99 = usual.p99(), stalled.p99()
        print(
            f"\nhealthy p99 {usual_p99:.3f}s alone, {stalled_p99:.3f}s beside a hanging "
            f"receiver (median {stalled.median():.3f}s); "
            f"at most {untried} healthy notification(s) waited untried"
        )
        assert stalled_p99 <= usual_p99 + 2.0
        assert untried == 0
        # While the hanging URL is paused its notifications wait without spending attempts
        # (measured once the requests in flight when it paused have timed out and been
        # recorded, until shortly before the pause ends).
        await eventually(lambda: _quiet_window(dispatcher, hanging.url) >= 0.8, timeout=15)
        spent = await hanging_attempts(pool, a_iid)
        await asyncio.sleep(0.7)
        assert dispatcher.breaker.is_open(hanging.url)
        assert await hanging_attempts(pool, a_iid) == spent
        # Far fewer requests than a retry per notification: the breaker held them back.
        assert len(hanging.requests) < HANGING_BACKLOG
        recovered.set()
        await eventually(
            lambda: _delivered(pool, a_iid, HANGING_BACKLOG),
            timeout=4 * BREAKER_PAUSE_S + 10,
            interval=0.1,
        )
        assert not dispatcher.breaker.is_open(hanging.url)
    dead = await pool.fetchval("SELECT count(*) FROM notifications WHERE status = 'dead'")
    assert dead == 0


def _quiet_window(dispatcher: Dispatcher, url: str) -> float:
    """Seconds left in the URL's pause, counted only once its in-flight requests are done."""
    pause = dispatcher.breaker.pause(url)
    now = time.monotonic()
    if pause is None or now - pause.started_at < TIMEOUT_S + 0.3:
        return 0.0
    return pause.until - now


async def _delivered(pool: asyncpg.Pool, iid: int, count: int) -> bool:
    found = await pool.fetchval(
        "SELECT count(*) FROM notifications WHERE instance_id = $1 AND status = 'delivered'", iid
    )
    return int(found) == count
