"""`qbo-poller run`: builds and owns every long-lived resource and task; shutdown; sd_notify.

Start order: database (embedded or DATABASE_URL) → pool → migrations → instances → HTTP client
session → HTTP server → services (pollers, dispatcher, ...). Teardown runs in reverse through one
AsyncExitStack. A signal only sets the stop event; shutdown is ordinary code:
1. services see `stop` and wind down (pollers stop polling, the dispatcher finishes in-flight
   deliveries) within POLLER_SHUTDOWN_GRACE_SECONDS;
2. what is left is cancelled (claims it held expire and are retried);
3. the HTTP server, the client session, the pool and the embedded database close.
A second signal skips the grace period. A service that dies makes the process exit non-zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import asyncpg

from poller import logs
from poller.config import Settings
from poller.instances import Instance
from poller.sdnotify import Notifier, watchdog, watchdog_interval_s
from poller.store import db, migrate
from poller.store import instances as instance_store
from poller.store.crypto import SecretBox
from poller.store.embedded import embedded_postgres
from poller.web.app import build_app, serve

log = logs.get_logger(__name__)
EXIT_OK, EXIT_FAILED = 0, 1
POOL_CLOSE_TIMEOUT_S = 5.0


class Service(Protocol):
    """A long-lived component. `run` returns soon after `stop` is set; returning earlier, or
    raising, is a failure that stops the daemon."""

    name: str

    async def run(self, stop: asyncio.Event) -> None: ...


@dataclass
class Runtime:
    """What the supervisor built, handed to every service."""

    settings: Settings
    dsn: str
    pool: asyncpg.Pool
    http: aiohttp.ClientSession
    box: SecretBox
    notifier: Notifier
    web_app: object | None = None
    http_port: int | None = None


ServiceFactory = Callable[[Runtime], Sequence[Service]]


def default_services(runtime: Runtime) -> list[Service]:
    """The pipeline's services: only the supervisor knows them all (detect and deliver never
    import each other)."""
    from poller.deliver.upkeep import services as deliver_services
    from poller.detect.service import services as detect_services

    return [*detect_services(runtime), *deliver_services(runtime)]


async def load_instances(pool: asyncpg.Pool, box: SecretBox, instances: Sequence[Instance]) -> None:
    async with pool.acquire() as conn:
        for inst in instances:
            result = await instance_store.upsert(conn, inst, box)
            log.info(
                "instance_loaded",
                instance=inst.name,
                instance_id=result.instance_id,
                action=result.action,
                provider_data_applied=result.credentials_replaced,
                resources=len(inst.resources),
            )


def register_instance_secrets(instances: Sequence[Instance]) -> None:
    for inst in instances:
        logs.register_secrets(
            [
                inst.client_secret,
                inst.signature_key,
                inst.provider.code,
                inst.provider.refresh_token,
            ]
        )


class _Signals:
    """First SIGTERM/SIGINT sets `stop`; a second one cancels the main task (no grace)."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop
        self.loop = asyncio.get_running_loop()
        self.main = asyncio.current_task()
        self.count = 0

    def __enter__(self) -> _Signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self._received, sig)
        return self

    def __exit__(self, *_: object) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.remove_signal_handler(sig)

    def _received(self, sig: signal.Signals) -> None:
        self.count += 1
        if self.count == 1:
            log.info("signal_received", signal=sig.name, action="graceful shutdown")
            self.stop.set()
        elif self.main is not None:
            log.warning("signal_received", signal=sig.name, action="immediate exit")
            self.main.cancel()


async def run(
    settings: Settings,
    instances: Sequence[Instance] = (),
    service_factory: ServiceFactory = default_services,
    stop: asyncio.Event | None = None,
) -> int:
    """The daemon. Returns the process exit code."""
    stop = stop or asyncio.Event()
    notifier = Notifier()
    logs.register_secrets(settings.secret_values())
    register_instance_secrets(instances)
    try:
        with _Signals(stop):
            return await _run(settings, instances, service_factory, stop, notifier)
    except asyncio.CancelledError:
        log.warning("daemon_stopped", reason="second signal")
        return EXIT_FAILED
    finally:
        notifier.close()


