"""Issue 10, finding 4: a rotated refresh token survives a failed save, and a refresh holds no
pooled connection while it waits for Intuit.

Real PostgreSQL and the emulator's token endpoint. The first two tests use only the public API
of `TokenManager` and `PgTokenStore`, so they say the same thing about any implementation.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import aiohttp
import asyncpg
from structlog.testing import capture_logs

from poller.errors import DatabaseUnavailable
from poller.qbo.auth import GiveUp, RefreshClaim, TokenManager, TokenSet, TokenStore
from poller.store import db
from poller.store.tokens import PgTokenStore
from poller.web.health import Health
from qbo_emulator import run_emulator
from qbo_emulator.core import Emulator
from tests.qbo.conftest import PLAIN, add_instance, settings_for
from tests.qbo.test_auth import credentials, manager, token_requests

REALM = "9130350000000021"

# A trigger that makes the first token save (and only the first: sequences ignore rollbacks)
# sleep, so that the test can kill the backend running it, as a PostgreSQL restart would.
SLOW_FIRST_SAVE = """
CREATE SEQUENCE token_save_fault;
CREATE FUNCTION token_save_fault() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.access_token_enc IS DISTINCT FROM OLD.access_token_enc
       AND nextval('token_save_fault') = 1 THEN
        PERFORM pg_sleep(30);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER token_save_fault BEFORE UPDATE ON oauth_credentials
    FOR EACH ROW EXECUTE FUNCTION token_save_fault();
"""
SLEEPING_SAVE = """
SELECT pid FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND wait_event = 'PgSleep'
"""


async def _terminate_sleeping_save(dsn: str) -> int:
    """Wait for the first save to reach the trigger's sleep, then kill its backend."""
    admin = await asyncpg.connect(dsn)
    try:
        for _ in range(500):
            pid = await admin.fetchval(SLEEPING_SAVE)
            if pid is not None:
                await admin.execute("SELECT pg_terminate_backend($1)", pid)
                return int(pid)
            await asyncio.sleep(0.01)
        raise AssertionError("the token save never reached PostgreSQL")
    finally:
        await admin.close()


