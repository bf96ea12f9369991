"""The daemon-wide cap on a realm's Intuit budget (issue 10 finding 7): however short the
intervals, the real poller service sends a realm at most POLLER_QBO_BUDGET_SHARE of its window,
counted by the emulator (time compressed: a 2-second window of 10 requests stands in for
Intuit's 60 seconds and 500)."""

from __future__ import annotations

import asyncio
import time

from poller.config import Settings
from poller.qbo.limiter import LimiterConfig, RealmLimiter
from tests.detect.harness import Env, add_instance, qbo_client, running_service

WINDOW_S = 2.0
INTUIT_PER_WINDOW = 10  # below the emulator's own 500/min, so it never answers 429 here
SHARE = 0.5
RUN_S = 3 * WINDOW_S + 0.5


def test_the_default_share_leaves_intuit_a_fifth() -> None:
    assert Settings().qbo_budget_share == 0.8
    assert RealmLimiter(budget_share=0.8).per_window == 400  # of Intuit's 500 a minute
    assert RealmLimiter(LimiterConfig(per_window=3), budget_share=0.1).per_window == 1


async def test_many_fast_pairs_of_one_realm_stay_within_the_share(env: Env) -> None:
    emu, pool = env.emu, env.pool
    realm = emu.add_realm(seed=5, per_entity=1)
    resources = ["customers", "vendors", "invoices", "bills"]
    for name in ("a", "b", "c"):  # three instances of one company, polling every 50 ms
        await add_instance(pool, emu, realm, name=name, interval_s=0.05, resources=resources)
    settings = env.settings(qbo_budget_share=SHARE)
    limits = LimiterConfig(per_window=INTUIT_PER_WINDOW, window_s=WINDOW_S)
    samples: list[tuple[float, int]] = []
    async with (
        qbo_client(settings, pool, limits) as client,
        running_service(pool, settings, client),
    ):
        started = time.monotonic()
        while time.monotonic() - started < RUN_S:
            samples.append((time.monotonic(), env.qbo_requests(realm)))
            await asyncio.sleep(0.01)
    budget = int(INTUIT_PER_WINDOW * SHARE)
    # The most requests the emulator received within any span of one window.
    busiest = max(
        later - earlier
        for i, (t0, earlier) in enumerate(samples)
        for t1, later in samples[i:]
        if t1 - t0 <= WINDOW_S
    )
    assert busiest <= budget, f"{busiest} requests in one {WINDOW_S} s window, share {budget}"
    # The load was there: the cap, not the intervals, set the pace (3 windows, full each).
    assert samples[-1][1] >= 3 * budget
    assert emu.counters(realm).get("throttled", 0) == 0
