"""Builds the aiohttp application and runs it as one component of the supervisor."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from poller.config import HttpAddr
from poller.web import health, metrics


def build_app(pool: asyncpg.Pool) -> web.Application:
    app = web.Application()
    app[health.POOL_KEY] = pool
    health.add_routes(app)
    metrics.add_routes(app)
    return app


@contextlib.asynccontextmanager
async def serve(app: web.Application, addr: HttpAddr) -> AsyncIterator[int]:
    """Listen on `addr` until the context exits; yields the bound port (0 picks a free one)."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, addr.host, addr.port)
        await site.start()
        server = site._server
        port = addr.port
        if server is not None and getattr(server, "sockets", None):
            port = server.sockets[0].getsockname()[1]
        yield port
    finally:
        await runner.cleanup()