async def test_a_killed_saving_connection_does_not_lose_the_rotated_token(
    emu: Emulator, db_dsn: str, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    """PostgreSQL drops the connection that is committing the rotated refresh token: the save
    is retried on a fresh connection, the token is used, the instance stays active."""
    spent = emu.issue_tokens(REALM)["refresh_token"]
    iid = await add_instance(pool, emu, "Alpha", REALM, refresh_token=spent)
    async with pool.acquire() as conn:
        await conn.execute(SLOW_FIRST_SAVE)
    tokens = manager(session, emu, pool)
    with capture_logs() as logs:
        killer = asyncio.create_task(_terminate_sleeping_save(db_dsn))
        access = await asyncio.wait_for(tokens.access_token(iid, REALM), 20)
        await killer
    events = [entry["event"] for entry in logs]
    assert "instance_needs_reconnect" not in events
    assert "oauth_tokens_save_failed" in events  # the hiccup was seen and retried
    row = await credentials(pool, iid)
    chain = emu.oauth.access_tokens[access].chain
    assert row["status"] == "active" and row["refresh_count"] == 1
    assert PLAIN.open(row["access_token_enc"]) == access
    assert PLAIN.open(row["refresh_token_enc"]) == chain.current_refresh != spent
    assert token_requests(emu, REALM) == 1  # saved, not refreshed a second time
    # Another process reads the saved tokens, and the chain keeps rotating from them.
    emu.clock.advance(minutes=58)
    again = await manager(session, emu, pool).access_token(iid, REALM)
    assert again != access and (await credentials(pool, iid))["status"] == "active"


async def test_slow_refreshes_do_not_hold_pool_connections(
    db_dsn: str, session: aiohttp.ClientSession
) -> None:
    """12 refreshes wait 3 s each for Intuit; with a pool of 4, /readyz keeps answering."""
    slow_s = 3.0
    small = await db.create_pool(db_dsn, max_size=4)
    async with run_emulator(port=0, per_minute=None, per_second=None) as emu:
        try:
            realms = [f"91303500000001{n:02d}" for n in range(12)]
            ids = [
                await add_instance(
                    small,
                    emu,
                    f"Tenant {n}",
                    realm,
                    refresh_token=emu.issue_tokens(realm)["refresh_token"],
                )
                for n, realm in enumerate(realms)
            ]
            emu.inject_fault("latency", endpoint="token", count=len(ids), seconds=slow_s)
            tokens = manager(session, emu, small)
            health = Health(small)
            refreshes = asyncio.gather(
                *(tokens.access_token(iid, realm) for iid, realm in zip(ids, realms, strict=True))
            )
            probes: list[tuple[int, float]] = []
            started = time.monotonic()
            while time.monotonic() - started < slow_s + 0.5:
                probe_started = time.monotonic()
                answer = await health.readyz(cast(Any, None))
                probes.append((answer.status, time.monotonic() - probe_started))
                await asyncio.sleep(0.1)
            issued = await refreshes
            refreshed_in = time.monotonic() - started
            assert len(set(issued)) == 12
            assert sum(token_requests(emu, realm) for realm in realms) == 12
        finally:
            await small.close()
    statuses = [status for status, _ in probes]
    slowest = max(seconds for _, seconds in probes)
    assert statuses.count(200) == len(statuses), statuses
    assert slowest < 1.0, f"a /readyz probe waited {slowest:.2f} s for a pool connection"
    # All 12 at Intuit at once, not 4 at a time behind the pool's connections.
    assert refreshed_in < 2 * slow_s, f"12 refreshes took {refreshed_in:.1f} s"


# --- the in-memory token when the store keeps failing ---------------------------------------


class FlakyStore:
    """A `TokenStore` whose token saves fail while `failures_left` > 0 (PostgreSQL down)."""

    def __init__(self, inner: TokenStore, failures: int) -> None:
        self.inner = inner
        self.failures_left = failures
        self.saves = 0

    async def load(self, instance_id: int) -> Any:
        return await self.inner.load(instance_id)

    async def claim_refresh(self, instance_id: int, holder: str, lease_s: float) -> Any:
        return await self.inner.claim_refresh(instance_id, holder, lease_s)

    async def release_refresh(self, claim: RefreshClaim) -> None:
        await self.inner.release_refresh(claim)

    async def save_tokens(self, claim: RefreshClaim, tokens: TokenSet, refresh_count: int) -> bool:
        if self.failures_left > 0:
            self.failures_left -= 1
            raise DatabaseUnavailable("ConnectionDoesNotExistError: connection was closed")
        self.saves += 1
        return await self.inner.save_tokens(claim, tokens, refresh_count)

    async def give_up(self, claim: RefreshClaim, reason: str, *, clear_code: bool) -> GiveUp:
        return await self.inner.give_up(claim, reason, clear_code=clear_code)

    async def clear_tokens(self, claim: RefreshClaim) -> None:
        await self.inner.clear_tokens(claim)


def flaky_manager(
    session: aiohttp.ClientSession, emu: Emulator, pool: asyncpg.Pool, failures: int
) -> tuple[TokenManager, FlakyStore]:
    store = FlakyStore(PgTokenStore(pool, PLAIN), failures)
    tokens = TokenManager(
        session,
        settings_for(emu),
        store,
        clock=emu.clock.now,
        save_attempts=3,
        save_pause_s=0.01,
        unsaved_retry_s=0.0,
    )
    return tokens, store


async def test_a_save_failing_once_is_retried_and_the_token_used(
    emu: Emulator, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    spent = emu.issue_tokens(REALM)["refresh_token"]
    iid = await add_instance(pool, emu, "Alpha", REALM, refresh_token=spent)
    tokens, store = flaky_manager(session, emu, pool, failures=1)
    access = await tokens.access_token(iid, REALM)
    row = await credentials(pool, iid)
    assert store.saves == 1 and row["status"] == "active"
    assert PLAIN.open(row["access_token_enc"]) == access
    assert (
        PLAIN.open(row["refresh_token_enc"])
        == emu.oauth.access_tokens[access].chain.current_refresh
    )


async def test_a_token_that_cannot_be_saved_is_kept_used_and_saved_later(
    emu: Emulator, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    """PostgreSQL stays away for longer than the save's retries: the new tokens are kept in
    memory and used (they are the only live copy of the grant), the next refresh starts from
    them, and they are written as soon as the database answers again."""
    emu.clock.freeze()
    spent = emu.issue_tokens(REALM)["refresh_token"]
    iid = await add_instance(pool, emu, "Alpha", REALM, refresh_token=spent)
    tokens, store = flaky_manager(session, emu, pool, failures=10**6)
    with capture_logs() as logs:
        first = await tokens.access_token(iid, REALM)  # 3 failed saves: kept in memory
        assert await tokens.access_token(iid, REALM) == first  # one more failed save
        emu.clock.advance(minutes=58)
        second = await tokens.access_token(iid, REALM)  # refreshed from the unsaved token
        assert second != first
        assert (await credentials(pool, iid))["refresh_count"] == 0  # nothing saved yet
        store.failures_left = 0  # PostgreSQL is back
        assert await tokens.access_token(iid, REALM) == second
    events = [entry["event"] for entry in logs]
    assert "instance_needs_reconnect" not in events
    assert events.count("oauth_tokens_unsaved") >= 2
    row = await credentials(pool, iid)
    assert row["status"] == "active" and row["refresh_count"] == 2
    assert PLAIN.open(row["access_token_enc"]) == second
    assert (
        PLAIN.open(row["refresh_token_enc"])
        == emu.oauth.access_tokens[second].chain.current_refresh
    )
    assert token_requests(emu, REALM) == 2


# --- the refresh lease ----------------------------------------------------------------------


async def test_a_dead_holders_lease_is_taken_over_when_it_runs_out(
    emu: Emulator, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    """A process died holding the refresh lease: the others wait for it to run out (they
    cannot know whether it spent the refresh token), then refresh themselves."""
    refresh = emu.issue_tokens(REALM)["refresh_token"]
    iid = await add_instance(pool, emu, "Alpha", REALM, refresh_token=refresh)
    store = PgTokenStore(pool, PLAIN)
    dead = await store.claim_refresh(iid, "killed-process", 1.0)
    assert dead is not None and dead.holder == "killed-process"
    started = time.monotonic()
    access = await manager(session, emu, pool).access_token(iid, REALM)
    waited = time.monotonic() - started
    assert 0.5 <= waited < 5.0
    row = await credentials(pool, iid)
    assert PLAIN.open(row["access_token_enc"]) == access and row["refresh_count"] == 1
    assert row["refresh_holder"] is None and row["refresh_lease_until"] is None


async def test_a_valid_token_is_used_while_another_process_refreshes(
    emu: Emulator, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    """Refreshing ahead of expiry never stalls the other processes for long: while one holds
    the lease (a dead one: minutes), the others use the access token that is still valid."""
    emu.clock.freeze()
    iid = await add_instance(pool, emu, "Alpha", REALM, code=emu.issue_auth_code(REALM))
    first = await manager(session, emu, pool).access_token(iid, REALM)
    emu.clock.advance(minutes=57)  # inside the 5-minute margin, not expired
    store = PgTokenStore(pool, PLAIN)
    await store.claim_refresh(iid, "another-process", 60.0)
    other = TokenManager(
        session,
        settings_for(emu),
        PgTokenStore(pool, PLAIN),
        clock=emu.clock.now,
        lease_patience_s=0.3,
    )
    assert await asyncio.wait_for(other.access_token(iid, REALM), 2) == first
    assert token_requests(emu, REALM) == 1


async def test_a_reconnect_during_a_refresh_wins_over_its_tokens(
    emu: Emulator, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    """The company is reconnected (a new code stored) while a refresh is at Intuit: the
    refresh's save is refused rather than wiping the new code, which is then exchanged."""
    old = emu.issue_tokens(REALM)["refresh_token"]
    iid = await add_instance(pool, emu, "Alpha", REALM, refresh_token=old)
    emu.inject_fault("latency", endpoint="token", count=1, seconds=0.5)
    tokens = manager(session, emu, pool)
    renewal = asyncio.create_task(tokens.access_token(iid, REALM))
    await asyncio.sleep(0.2)  # the refresh is at Intuit, the lease held, no connection
    code = emu.issue_auth_code(REALM)
    assert await add_instance(pool, emu, "Alpha", REALM, code=code) == iid
    with capture_logs() as logs:
        access = await asyncio.wait_for(renewal, 10)
    row = await credentials(pool, iid)
    assert row["auth_code_enc"] is None and row["status"] == "active"
    assert PLAIN.open(row["access_token_enc"]) == access
    assert token_requests(emu, REALM) == 2  # the refresh, then the new code's exchange
    assert "oauth_tokens_exchanged" in [entry["event"] for entry in logs]


async def test_a_slow_refresh_is_not_repeated_by_the_other_process(
    emu: Emulator, db_dsn: str, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    """The lease serialises refreshes as the row lock did: the second process waits for the
    first one's slow refresh and uses its token (a second use of the rotated refresh token
    would answer invalid_grant)."""
    other_pool = await db.create_pool(db_dsn, max_size=2)
    try:
        refresh = emu.issue_tokens(REALM)["refresh_token"]
        iid = await add_instance(pool, emu, "Alpha", REALM, refresh_token=refresh)
        emu.inject_fault("latency", endpoint="token", count=1, seconds=0.5)
        first, second = manager(session, emu, pool), manager(session, emu, other_pool)
        issued = await asyncio.gather(
            first.access_token(iid, REALM), second.access_token(iid, REALM)
        )
    finally:
        await other_pool.close()
    assert issued[0] == issued[1]
    assert token_requests(emu, REALM) == 1
    assert (await credentials(pool, iid))["refresh_count"] == 1
