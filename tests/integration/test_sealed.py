"""Every sealed column at once (poller.store.sealed): the start-up check and rekey, on a real
PostgreSQL with every kind of stored secret."""

from __future__ import annotations

import copy

import asyncpg
import pytest

from poller import secret_keys
from poller.errors import ConfigError
from poller.instances import parse_instance
from poller.store import instance_rows, sealed
from poller.store.crypto import SecretBox, SecretKeyError
from tests.unit.test_instances import BODY
from tests.unit.test_secret_keys import legacy_sealed

A = secret_keys.generate_key()
B = secret_keys.generate_key()
PASSPHRASE = "an old passphrase of the legacy kind"
# Every sealed column, with where it lives: a new one must be added to sql/sealed.sql and here.
COLUMNS = {
    "instances": ("client_secret_enc", "signature_key_enc", "token_enc", "webhook_verifier_enc"),
    "oauth_credentials": ("auth_code_enc", "access_token_enc", "refresh_token_enc"),
    "console_sessions": ("pending_code_enc",),
}
CLEAR = {
    "client_secret_enc": "CLIENT-SECRET-XYZ",
    "signature_key_enc": "signature-key-Qp4",
    "token_enc": "element-token-Jk2",
    "webhook_verifier_enc": "verifier-token-Hh7",
    "auth_code_enc": "AUTH-CODE-1",
    "access_token_enc": "access-token-Mm3",
    "refresh_token_enc": "refresh-token-Rr9",
    "pending_code_enc": "pending-code-Pc6",
}


def body(name: str) -> dict[str, object]:
    b = copy.deepcopy(BODY)
    b["name"] = name
    b["configuration"]["event.notification.signature.key"] = CLEAR["signature_key_enc"]
    b["configuration"]["event.webhook.verifier.token"] = CLEAR["webhook_verifier_enc"]
    return b


async def seed(pool: asyncpg.Pool, box: SecretBox, name: str = "Acme") -> int:
    """An instance with every sealed value (as the API and the token store write them), and a
    console session waiting with a consent's code."""
    async with pool.acquire() as conn:
        result = await instance_rows.upsert(conn, parse_instance(body(name)), box)
        iid = result.instance_id
        await conn.execute(
            "UPDATE instances SET token_enc = $2, token_hash = $3 WHERE id = $1",
            iid,
            box.seal(CLEAR["token_enc"]),
            f"hash-{name}",
        )
        await conn.execute(
            "UPDATE oauth_credentials SET access_token_enc = $2, refresh_token_enc = $3 "
            "WHERE instance_id = $1",
            iid,
            box.seal(CLEAR["access_token_enc"]),
            box.seal(CLEAR["refresh_token_enc"]),
        )
        user = await conn.fetchval(
            "INSERT INTO api_users (name, secret_hash) VALUES ($1, $2) RETURNING id",
            f"user-{name}",
            f"secret-hash-{name}",
        )
        await conn.execute(
            "INSERT INTO console_sessions (id_hash, user_id, user_secret_hash, pending_code_enc)"
            " VALUES ($1, $2, $3, $4)",
            f"session-{name}",
            user,
            f"secret-hash-{name}",
            box.seal(CLEAR["pending_code_enc"]),
        )
    return iid


async def stored_values(pool: asyncpg.Pool) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for table, columns in COLUMNS.items():
        for row in await pool.fetch(f"SELECT {', '.join(columns)} FROM {table}"):
            for column in columns:
                values.setdefault(column, []).append(row[column])
    return values


async def test_the_check_passes_with_the_key_and_counts_what_is_stored(pool: asyncpg.Pool) -> None:
    await seed(pool, SecretBox(A))
    async with pool.acquire() as conn:
        inventory = await sealed.check_readable(conn, SecretBox(A))
        rotated = await sealed.check_readable(conn, SecretBox(B, [A]))
    assert inventory == sealed.Inventory(stored=8, in_clear=0, not_current=0)
    assert rotated == sealed.Inventory(stored=8, in_clear=0, not_current=8)


