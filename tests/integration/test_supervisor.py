"""The supervisor owns every task: a dying service stops the daemon non-zero; shutdown has a
grace."""

from __future__ import annotations

import asyncio
import io

import orjson

from poller import logs, supervisor
from poller.config import load_settings


class Failing:
    name = "failing"

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.sleep(0.1)
        raise RuntimeError("boom")


class Quitter:
    name = "quitter"

    async def run(self, stop: asyncio.Event) -> None:
        return None


class Stubborn:
    """Ignores `stop`: the supervisor must cancel it after the grace period."""

    name = "stubborn"

    def __init__(self) -> None:
        self.cancelled = False

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled = True
            raise


class Polite:
    name = "polite"

    def __init__(self) -> None:
        self.runtime: supervisor.Runtime | None = None

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()


def settings(db_dsn: str, **env: str):  # type: ignore[no-untyped-def]
    return load_settings(
        env={
            "DATABASE_URL": db_dsn,
            "POLLER_HTTP_ADDR": "",
            "POLLER_SHUTDOWN_GRACE_SECONDS": "0.3",
            **env,
        }
    )


def capture_logs() -> io.StringIO:
    stream = io.StringIO()
    logs.configure("info", "json", stream)
    return stream


def events(stream: io.StringIO) -> list[dict]:  # type: ignore[type-arg]
    return [orjson.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


async def test_a_service_that_raises_stops_the_daemon_non_zero(db_dsn: str) -> None:
    stream = capture_logs()
    polite = Polite()
    code = await asyncio.wait_for(
        supervisor.run(settings(db_dsn), service_factory=lambda rt: [polite, Failing()]), 10
    )
    assert code == supervisor.EXIT_FAILED
    failed = [e for e in events(stream) if e["event"] == "service_failed"]
    assert failed and failed[0]["service"] == "service:failing" and "boom" in failed[0]["error"]


async def test_a_service_that_returns_early_is_a_failure(db_dsn: str) -> None:
    stream = capture_logs()
    code = await asyncio.wait_for(
        supervisor.run(settings(db_dsn), service_factory=lambda rt: [Quitter()]), 10
    )
    assert code == supervisor.EXIT_FAILED
    assert any(e.get("error") == "returned before stop" for e in events(stream))


async def test_stop_cancels_a_stuck_service_after_the_grace(db_dsn: str) -> None:
    stream = capture_logs()
    stubborn, polite = Stubborn(), Polite()
    stop = asyncio.Event()
    task = asyncio.create_task(
        supervisor.run(settings(db_dsn), stop=stop, service_factory=lambda rt: [stubborn, polite])
    )
    await asyncio.sleep(0.5)
    stop.set()
    code = await asyncio.wait_for(task, 5)
    assert code == supervisor.EXIT_OK
    assert stubborn.cancelled
    assert any(e["event"] == "shutdown_grace_expired" for e in events(stream))


async def test_first_signal_stops_gracefully_second_skips_the_grace(db_dsn: str) -> None:
    import os
    import signal
    import time

    stream = capture_logs()
    stubborn = Stubborn()
    task = asyncio.create_task(
        supervisor.run(
            settings(db_dsn, POLLER_SHUTDOWN_GRACE_SECONDS="30"),
            service_factory=lambda rt: [stubborn],
        )
    )
    await asyncio.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.sleep(0.3)
    assert not task.done()  # graceful: waiting for the stubborn service, up to 30 s
    started = time.monotonic()
    os.kill(os.getpid(), signal.SIGTERM)
    code = await asyncio.wait_for(task, 5)
    assert time.monotonic() - started < 3
    assert code == supervisor.EXIT_FAILED
    actions = [e.get("action") for e in events(stream) if e["event"] == "signal_received"]
    assert actions == ["graceful shutdown", "immediate exit"]
