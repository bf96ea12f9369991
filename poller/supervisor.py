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
import gc
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Protocol

import aiohttp

from poller import logs
from poller.config import Settings
from poller.deliver.dispatcher import Dispatcher
from poller.deliver.upkeep import OutboxGauges, Pruner
from poller.detect.heartbeat import Heartbeat
from poller.detect.service import PollerService
from poller.instances import Instance
from poller.loop_health import GcTimer, GcTuner, LoopLagProbe, tune_gc
from poller.manage.instances import CodeExchanger
from poller.qbo.auth import OAuthClient, TokenSet
from poller.qbo.client import QboClient
from poller.sdnotify import Notifier, watchdog, watchdog_interval_s
from poller.store import db, instance_rows, webhooks
from poller.store.crypto import SecretBox
from poller.store.database import close_pool, open_database
from poller.store.tokens import PgTokenStore
from poller.threads import ThreadedService
from poller.web.api import ApiPart
from poller.web.app import WebPart, build_app, serve
from poller.web.console import ConsolePart
from poller.web.health import Health
from poller.web.prometheus import Metrics
from poller.web.webhooks import WebhookIntake, WebhookReceiver

log = logs.get_logger(__name__)
EXIT_OK, EXIT_FAILED = 0, 1


class Service(Protocol):
    """A long-lived component. `run` returns soon after `stop` is set; returning earlier, or
    raising, is a failure that stops the daemon."""

    name: str

    async def run(self, stop: asyncio.Event) -> None: ...


@dataclass(frozen=True)
class Runtime:
    """The shared resources the supervisor built, from which it builds the services."""

    settings: Settings
    dsn: str
    pool: db.Pool
    http: aiohttp.ClientSession
    box: SecretBox
    notifier: Notifier
    qbo: QboClient
    gc: GcTuner


ServiceFactory = Callable[[Runtime], Sequence[Service]]


def detection_services(runtime: Runtime) -> list[Service]:
    """The replica's heartbeat, and the poller whose instance leases it keeps live. Each time
    the poller has settled a new set of running instances (start-up, instances added or
    removed), the long-lived state is frozen out of the garbage collector's way."""
    settings = runtime.settings
    heartbeat = Heartbeat(runtime.pool, settings.replica_id, settings.replica_timeout_s)
    poller = PollerService(
        runtime.pool,
        settings,
        runtime.qbo.realm,
        dsn=runtime.dsn,
        liveness=heartbeat.liveness,
        on_settled=runtime.gc.freeze,
    )
    return [heartbeat, poller]


def delivery_services(runtime: Runtime) -> list[Service]:
    """The dispatcher on an event loop and a thread of its own, with a pool of its own
    (`poller.threads`: a detection burst cannot hold deliveries off), and its upkeep."""
    settings = runtime.settings
    return [
        ThreadedService(
            "deliver.dispatcher",
            partial(own_dispatcher, runtime),
            companions=lambda: [LoopLagProbe("deliver")],
        ),
        Pruner(runtime.pool, settings.delivery_retention_s),
        OutboxGauges(runtime.pool),
    ]


@contextlib.asynccontextmanager
async def own_dispatcher(runtime: Runtime) -> AsyncIterator[Dispatcher]:
    """The dispatcher with its own pool, on the loop that enters this (a pool is bound to the
    loop it was made on): half of POLLER_DB_POOL_SIZE, at least 2."""
    pool = await db.create_pool(runtime.dsn, max_size=dispatcher_pool_size(runtime.settings))
    try:
        yield Dispatcher(runtime.settings, pool, runtime.dsn, runtime.box)
    finally:
        await close_pool(pool)


