"""Fixtures for the QBO client tests: the emulator on loopback, instances in Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from poller.config import Settings
from poller.instances import parse_instance
from poller.qbo.client import QboClient, RetryPolicy
from poller.qbo.limiter import LimiterConfig
from poller.store import instance_rows
from poller.store.crypto import SecretBox
from qbo_emulator import DEFAULT_REDIRECT_URI, run_emulator
from qbo_emulator.core import Emulator

FAST_RETRY = RetryPolicy(max_attempts=3, base_delay_s=0.005, max_delay_s=0.02, max_throttle_waits=3)
# Intuit's numbers, except the 60 s throttle pause, which would make tests slow.
TEST_LIMITS = LimiterConfig(throttle_pause_s=0.2)
PLAIN = SecretBox(None)


def settings_for(emu: Emulator, **changes: Any) -> Settings:
    return Settings(
        qbo_api_base_url=emu.base_url or "",
        qbo_oauth_token_url=emu.token_url or "",
        qbo_oauth_revoke_url=emu.revoke_url or "",
        qbo_request_timeout_s=5.0,
        **changes,
    )


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with run_emulator(port=0) as emulator:
        yield emulator


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


class MemoryTokens:
    """`AccessTokens` without a database, for client tests that are not about OAuth:
    tokens come straight from the emulator's control API."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.tokens: dict[str, str] = {}
        self.refreshes = 0

    async def access_token(self, instance_id: int, realm_id: str) -> str:
        if realm_id not in self.tokens:
            self.tokens[realm_id] = self.emu.issue_tokens(realm_id)["access_token"]
        return self.tokens[realm_id]

    async def refresh_rejected(self, instance_id: int, realm_id: str, rejected: str) -> str:
        self.refreshes += 1
        self.tokens[realm_id] = self.emu.issue_tokens(realm_id)["access_token"]
        return self.tokens[realm_id]


def memory_client(emu: Emulator, session: aiohttp.ClientSession, **kw: Any) -> QboClient:
    kw.setdefault("limits", TEST_LIMITS)
    kw.setdefault("retry", FAST_RETRY)
    return QboClient(session, settings_for(emu), MemoryTokens(emu), **kw)


async def add_instance(
    pool: asyncpg.Pool,
    emu: Emulator,
    name: str,
    realm: str,
    *,
    code: str | None = None,
    refresh_token: str | None = None,
    box: SecretBox = PLAIN,
) -> int:
    """Register an instance the way the daemon does (Open Connectors body → upsert)."""
    provider: dict[str, Any] = {"realmId": realm}
    if code:
        provider["code"] = code
    else:
        provider["refreshToken"] = refresh_token
    body = {
        "name": name,
        "providerData": provider,
        "configuration": {
            "oauth.callback.url": DEFAULT_REDIRECT_URI,
            "oauth.api.key": emu.client_id,
            "oauth.api.secret": emu.client_secret,
            "event.notification.enabled": True,
            "event.notification.callback.url": "https://receiver.example/qbo-events",
        },
    }
    async with pool.acquire() as conn:
        return (await instance_rows.upsert(conn, parse_instance(body), box)).instance_id
