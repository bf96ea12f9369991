"""`ThreadedService`: a service on its own loop and thread, stopped, failed and cancelled like
any other."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator

import pytest

from poller.threads import ThreadedService


class Probe:
    name = "probe"

    def __init__(self, fail: bool = False, stubborn: bool = False) -> None:
        self.fail, self.stubborn = fail, stubborn
        self.thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closed = False
        self.cancelled = False

    async def run(self, stop: asyncio.Event) -> None:
        self.thread = threading.current_thread()
        self.loop = asyncio.get_running_loop()
        if self.fail:
            raise RuntimeError("inner boom")
        try:
            if self.stubborn:
                await asyncio.sleep(3600)
            await stop.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


def threaded(probe: Probe) -> ThreadedService:
    @contextlib.asynccontextmanager
    async def build() -> AsyncIterator[Probe]:
        try:
            yield probe
        finally:
            probe.closed = True

    return ThreadedService("probe", build)


async def wait_running(probe: Probe) -> None:
    for _ in range(500):
        if probe.loop is not None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the inner service never ran")


async def test_runs_on_its_own_thread_and_loop_and_stops_with_stop() -> None:
    probe = Probe()
    service = threaded(probe)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    await wait_running(probe)
    assert probe.thread is not threading.current_thread()
    assert probe.loop is not asyncio.get_running_loop()
    # Our loop is free while the other runs: a blocking stretch here does not stop it.
    time.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert probe.closed and not probe.cancelled


async def test_an_inner_failure_is_the_services_failure() -> None:
    probe = Probe(fail=True)
    with pytest.raises(RuntimeError, match="inner boom"):
        await asyncio.wait_for(threaded(probe).run(asyncio.Event()), 5)
    assert probe.closed


async def test_cancelling_cancels_the_inner_service_and_waits_for_its_thread() -> None:
    probe = Probe(stubborn=True)
    service = threaded(probe)
    task = asyncio.create_task(service.run(asyncio.Event()))
    await wait_running(probe)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert probe.cancelled and probe.closed
    assert service.thread is not None and not service.thread.is_alive()
