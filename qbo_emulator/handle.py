"""``run_emulator``: serve an Emulator on loopback inside the running loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from .app import create_app
from .core import Emulator


@asynccontextmanager
async def run_emulator(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    emulator: Emulator | None = None,
    shutdown_timeout: float = 0.5,
    **options: Any,
) -> AsyncIterator[Emulator]:
    """Start the emulator's HTTP server and yield the Emulator, with
    ``base_url`` (no ``/v3``), ``token_url``, ``revoke_url`` and
    ``discovery_url`` set.  ``port=0`` picks a free port.  ``options`` go to
    :class:`Emulator` (ignored when ``emulator`` is given).  The server stops
    when the block exits, dropping connections still open after
    ``shutdown_timeout`` seconds."""
    emu = emulator if emulator is not None else Emulator(**options)
    runner = web.AppRunner(
        create_app(emu), handle_signals=False, access_log=None, shutdown_timeout=shutdown_timeout
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        emu.base_url = f"http://{shown}:{bound_port}"
        yield emu
    finally:
        emu.base_url = None
        await runner.cleanup()
