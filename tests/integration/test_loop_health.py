"""The daemon's runtime settings: the collector tuned and frozen, the loop's lag measured."""

from __future__ import annotations

import asyncio
import gc
import time

from poller import loop_health, metrics, supervisor
from tests.integration.test_supervisor import settings

LOOP = {"loop": "test"}


class Observer:
    """Records the collector's settings as the services see them, freezes like the poller
    does once its instances have settled, then asks the daemon to stop."""

    name = "observer"

    def __init__(self, runtime: supervisor.Runtime) -> None:
        self.runtime = runtime
        self.threshold: tuple[int, int, int] | None = None
        self.frozen = 0
        self.gc_seconds_grew = False

    async def run(self, stop: asyncio.Event) -> None:
        self.threshold = gc.get_threshold()
        before = metrics.REGISTRY.get_sample_value(
            "qbo_poller_gc_seconds_total", {"generation": "2"}
        )
        garbage = [[]]  # a reference cycle, for the collector to find and time
        garbage[0].append(garbage)
        del garbage
        self.runtime.gc.freeze()
        self.frozen = gc.get_freeze_count()
        after = metrics.REGISTRY.get_sample_value(
            "qbo_poller_gc_seconds_total", {"generation": "2"}
        )
        self.gc_seconds_grew = (after or 0.0) > (before or 0.0)
        stop.set()


async def test_the_collector_is_tuned_and_frozen_while_running_and_restored_after(
    db_dsn: str,
) -> None:
    before = gc.get_threshold()
    observers: list[Observer] = []

    def services(runtime: supervisor.Runtime) -> list[Observer]:
        observers.append(Observer(runtime))
        return observers

    code = await asyncio.wait_for(supervisor.run(settings(db_dsn), service_factory=services), 10)
    assert code == supervisor.EXIT_OK
    observer = observers[0]
    assert observer.threshold == (
        loop_health.GC_THRESHOLD0,
        loop_health.GC_THRESHOLD1,
        loop_health.GC_THRESHOLD2,
    )
    assert observer.frozen > 0 and observer.gc_seconds_grew
    # In-process callers (these tests) get the collector back as it was.
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, {**LOOP, **labels}) or 0.0


async def test_the_lag_probe_sees_a_blocked_loop() -> None:
    probe = loop_health.LoopLagProbe("test", interval_s=0.01)
    stop = asyncio.Event()
    task = asyncio.create_task(probe.run(stop))
    count = sample("qbo_poller_event_loop_lag_seconds_count")
    await asyncio.sleep(0.05)
    time.sleep(0.3)  # a synchronous stretch: nothing else runs meanwhile
    await asyncio.sleep(0.05)
    stop.set()
    await task
    assert probe.longest >= 0.25
    assert sample("qbo_poller_event_loop_lag_max_seconds") >= 0.25
    total = sample("qbo_poller_event_loop_lag_seconds_count")
    assert total > count
    assert total - sample("qbo_poller_event_loop_lag_seconds_bucket", le="0.25") >= 1
