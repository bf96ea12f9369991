"""Test scaffolding for change detection: the emulator, the real client, instances, drivers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import asyncpg

from poller.config import Settings
from poller.detect.cycle import InstanceConfig, InstanceCycles
from poller.detect.feed import BatchCdcMemory, ChangeFeed
from poller.detect.heartbeat import Heartbeat
from poller.detect.pairs import PairPoller
from poller.detect.schedule import InstanceSchedule
from poller.detect.service import PollerOptions, PollerService
from poller.instances import parse_instance
from poller.qbo.client import QboClient, RetryPolicy
from poller.qbo.limiter import LimiterConfig
from poller.resources import get as resource
from poller.store import instance_rows
from poller.store.crypto import SecretBox
from poller.store.tokens import PgTokenStore

BOX = SecretBox(None)
OWNER = "test-replica"


def make_settings(emu: Any, dsn: str, **overrides: Any) -> Settings:
    base = Settings(
        database_url=dsn,
        qbo_api_base_url=emu.base_url,
        qbo_oauth_token_url=emu.token_url,
        qbo_client_id=emu.client_id,
        qbo_client_secret=emu.client_secret,
        http_addr=None,
        overlap_seconds=5,
        replica_id=OWNER,
        replica_timeout_s=30.0,
        qbo_request_timeout_s=10.0,
    )
    return replace(base, **overrides)


async def add_instance(
    pool: asyncpg.Pool,
    emu: Any,
    realm: str,
    *,
    name: str = "inst",
    interval_s: float = 0.2,
    resources: Sequence[str] | None = None,
    initial: str = "now",
    deactivated_as_deleted: bool = False,
    changes: bool = False,
) -> int:
    """Register an instance the way a user would (refresh token from the emulator's OAuth)."""
    tokens = emu.issue_tokens(realm)
    config: dict[str, Any] = {
        "oauth.api.key": emu.client_id,
        "oauth.api.secret": emu.client_secret,
        "event.notification.enabled": True,
        "event.notification.callback.url": "http://127.0.0.1:9/hook",
        "event.poller.refresh_interval": "1",  # set below: tests poll faster than users may
        "event.poller.initial": initial,
        "event.poller.deactivated_as_deleted": deactivated_as_deleted,
        "event.poller.changes": changes,
    }
    if resources is not None:
        config["event.poller.urls"] = "|".join(resources)
    body = {
        "name": name,
        "providerData": {"refreshToken": tokens["refresh_token"], "realmId": realm},
        "configuration": config,
    }
    # Test intervals go below the 0.6 s floor of `event.poller.refresh_interval`.
    inst = replace(parse_instance(body), refresh_interval_s=interval_s)
    async with pool.acquire() as conn:
        result = await instance_rows.upsert(conn, inst, BOX)
    return result.instance_id


@asynccontextmanager
async def qbo_client(
    settings: Settings, pool: asyncpg.Pool, limits: LimiterConfig | None = None
) -> AsyncIterator[QboClient]:
    async with aiohttp.ClientSession() as session:
        yield QboClient(
            session,
            settings,
            PgTokenStore(pool, BOX),
            limits=limits,
            retry=RetryPolicy(max_attempts=2),
        )


def instance_config(row: asyncpg.Record, settings: Settings) -> InstanceConfig:
    return InstanceConfig(
        row["id"],
        row["name"],
        row["refresh_interval_s"],
        row["initial_mode"],
        row["deactivated_as_deleted"],
        settings.reconcile_interval_s,
        settings.events_per_notification,
        settings.replica_timeout_s,
        settings.replica_id,
        per_instance_metrics=settings.metrics_per_instance,
        changes=row["changes"],
    )


class Driver:
    """An instance's cycles and pair pollers, polled by hand: `cycle()` is one coalesced cycle."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        client: QboClient,
        instance_id: int,
        *,
        cdc_cap: int = 1000,
        page_size: int = 1000,
        batch_cdc: BatchCdcMemory | None = None,
        before_commit: Callable[..., Awaitable[None]] | None = None,
    ) -> None:
        self.pool, self.settings, self.client = pool, settings, client
        self.instance_id = instance_id
        self.cdc_cap, self.page_size = cdc_cap, page_size
        self.batch_cdc = batch_cdc or BatchCdcMemory()
        self.before_commit = before_commit
        self.pairs: list[PairPoller] = []

    async def __aenter__(self) -> Driver:
        row = await self.pool.fetchrow("SELECT * FROM instances WHERE id = $1", self.instance_id)
        realm = self.client.realm(self.instance_id, row["realm_id"])
        self.feed = ChangeFeed(
            realm,
            overlap_s=self.settings.overlap_seconds,
            batch_cdc=self.batch_cdc,
            cdc_cap=self.cdc_cap,
            page_size=self.page_size,
            name=row["name"],
        )
        self.cycles = InstanceCycles(
            self.pool,
            self.feed,
            instance_config(row, self.settings),
            InstanceSchedule(row["refresh_interval_s"], 0.0),
            window_s=0.02,
            before_commit=self.before_commit,
        )
        self.pairs = [PairPoller(self.cycles, resource(name)) for name in row["resources"]]
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self.cycles.run(self._stop))
        return self

    async def __aexit__(self, *_: object) -> None:
        self._stop.set()
        await self._task

    async def cycle(self, *, return_exceptions: bool = False) -> list[Any]:
        return await asyncio.gather(
            *(p.poll_once() for p in self.pairs), return_exceptions=return_exceptions
        )


@asynccontextmanager
async def running_service(
    pool: asyncpg.Pool, settings: Settings, client: QboClient, **options: Any
) -> AsyncIterator[PollerService]:
    """The PollerService in a task, stopped (and awaited) on exit."""
    dsn = options.pop("dsn", None)  # given: the service listens for poll requests
    on_settled = options.pop("on_settled", None)
    opts = PollerOptions(rescan_s=options.pop("rescan_s", 0.1), **options)
    # The replica's heartbeat beside it, as the supervisor runs them.
    heartbeat = Heartbeat(pool, settings.replica_id, settings.replica_timeout_s)
    service = PollerService(
        pool,
        settings,
        client.realm,
        opts,
        dsn=dsn,
        liveness=heartbeat.liveness,
        on_settled=on_settled,
    )
    stop = asyncio.Event()
    beating = asyncio.create_task(heartbeat.run(stop))
    task = asyncio.create_task(service.run(stop))
    try:
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await asyncio.wait_for(beating, 10)


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout: float = 10.0, every: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(every)


@dataclass(frozen=True)
class Ev:
    resource: str
    object_id: str
    version: str
    event_type: str


async def events(pool: asyncpg.Pool, instance_id: int | None = None) -> list[Ev]:
    rows = await pool.fetch(
        "SELECT resource, object_id, version, event_type FROM events "
        "WHERE $1::bigint IS NULL OR instance_id = $1 ORDER BY id",
        instance_id,
    )
    return [Ev(r["resource"], r["object_id"], r["version"], r["event_type"]) for r in rows]


async def cursor_row(pool: asyncpg.Pool, instance_id: int, res: str) -> asyncpg.Record:
    return await pool.fetchrow(
        "SELECT * FROM pair_cursors WHERE instance_id = $1 AND resource = $2", instance_id, res
    )


class Env:
    """The emulator + database of one test, with shortcuts."""

    def __init__(self, emu: Any, pool: asyncpg.Pool, dsn: str) -> None:
        self.emu, self.pool, self.dsn = emu, pool, dsn

    def settings(self, **overrides: Any) -> Settings:
        return make_settings(self.emu, self.dsn, **overrides)

    def qbo_requests(self, realm: str) -> int:
        """API requests the emulator answered for a realm (token calls excluded)."""
        c = self.emu.counters(realm)
        return sum(c.get(k, 0) for k in ("query", "cdc", "batch"))

    @asynccontextmanager
    async def driver(
        self, instance_id: int, settings: Settings | None = None, **kw: Any
    ) -> AsyncIterator[Driver]:
        settings = settings or self.settings()
        async with (
            qbo_client(settings, self.pool) as client,
            Driver(self.pool, settings, client, instance_id, **kw) as driver,
        ):
            yield driver
