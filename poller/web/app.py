"""The one aiohttp application, assembled before the server starts (DESIGN §9-§11, §14).

Components contribute their routes through `WebPart`s (health, metrics, the API, the console and
the Intuit webhook receiver); the supervisor collects them and calls `build_app` once, so no
route is ever added to a running (frozen) router.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

from aiohttp import web

from poller.config import HttpAddr
from poller.errors import ConfigError

_BIND_REFUSALS = {
    errno.EADDRINUSE: "address already in use (another process listens there: stop it or "
    "choose another host:port)",
    errno.EADDRNOTAVAIL: "address not available on this machine",
    errno.EACCES: "permission denied (ports below 1024 need privileges)",
}


@runtime_checkable
class WebPart(Protocol):
    """Something that serves HTTP routes on the daemon's one listener."""

    def add_routes(self, app: web.Application) -> None: ...


def build_app(parts: Sequence[WebPart]) -> web.Application:
    app = web.Application()
    for part in parts:
        part.add_routes(app)
    return app


def bind(addr: HttpAddr) -> list[socket.socket]:
    """Sockets bound to every address `addr` names (as asyncio's create_server would), not yet
    listening. The supervisor binds first, so an address in use stops start-up with one line
    (`ConfigError`, exit 2) before the database is touched or migrated."""
    try:
        infos = socket.getaddrinfo(
            addr.host, addr.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ConfigError(f"POLLER_HTTP_ADDR={addr}: host not found ({exc.strerror})") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, sockaddr in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            # As asyncio does: a restart is not refused while old connections sit in TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        why = _BIND_REFUSALS.get(exc.errno or 0, exc.strerror or str(exc))
        raise ConfigError(f"POLLER_HTTP_ADDR={addr}: {why}") from None
    return sockets


@contextlib.asynccontextmanager
async def serve(
    app: web.Application, listen: HttpAddr | Sequence[socket.socket]
) -> AsyncIterator[int]:
    """Listen on `listen` (an address, or the sockets `bind` returned) until the context exits,
    then close the sockets; yields the bound port (a requested port 0 is a free one)."""
    sockets = bind(listen) if isinstance(listen, HttpAddr) else listen
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    try:
        await runner.setup()
        for sock in sockets:
            await web.SockSite(runner, sock).start()
        yield int(sockets[0].getsockname()[1])
    finally:
        await runner.cleanup()
        for sock in sockets:
            sock.close()
