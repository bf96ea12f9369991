"""The one aiohttp application, assembled before the server starts (DESIGN §9-§11, §14).

Components contribute their routes through `WebPart`s (health, metrics, the API, the console and
the Intuit webhook receiver); the supervisor collects them and calls `build_app` once, so no
route is ever added to a running (frozen) router.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

from aiohttp import web

from poller.config import HttpAddr


@runtime_checkable
class WebPart(Protocol):
    """Something that serves HTTP routes on the daemon's one listener."""

    def add_routes(self, app: web.Application) -> None: ...


def build_app(parts: Sequence[WebPart]) -> web.Application:
    app = web.Application()
    for part in parts:
        part.add_routes(app)
    return app


@contextlib.asynccontextmanager
async def serve(app: web.Application, addr: HttpAddr) -> AsyncIterator[int]:
    """Listen on `addr` until the context exits; yields the bound port (0 picks a free one)."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, addr.host, addr.port)
        await site.start()
        yield _bound_port(runner, addr.port)
    finally:
        await runner.cleanup()


def _bound_port(runner: web.AppRunner, requested: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return requested
