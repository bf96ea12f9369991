"""A callback receiver that verifies both signatures: the demo's far end, and a reference for
users writing their own (see the README).

It records every notification (deduplicated by eventId), the time it arrived, and whether the
`Elements-Webhook-Signature` and Standard Webhooks `webhook-signature` headers verified.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

TOLERANCE_S = 300  # Standard Webhooks: reject timestamps more than 5 minutes away


def elements_signature_ok(key: str, body: bytes, header: str | None) -> bool:
    """Open Connectors: `sha256=` + base64(HMAC-SHA256(key as UTF-8, raw body))."""
    if not header:
        return False
    digest = hmac.new(key.encode(), body, hashlib.sha256).digest()
    return hmac.compare_digest(header, "sha256=" + base64.b64encode(digest).decode())


def standard_signature_ok(
    key: str,
    body: bytes,
    msg_id: str | None,
    timestamp: str | None,
    header: str | None,
    now: float | None = None,
) -> bool:
    """Standard Webhooks v1: HMAC-SHA256 over `id.timestamp.body`; `whsec_` keys are base64."""
    if not (msg_id and timestamp and header) or not timestamp.isdigit():
        return False
    if abs((now or time.time()) - int(timestamp)) > TOLERANCE_S:
        return False
    secret = base64.b64decode(key[len("whsec_") :]) if key.startswith("whsec_") else key.encode()
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()
    candidates = [part.split(",", 1)[1] for part in header.split() if part.startswith("v1,")]
    return any(hmac.compare_digest(expected, c) for c in candidates)


@dataclass
class Received:
    event_id: str
    arrived: float
    message: dict[str, Any]
    elements_ok: bool | None
    standard_ok: bool | None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(self.message.get("events", []))


@dataclass
class Receiver:
    """Verifies with `keys[instanceName]` (or `default_key`); `status` lets tests fail it."""

    keys: dict[str, str] = field(default_factory=dict)
    default_key: str | None = None
    status: int = 200
    on_notification: Callable[[Received], None] | None = None
    notifications: dict[str, Received] = field(default_factory=dict)
    deliveries: int = 0
    duplicates: int = 0

    def key_for(self, message: dict[str, Any]) -> str | None:
        return self.keys.get(str(message.get("instanceName")), self.default_key)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.deliveries += 1
        if self.status >= 300:
            return web.Response(status=self.status, text="receiver told to fail")
        message = orjson.loads(body)["message"]
        key = self.key_for(message)
        headers = request.headers
        received = Received(
            event_id=message["eventId"],
            arrived=time.time(),
            message=message,
            elements_ok=None
            if key is None
            else elements_signature_ok(key, body, headers.get("Elements-Webhook-Signature")),
            standard_ok=None
            if key is None or "webhook-signature" not in headers
            else standard_signature_ok(
                key,
                body,
                headers.get("webhook-id"),
                headers.get("webhook-timestamp"),
                headers.get("webhook-signature"),
            ),
            body=body,
            headers=dict(headers),
        )
        if received.event_id in self.notifications:
            self.duplicates += 1  # at-least-once: a retry of something already received
        else:
            self.notifications[received.event_id] = received
            if self.on_notification is not None:
                self.on_notification(received)
        return web.Response(status=200)

    def events(self) -> list[dict[str, Any]]:
        return [e for r in self.notifications.values() for e in r.events]


@contextlib.asynccontextmanager
async def run_receiver(
    receiver: Receiver, host: str = "127.0.0.1", port: int = 0, path: str = "/qbo-events"
) -> AsyncIterator[str]:
    """Serve `receiver` on loopback; yields the callback URL."""
    app = web.Application()
    app.router.add_post(path, receiver.handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        yield f"http://{host}:{bound}{path}"
    finally:
        await runner.cleanup()