async def _run(
    settings: Settings,
    instances: Sequence[Instance],
    service_factory: ServiceFactory,
    stop: asyncio.Event,
    notifier: Notifier,
) -> int:
    box = SecretBox(settings.secret_key)
    if not box.encrypts:
        log.warning(
            "secrets_stored_in_clear", hint="set POLLER_SECRET_KEY to encrypt tokens at rest"
        )
    log.info("daemon_starting", replica=settings.replica_id, embedded=settings.database_url is None)
    async with contextlib.AsyncExitStack() as stack:
        dsn = settings.database_url
        if dsn is None:
            dsn = await stack.enter_async_context(embedded_postgres(settings.data_dir))
        pool = await db.create_pool(dsn, max_size=settings.db_pool_size)
        stack.push_async_callback(_close_pool, pool)
        await _prepare_database(pool, settings)
        await load_instances(pool, box, instances)
        http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=settings.qbo_request_timeout_s, connect=10),
            trust_env=False,
        )
        stack.push_async_callback(http.close)
        runtime = Runtime(settings, dsn, pool, http, box, notifier)
        if settings.http_addr is not None:
            runtime.web_app = build_app(pool)
            runtime.http_port = await stack.enter_async_context(
                serve(runtime.web_app, settings.http_addr)
            )
            log.info("http_listening", address=f"{settings.http_addr.host}:{runtime.http_port}")
        services = list(service_factory(runtime))
        code = await _supervise(services, stop, notifier, settings)
        notifier.stopping()
        log.info("daemon_stopping", exit_code=code)
    log.info("daemon_stopped", exit_code=code)
    return code


async def _prepare_database(pool: asyncpg.Pool, settings: Settings) -> None:
    async with pool.acquire() as conn:
        if settings.auto_migrate:
            await migrate.migrate(conn)
        version = await migrate.check_current(conn)
    log.info("schema_ready", version=version)


async def _close_pool(pool: asyncpg.Pool) -> None:
    try:
        await asyncio.wait_for(pool.close(), POOL_CLOSE_TIMEOUT_S)
    except TimeoutError:
        pool.terminate()


async def _supervise(
    services: Sequence[Service], stop: asyncio.Event, notifier: Notifier, settings: Settings
) -> int:
    tasks = {asyncio.create_task(s.run(stop), name=f"service:{s.name}"): s for s in services}
    interval = watchdog_interval_s()
    if interval is not None and notifier.enabled:
        tasks[asyncio.create_task(watchdog(notifier, interval, stop), name="watchdog")] = None  # type: ignore[assignment]
    notifier.ready(f"running {len(services)} services")
    log.info("daemon_ready", services=[s.name for s in services])
    stop_wait = asyncio.create_task(stop.wait(), name="stop-wait")
    code = EXIT_OK
    try:
        done, _ = await asyncio.wait({*tasks, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        for task in done - {stop_wait}:
            # A service may finish in the same loop turn as the stop it was waiting for.
            if _failed(task) or not stop.is_set():
                code = EXIT_FAILED
                _log_death(task)
        stop.set()
        notifier.status("stopping")
        await _drain(set(tasks), settings.shutdown_grace_s)
        for task in set(tasks) - done:
            if task.done() and not task.cancelled() and task.exception() is not None:
                code = EXIT_FAILED
                _log_death(task)
    finally:
        stop_wait.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, stop_wait, return_exceptions=True)
    return code


def _failed(task: asyncio.Task[None]) -> bool:
    return task.cancelled() or task.exception() is not None


def _log_death(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        log.error("service_failed", service=task.get_name(), error="cancelled")
        return
    exc = task.exception()
    if exc is None:
        log.error("service_failed", service=task.get_name(), error="returned before stop")
    else:
        log.error(
            "service_failed",
            service=task.get_name(),
            error=f"{type(exc).__name__}: {exc}",
            exc_info=exc,
        )


async def _drain(tasks: set[asyncio.Task[None]], grace_s: float) -> None:
    pending = {t for t in tasks if not t.done()}
    if not pending:
        return
    _, still = await asyncio.wait(pending, timeout=grace_s)
    if still:
        log.warning("shutdown_grace_expired", cancelled=sorted(t.get_name() for t in still))
    for task in still:
        task.cancel()
