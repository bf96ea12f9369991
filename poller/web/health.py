"""`GET /healthz` (the process is alive) and `GET /readyz` (database reachable, schema current)."""

from __future__ import annotations

import asyncio

import asyncpg
from aiohttp import web

from poller.errors import SchemaError
from poller.store import migrate

POOL_KEY = web.AppKey("pool", asyncpg.Pool)
READY_TIMEOUT_S = 2.0


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    pool = request.app[POOL_KEY]
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            async with pool.acquire() as conn:
                version = await migrate.check_current(conn)
    except SchemaError as exc:
        return web.json_response({"status": "schema", "error": str(exc)}, status=503)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        return web.json_response({"status": "database", "error": type(exc).__name__}, status=503)
    return web.json_response({"status": "ready", "schema_version": version})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