@pytest.mark.parametrize("key", [B, None], ids=["wrong-key", "no-key"])  # B is random
async def test_the_check_names_the_instance_a_wrong_or_missing_key_cannot_open(
    pool: asyncpg.Pool, key: str | None
) -> None:
    await seed(pool, SecretBox(A), name="Acme Corp")
    async with pool.acquire() as conn:
        with pytest.raises(SecretKeyError) as info:
            await sealed.check_readable(conn, SecretBox(key))
    message = str(info.value)
    assert "instance 'Acme Corp'" in message and "\n" not in message
    if key is None:
        assert message.startswith("POLLER_SECRET_KEY=<unset>: the stored secrets of instance")
    else:
        assert message == (
            "POLLER_SECRET_KEY=<hidden>: cannot decrypt the stored secrets of instance "
            "'Acme Corp' (wrong or missing key; set POLLER_SECRET_KEY_PREVIOUS to the old key "
            "and run qbo-poller rekey)"
        )
    assert not any(clear in message for clear in CLEAR.values())
    assert A not in message


async def test_rekey_moves_every_sealed_column_under_the_current_key(pool: asyncpg.Pool) -> None:
    await seed(pool, SecretBox(A), name="one")
    await seed(pool, SecretBox(None), name="two")  # in clear: no key was set then
    box = SecretBox(B, [A])
    async with pool.acquire() as conn:
        done = await sealed.rekey(conn, box)
        again = await sealed.rekey(conn, box)
    assert done == sealed.Rekeyed(resealed=16, from_clear=8, unchanged=0)
    assert again == sealed.Rekeyed(resealed=0, from_clear=0, unchanged=16)
    only_b, only_a = SecretBox(B), SecretBox(A)
    for column, values in (await stored_values(pool)).items():
        assert len(values) == 2
        for value in values:
            assert value.startswith("fernet:"), column
            assert only_b.open(value) == CLEAR[column]
            assert not only_a.readable(value)  # nothing readable with A any more


async def test_rekey_reads_the_legacy_derivation_of_a_passphrase(pool: asyncpg.Pool) -> None:
    """An existing deployment: values sealed by earlier versions under a passphrase."""
    iid = await seed(pool, SecretBox(None))
    async with pool.acquire() as conn:
        for table, columns in COLUMNS.items():
            for column in columns:
                await conn.execute(
                    f"UPDATE {table} SET {column} = $1",
                    legacy_sealed(PASSPHRASE, CLEAR[column]),
                )
        with pytest.raises(SecretKeyError):
            await sealed.check_readable(conn, SecretBox(B))
        done = await sealed.rekey(conn, SecretBox(B, [PASSPHRASE]))
        assert await sealed.check_readable(conn, SecretBox(B)) == sealed.Inventory(8, 0, 0)
    assert done.resealed == 8 and done.from_clear == 0
    row = await pool.fetchrow("SELECT * FROM oauth_credentials WHERE instance_id = $1", iid)
    assert SecretBox(B).open(row["refresh_token_enc"]) == CLEAR["refresh_token_enc"]


async def test_rekey_writes_nothing_when_one_value_cannot_be_opened(pool: asyncpg.Pool) -> None:
    await seed(pool, SecretBox(A), name="readable")
    await seed(pool, SecretBox(secret_keys.generate_key()), name="lost")
    before = await stored_values(pool)
    async with pool.acquire() as conn:
        with pytest.raises(SecretKeyError) as info:
            await sealed.rekey(conn, SecretBox(B, [A]))
    assert "instance 'lost'" in str(info.value)
    assert await stored_values(pool) == before  # one transaction: all or nothing


async def test_rekey_leaves_the_refresh_fence_alone(pool: asyncpg.Pool) -> None:
    """A token refresh in flight fences its save on `updated_at`: rekey must not move it, or
    the rotated refresh token Intuit just issued would be thrown away."""
    iid = await seed(pool, SecretBox(A))
    fence = "SELECT updated_at FROM oauth_credentials WHERE instance_id = $1"
    before = await pool.fetchval(fence, iid)
    async with pool.acquire() as conn:
        await sealed.rekey(conn, SecretBox(B, [A]))
    assert await pool.fetchval(fence, iid) == before


async def test_rekey_without_a_key_is_refused(pool: asyncpg.Pool) -> None:
    await seed(pool, SecretBox(None))
    async with pool.acquire() as conn:
        with pytest.raises(ConfigError, match="POLLER_SECRET_KEY=<unset>: rekey"):
            await sealed.rekey(conn, SecretBox(None))
