"""Test helpers for delivery: outbox rows in the shape detection writes, a local receiver,
and a running dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from poller.config import Settings
from poller.deliver.dispatcher import Dispatcher
from poller.store.crypto import SecretBox

BOX = SecretBox(None)
REALM = "9130357766900456"


def settings(**changes: Any) -> Settings:
    """Fast settings for tests: compressed retries, short timeouts and poll interval."""
    base = dict(
        replica_id="test",
        retry_schedule_s=(0.05, 0.1),
        delivery_timeout_s=2.0,
        delivery_poll_interval_s=0.05,
        delivery_lease_s=30.0,
        delivery_concurrency=16,
        delivery_per_url_concurrency=8,
        shutdown_grace_s=2.0,
        signature_scheme="both",
    )
    base.update(changes)
    return replace(Settings(), **base)


async def insert_instance(
    pool: asyncpg.Pool,
    callback_url: str | None,
    *,
    name: str = "API Instance",
    key: str | None = None,
    tags: tuple[str, ...] = ("Docs",),
    timezone: str = "UTC",
    box: SecretBox = BOX,
) -> int:
    return await pool.fetchval(
        """INSERT INTO instances (name, realm_id, client_id, client_secret_enc, events_enabled,
               callback_url, signature_key_enc, refresh_interval_s, resources, timezone, tags,
               provider_fingerprint)
           VALUES ($1, $2, 'client', 'plain:secret', true, $3, $4, 900, $5, $6, $7, 'fp')
           RETURNING id""",
        name,
        REALM,
        callback_url,
        box.seal(key),
        ["invoices", "customers"],
        timezone,
        list(tags),
    )


@dataclass(frozen=True)
class Change:
    event_type: str
    object_id: str
    occurred_at: str  # ISO-8601 with offset
    raw: str  # JSON text as QBO sent it


async def insert_notification(
    pool: asyncpg.Pool,
    instance_id: int,
    changes: list[Change],
    resource: str = "invoices",
    notify: bool = True,
) -> tuple[int, str]:
    """One notification and its events in one transaction, then NOTIFY — as detection does."""
    async with pool.acquire() as conn, conn.transaction():
        nid, event_id = await conn.fetchrow(
            "INSERT INTO notifications (event_id, instance_id, resource, event_count)"
            " VALUES (gen_random_uuid(), $1, $2, $3) RETURNING id, event_id",
            instance_id,
            resource,
            len(changes),
        )
        for position, ch in enumerate(changes):
            await conn.execute(
                "INSERT INTO events (instance_id, resource, object_id, version, event_type,"
                " occurred_at, raw, notification_id, position)"
                " VALUES ($1, $2, $3, $4, $5, $6::text::timestamptz, $7::text::json, $8, $9)",
                instance_id,
                resource,
                ch.object_id,
                f"{nid}-{position}",
                ch.event_type,
                ch.occurred_at,
                ch.raw,
                nid,
                position,
            )
        if notify:
            await conn.execute("SELECT pg_notify('qbo_poller_outbox', '')")
    return nid, str(event_id)


async def insert_many(
    pool: asyncpg.Pool,
    instance_id: int,
    count: int,
    events_per: int = 1,
    resource: str = "invoices",
    notify: bool = True,
) -> None:
    """`count` notifications of `events_per` events each, in bulk (set-based SQL)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """WITH n AS (
                   INSERT INTO notifications (event_id, instance_id, resource, event_count)
                   SELECT gen_random_uuid(), $1, $2, $3 FROM generate_series(1, $4)
                   RETURNING id)
               INSERT INTO events (instance_id, resource, object_id, version, event_type,
                                   occurred_at, raw, notification_id, position)
               SELECT $1, $2, (n.id * 1000 + p)::text, '0', 'UPDATED', now(),
                      ('{"Id": "' || (n.id * 1000 + p)
                       || '", "SyncToken": "0", "TotalAmt": 12.50}')::json,
                      n.id, p
               FROM n, generate_series(0, $3 - 1) AS p""",
            instance_id,
            resource,
            events_per,
            count,
        )
        if notify:
            await conn.execute("SELECT pg_notify('qbo_poller_outbox', '')")


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float
    path: str

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def event_id(self) -> str:
        return self.headers["Elements-Webhook-Id"]


Responder = Callable[[Received], web.StreamResponse | Awaitable[web.StreamResponse]]


@dataclass
class Receiver:
    """An aiohttp callback receiver on 127.0.0.1 whose answers the test decides."""

    respond: Responder = field(default=lambda _r: web.Response(text="ok"))
    requests: list[Received] = field(default_factory=list)
    runner: web.AppRunner | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        rec = Received(dict(request.headers), await request.read(), time.monotonic(), request.path)
        self.requests.append(rec)
        answer = self.respond(rec)
        if inspect.isawaitable(answer):
            answer = await answer
        return answer

    async def start(self, port: int = 0) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.1
        )
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def event_ids(self) -> list[str]:
        return [r.event_id for r in self.requests]


@contextlib.asynccontextmanager
async def running(dispatcher: Dispatcher, wait_listening: bool = True) -> AsyncIterator[Dispatcher]:
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        if wait_listening:
            await asyncio.wait_for(dispatcher.listening.wait(), 5)
        yield dispatcher
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], timeout: float = 5.0, interval: float = 0.02
) -> None:
    """Wait until `check()` is true or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


async def statuses(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch("SELECT status, count(*) AS n FROM notifications GROUP BY status")
    return {r["status"]: r["n"] for r in rows}
