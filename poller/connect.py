"""`qbo-poller connect`: the OAuth 2.0 code flow from a terminal (DESIGN §9).

1. Prints Intuit's consent URL (`QBO_OAUTH_AUTHORIZE_URL`, with a random `state`) and, unless
   told not to, opens it in a browser.
2. Listens on `--redirect-uri` (which must be registered in the Intuit app) for the redirect
   back with `code`, `realmId` and that `state` (compared in constant time; any other state, or
   Intuit's `error`, ends the flow with one line).
3. Exchanges the code at once (codes are single-use and short-lived) and writes the instance
   with the resulting refresh token as its `providerData` (§3 accepts `refreshToken` + `realmId`):
   to the database, or as an instance body to `--out FILE` (mode 0600: it holds a token).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import os
import secrets
import webbrowser
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiohttp import web

from poller.config import Settings
from poller.errors import ConfigError
from poller.instances import ClientDefaults, parse_instance
from poller.qbo.auth import OAuthClient
from poller.qbo.types import QboError
from poller.web.api.routes import consent_url

DEFAULT_REDIRECT_URI = "http://localhost:8085/callback"
DEFAULT_TIMEOUT_S = 300.0
_DONE_PAGE = (
    "<!doctype html><title>qbo-poller</title>"
    "<p>QuickBooks is connected. You can close this window and go back to the terminal.</p>"
)


@dataclass(frozen=True)
class Grant:
    """What Intuit's redirect brought back."""

    code: str
    realm_id: str


class FlowRefused(Exception):
    """The redirect said no (Intuit's `error`), or did not belong to this flow."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", required=True, help="the instance's name")
    parser.add_argument(
        "--callback-url", required=True, help="event.notification.callback.url of the instance"
    )
    parser.add_argument("--resources", help="event.poller.urls (default: all 22)")
    parser.add_argument("--interval", help="event.poller.refresh_interval, in minutes")
    parser.add_argument("--signature-key", help="event.notification.signature.key")
    parser.add_argument(
        "--changes",
        action="store_true",
        help="event.poller.changes: UPDATED events say which fields changed",
    )
    parser.add_argument(
        "--redirect-uri",
        default=DEFAULT_REDIRECT_URI,
        help=f"where Intuit sends the browser back (default {DEFAULT_REDIRECT_URI})",
    )
    parser.add_argument(
        "--out", type=Path, help="write the instance body here, not to the database"
    )
    parser.add_argument("--no-browser", action="store_true", help="only print the consent URL")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for the consent"
    )


def listen_address(redirect_uri: str) -> tuple[str, int, str]:
    """Host, port and path of the local listener; refuses what cannot be listened on here."""
    parts = urlsplit(redirect_uri)
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigError(
            f"--redirect-uri={redirect_uri!r}: expected an http://localhost… URL to listen on"
        )
    return parts.hostname, parts.port or 80, parts.path or "/"


async def connect(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """The whole flow; the instance body to store (its providerData holds the refresh token,
    and it has passed the §3 rules)."""
    client_id, client_secret = _client(settings)
    state = secrets.token_urlsafe(24)
    url = consent_url(settings, client_id, args.redirect_uri, state)
    async with _redirect_listener(args.redirect_uri, state) as grant:
        print(f"Open this URL to connect a QuickBooks company:\n  {url}", flush=True)
        if not args.no_browser:
            webbrowser.open(url)
        received = await asyncio.wait_for(grant, args.timeout)
    refresh_token = await _exchange(settings, client_id, client_secret, received, args.redirect_uri)
    body = instance_body(args, client_id, client_secret, received.realm_id, refresh_token)
    parse_instance(body, ClientDefaults(client_id, client_secret))  # the §3 rules, before storing
    return body


def write_body(path: Path, body: dict[str, Any]) -> None:
    """The instance body, readable by its owner only (it carries a refresh token)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")


def instance_body(
    args: argparse.Namespace,
    client_id: str,
    client_secret: str,
    realm_id: str,
    refresh_token: str,
) -> dict[str, Any]:
    """An Open Connectors instance body (§3) for the connected company."""
    configuration: dict[str, Any] = {
        "oauth.callback.url": args.redirect_uri,
        "oauth.api.key": client_id,
        "oauth.api.secret": client_secret,
        "authentication.type": "oauth2",
        "event.notification.enabled": True,
        "event.vendor.type": "polling",
        "event.notification.callback.url": args.callback_url,
    }
    optional = {
        "event.poller.urls": args.resources,
        "event.poller.refresh_interval": args.interval,
        "event.notification.signature.key": args.signature_key,
        "event.poller.changes": True if getattr(args, "changes", False) else None,
    }
    configuration.update({key: value for key, value in optional.items() if value is not None})
    return {
        "element": {"key": "quickbooks"},
        "providerData": {"refreshToken": refresh_token, "realmId": realm_id},
        "configuration": configuration,
        "name": args.name,
    }


def _client(settings: Settings) -> tuple[str, str]:
    if not settings.qbo_client_id or not settings.qbo_client_secret:
        missing = "QBO_CLIENT_ID" if not settings.qbo_client_id else "QBO_CLIENT_SECRET"
        raise ConfigError(f"{missing}: required by connect (the Intuit app's OAuth credentials)")
    return settings.qbo_client_id, settings.qbo_client_secret


@contextlib.asynccontextmanager
async def _redirect_listener(redirect_uri: str, state: str) -> AsyncIterator[asyncio.Future[Grant]]:
    """A one-route server on the redirect URI; the future resolves with the grant."""
    host, port, path = listen_address(redirect_uri)
    grant: asyncio.Future[Grant] = asyncio.get_running_loop().create_future()

    async def redirected(request: web.Request) -> web.Response:
        outcome = _grant_of(request.query, state)
        if not grant.done():
            if isinstance(outcome, Grant):
                grant.set_result(outcome)
            else:
                grant.set_exception(outcome)
        if isinstance(outcome, Grant):
            return web.Response(text=_DONE_PAGE, content_type="text/html")
        return web.Response(status=400, text=str(outcome))

    app = web.Application()
    app.router.add_get(path, redirected)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(f"--redirect-uri={redirect_uri!r}: cannot listen: {exc}") from None
        yield grant
    finally:
        await runner.cleanup()


def _grant_of(query: Any, state: str) -> Grant | FlowRefused:
    if query.get("error"):
        return FlowRefused(f"Intuit refused the connection: {query.get('error')}")
    received_state = str(query.get("state", ""))
    if not hmac.compare_digest(received_state.encode(), state.encode()):
        return FlowRefused("the redirect's state does not belong to this connect")
    code, realm_id = query.get("code"), query.get("realmId")
    if not code or not realm_id:
        return FlowRefused("the redirect has no code or no realmId")
    return Grant(str(code), str(realm_id))


async def _exchange(
    settings: Settings, client_id: str, client_secret: str, grant: Grant, redirect_uri: str
) -> str:
    timeout = aiohttp.ClientTimeout(total=settings.qbo_request_timeout_s)
    async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as http:
        oauth = OAuthClient(http, settings)
        try:
            tokens = await oauth.exchange_code(
                client_id, client_secret, grant.code, redirect_uri, datetime.now(UTC)
            )
        except QboError as exc:
            raise FlowRefused(f"Intuit refused the authorization code: {exc}") from None
    return tokens.refresh_token