def dispatcher_pool_size(settings: Settings) -> int:
    return max(2, settings.db_pool_size // 2)


def webhook_services(runtime: Runtime) -> list[Service]:
    """Intuit webhook notifications → poll requests (the receiver feeds it), and the pruning of
    their records past the retention."""
    retention_s = runtime.settings.delivery_retention_s
    return [
        WebhookIntake(runtime.pool, runtime.settings.webhook_coalesce_s),
        Pruner(runtime.pool, retention_s, prune_batch=webhooks.prune_batch, label="webhooks"),
    ]


def default_services(runtime: Runtime) -> list[Service]:
    """The pipeline's services: only the supervisor knows them all (detect and deliver never
    import each other); and the event-loop lag probe."""
    return [
        *detection_services(runtime),
        *delivery_services(runtime),
        *webhook_services(runtime),
        LoopLagProbe(),
    ]


def code_exchanger(runtime: Runtime) -> CodeExchanger:
    """The API's one-shot code exchange: Intuit's token endpoint (QBO_OAUTH_TOKEN_URL)."""
    oauth = OAuthClient(runtime.http, runtime.settings)

    async def exchange(
        client_id: str, client_secret: str, code: str, redirect_uri: str
    ) -> TokenSet:
        return await oauth.exchange_code(
            client_id, client_secret, code, redirect_uri, datetime.now(UTC)
        )

    return exchange


def web_parts(runtime: Runtime, services: Sequence[Service]) -> list[WebPart]:
    """Health, metrics, the API, the console (with the API) and the Intuit webhook receiver
    (always: it refuses every request with 401 until a verifier token is configured), then the
    routes of any service that serves HTTP itself."""
    api = ApiPart(runtime.pool, runtime.box, runtime.settings, code_exchanger(runtime))
    intake = next((s for s in services if isinstance(s, WebhookIntake)), None)
    receiver = WebhookReceiver(
        runtime.pool,
        runtime.box,
        intake,
        verifier_token=runtime.settings.webhook_verifier_token,
        events_per_notification=runtime.settings.events_per_notification,
    )
    parts: list[WebPart] = [Health(runtime.pool), Metrics(), api, receiver]
    if api.authenticator is not None:
        # The console (DESIGN §10) is on with the API: same switch, managers and throttle.
        parts.append(
            ConsolePart(
                runtime.pool,
                runtime.box,
                runtime.settings,
                api.manager,
                api.events,
                api.authenticator,
            )
        )
    parts.extend(service for service in services if isinstance(service, WebPart))
    return parts


async def load_instances(pool: db.Pool, box: SecretBox, instances: Sequence[Instance]) -> None:
    async with db.acquire(pool) as conn:
        for inst in instances:
            result = await instance_rows.upsert(conn, inst, box)
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
                inst.webhook_verifier_token,
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
    previous_gc = tune_gc()
    try:
        with _Signals(stop), GcTimer():
            return await _run(settings, instances, service_factory, stop, notifier)
    except asyncio.CancelledError:
        log.warning("daemon_stopped", reason="second signal")
        return EXIT_FAILED
    finally:
        gc.unfreeze()  # in-process callers (tests) get an ordinary collector back
        gc.set_threshold(*previous_gc)
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
        database = await stack.enter_async_context(
            open_database(
                settings.database_url,
                settings.data_dir,
                pool_size=settings.db_pool_size,
                migrate_first=settings.auto_migrate,
            )
        )
        log.info("schema_ready", version=database.schema_version)
        await load_instances(database.pool, box, instances)
        http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=settings.qbo_request_timeout_s, connect=10),
            trust_env=False,
        )
        stack.push_async_callback(http.close)
        qbo = QboClient(http, settings, PgTokenStore(database.pool, box))
        runtime = Runtime(
            settings, database.dsn, database.pool, http, box, notifier, qbo, GcTuner()
        )
        services = list(service_factory(runtime))
        if settings.http_addr is not None:
            app = build_app(web_parts(runtime, services))
            port = await stack.enter_async_context(serve(app, settings.http_addr))
            log.info("http_listening", address=f"{settings.http_addr.host}:{port}")
        code = await _supervise(services, stop, notifier, settings)
        notifier.stopping()
        log.info("daemon_stopping", exit_code=code)
    log.info("daemon_stopped", exit_code=code)
    return code


async def _supervise(
    services: Sequence[Service], stop: asyncio.Event, notifier: Notifier, settings: Settings
) -> int:
    tasks: list[asyncio.Task[None]] = [
        asyncio.create_task(service.run(stop), name=f"service:{service.name}")
        for service in services
    ]
    interval = watchdog_interval_s()
    if interval is not None and notifier.enabled:
        tasks.append(asyncio.create_task(watchdog(notifier, interval, stop), name="watchdog"))
    notifier.ready(f"running {len(services)} services")
    log.info("daemon_ready", services=[service.name for service in services])
    stop_wait = asyncio.create_task(_wait_for(stop), name="stop-wait")
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


async def _wait_for(stop: asyncio.Event) -> None:
    await stop.wait()


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
