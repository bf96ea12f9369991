"""HTTP API latency: `GET /instances` with 1,000 instances and `GET /instances/{id}/events`
with 100,000 events (DESIGN §9, issue 11).

    .venv/bin/python bench/api_latency.py [--instances 1000] [--events 100000] [--requests 200]

Creates a scratch database on DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/postgres),
migrates it, fills it with set-based SQL (the events in notifications of 10, each with one
delivery attempt, all on one instance), serves the API part alone on loopback and times
sequential requests from one client: p50 / p99 / max in milliseconds. Drops the database.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import asyncpg

from poller.config import HttpAddr, Settings
from poller.manage import users
from poller.qbo.auth import TokenSet
from poller.store import db, migrate
from poller.store.crypto import SecretBox
from poller.web.api import ApiPart
from poller.web.app import build_app, serve

ORG = "bench-organization-secret"
FILL = """
WITH i AS (
    INSERT INTO instances (name, realm_id, client_id, client_secret_enc, events_enabled,
        callback_url, refresh_interval_s, resources, tags, configuration, provider_fingerprint,
        owner_user_id, status)
    SELECT 'bench-' || n, '9130' || n, 'client', 'plain:secret', true,
        'http://127.0.0.1:9/hook', 900, ARRAY['customers', 'invoices'], '["Docs"]'::jsonb,
        '{"event.poller.urls": "customers|invoices"}'::jsonb, 'fp', $1, 'paused'
    FROM generate_series(1, $2) AS n RETURNING id
)
INSERT INTO pair_cursors (instance_id, resource, entity, watermark, last_polled_at)
SELECT id, r.resource, r.entity, now(), now() FROM i,
    (VALUES ('customers', 'Customer'), ('invoices', 'Invoice')) AS r(resource, entity)
"""
EVENTS = """
WITH n AS (
    INSERT INTO notifications (event_id, instance_id, resource, event_count, status, attempts)
    SELECT gen_random_uuid(), $1, 'invoices', 10, 'delivered', 1
    FROM generate_series(1, $2) RETURNING id
), e AS (
    INSERT INTO events (instance_id, resource, object_id, version, event_type, occurred_at, raw,
                        notification_id, position)
    SELECT $1, 'invoices', (n.id * 100 + p)::text, '0', 'UPDATED', now(),
           ('{"Id": "' || (n.id * 100 + p) || '", "SyncToken": "0", "TotalAmt": 12.50}')::json,
           n.id, p
    FROM n, generate_series(0, 9) AS p
)
INSERT INTO delivery_attempts (notification_id, attempt, url, started_at, duration_ms,
                               status_code, outcome)
SELECT id, 1, 'http://127.0.0.1:9/hook', now(), 12, 200, 'delivered' FROM n
"""


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


async def _refuse(client_id: str, client_secret: str, code: str, redirect_uri: str) -> TokenSet:
    raise AssertionError("the benchmark exchanges no code")


async def _time(session: aiohttp.ClientSession, url: str, header: str, count: int) -> str:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        async with session.get(url, headers={"Authorization": header}) as response:
            await response.read()
            assert response.status == 200, response.status
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return (
        f"p50 {statistics.median(samples):.1f} ms, p99 {p99:.1f} ms, max {samples[-1]:.1f} ms "
        f"({count} requests)"
    )


async def _run(dsn: str, args: argparse.Namespace) -> None:
    pool = await db.create_pool(dsn, max_size=4)
    try:
        async with pool.acquire() as conn:
            secret = await users.add(conn, "bench", admin=False)
            assert secret is not None
            owner = await conn.fetchval("SELECT id FROM api_users")
            await conn.execute(FILL, owner, args.instances)
            first = await conn.fetchval("SELECT min(id) FROM instances")
            await conn.execute(EVENTS, first, args.events // 10)
            await conn.execute("ANALYZE")
        settings = Settings(database_url=dsn, api_organization_secret=ORG, http_addr=None)
        app = build_app([ApiPart(pool, SecretBox(None), settings, _refuse)])
        async with serve(app, HttpAddr("127.0.0.1", 0)) as port, aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{port}/elements/api-v2"
            header = f"User {secret}, Organization {ORG}"
            print(f"GET /instances ({args.instances} instances, page of 200):")
            print("  " + await _time(http, f"{base}/instances", header, args.requests))
            print("GET /instances?pageSize=500:")
            print("  " + await _time(http, f"{base}/instances?pageSize=500", header, args.requests))
            print(f"GET /instances/{{id}}/events ({args.events} events, page of 200 records):")
            url = f"{base}/instances/{first}/events"
            print("  " + await _time(http, url, header, args.requests))
            print("GET /instances/{id}/events?objectId=<one of them>:")
            url = f"{base}/instances/{first}/events?objectId={(args.events // 20) * 10 + 5}"
            print("  " + await _time(http, url, header, args.requests))
    finally:
        await pool.close()


async def main(args: argparse.Namespace) -> None:
    server = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"qbo_bench_api_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        conn = await db.connect(with_database(server, name))
        try:
            await migrate.migrate(conn)
        finally:
            await conn.close()
        await _run(with_database(server, name), args)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    asyncio.run(main(parser.parse_args()))
