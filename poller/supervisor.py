"""`qbo-poller run`: builds and owns every long-lived resource and task; shutdown; sd_notify.

Start order: the listener's socket (bound first: an address in use stops start-up before the
database is touched) → database (embedded or DATABASE_URL, waited for up to
POLLER_STARTUP_TIMEOUT) → pool → migrations → instances → HTTP client session → HTTP server →
services (pollers, dispatcher, ...). Teardown runs in reverse through one
AsyncExitStack. A signal only sets the stop event; shutdown is ordinary code:
1. services see `stop` and wind down (pollers stop polling, the dispatcher finishes in-flight
   deliveries) within POLLER_SHUTDOWN_GRACE_SECONDS;
2. what is left is cancelled (claims it held expire and are retried);
3. the HTTP server, the client session, the pool and the embedded database close.
A second signal skips the grace period. A service that dies makes the process exit non-zero.

SIGHUP re-reads POLLER_INSTANCES_FILE (`InstancesReload`): its instances are upserted as at
start-up and the poller's rescan picks them up; an invalid file logs one line and changes nothing.
A SIGHUP whose terminal has gone (a closed terminal, a dropped ssh session) is a graceful stop.

The systemd watchdog (sdnotify.watchdog) pings only while the poller's and the dispatcher's loops
keep coming round (poller.progress): each gets its `Progress` here.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
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
from poller.errors import ConfigError, DatabaseError, StartupStopped
from poller.instances import Instance
from poller.loop_health import GcTimer, GcTuner, LoopLagProbe, tune_gc
from poller.manage.instances import CodeExchanger
from poller.progress import Progress, ProgressBoard
from poller.qbo.auth import OAuthClient, TokenSet
from poller.qbo.client import QboClient
from poller.sdnotify import Notifier, watchdog, watchdog_interval_s, watchdog_usec_s
from poller.store import db, instance_rows, sealed, webhooks
from poller.store.crypto import SecretBox
from poller.store.database import close_pool, open_database
from poller.store.tokens import PgTokenStore
from poller.threads import ThreadedService
from poller.web.api import ApiPart
from poller.web.app import WebPart, bind, build_app, serve
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
    progress: ProgressBoard  # services the watchdog vouches for (poller.progress)
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
        progress=runtime.progress.track("poller"),
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
            partial(own_dispatcher, runtime, runtime.progress.track("dispatcher")),
            companions=lambda: [LoopLagProbe("deliver")],
        ),
        Pruner(runtime.pool, settings.delivery_retention_s),
        OutboxGauges(runtime.pool),
    ]


@contextlib.asynccontextmanager
async def own_dispatcher(runtime: Runtime, progress: Progress) -> AsyncIterator[Dispatcher]:
    """The dispatcher with its own pool, on the loop that enters this (a pool is bound to the
    loop it was made on): half of POLLER_DB_POOL_SIZE, at least 2. Its `progress` is read by
    the watchdog from the main thread (plain attribute writes: safe under the GIL)."""
    pool = await db.create_pool(runtime.dsn, max_size=dispatcher_pool_size(runtime.settings))
    try:
        yield Dispatcher(runtime.settings, pool, runtime.dsn, runtime.box, progress=progress)
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


async def check_secret_key(pool: db.Pool, box: SecretBox) -> None:
    """Every stored secret opens with the configured keys, or SecretKeyError (exit 2)."""
    async with db.acquire(pool) as conn:
        inventory = await sealed.check_readable(conn, box)
    if box.encrypts and inventory.not_current:
        log.warning(
            "secrets_not_under_current_key",
            count=inventory.not_current,
            in_clear=inventory.in_clear,
            hint="run `qbo-poller rekey` (before removing POLLER_SECRET_KEY_PREVIOUS)",
        )


async def say_if_idle(pool: db.Pool) -> None:
    """A daemon with nothing to poll says so once, at start-up (DESIGN §7)."""
    async with db.acquire(pool) as conn:
        total, pollable = await instance_rows.count_pollable(conn)
    if total == 0:
        log.warning(
            "nothing_to_poll",
            reason="no instances",
            hint="add one: POLLER_INSTANCES_FILE, `qbo-poller instances add FILE`, or the API",
        )
    elif pollable == 0:
        log.warning(
            "nothing_to_poll",
            reason=f"none of the {total} instance(s) is active with events enabled",
            hint="`qbo-poller instances list` shows their status",
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


InstancesLoader = Callable[[], Sequence[Instance]]


class InstancesReload:
    """SIGHUP → re-read POLLER_INSTANCES_FILE and upsert it, as at start-up (DESIGN §7).

    The poller's rescan then starts new instances and restarts changed ones within seconds;
    instances no longer in the file stay (as at start-up: `qbo-poller instances remove` removes).
    An invalid file, or a database failure, logs one line and keeps the running set."""

    name = "instances-reload"

    def __init__(
        self, requested: asyncio.Event, load: InstancesLoader | None, pool: db.Pool, box: SecretBox
    ) -> None:
        self.requested = requested
        self.load = load
        self.pool = pool
        self.box = box

    async def run(self, stop: asyncio.Event) -> None:
        stopping = asyncio.create_task(stop.wait(), name="instances-reload:stop")
        try:
            while not stop.is_set():
                requested = asyncio.create_task(self.requested.wait(), name="instances-reload")
                await asyncio.wait({stopping, requested}, return_when=asyncio.FIRST_COMPLETED)
                requested.cancel()
                await asyncio.gather(requested, return_exceptions=True)
                if self.requested.is_set() and not stop.is_set():
                    self.requested.clear()
                    await self.reload()
        finally:
            stopping.cancel()
            await asyncio.gather(stopping, return_exceptions=True)

    async def reload(self) -> None:
        if self.load is None:
            log.warning("instances_reload_skipped", reason="POLLER_INSTANCES_FILE is not set")
            return
        try:
            instances = await asyncio.to_thread(self.load)
        except (ConfigError, OSError, ValueError, RecursionError) as exc:
            # ConfigError is the loader's own one line; the others are what a hostile file can
            # still raise from below it: none may end the daemon.
            error = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
            log.error(
                "instances_reload_failed",
                error=logs.secrets.mask(error),
                action="kept the running instances; fix the file and send SIGHUP again",
            )
            return
        register_instance_secrets(instances)
        try:
            await load_instances(self.pool, self.box, instances)
        except DatabaseError as exc:
            log.error(
                "instances_reload_failed",
                error=f"{type(exc).__name__}: {exc}",
                action="kept the running instances; send SIGHUP again",
            )
            return
        log.info("instances_reloaded", instances=len(instances))


def _terminal_fds() -> list[int]:
    return [fd for fd in (0, 1, 2) if os.isatty(fd)]


class _Signals:
    """First SIGTERM/SIGINT sets `stop`; a second one cancels the main task (no grace).

    SIGHUP asks for a reload (`reload`), unless the daemon was started on a terminal that has
    since hung up: the kernel sends SIGHUP when a terminal closes, and a hung-up terminal no
    longer answers isatty(). Then it is a graceful stop (the daemon's owner has gone; its output
    now goes to /dev/null, where writes cannot fail). Under systemd or `nohup` there is no
    terminal, and SIGHUP always reloads."""

    HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self, stop: asyncio.Event, reload: asyncio.Event) -> None:
        self.stop = stop
        self.reload = reload
        self.loop = asyncio.get_running_loop()
        self.main = asyncio.current_task()
        self.count = 0
        self.terminal = _terminal_fds()

    def __enter__(self) -> _Signals:
        for sig in self.HANDLED:
            self.loop.add_signal_handler(sig, self._received, sig)
        return self

    def __exit__(self, *_: object) -> None:
        for sig in self.HANDLED:
            self.loop.remove_signal_handler(sig)

    def _received(self, sig: signal.Signals) -> None:
        if sig == signal.SIGHUP and not self._terminal_gone():
            log.info("signal_received", signal=sig.name, action="reload instances file")
            self.reload.set()
            return
        self.count += 1
        if self.count == 1:
            reason = "terminal closed" if sig == signal.SIGHUP else None
            log.info("signal_received", signal=sig.name, action="graceful shutdown", reason=reason)
            self.stop.set()
        elif self.main is not None:
            log.warning("signal_received", signal=sig.name, action="immediate exit")
            self.main.cancel()

    def _terminal_gone(self) -> bool:
        gone = [fd for fd in self.terminal if not os.isatty(fd)]
        if not gone:
            return False
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in gone:
            os.dup2(devnull, fd)
        os.close(devnull)
        self.terminal = []
        return True


async def run(
    settings: Settings,
    instances: Sequence[Instance] = (),
    service_factory: ServiceFactory = default_services,
    stop: asyncio.Event | None = None,
    reload_instances: InstancesLoader | None = None,
) -> int:
    """The daemon. Returns the process exit code. `reload_instances` re-reads the instances file
    on SIGHUP (None: nothing to re-read)."""
    stop = stop or asyncio.Event()
    reload = asyncio.Event()
    notifier = Notifier()
    logs.register_secrets(settings.secret_values())
    register_instance_secrets(instances)
    previous_gc = tune_gc()
    try:
        with _Signals(stop, reload), GcTimer():
            return await _run(
                settings, instances, service_factory, stop, notifier, (reload, reload_instances)
            )
    except StartupStopped as exc:
        log.info("daemon_stopped", exit_code=EXIT_OK, reason=str(exc))
        return EXIT_OK
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
    reload: tuple[asyncio.Event, InstancesLoader | None],
) -> int:
    box = SecretBox(settings.secret_key, settings.secret_key_previous)
    if not box.encrypts:
        log.warning(
            "secrets_stored_in_clear", hint="set POLLER_SECRET_KEY to encrypt tokens at rest"
        )
    log.info("daemon_starting", replica=settings.replica_id, embedded=settings.database_url is None)
    async with contextlib.AsyncExitStack() as stack:
        sockets = bind(settings.http_addr) if settings.http_addr is not None else []
        for sock in sockets:
            stack.callback(sock.close)
        database = await stack.enter_async_context(
            open_database(
                settings.database_url,
                settings.data_dir,
                pool_size=settings.db_pool_size,
                migrate_first=settings.auto_migrate,
                startup_timeout_s=settings.startup_timeout_s,
                stop=stop,
                exclusive=True,
            )
        )
        log.info("schema_ready", version=database.schema_version)
        # Before anything reads a secret or /readyz can answer: a wrong key stops here.
        await check_secret_key(database.pool, box)
        await load_instances(database.pool, box, instances)
        await say_if_idle(database.pool)
        http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=settings.qbo_request_timeout_s, connect=10),
            trust_env=False,
        )
        stack.push_async_callback(http.close)
        qbo = QboClient(http, settings, PgTokenStore(database.pool, box))
        board = ProgressBoard()
        runtime = Runtime(
            settings, database.dsn, database.pool, http, box, notifier, qbo, board, GcTuner()
        )
        services = list(service_factory(runtime))
        if settings.http_addr is not None:
            app = build_app(web_parts(runtime, services))
            port = await stack.enter_async_context(serve(app, sockets))
            log.info("http_listening", address=f"{settings.http_addr.host}:{port}")
        services.append(InstancesReload(reload[0], reload[1], database.pool, box))
        code = await _supervise(services, stop, notifier, settings, board)
        notifier.stopping()
        log.info("daemon_stopping", exit_code=code)
    log.info("daemon_stopped", exit_code=code)
    return code


async def _supervise(
    services: Sequence[Service],
    stop: asyncio.Event,
    notifier: Notifier,
    settings: Settings,
    board: ProgressBoard,
) -> int:
    tasks: list[asyncio.Task[None]] = [
        asyncio.create_task(service.run(stop), name=f"service:{service.name}")
        for service in services
    ]
    interval, period = watchdog_interval_s(), watchdog_usec_s()
    if interval is not None and notifier.enabled:
        pings = watchdog(notifier, interval, stop, board, period)
        tasks.append(asyncio.create_task(pings, name="watchdog"))
        log.info("watchdog_started", period_s=period, watches=board.names)
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
