"""A daemon on loopback (the supervisor's real app, pollers and dispatcher, in this process)
with the API on, the emulator for QuickBooks and Intuit's token endpoint, and a callback
receiver; plus a small client for /elements/api-v2."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from poller import supervisor
from poller.config import HttpAddr, Settings
from poller.manage import users
from tests.deliver.helpers import Receiver, eventually
from tests.detect.harness import make_settings
from tests.e2e.daemon import free_port

ORG_SECRET = "org-secret-0123456789abcdef"
BASE = "/elements/api-v2"
SEED_DIR = Path(__file__).parent / "seed"


def seed_text(name: str, values: dict[str, str]) -> str:
    """The seed's body as the user pasted it, with its placeholders filled in (nothing else
    changes: syntax errors stay)."""
    text = (SEED_DIR / name).read_text()
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text


def auth(user: str, org: str = ORG_SECRET, element: str | None = None) -> str:
    header = f"User {user}, Organization {org}"
    return header + (f", Element {element}" if element else "")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


@dataclass
class Api:
    session: aiohttp.ClientSession
    port: int
    user_secret: str = ""

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: str | bytes | None = None,
        secret: str | None = None,
        authorization: str | None = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> Answer:
        headers = {"Content-Type": content_type}
        header = authorization if authorization is not None else auth(secret or self.user_secret)
        if header:
            headers["Authorization"] = header
        data: Any = raw if raw is not None else (json.dumps(body) if body is not None else None)
        if isinstance(data, bytes) and len(data) > 64 * 1024:
            data = io.BytesIO(data)  # aiohttp warns about large bytes bodies
        async with self.session.request(
            method, self.root + BASE + path, data=data, headers=headers, params=params
        ) as response:
            text = await response.text()
            try:
                parsed = json.loads(text) if text else None
            except json.JSONDecodeError:
                parsed = text
            return Answer(response.status, dict(response.headers), parsed)


async def add_user(pool: asyncpg.Pool, name: str, admin: bool = False) -> str:
    async with pool.acquire() as conn:
        secret = await users.add(conn, name, admin)
    assert secret is not None
    return secret


def api_settings(emu: Any, dsn: str, port: int, **overrides: Any) -> Settings:
    base = make_settings(
        emu,
        dsn,
        http_addr=HttpAddr("127.0.0.1", port),
        api_organization_secret=ORG_SECRET,
        qbo_oauth_authorize_url=f"{emu.base_url}/connect/oauth2",
        retry_schedule_s=(0.2, 0.5, 1.0),
    )
    return replace(base, **overrides)


@contextlib.asynccontextmanager
async def running_daemon(emu: Any, dsn: str, **overrides: Any) -> AsyncIterator[Api]:
    port = free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(supervisor.run(api_settings(emu, dsn, port, **overrides), stop=stop))
    async with aiohttp.ClientSession() as session:
        api = Api(session, port)

        async def ready() -> bool:
            if task.done():
                raise AssertionError(f"daemon stopped: {task.result()}")
            try:
                async with session.get(api.root + "/readyz") as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        try:
            await eventually(ready, timeout=20, interval=0.05)
            yield api
        finally:
            stop.set()
            assert await asyncio.wait_for(task, 20) == 0


@contextlib.asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    hook = await Receiver().start()
    try:
        yield hook
    finally:
        await hook.stop()


def token_calls(emu: Any) -> int:
    return sum(counts.get("token", 0) for counts in emu.counters().values())


def refresh_body(
    emu: Any,
    realm: str,
    name: str,
    *,
    callback: str = "http://127.0.0.1:9/hook",
    interval_minutes: str = "15",
    enabled: bool = True,
    resources: str = "customers|invoices",
    **config: Any,
) -> dict[str, Any]:
    """An already-connected company (providerData.refreshToken): nothing to exchange."""
    tokens = emu.issue_tokens(realm)
    return {
        "element": {"key": "quickbooks"},
        "providerData": {"refreshToken": tokens["refresh_token"], "realmId": realm},
        "configuration": {
            "oauth.api.key": emu.client_id,
            "oauth.api.secret": emu.client_secret,
            "event.notification.enabled": enabled,
            "event.notification.callback.url": callback,
            "event.notification.signature.key": "sig-key-for-tests-77",
            "event.poller.refresh_interval": interval_minutes,
            "event.poller.urls": resources,
            **config,
        },
        "tags": ["Docs"],
        "name": name,
    }
