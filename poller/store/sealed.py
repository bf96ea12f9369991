"""Every value the SecretBox sealed, at once (DESIGN §7, §8).

`check_readable` is the start-up check of `run` and `check-config`: the configured keys must
open every stored secret, or the process stops with one line naming the instance, before it
polls or answers `/readyz` (rather than failing at every poll). `rekey` re-encrypts every stored
secret under the current key, in one transaction: values under a previous key (or the legacy
derivation) and values stored in clear before a key was set. Values already under the current
key are left as they are, so a second run changes nothing.

The sealed columns: instances (client secret, signature key, instance token, webhook verifier
token), oauth_credentials (authorization code, access and refresh tokens) and console_sessions
(a pending consent's code). sql/sealed.sql lists them; a new sealed column belongs there too.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from poller.errors import ConfigError
from poller.store.crypto import SecretBox, SecretKeyError
from poller.store.db import Conn, store_call
from poller.store.sql import queries

Q = queries("sealed")
_PLAIN = "plain:"


@dataclass(frozen=True)
class _Table:
    select: str
    select_for_update: str
    update: str
    columns: tuple[str, ...]
    of_instance: bool  # rows named by their instance (else: console sessions)


_TABLES = (
    _Table(
        "instances",
        "instances_for_update",
        "update_instance",
        ("client_secret_enc", "signature_key_enc", "token_enc", "webhook_verifier_enc"),
        of_instance=True,
    ),
    _Table(
        "credentials",
        "credentials_for_update",
        "update_credentials",
        ("auth_code_enc", "access_token_enc", "refresh_token_enc"),
        of_instance=True,
    ),
    _Table("sessions", "sessions_for_update", "update_session", ("pending_code_enc",), False),
)


@dataclass(frozen=True)
class Inventory:
    """What `check_readable` found: stored secrets, how many are in clear, and how many are
    not sealed as `seal` does today (in clear while a key is set, or under a previous key or
    the legacy derivation): those are what `rekey` would re-encrypt."""

    stored: int
    in_clear: int
    not_current: int


@dataclass(frozen=True)
class Rekeyed:
    """What `rekey` did: values re-encrypted (of which were in clear) and left as they were."""

    resealed: int
    from_clear: int
    unchanged: int


def _owner(table: _Table, row: asyncpg.Record) -> str:
    if table.of_instance:
        return f"instance {row['name']!r}"
    return "a console session (a pending QuickBooks consent)"


def _unreadable(box: SecretBox, table: _Table, row: asyncpg.Record) -> SecretKeyError:
    """The one line for a stored secret no configured key opens. Never carries a value."""
    owner = _owner(table, row)
    if not box.encrypts:
        return SecretKeyError(
            f"POLLER_SECRET_KEY=<unset>: the stored secrets of {owner} are encrypted; set "
            "POLLER_SECRET_KEY to the key they were written with (a passphrase: to a new key "
            "from qbo-poller keygen, with the passphrase in POLLER_SECRET_KEY_PREVIOUS)"
        )
    return SecretKeyError(
        f"POLLER_SECRET_KEY=<hidden>: cannot decrypt the stored secrets of {owner} (wrong or "
        "missing key; set POLLER_SECRET_KEY_PREVIOUS to the old key and run qbo-poller rekey)"
    )


@store_call
async def check_readable(conn: Conn, box: SecretBox) -> Inventory:
    """Raise SecretKeyError (a ConfigError: exit 2) naming the first owner of a stored secret
    that the configured keys cannot open; else count what is stored."""
    stored = in_clear = not_current = 0
    for table in _TABLES:
        for row in await conn.fetch(Q[table.select]):
            for column in table.columns:
                value = row[column]
                if value is None:
                    continue
                if not box.readable(value):
                    raise _unreadable(box, table, row)
                stored += 1
                in_clear += value.startswith(_PLAIN)
                not_current += not box.is_current(value)
    return Inventory(stored, in_clear, not_current)


def require_key(box: SecretBox) -> None:
    """rekey's precondition: a current key to encrypt with."""
    if not box.encrypts:
        raise ConfigError(
            "POLLER_SECRET_KEY=<unset>: rekey encrypts the stored secrets with it; set it "
            "(qbo-poller keygen makes one)"
        )


@store_call
async def rekey(conn: Conn, box: SecretBox) -> Rekeyed:
    """Re-encrypt every stored secret under the current key, in one transaction (all or none:
    a value no configured key opens raises SecretKeyError and nothing is written)."""
    require_key(box)  # with no key, "re-encrypting" would write every secret in clear
    resealed = from_clear = unchanged = 0
    async with conn.transaction():
        for table in _TABLES:
            updates: list[tuple[object, ...]] = []
            for row in await conn.fetch(Q[table.select_for_update]):
                new_values: list[str | None] = []
                for column in table.columns:
                    value = row[column]
                    if value is not None and not box.readable(value):
                        raise _unreadable(box, table, row)
                    new = box.reseal(value)
                    new_values.append(new)
                    if value is None:
                        continue
                    if new is None:
                        unchanged += 1
                    else:
                        resealed += 1
                        from_clear += value.startswith(_PLAIN)
                if any(new is not None for new in new_values):
                    updates.append((row["id"], *new_values))
            if updates:  # one pipelined batch per table: the rows stay locked for less time
                await conn.executemany(Q[table.update], updates)
    return Rekeyed(resealed, from_clear, unchanged)
