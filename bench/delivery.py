"""Delivery throughput: N queued notifications → a fast local receiver.

    .venv/bin/python bench/delivery.py [--n 20000] [--events 10] [--concurrency 64] [--per-url 64]

Creates a scratch database on DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/postgres),
migrates it, queues N notifications of --events events each (signed with both schemes), runs one
Dispatcher until all are delivered, prints notifications/s and the dispatcher process's CPU time
per notification, and drops the database. The receiver runs in its own process so its CPU is not
counted; PostgreSQL's CPU is not counted either (it is another process too).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import multiprocessing
import os
import pstats
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg

from poller import logs
from poller.config import Settings
from poller.deliver.dispatcher import Dispatcher
from poller.store import db, migrate
from poller.store.crypto import SecretBox

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
# One QBO invoice-sized object (≈1 KB), as text: what a typical event's raw record weighs.
RAW = (
    '{"Id":"%d","SyncToken":"0","domain":"QBO","TxnDate":"2026-11-24","TotalAmt":1234.50,'
    '"CustomerRef":{"value":"58","name":"Amy\'s Bird Sanctuary"},"Line":['
    + ",".join(
        f'{{"Id":"{i}","LineNum":{i},"Amount":123.45,"DetailType":"SalesItemLineDetail",'
        '"SalesItemLineDetail":{"ItemRef":{"value":"1","name":"Services"},"Qty":1}}'
        for i in range(1, 6)
    )
    + '],"MetaData":{"CreateTime":"2026-11-24T02:10:00-08:00",'
    '"LastUpdatedTime":"2026-11-24T02:15:02-08:00"}}'
)


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _receiver_process(ports: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    from aiohttp import web

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        ports.put(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.Event().wait()

    asyncio.run(main())


async def _queue(pool: asyncpg.Pool, url: str, n: int, events: int) -> None:
    iid = await pool.fetchval(
        "INSERT INTO instances (name, realm_id, client_id, client_secret_enc, events_enabled,"
        " callback_url, signature_key_enc, refresh_interval_s, resources, provider_fingerprint)"
        " VALUES ('bench', '9130357766900456', 'c', 'plain:s', true, $1,"
        " 'plain:whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 900, '{invoices}', 'fp') RETURNING id",
        url,
    )
    await pool.execute(
        """WITH n AS (
               INSERT INTO notifications (event_id, instance_id, resource, event_count)
               SELECT gen_random_uuid(), $1, 'invoices', $2 FROM generate_series(1, $3)
               RETURNING id)
           INSERT INTO events (instance_id, resource, object_id, version, event_type,
                               occurred_at, raw, notification_id, position)
           SELECT $1, 'invoices', (n.id * 1000 + p)::text, '0', 'UPDATED', now(),
                  replace($4, '%d', (n.id * 1000 + p)::text)::json, n.id, p
           FROM n, generate_series(0, $2 - 1) AS p""",
        iid,
        events,
        n,
        RAW,
    )
    await pool.execute("ANALYZE")


async def _run(dsn: str, args: argparse.Namespace, url: str) -> None:
    pool = await db.create_pool(dsn, max_size=args.pool)
    try:
        t = time.monotonic()
        await _queue(pool, url, args.n, args.events)
        print(
            f"queued {args.n} notifications × {args.events} events in {time.monotonic() - t:.1f}s"
        )
        settings = replace(
            Settings(),
            replica_id="bench",
            delivery_concurrency=args.concurrency,
            delivery_per_url_concurrency=args.per_url,
            delivery_poll_interval_s=0.5,
            signature_scheme="both",
        )
        dispatcher = Dispatcher(settings, pool, dsn, SecretBox(None))
        stop = asyncio.Event()
        cpu0, wall0 = time.process_time(), time.monotonic()
        task = asyncio.create_task(dispatcher.run(stop))
        while dispatcher.outcomes["delivered"] < args.n and not task.done():
            await asyncio.sleep(0.02)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        stop.set()
        await task
        delivered = await pool.fetchval(
            "SELECT count(*) FROM notifications WHERE status = 'delivered'"
        )
        print(
            f"delivered {delivered}/{args.n} in {wall:.2f}s: {args.n / wall:,.0f} notifications/s "
            f"({args.n * args.events / wall:,.0f} events/s)"
        )
        print(
            f"dispatcher CPU: {cpu:.2f}s = {cpu / args.n * 1000:.3f} ms per notification "
            f"(concurrency {args.concurrency}, per URL {args.per_url}, pool {args.pool}, "
            f"{os.cpu_count()} CPUs shared with PostgreSQL and the receiver)"
        )
    finally:
        await pool.close()


async def _admin(dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def main(args: argparse.Namespace) -> None:
    server = os.environ.get("DATABASE_URL") or DEFAULT_DSN
    name = f"qbo_bench_{uuid.uuid4().hex[:10]}"
    ports: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()  # type: ignore[type-arg]
    receiver = multiprocessing.get_context("spawn").Process(
        target=_receiver_process, args=(ports,), daemon=True
    )
    receiver.start()
    await _admin(server, f'CREATE DATABASE "{name}"')
    if args.async_commit:  # diagnostic: is the drain bound by one WAL flush per outcome?
        await _admin(server, f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    try:
        dsn = with_database(server, name)
        conn = await db.connect(dsn)
        try:
            await migrate.migrate(conn)
        finally:
            await conn.close()
        port = await asyncio.get_running_loop().run_in_executor(None, ports.get, True, 20)
        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        await _run(dsn, args, f"http://127.0.0.1:{port}/hook")
        if profiler:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
    finally:
        await _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        receiver.terminate()
        receiver.join(5)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=10, help="events per notification")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--per-url", type=int, default=64)
    parser.add_argument("--pool", type=int, default=10)
    parser.add_argument("--profile", action="store_true", help="cProfile the dispatcher")
    parser.add_argument(
        "--async-commit",
        action="store_true",
        help="synchronous_commit=off on the scratch database (diagnostic)",
    )
    logs.configure("warning", "console")  # one debug line per delivery would dominate
    asyncio.run(main(parser.parse_args()))
