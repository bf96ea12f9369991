"""Instances in PostgreSQL: upsert by name; stored credentials win over a reloaded file."""

from __future__ import annotations

import copy
from typing import Any

import asyncpg

from poller.instances import parse_instance
from poller.store import instance_rows
from poller.store.crypto import SecretBox
from tests.unit.test_instances import BODY

BOX = SecretBox(None)


def variant(**changes: Any) -> dict[str, Any]:
    b = copy.deepcopy(BODY)
    for key, value in changes.items():
        if key == "providerData":
            b["providerData"] = value
        else:
            b["configuration"][key.replace("__", ".")] = value
    return b


async def pairs(pool: asyncpg.Pool, iid: int) -> list[str]:
    rows = await pool.fetch(
        "SELECT resource FROM pair_cursors WHERE instance_id = $1 ORDER BY 1", iid
    )
    return [r["resource"] for r in rows]


async def test_create_then_unchanged_then_updated(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        first = await instance_rows.upsert(conn, parse_instance(BODY), BOX)
        again = await instance_rows.upsert(conn, parse_instance(BODY), BOX)
        changed = await instance_rows.upsert(
            conn, parse_instance(variant(event__poller__urls="customers|vendors")), BOX
        )
    assert (first.action, again.action, changed.action) == ("created", "unchanged", "updated")
    assert first.instance_id == again.instance_id == changed.instance_id
    assert await pool.fetchval("SELECT count(*) FROM instances") == 1
    assert await pairs(pool, first.instance_id) == ["customers", "vendors"]
    assert await pool.fetchval("SELECT config_version FROM instances") == 2


async def test_stored_credentials_win_over_an_unchanged_provider_data(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        result = await instance_rows.upsert(conn, parse_instance(BODY), BOX)
        # The daemon exchanged the code and rotated the refresh token since.
        await conn.execute(
            "UPDATE oauth_credentials SET auth_code_enc = NULL,"
            " refresh_token_enc = 'plain:ROTATED' WHERE instance_id = $1",
            result.instance_id,
        )
        reload = await instance_rows.upsert(
            conn, parse_instance(variant(event__poller__refresh_interval="5")), BOX
        )
        row = await conn.fetchrow("SELECT * FROM oauth_credentials")
    assert reload.action == "updated" and not reload.credentials_replaced
    assert row["auth_code_enc"] is None and row["refresh_token_enc"] == "plain:ROTATED"


async def test_new_provider_data_replaces_credentials_and_reconnects(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        result = await instance_rows.upsert(conn, parse_instance(BODY), BOX)
        await instance_rows.set_status(conn, result.instance_id, "needs_reconnect", "invalid_grant")
        fresh = variant(providerData={"code": "NEW-CODE", "realmId": "9130357766900456"})
        reload = await instance_rows.upsert(conn, parse_instance(fresh), BOX)
        row = await conn.fetchrow(
            "SELECT i.status, c.auth_code_enc FROM instances i"
            " JOIN oauth_credentials c ON c.instance_id = i.id"
        )
    assert reload.credentials_replaced
    assert row["status"] == "active" and row["auth_code_enc"] == "plain:NEW-CODE"


async def test_needs_reconnect_survives_a_reload_without_new_credentials(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        result = await instance_rows.upsert(conn, parse_instance(BODY), BOX)
        await instance_rows.set_status(conn, result.instance_id, "needs_reconnect", "invalid_grant")
        await instance_rows.upsert(
            conn, parse_instance(variant(event__poller__refresh_interval="5")), BOX
        )
    assert await pool.fetchval("SELECT status FROM instances") == "needs_reconnect"


async def test_secrets_are_encrypted_at_rest_with_a_key(pool: asyncpg.Pool) -> None:
    box = SecretBox("5LcAg2bWtp9DGRT0MevoamIZhF3stW0Dota67O9hCIQ=")
    async with pool.acquire() as conn:
        await instance_rows.upsert(conn, parse_instance(BODY), box)
        again = await instance_rows.upsert(conn, parse_instance(BODY), box)
    row = await pool.fetchrow(
        "SELECT i.client_secret_enc, i.signature_key_enc, c.auth_code_enc"
        " FROM instances i JOIN oauth_credentials c ON c.instance_id = i.id"
    )
    for value in row.values():
        assert value.startswith("fernet:")
        assert "SECRET" not in value and "AUTH-CODE" not in value
    assert box.open(row["client_secret_enc"]) == "CLIENT-SECRET-XYZ"
    assert again.action == "unchanged"  # re-encryption with a fresh IV is not a change


async def test_remove_cascades(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await instance_rows.upsert(conn, parse_instance(BODY), BOX)
        assert await instance_rows.remove(conn, "API Instance")
        assert not await instance_rows.remove(conn, "API Instance")
    assert await pool.fetchval("SELECT count(*) FROM pair_cursors") == 0
    assert await pool.fetchval("SELECT count(*) FROM oauth_credentials") == 0
