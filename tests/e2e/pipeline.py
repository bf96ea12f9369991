"""The whole daemon in-process (the real supervisor), against the emulator and a receiver."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

from poller import supervisor
from poller.config import Settings, load_settings
from poller.demo.receiver import Receiver
from poller.instances import Instance, parse_instance

REDIRECT = "http://127.0.0.1/oauth"
DEFAULT_INTERVAL_MINUTES = "0.005"
MIN_INTERVAL_MINUTES = 0.01  # event.poller.refresh_interval's lower bound


def instance_body(
    emu: Any,
    realm: str,
    callback_url: str,
    name: str = "E2E",
    *,
    key: str | None = "e2e-signature-key",
    interval_minutes: str = DEFAULT_INTERVAL_MINUTES,
    resources: str = "customers|invoices|vendors",
    **config: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "element": {"key": "quickbooks"},
        "providerData": {
            "code": emu.issue_auth_code(realm, redirect_uri=REDIRECT),
            "realmId": realm,
        },
        "configuration": {
            "oauth.callback.url": REDIRECT,
            "oauth.api.key": emu.client_id,
            "oauth.api.secret": emu.client_secret,
            "authentication.type": "oauth2",
            "event.notification.enabled": True,
            "event.notification.callback.url": callback_url,
            # Below the key's floor, `instance_for` sets the interval after parsing.
            "event.poller.refresh_interval": (
                "1" if _below_the_floor(interval_minutes) else interval_minutes
            ),
            "event.poller.urls": resources,
            **config,
        },
        "tags": ["e2e"],
        "name": name,
    }
    if key is not None:
        body["configuration"]["event.notification.signature.key"] = key
    return body


def instance_for(
    emu: Any, realm: str, callback_url: str, name: str = "E2E", **options: Any
) -> Instance:
    instance = parse_instance(instance_body(emu, realm, callback_url, name, **options))
    interval_minutes = options.get("interval_minutes", DEFAULT_INTERVAL_MINUTES)
    if not _below_the_floor(interval_minutes):
        return instance
    # Test intervals go below the 0.6 s floor of `event.poller.refresh_interval`.
    return replace(instance, refresh_interval_s=float(interval_minutes) * 60)


def _below_the_floor(interval_minutes: str) -> bool:
    """Empty means the key is absent (the instance's default applies)."""
    return interval_minutes != "" and float(interval_minutes) < MIN_INTERVAL_MINUTES


def settings_for(db_dsn: str, emu: Any, **env: str) -> Settings:
    values = {
        "DATABASE_URL": db_dsn,
        "QBO_API_BASE_URL": emu.base_url,
        "QBO_OAUTH_TOKEN_URL": emu.token_url,
        "POLLER_HTTP_ADDR": "127.0.0.1:0",
        "POLLER_OVERLAP_SECONDS": "2",
        "POLLER_RETRY_SCHEDULE": "0.1s,0.2s,0.5s",
        "POLLER_DELIVERY_POLL_INTERVAL": "0.2s",
        "POLLER_SHUTDOWN_GRACE_SECONDS": "2",
    }
    values.update(env)
    return load_settings(env=values)


@contextlib.asynccontextmanager
async def running_daemon(
    settings: Settings, instances: list[Instance]
) -> AsyncIterator[asyncio.Task[int]]:
    stop = asyncio.Event()
    task = asyncio.create_task(supervisor.run(settings, instances, stop=stop), name="daemon")
    try:
        yield task
    finally:
        stop.set()
        code = await asyncio.wait_for(task, timeout=15)
        assert code == 0


async def wait_for(
    predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def events_of(receiver: Receiver) -> list[tuple[str, str, str]]:
    return [(e["eventType"], e["objectType"], e["objectId"]) for e in receiver.events()]
