"""`GET /healthz` (the process is alive) and `GET /readyz` (database reachable, schema current)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from poller.errors import DatabaseError, SchemaError
from poller.store import db, migrate

READY_TIMEOUT_S = 2.0


class Health:
    """The health routes; readiness asks the database."""

    def __init__(self, pool: db.Pool) -> None:
        self.pool = pool

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, _request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(READY_TIMEOUT_S), db.acquire(self.pool) as conn:
                version = await migrate.check_current(conn)
        except SchemaError as exc:
            return web.json_response({"status": "schema", "error": str(exc)}, status=503)
        except DatabaseError as exc:
            return web.json_response({"status": "database", "error": _cause(exc)}, status=503)
        except TimeoutError:
            return web.json_response({"status": "database", "error": "TimeoutError"}, status=503)
        return web.json_response({"status": "ready", "schema_version": version})


def _cause(exc: DatabaseError) -> str:
    """The driver's exception name only: its message may carry connection details."""
    cause = exc.__cause__
    return type(cause).__name__ if cause is not None else type(exc).__name__
