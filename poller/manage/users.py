"""API users (DESIGN §9): secrets, their hashes, and who is calling.

A user secret is 32 random bytes (urlsafe base64, 43 characters), shown once. Only its SHA-256
is stored: for a uniformly random 256-bit secret a fast hash is as strong as a slow password
hash (there is no dictionary to try and 2^256 candidates), and it lets each request find the
user by an index lookup, so a running daemon sees new and rotated users at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from poller.store import users as user_rows
from poller.store.db import Conn

SECRET_BYTES = 32


@dataclass(frozen=True)
class Caller:
    """An authenticated API user."""

    user_id: int
    name: str
    admin: bool

    @property
    def owner_filter(self) -> int | None:
        """The store's visibility filter: None (everything) for an admin."""
        return None if self.admin else self.user_id


def new_secret() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)).rstrip(b"=").decode()


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def valid_name(name: str) -> bool:
    return 0 < len(name) <= 64 and name.isprintable() and name.strip() == name


async def add(conn: Conn, name: str, admin: bool) -> str | None:
    """The new user's secret; None when the name is taken."""
    secret = new_secret()
    user_id = await user_rows.add(conn, name, hash_secret(secret), admin)
    return None if user_id is None else secret


async def rotate(conn: Conn, name: str) -> str | None:
    """A new secret for `name` (the old one stops working at once); None: no such user."""
    secret = new_secret()
    return secret if await user_rows.rotate(conn, name, hash_secret(secret)) else None


async def authenticate(conn: Conn, secret: str) -> Caller | None:
    digest = hash_secret(secret)
    row = await user_rows.by_hash(conn, digest)
    # The lookup is by an index on the hash; the comparison below is the constant-time check
    # the design asks for (the hash of a random secret tells an attacker nothing either way).
    if row is None or not hmac.compare_digest(row.secret_hash, digest):
        return None
    return Caller(row.id, row.name, row.admin)
