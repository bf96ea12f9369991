"""The watchdog's progress seam (poller.progress) and the pings it gates (poller.sdnotify)."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from poller.progress import ProgressBoard, Stale
from poller.sdnotify import Notifier, watchdog, watchdog_interval_s, watchdog_usec_s


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder(Notifier):
    def __init__(self) -> None:
        super().__init__("")
        self.sent: list[str] = []

    @property
    def enabled(self) -> bool:
        return True

    def notify(self, message: str) -> None:
        self.sent.append(message)


def test_a_service_is_stale_once_one_turn_of_its_loop_outlasts_the_period() -> None:
    clock = Clock()
    board = ProgressBoard(clock)
    poller, dispatcher = board.track("poller"), board.track("dispatcher")
    clock.now += 5
    assert board.stale(10) == []  # just started: not stuck
    poller.beat()
    clock.now += 6
    assert board.stale(10) == [Stale("dispatcher", 11.0)]
    dispatcher.beat()
    assert board.stale(10) == []
    # Waiting between turns is never stuck, however long; a new turn counts afresh.
    poller.idle()
    clock.now += 60
    assert board.stale(10) == [Stale("dispatcher", 60.0)]
    dispatcher.idle()
    assert board.stale(10) == []
    poller.beat()
    clock.now += 11
    assert board.stale(10) == [Stale("poller", 11.0)]
    assert board.names == ["poller", "dispatcher"]


def test_watchdog_period_comes_from_watchdog_usec() -> None:
    assert watchdog_usec_s({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_usec_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_usec_s({}) is None


async def test_pings_stop_while_a_service_is_stuck_and_resume_after() -> None:
    clock = Clock()
    board = ProgressBoard(clock)
    dispatcher = board.track("dispatcher")
    notifier, stop = Recorder(), asyncio.Event()
    with capture_logs() as logged:
        task = asyncio.create_task(watchdog(notifier, 0.01, stop, board, period_s=1.0))
        await asyncio.sleep(0.05)
        healthy = len(notifier.sent)
        clock.now += 2  # the dispatcher has been inside one turn for two periods
        await asyncio.sleep(0.05)
        stuck = len(notifier.sent)
        await asyncio.sleep(0.05)
        assert len(notifier.sent) == stuck  # nothing while stuck
        dispatcher.beat()
        await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 1)
    assert healthy >= 2 and set(notifier.sent) == {"WATCHDOG=1"}
    assert len(notifier.sent) > stuck + 1  # resumed
    events = [entry["event"] for entry in logged]
    assert events.count("watchdog_withheld") == 1 and events.count("watchdog_resumed") == 1
    withheld = next(entry for entry in logged if entry["event"] == "watchdog_withheld")
    assert withheld["stuck"] == ["dispatcher"] and withheld["silent_s"] == pytest.approx(2, abs=0.1)
