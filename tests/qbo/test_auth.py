"""OAuth 2.0 tokens: the emulator's token endpoint on loopback, real PostgreSQL.

Two pools (and two HTTP sessions, two TokenManagers) stand for two daemon processes.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import aiohttp
import asyncpg
import pytest
from structlog.testing import capture_logs

from poller import logs as poller_logs
from poller import metrics
from poller.qbo.auth import OAuthClient, TokenManager
from poller.qbo.client import QboClient
from poller.qbo.limiter import LimiterConfig
from poller.qbo.types import ReconnectRequired, ServerError
from poller.store import db
from poller.store.crypto import SecretBox
from poller.store.tokens import PgTokenStore
from qbo_emulator import run_emulator
from qbo_emulator.core import Emulator
from tests.qbo.conftest import FAST_RETRY, PLAIN, TEST_LIMITS, add_instance, settings_for

REALM = "9130350000000011"
OTHER = "9130350000000012"


@pytest.fixture
async def pool2(db_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A second pool on the same database: the other "process"."""
    p = await db.create_pool(db_dsn, max_size=4)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def session2() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def manager(
    session: aiohttp.ClientSession, emu: Emulator, pool: asyncpg.Pool, box: SecretBox = PLAIN
) -> TokenManager:
    return TokenManager(session, settings_for(emu), PgTokenStore(pool, box), clock=emu.clock.now)


def client_for(
    tokens: TokenManager,
    session: aiohttp.ClientSession,
    emu: Emulator,
    limits: LimiterConfig = TEST_LIMITS,
) -> QboClient:
    return QboClient(session, settings_for(emu), tokens, limits=limits, retry=FAST_RETRY)


async def credentials(pool: asyncpg.Pool, iid: int) -> asyncpg.Record:
    return await pool.fetchrow(
        "SELECT c.*, i.status, i.status_reason FROM oauth_credentials c "
        "JOIN instances i ON i.id = c.instance_id WHERE c.instance_id = $1",
        iid,
    )


def token_requests(emu: Emulator, realm: str) -> int:
    return emu.counters(realm).get("token", 0)


# --- the authorization code -------------------------------------------------------------------


async def test_code_is_exchanged_exactly_once_by_concurrent_processes(
    emu: Emulator,
    pool: asyncpg.Pool,
    pool2: asyncpg.Pool,
    session: aiohttp.ClientSession,
    session2: aiohttp.ClientSession,
) -> None:
    iid = await add_instance(pool, emu, "Alpha", REALM, code=emu.issue_auth_code(REALM))
    m1, m2 = manager(session, emu, pool), manager(session2, emu, pool2)
    tokens = await asyncio.gather(*(m.access_token(iid, REALM) for m in (m1, m2, m1, m2, m1, m2)))
    assert len(set(tokens)) == 1
    assert token_requests(emu, REALM) == 1
    row = await credentials(pool, iid)
    assert row["auth_code_enc"] is None and row["refresh_count"] == 1
    assert row["refresh_hard_expires_at"] is not None  # x-include-refresh-token-hard-expires-in
    result = await client_for(m2, session2, emu).realm(iid, REALM).query("select * from Customer")
    assert result.entity == "Customer"


