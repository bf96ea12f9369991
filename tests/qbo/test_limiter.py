"""The per-realm limiter with small limits: properties of recorded start times, not durations."""

from __future__ import annotations

import asyncio

from poller.qbo.limiter import LimiterConfig, RealmLimiter

OPEN = dict(
    per_window=1000, window_s=60.0, per_second=1000, second_s=1.0, max_in_flight=1000, margin_s=0.0
)


def config(**changes: float) -> LimiterConfig:
    return LimiterConfig(**{**OPEN, **changes})  # type: ignore[arg-type]


async def run(
    limiter: RealmLimiter, realm: str, n: int, starts: list[float], hold_s: float = 0.0
) -> None:
    loop = asyncio.get_running_loop()

    async def one() -> None:
        async with limiter.slot(realm):
            starts.append(loop.time())
            if hold_s:
                await asyncio.sleep(hold_s)

    await asyncio.gather(*(one() for _ in range(n)))


def most_in_any_window(starts: list[float], span: float) -> int:
    starts = sorted(starts)
    return max(sum(1 for t in starts if s <= t < s + span) for s in starts)


async def test_sliding_window_admits_at_most_n_per_window() -> None:
    limiter = RealmLimiter(config(per_window=4, window_s=0.15))
    starts: list[float] = []
    await run(limiter, "r1", 10, starts)
    assert len(starts) == 10
    assert most_in_any_window(starts, 0.15) == 4
    assert limiter.started("r1") == 10


async def test_per_second_burst_limit() -> None:
    limiter = RealmLimiter(config(per_second=3, second_s=0.1))
    starts: list[float] = []
    await run(limiter, "r1", 9, starts)
    assert most_in_any_window(starts, 0.1) == 3


async def test_in_flight_cap() -> None:
    limiter = RealmLimiter(config(max_in_flight=2))
    active = peak = 0

    async def one() -> None:
        nonlocal active, peak
        async with limiter.slot("r1"):
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.01)
            active -= 1

    await asyncio.gather(*(one() for _ in range(8)))
    assert peak == 2


async def test_a_paused_realm_does_not_slow_another() -> None:
    limiter = RealmLimiter(config(per_second=5, second_s=0.05))
    loop = asyncio.get_running_loop()
    assert limiter.pause("slow", 0.2) == 0.2
    slow: list[float] = []
    fast: list[float] = []
    await asyncio.gather(run(limiter, "slow", 3, slow), run(limiter, "fast", 10, fast))
    # Every request of the other realm started before the paused realm's first one.
    assert max(fast) < min(slow)
    assert limiter.paused_for("slow") == 0.0 and limiter.paused_for("fast") == 0.0
    assert loop.time() >= min(slow)


async def test_pause_without_retry_after_uses_the_configured_default() -> None:
    limiter = RealmLimiter(config(throttle_pause_s=0.05))
    assert limiter.pause("r1") == 0.05
    assert 0 < limiter.paused_for("r1") <= 0.05


async def test_a_pause_arriving_while_waiting_extends_the_wait() -> None:
    """A waiter already sleeping for the window is woken and waits out the new pause."""
    limiter = RealmLimiter(config(per_window=1, window_s=0.05))
    loop = asyncio.get_running_loop()
    order: list[str] = []
    async with limiter.slot("r1"):
        pass
    waiter = asyncio.create_task(run(limiter, "r1", 1, []))
    await asyncio.sleep(0.01)  # the waiter now sleeps for the window
    paused_at = loop.time()
    limiter.pause("r1", 0.15)
    await waiter
    order.append("done")
    assert loop.time() - paused_at >= 0.15 - 0.005  # timer granularity
    assert order == ["done"]


async def test_admission_is_first_come_first_served() -> None:
    limiter = RealmLimiter(config(per_second=1, second_s=0.02))
    order: list[int] = []

    async def one(i: int) -> None:
        async with limiter.slot("r1"):
            order.append(i)

    await asyncio.gather(*(one(i) for i in range(6)))
    assert order == list(range(6))
