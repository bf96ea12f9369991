"""The event loop's health: the garbage collector's settings, its time, and a lag probe.

Why the collector needs settings: the daemon's state is tens of thousands of long-lived objects
(instances, pairs, cursors, sleeping timers), and CPython's cyclic collector re-traverses every
tracked object at each full (generation 2) collection, stopping the event loop meanwhile: at
4,500 instances that was seconds per pause and nearly half of the CPU (issue 17). So:
- `tune_gc` raises the first threshold: a young collection every `GC_THRESHOLD0` allocations
  instead of 700, so short-lived objects of a cycle (QBO answers, futures) are mostly freed by
  reference counting before a collection sees them, and far fewer survive into the old
  generations;
- `GcTuner.freeze` (after start-up, and again when the set of running instances changed)
  collects once and moves every surviving object to the permanent generation (`gc.freeze`),
  so later collections never traverse the daemon's long-lived state. Frozen objects are still
  freed by reference counting; only a reference cycle among them would wait for the next
  re-freeze, which unfreezes, collects and freezes again (instances removed or restarted).
`GcTimer` counts the collector's time (`qbo_poller_gc_seconds`), and `LoopLagProbe` measures how
late the loop wakes a sleeping task (`qbo_poller_event_loop_lag_seconds`): the longest pause any
task (a delivery, a health check) can have waited.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import time
from typing import Any

from poller import metrics
from poller.aio import sleep_unless
from poller.logs import get_logger

log = get_logger(__name__)

GC_THRESHOLD0 = 50_000  # allocations between young collections (CPython's default: 700)
GC_THRESHOLD1 = 20  # young collections per generation-1 collection (default 10)
GC_THRESHOLD2 = 100  # generation-1 collections per full one, before the 25 % rule (default 10)
PROBE_INTERVAL_S = 0.25
LAG_WINDOW_S = 60.0  # the max gauge covers the current and the previous window


def tune_gc() -> tuple[int, int, int]:
    """Set the collector's thresholds (see the module doc); returns the previous ones."""
    previous = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD0, GC_THRESHOLD1, GC_THRESHOLD2)
    return previous


class GcTuner:
    """Freezes the long-lived state out of the collector's way (see the module doc)."""

    def __init__(self) -> None:
        self.freezes = 0

    def freeze(self) -> None:
        """Unfreeze (so cycles among objects frozen earlier can be found), collect, freeze."""
        started = time.perf_counter()
        gc.unfreeze()
        collected = gc.collect()
        gc.freeze()
        trimmed = _malloc_trim()
        self.freezes += 1
        log.info(
            "gc_frozen",
            frozen=gc.get_freeze_count(),
            collected=collected,
            malloc_trimmed=trimmed,
            took_ms=round(1000 * (time.perf_counter() - started), 1),
        )


def _malloc_trim() -> bool:
    """Give the C heap's free pages back to the system (glibc; elsewhere a no-op): what the
    start-up's peak (thousands of first polls and token refreshes at once) freed."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.malloc_trim(0))


class GcTimer:
    """Adds the collector's time to `qbo_poller_gc_seconds` (a `gc.callbacks` entry)."""

    def __init__(self) -> None:
        self._started = 0.0

    def __enter__(self) -> GcTimer:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *_: object) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started:
            metrics.GC_SECONDS.labels(str(info["generation"])).inc(
                time.perf_counter() - self._started
            )


class LoopLagProbe:
    """A service: sleeps `interval_s` again and again and records how late it woke."""

    def __init__(self, loop_name: str = "main", interval_s: float = PROBE_INTERVAL_S) -> None:
        self.name = f"loop-probe:{loop_name}"
        self.interval_s = interval_s
        self._lag = metrics.EVENT_LOOP_LAG.labels(loop_name)
        self._lag_max = metrics.EVENT_LOOP_LAG_MAX.labels(loop_name)
        self.longest = 0.0  # the longest lag seen since start (tests, logs)
        self._window_started = 0.0
        self._window_max = 0.0
        self._previous_max = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        self._window_started = loop.time()
        while not stop.is_set():
            asked = loop.time()
            if await sleep_unless(stop, self.interval_s):
                return
            self.observe(max(0.0, loop.time() - asked - self.interval_s), loop.time())

    def observe(self, lag: float, now: float) -> None:
        self._lag.observe(lag)
        self.longest = max(self.longest, lag)
        if now - self._window_started >= LAG_WINDOW_S:
            self._previous_max, self._window_max = self._window_max, 0.0
            self._window_started = now
        self._window_max = max(self._window_max, lag)
        self._lag_max.set(max(self._window_max, self._previous_max))


__all__ = ["GcTimer", "GcTuner", "LoopLagProbe", "tune_gc"]