async def test_rotated_tokens_are_committed_before_they_are_returned(
    emu: Emulator, pool: asyncpg.Pool, pool2: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    iid = await add_instance(pool, emu, "Alpha", REALM, code=emu.issue_auth_code(REALM))
    token = await manager(session, emu, pool).access_token(iid, REALM)
    # Read through the other pool: only committed data is visible there.
    row = await credentials(pool2, iid)
    chain = emu.oauth.access_tokens[token].chain
    assert PLAIN.open(row["refresh_token_enc"]) == chain.current_refresh
    assert PLAIN.open(row["access_token_enc"]) == token


async def test_a_failed_code_exchange_keeps_the_code_only_when_it_surely_was_not_used(
    emu: Emulator, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    iid = await add_instance(pool, emu, "Alpha", REALM, code=emu.issue_auth_code(REALM))
    m = manager(session, emu, pool)
    emu.inject_fault("error", endpoint="token", count=1)  # Intuit said "failed": retry later
    with pytest.raises(ServerError):
        await m.access_token(iid, REALM)
    assert (await credentials(pool, iid))["auth_code_enc"] is not None
    await m.access_token(iid, REALM)
    assert (await credentials(pool, iid))["auth_code_enc"] is None

    other = await add_instance(pool, emu, "Beta", OTHER, code=emu.issue_auth_code(OTHER))
    emu.inject_fault("reset", endpoint="token", count=1)  # sent, no answer: maybe spent
    with capture_logs() as logs, pytest.raises(ReconnectRequired):
        await m.access_token(other, OTHER)
    row = await credentials(pool, other)
    assert row["auth_code_enc"] is None and row["status"] == "needs_reconnect"
    assert [e["event"] for e in logs].count("instance_needs_reconnect") == 1


# --- refreshing ---------------------------------------------------------------------------


async def test_concurrent_refreshes_in_two_processes_make_one_refresh(
    emu: Emulator,
    pool: asyncpg.Pool,
    pool2: asyncpg.Pool,
    session: aiohttp.ClientSession,
    session2: aiohttp.ClientSession,
) -> None:
    emu.clock.freeze()
    emu.add_realm(REALM, seed=1, per_entity=2)
    iid = await add_instance(pool, emu, "Alpha", REALM, code=emu.issue_auth_code(REALM))
    m1, m2 = manager(session, emu, pool), manager(session2, emu, pool2)
    first = await m1.access_token(iid, REALM)
    assert await m2.access_token(iid, REALM) == first  # read from the database

    # Ahead of expiry (less than 5 minutes left): both renew at once, one refresh happens.
    emu.clock.advance(minutes=56)
    ahead = await asyncio.gather(
        m1.access_token(iid, REALM),
        m2.access_token(iid, REALM),
        m1.access_token(iid, REALM),
        m2.access_token(iid, REALM),
    )
    assert len(set(ahead)) == 1 and ahead[0] != first
    assert token_requests(emu, REALM) == 2

    # QBO refuses the token (401) although our clock says it is fine: 2 × 5 concurrent
    # requests in two processes → exactly one refresh, and every request succeeds.
    emu.expire_access_tokens(REALM)
    c1, c2 = client_for(m1, session, emu), client_for(m2, session2, emu)
    results = await asyncio.gather(
        *(c.realm(iid, REALM).query("select * from Customer") for c in (c1, c2) for _ in range(5))
    )
    assert all(len(r.rows) == 2 for r in results)
    assert token_requests(emu, REALM) == 3
    row = await credentials(pool, iid)
    assert row["refresh_count"] == 3 and row["status"] == "active"


async def test_a_cancelled_caller_does_not_lose_a_rotated_refresh_token(
    emu: Emulator, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    refresh = emu.issue_tokens(REALM)["refresh_token"]
    iid = await add_instance(pool, emu, "Alpha", REALM, refresh_token=refresh)
    m = manager(session, emu, pool)
    emu.inject_fault("latency", endpoint="token", count=1, seconds=0.2)
    caller = asyncio.create_task(m.access_token(iid, REALM))
    await asyncio.sleep(0.05)  # the refresh request is at Intuit, which rotates it
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    for _ in range(50):  # the renewal finishes and commits on its own
        row = await credentials(pool, iid)
        if row["refresh_count"] == 1:
            break
        await asyncio.sleep(0.02)
    assert row["refresh_count"] == 1 and PLAIN.open(row["refresh_token_enc"]) != refresh
    assert await m.access_token(iid, REALM)  # and the chain is alive
    assert token_requests(emu, REALM) == 1


async def test_token_endpoint_5xx_on_refresh_is_retried(
    emu: Emulator, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    refresh = emu.issue_tokens(REALM)["refresh_token"]
    iid = await add_instance(pool, emu, "Alpha", REALM, refresh_token=refresh)
    emu.inject_fault("error", endpoint="token", count=1, status=503)
    token = await manager(session, emu, pool).access_token(iid, REALM)
    assert token and (await credentials(pool, iid))["refresh_count"] == 1


async def test_tokens_are_masked_in_logs(
    emu: Emulator, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    iid = await add_instance(pool, emu, "Alpha", REALM, code=emu.issue_auth_code(REALM))
    token = await manager(session, emu, pool).access_token(iid, REALM)
    refresh = PLAIN.open((await credentials(pool, iid))["refresh_token_enc"])
    assert poller_logs.secrets.mask(f"a {token} b {refresh} c") == "a *** b *** c"


# --- invalid_grant ----------------------------------------------------------------------------


async def test_invalid_grant_marks_only_that_instance(
    emu: Emulator, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    emu.add_realm(REALM, seed=1, per_entity=1)
    emu.add_realm(OTHER, seed=2, per_entity=1)
    dead = emu.issue_tokens(REALM)["refresh_token"]
    alpha = await add_instance(pool, emu, "Alpha", REALM, refresh_token=dead)
    beta = await add_instance(
        pool, emu, "Beta", OTHER, refresh_token=emu.issue_tokens(OTHER)["refresh_token"]
    )
    # The user disconnected the app for Alpha's company: Intuit revokes the grant.
    await OAuthClient(session, settings_for(emu)).revoke(emu.client_id, emu.client_secret, dead)
    client = client_for(manager(session, emu, pool), session, emu)
    failures = (
        metrics.REGISTRY.get_sample_value(
            "qbo_poller_token_refreshes_total", {"outcome": "invalid_grant"}
        )
        or 0.0
    )
    with capture_logs() as logs:
        with pytest.raises(ReconnectRequired):
            await client.realm(alpha, REALM).query("select * from Customer")
        with pytest.raises(ReconnectRequired):  # no second trip to Intuit with a dead token
            await client.realm(alpha, REALM).query("select * from Customer")
        ok = await client.realm(beta, OTHER).query("select * from Customer")
    assert len(ok.rows) == 1
    assert token_requests(emu, REALM) == 1 and client.requests_sent(REALM) == 0
    a, b = await credentials(pool, alpha), await credentials(pool, beta)
    assert a["status"] == "needs_reconnect" and "invalid_grant" in a["status_reason"]
    assert b["status"] == "active" and b["status_reason"] is None
    lines = [e for e in logs if e["event"] == "instance_needs_reconnect"]
    assert len(lines) == 1
    assert (lines[0]["instance"], lines[0]["instance_id"], lines[0]["realm_id"]) == (
        "Alpha",
        alpha,
        REALM,
    )
    assert lines[0]["intuit_tid"]  # for Intuit support
    assert dead not in repr(logs)
    assert (
        metrics.REGISTRY.get_sample_value(
            "qbo_poller_token_refreshes_total", {"outcome": "invalid_grant"}
        )
        == failures + 1
    )


async def test_a_code_that_was_never_valid(
    emu: Emulator, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    iid = await add_instance(pool, emu, "Alpha", REALM, code="AB11NeverIssuedCode0000000000")
    with pytest.raises(ReconnectRequired):
        await manager(session, emu, pool).access_token(iid, REALM)
    row = await credentials(pool, iid)
    assert row["auth_code_enc"] is None and row["status"] == "needs_reconnect"


async def test_revoke_forgets_the_grant(
    emu: Emulator, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    iid = await add_instance(pool, emu, "Alpha", REALM, code=emu.issue_auth_code(REALM))
    m = manager(session, emu, pool)
    await m.access_token(iid, REALM)
    assert await m.revoke(iid) is True
    row = await credentials(pool, iid)
    assert row["refresh_token_enc"] is None and row["access_token_enc"] is None
    assert emu.counters(REALM).get("revoke") == 1
    with pytest.raises(ReconnectRequired):
        await m.access_token(iid, REALM)


# --- at rest ----------------------------------------------------------------------------------


async def test_tokens_are_encrypted_at_rest_with_a_secret_key(
    emu: Emulator,
    pool: asyncpg.Pool,
    pool2: asyncpg.Pool,
    session: aiohttp.ClientSession,
    session2: aiohttp.ClientSession,
) -> None:
    box = SecretBox("5LcAg2bWtp9DGRT0MevoamIZhF3stW0Dota67O9hCIQ=")
    iid = await add_instance(pool, emu, "Alpha", REALM, code=emu.issue_auth_code(REALM), box=box)
    token = await manager(session, emu, pool, box).access_token(iid, REALM)
    row = await credentials(pool, iid)
    refresh = box.open(row["refresh_token_enc"])
    for column, clear in (("access_token_enc", token), ("refresh_token_enc", refresh)):
        assert row[column].startswith("fernet:") and clear not in row[column]
    assert box.open(row["access_token_enc"]) == token
    secret_enc = await pool.fetchval("SELECT client_secret_enc FROM instances WHERE id = $1", iid)
    assert secret_enc.startswith("fernet:") and emu.client_secret not in secret_enc
    # Another process with the same key reads and uses them.
    again = await manager(session2, emu, pool2, box).access_token(iid, REALM)
    assert again == token


# --- 30 simulated days ------------------------------------------------------------------------


@pytest.mark.parametrize("rotation", ["always", "daily"])
async def test_thirty_days_of_rotating_tokens(
    rotation: str,
    pool: asyncpg.Pool,
    pool2: asyncpg.Pool,
    session: aiohttp.ClientSession,
    session2: aiohttp.ClientSession,
) -> None:
    """Refresh tokens rotate (on every refresh, or daily as Intuit does), access tokens live an
    hour, two processes take turns at random intervals: no invalid_grant, no failed request."""
    rng = random.Random(30)
    unbounded = LimiterConfig(per_window=10**6, per_second=10**6, max_in_flight=10)
    async with run_emulator(
        port=0,
        refresh_rotation=rotation,
        access_token_lifetime=3600,
        per_minute=None,
        per_second=None,
    ) as emu:
        emu.clock.freeze(datetime.fromisoformat("2026-01-01T00:00:00+00:00"))
        emu.add_realm(REALM, seed=3, per_entity=1)
        iid = await add_instance(pool, emu, "Alpha", REALM, code=emu.issue_auth_code(REALM))
        first = manager(session, emu, pool)
        await first.connect(iid)  # the code is exchanged at registration
        processes = [
            client_for(first, session, emu, unbounded),
            client_for(manager(session2, emu, pool2), session2, emu, unbounded),
        ]
        end = emu.clock.now() + timedelta(days=30)
        polls = 0
        with capture_logs() as logs:
            while emu.clock.now() < end:
                emu.clock.advance(minutes=rng.choice([7, 25, 50, 58, 61, 95, 180, 300]))
                client = processes[rng.randrange(2)]
                since = emu.clock.now() - timedelta(hours=6)
                await client.realm(iid, REALM).cdc(("Customer",), since)
                polls += 1
        events = [e["event"] for e in logs]
        assert "instance_needs_reconnect" not in events and "qbo_token_rejected" not in events
        assert not [e for e in events if e.startswith("qbo_request_")]
        sent = sum(c.requests_sent(REALM) for c in processes)
        assert sent == polls  # not one retry, not one 401
        row = await credentials(pool, iid)
        assert row["status"] == "active"
        # Roughly one refresh per simulated hour of polling, each committed before use.
        assert row["refresh_count"] == token_requests(emu, REALM) > 30 * 24 / 3
