"""The asyncpg pool, with orjson codecs for jsonb.

`json` columns (raw QBO objects) are left as text on purpose: what goes in comes out
byte for byte, so callbacks carry the object exactly as it was stored.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, ParamSpec, TypeAlias, TypeVar

import asyncpg
import asyncpg.pool
import orjson

from poller.errors import DatabaseError, DatabaseUnavailable, StatementRefused

POOL_COMMAND_TIMEOUT_S = 60.0

# A dedicated connection or one borrowed from the pool: every store function takes either.
Conn: TypeAlias = (
    "asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"
)
Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"

# What the driver raises when the database fails us; nothing outside `poller.store` names them.
DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
# Server errors that say the server or the connection is going away, not that it refused us.
_UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53", "57")

P = ParamSpec("P")
T = TypeVar("T")


def translate(exc: BaseException) -> DatabaseError:
    """The store's error for a driver exception (`raise translate(exc) from exc`)."""
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = str(getattr(exc, "sqlstate", "") or "")
        if sqlstate[:2] not in _UNAVAILABLE_SQLSTATE_CLASSES:
            return StatementRefused(message)
    return DatabaseUnavailable(message)


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Driver exceptions raised inside become `DatabaseError`s (chained, so tracebacks keep
    the driver's view)."""
    try:
        yield
    except DRIVER_ERRORS as exc:
        raise translate(exc) from exc


def store_call(
    function: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Decorates a store coroutine so that it raises `DatabaseError`, never a driver error."""

    @functools.wraps(function)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        with translated():
            return await function(*args, **kwargs)

    return wrapper


@contextlib.asynccontextmanager
async def acquire(pool: Pool) -> AsyncIterator[Conn]:
    """`pool.acquire()`, with a failure to connect (or to reset the connection on release)
    raised as `DatabaseError`."""
    with translated():
        async with pool.acquire() as conn:
            yield conn


def _encode_jsonb(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


async def init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb", encoder=_encode_jsonb, decoder=orjson.loads, schema="pg_catalog"
    )


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing to send. asyncpg's default sends `SELECT
    pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;` at every release, a second
    round trip for each idle poll cycle (issue 17). Our pooled connections never leave session
    state behind: no session advisory locks (migrations take a transaction-scoped one), no
    cursors outside transactions, no LISTEN (listeners own dedicated connections), no SET
    outside a transaction. asyncpg still rolls back a transaction left open before this
    runs (`Connection._reset`), without a round trip when none is."""


async def create_pool(dsn: str, max_size: int = 10, min_size: int = 1) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=init_connection,
        reset=_keep_session,
        command_timeout=POOL_COMMAND_TIMEOUT_S,
    )
    assert pool is not None
    return pool


async def connect(dsn: str) -> asyncpg.Connection:
    """A dedicated connection (LISTEN, session locks): never returned to a pool."""
    conn = await asyncpg.connect(dsn, command_timeout=POOL_COMMAND_TIMEOUT_S)
    await init_connection(conn)
    return conn
