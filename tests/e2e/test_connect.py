"""`qbo-poller connect` end to end: the terminal flow against the emulator's consent page."""

from __future__ import annotations

import asyncio
import base64
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from poller.instances import parse_instance
from qbo_emulator import run_emulator
from tests.e2e.daemon import base_env, free_port

CLI = (sys.executable, "-m", "poller")
CONNECT_TIMEOUT_S = 30.0


@pytest.fixture
async def emu() -> AsyncIterator[Any]:
    async with run_emulator() as emulator:
        emulator.add_realm(seed=1, per_entity=1)
        yield emulator


def connect_env(emu: Any, **extra: str) -> dict[str, str]:
    return base_env(
        QBO_CLIENT_ID=emu.client_id,
        QBO_CLIENT_SECRET=emu.client_secret,
        QBO_API_BASE_URL=emu.base_url,
        QBO_OAUTH_TOKEN_URL=emu.token_url,
        QBO_OAUTH_AUTHORIZE_URL=f"{emu.base_url}/connect/oauth2",
        POLLER_LOG_LEVEL="warning",
        **extra,
    )


async def start_connect(
    env: dict[str, str], redirect_uri: str, *extra: str
) -> tuple[asyncio.subprocess.Process, str]:
    """Start `connect` and read the consent URL it prints."""
    process = await asyncio.create_subprocess_exec(
        *CLI,
        "connect",
        "--name",
        "Connected",
        "--callback-url",
        "http://127.0.0.1:9/hook",
        "--resources",
        "customers|invoices",
        "--redirect-uri",
        redirect_uri,
        "--no-browser",
        "--timeout",
        str(CONNECT_TIMEOUT_S),
        *extra,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    while True:
        line = (await asyncio.wait_for(process.stdout.readline(), CONNECT_TIMEOUT_S)).decode()
        assert line, "connect ended before printing the consent URL"
        if line.strip().startswith("http"):
            return process, line.strip()


async def finish(process: asyncio.subprocess.Process) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(process.communicate(), CONNECT_TIMEOUT_S)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_connect_writes_a_body_whose_refresh_token_works(emu: Any, tmp_path: Path) -> None:
    out = tmp_path / "instance.json"
    redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
    process, consent = await start_connect(
        connect_env(emu), redirect_uri, "--out", str(out), "--changes"
    )
    assert consent.startswith(f"{emu.base_url}/connect/oauth2?")
    async with aiohttp.ClientSession() as session, session.get(consent) as page:
        # The emulator approves at once and sends the browser back to connect's listener.
        assert page.status == 200
        assert "QuickBooks is connected" in await page.text()
    code, stdout, stderr = await finish(process)
    assert code == 0, stderr
    realm = next(iter(emu.realms))
    assert f"connected realm {realm}" in stdout
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # it carries a refresh token
    body = orjson.loads(out.read_bytes())
    assert body["providerData"]["realmId"] == realm
    assert "code" not in body["providerData"]  # exchanged once, at once
    instance = parse_instance(body)
    assert instance.resources == ("customers", "invoices")
    assert instance.redirect_uri == redirect_uri
    assert instance.changes is True  # --changes: event.poller.changes
    # The token is a live one: the emulator rotates it on refresh.
    form = {"grant_type": "refresh_token", "refresh_token": body["providerData"]["refreshToken"]}
    basic = base64.b64encode(f"{emu.client_id}:{emu.client_secret}".encode()).decode()
    headers = {"Authorization": f"Basic {basic}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(emu.token_url, data=form, headers=headers) as answer,
    ):
        assert answer.status == 200, await answer.text()


async def test_connect_stores_the_instance_in_the_database(emu: Any, db_dsn: str) -> None:
    redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
    env = connect_env(emu, DATABASE_URL=db_dsn)
    process, consent = await start_connect(env, redirect_uri)
    async with aiohttp.ClientSession() as session, session.get(consent) as page:
        assert page.status == 200
    code, stdout, stderr = await finish(process)
    assert code == 0, stderr
    assert "created Connected" in stdout
    conn = await asyncpg.connect(db_dsn)
    try:
        row = await conn.fetchrow(
            "SELECT i.realm_id, c.refresh_token_enc IS NOT NULL AS has_token, c.auth_code_enc"
            " FROM instances i JOIN oauth_credentials c ON c.instance_id = i.id"
            " WHERE i.name = 'Connected'"
        )
    finally:
        await conn.close()
    assert row is not None
    assert row["realm_id"] == next(iter(emu.realms))
    assert row["has_token"] and row["auth_code_enc"] is None


async def test_a_redirect_with_another_state_is_refused(emu: Any, tmp_path: Path) -> None:
    port = free_port()
    redirect_uri = f"http://127.0.0.1:{port}/callback"
    out = tmp_path / "instance.json"
    process, _consent = await start_connect(connect_env(emu), redirect_uri, "--out", str(out))
    forged = f"{redirect_uri}?code=stolen&realmId=1&state=not-ours"
    async with aiohttp.ClientSession() as session, session.get(forged) as page:
        assert page.status == 400
    code, _stdout, stderr = await finish(process)
    assert code == 1
    assert stderr.strip().splitlines() == [
        "qbo-poller connect: the redirect's state does not belong to this connect"
    ]
    assert not out.exists()
