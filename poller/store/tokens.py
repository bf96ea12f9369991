"""PostgreSQL side of OAuth tokens: the `TokenStore` that `poller.qbo.auth` is given.

No connection is held while a token request is at Intuit. Each method is one short transaction
on a connection borrowed from the pool for that transaction only:

- `claim_refresh` locks the `oauth_credentials` row just long enough to read the latest tokens
  and, when no other process holds it, take the refresh lease (`refresh_holder`,
  `refresh_lease_until`, migration 0007);
- `save_tokens` writes the new tokens and releases the lease, fenced on the row version the
  lease was taken at (`updated_at`): a reconnect or another process's newer tokens win;
- `give_up` (the grant is dead), `release_refresh` and `clear_tokens` end a lease otherwise.

Token values are sealed with `SecretBox` (encrypted when POLLER_SECRET_KEY is set).
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from poller.qbo.auth import Credentials, GiveUp, RefreshClaim, TokenSet
from poller.store import db, instance_rows
from poller.store.crypto import SecretBox
from poller.store.db import Pool, store_call
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


def _version(claim: RefreshClaim) -> datetime:
    """The row version a claim was read at (this store puts `updated_at` there)."""
    assert isinstance(claim.version, datetime)
    return claim.version


class PgTokenStore:
    """`TokenStore` over an asyncpg pool (see the module docstring)."""

    def __init__(self, pool: Pool, box: SecretBox) -> None:
        self._pool = pool
        self._box = box

    @store_call
    async def load(self, instance_id: int) -> Credentials | None:
        row = await self._pool.fetchrow(Q["load"], instance_id)
        return _credentials(row, self._box) if row else None

    @store_call
    async def claim_refresh(
        self, instance_id: int, holder: str, lease_s: float
    ) -> RefreshClaim | None:
        async with db.acquire(self._pool) as conn, conn.transaction():
            row = await conn.fetchrow(Q["claim_read"], instance_id)
            if row is None:
                return None
            other = row["refresh_holder"]
            lease_left_s = float(row["lease_left_s"] or 0.0)
            taken = other is None or other == holder or lease_left_s <= 0.0
            if taken:
                await conn.execute(Q["claim_take"], instance_id, holder, lease_s)
            return RefreshClaim(
                credentials=_credentials(row, self._box),
                holder=holder if taken else None,
                lease_left_s=0.0 if taken else lease_left_s,
                version=row["version"],
            )

    @store_call
    async def release_refresh(self, claim: RefreshClaim) -> None:
        if claim.holder is None:
            return
        async with db.acquire(self._pool) as conn:
            await conn.execute(Q["release"], claim.credentials.instance_id, claim.holder)

    @store_call
    async def save_tokens(self, claim: RefreshClaim, tokens: TokenSet, refresh_count: int) -> bool:
        box = self._box
        async with db.acquire(self._pool) as conn:
            result = await conn.execute(
                Q["save_tokens"],
                claim.credentials.instance_id,
                box.seal(tokens.access_token),
                tokens.access_expires_at,
                box.seal(tokens.refresh_token),
                tokens.refresh_expires_at,
                tokens.refresh_hard_expires_at,
                tokens.obtained_at,
                refresh_count,
                _version(claim),
                claim.holder,
            )
        return bool(result == "UPDATE 1")

    @store_call
    async def give_up(self, claim: RefreshClaim, reason: str, *, clear_code: bool) -> GiveUp:
        instance_id = claim.credentials.instance_id
        async with db.acquire(self._pool) as conn, conn.transaction():
            result = await conn.execute(
                Q["give_up"], instance_id, claim.holder, clear_code, _version(claim)
            )
            if result != "UPDATE 1":
                return "superseded"  # a reconnect stored a new grant meanwhile: not dead
            marked = await instance_rows.mark_needs_reconnect(conn, instance_id, reason)
            return "marked" if marked else "already"

    @store_call
    async def clear_tokens(self, claim: RefreshClaim) -> None:
        async with db.acquire(self._pool) as conn:
            await conn.execute(Q["clear_tokens"], claim.credentials.instance_id)
