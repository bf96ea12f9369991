"""The first connection to DATABASE_URL: a URL that cannot work, or a server not there yet.

Before the pool opens, one connection is made and closed, and its failure is sorted (DESIGN §7):
- a URL that cannot work (not PostgreSQL, a bad option, a missing database, authentication
  refused, an unknown role) raises `ConfigError`, one line naming DATABASE_URL with the password
  masked: retrying or restarting cannot fix it;
- a server that cannot be reached (connection refused, timed out, starting up, out of
  connections, a host name that does not resolve) is retried with backoff until the deadline,
  one warning per attempt, then raises `DatabaseUnavailable`, one line.

A host name that does not resolve is retried, not refused: it is the usual state of a database
container (docker compose, a Kubernetes Service) that is not up yet, and a DNS server that is
briefly away looks the same. A typo shows in every attempt's line and in the last one.
"""

from __future__ import annotations

import asyncio
import socket
import time

import asyncpg

from poller.aio import sleep_unless
from poller.backoff import Backoff
from poller.config import masked_dsn
from poller.errors import ConfigError, DatabaseUnavailable, StartupStopped
from poller.logs import get_logger

log = get_logger(__name__)
RETRY = Backoff(base_s=0.5, cap_s=5.0)
ATTEMPT_TIMEOUT_S = 10.0
# Server errors that mean "not now" (class 08 connection exception, 53 insufficient resources
# such as too many connections, 57 operator intervention such as "starting up"); every other
# server error while connecting is about the URL: 28 authentication, 3D database, 42 option.
_RETRY_SQLSTATE_CLASSES = ("08", "53", "57")
_CONNECT_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def refusal(exc: BaseException, dsn: str) -> ConfigError | None:
    """The `ConfigError` for a connection failure that the URL causes, else None."""
    shown = f"DATABASE_URL={masked_dsn(dsn)}"
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = str(getattr(exc, "sqlstate", "") or "")
        if sqlstate[:2] in _RETRY_SQLSTATE_CLASSES:
            return None
        return ConfigError(f"{shown}: {_server_says(exc, sqlstate)}")
    if isinstance(exc, asyncpg.ClientConfigurationError | ValueError):
        return ConfigError(f"{shown}: {exc}")
    return None


def _server_says(exc: asyncpg.PostgresError, sqlstate: str) -> str:
    message = str(exc)
    if sqlstate == "42704" and "configuration parameter" in message:
        # asyncpg sends URL options it does not know as server settings.
        return f"unknown option ({message})"
    if sqlstate[:2] == "28":
        return f"authentication refused ({message})"
    return message


def reason(exc: BaseException) -> str:
    """A short cause of an unreachable server, for the attempt's line."""
    if isinstance(exc, socket.gaierror):
        return f"host name not found ({exc.strerror})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


async def _connect_once(dsn: str, timeout_s: float) -> None:
    conn = await asyncpg.connect(dsn, timeout=timeout_s)
    await conn.close()


async def wait_until_reachable(
    dsn: str, timeout_s: float, stop: asyncio.Event | None = None
) -> None:
    """Connect once; retry an unreachable server for `timeout_s` (0: one attempt). `stop` set
    while waiting (SIGTERM) raises `StartupStopped` at once."""
    deadline = time.monotonic() + timeout_s
    attempt = 0
    while True:
        attempt += 1
        try:
            await _connect_once(dsn, min(ATTEMPT_TIMEOUT_S, max(1.0, timeout_s)))
            return
        # ValueError: asyncpg's own parsing of the URL, for what got past poller.config.
        except (*_CONNECT_ERRORS, ValueError) as exc:
            refused = refusal(exc, dsn)
            if refused is not None:
                raise refused from None
            why = reason(exc)
        left = deadline - time.monotonic()
        if left <= 0:
            waited = (
                f" (gave up after {attempt} attempts in {timeout_s:g} s)" if timeout_s > 0 else ""
            )
            raise DatabaseUnavailable(
                f"DATABASE_URL={masked_dsn(dsn)}: database unreachable: {why}{waited}"
            )
        delay = min(RETRY.delay(attempt), left)
        log.warning(
            "database_unreachable",
            attempt=attempt,
            error=why,
            retry_in_s=round(delay, 1),
            gives_up_in_s=round(left, 1),
        )
        if await sleep_unless(stop or asyncio.Event(), delay):
            raise StartupStopped("stopped while waiting for the database")
