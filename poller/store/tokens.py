"""PostgreSQL side of OAuth tokens: the `TokenStore` that `poller.qbo.auth` is given.

`lock()` opens a transaction and takes `SELECT … FOR UPDATE` on the instance's
`oauth_credentials` row, so one process at a time renews a realm's tokens; whatever the holder
writes commits when the `async with` block ends, before the new tokens are used. Token values
are sealed with `SecretBox` (encrypted when POLLER_SECRET_KEY is set).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import asyncpg

from poller.qbo.auth import Credentials, TokenSet
from poller.store import db, instance_rows
from poller.store.crypto import SecretBox
from poller.store.db import Conn, Pool, store_call
from poller.store.sql import queries

Q = queries("tokens")


def _credentials(row: asyncpg.Record, box: SecretBox) -> Credentials:
    return Credentials(
        instance_id=row["instance_id"],
        instance_name=row["instance_name"],
        realm_id=row["realm_id"],
        status=row["status"],
        client_id=row["client_id"],
        client_secret=box.open(row["client_secret_enc"]) or "",
        redirect_uri=row["redirect_uri"],
        auth_code=box.open(row["auth_code_enc"]),
        access_token=box.open(row["access_token_enc"]),
        access_expires_at=row["access_expires_at"],
        refresh_token=box.open(row["refresh_token_enc"]),
        refresh_expires_at=row["refresh_expires_at"],
        refresh_hard_expires_at=row["refresh_hard_expires_at"],
        refresh_count=row["refresh_count"],
    )


class PgLockedCredentials:
    """The locked row of one open transaction (see `PgTokenStore.lock`)."""

    def __init__(self, conn: Conn, box: SecretBox, credentials: Credentials) -> None:
        self._conn = conn
        self._box = box
        self.credentials = credentials

    @store_call
    async def save_tokens(self, tokens: TokenSet) -> None:
        box = self._box
        await self._conn.execute(
            Q["save_tokens"],
            self.credentials.instance_id,
            box.seal(tokens.access_token),
            tokens.access_expires_at,
            box.seal(tokens.refresh_token),
            tokens.refresh_expires_at,
            tokens.refresh_hard_expires_at,
            tokens.obtained_at,
        )

    @store_call
    async def clear_code(self) -> None:
        await self._conn.execute(Q["clear_code"], self.credentials.instance_id)

    @store_call
    async def clear_tokens(self) -> None:
        await self._conn.execute(Q["clear_tokens"], self.credentials.instance_id)

    @store_call
    async def mark_needs_reconnect(self, reason: str) -> bool:
        return await instance_rows.mark_needs_reconnect(
            self._conn, self.credentials.instance_id, reason
        )


class PgTokenStore:
    """`TokenStore` over an asyncpg pool."""

    def __init__(self, pool: Pool, box: SecretBox) -> None:
        self._pool = pool
        self._box = box

    @store_call
    async def load(self, instance_id: int) -> Credentials | None:
        row = await self._pool.fetchrow(Q["load"], instance_id)
        return _credentials(row, self._box) if row else None

    def lock(self, instance_id: int) -> AbstractAsyncContextManager[PgLockedCredentials | None]:
        """A transaction holding the credentials row lock (see the module docstring)."""
        return self._lock(instance_id)

    @asynccontextmanager
    async def _lock(self, instance_id: int) -> AsyncIterator[PgLockedCredentials | None]:
        async with db.acquire(self._pool) as conn, conn.transaction():
            row = await conn.fetchrow(Q["lock"], instance_id)
            yield (
                PgLockedCredentials(conn, self._box, _credentials(row, self._box)) if row else None
            )
