"""The emulator's Intuit webhooks: batching, signature, formats, retries, drops, duplicates."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from qbo_emulator import run_emulator

REALM = "9130350000000077"
VERIFIER = "emulator-test-verifier"


class Sink:
    """A webhook endpoint that answers the statuses it is given, then 200."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.received: list[tuple[dict[str, str], bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)


@asynccontextmanager
async def sink_server(sink: Sink) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/hooks", sink.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/hooks"
    finally:
        await runner.cleanup()


async def until(check: Any, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


def signed(headers: dict[str, str], body: bytes) -> bool:
    digest = hmac.new(VERIFIER.encode(), body, hashlib.sha256).digest()
    return headers["intuit-signature"] == base64.b64encode(digest).decode()


async def test_writes_are_batched_signed_and_retried_until_200() -> None:
    sink = Sink([500, 503])
    async with run_emulator(per_second=None) as emu, sink_server(sink) as url:
        emu.add_realm(REALM)
        emu.configure_webhooks(REALM, url, VERIFIER, delay_s=0.2)
        emu.webhook_switches(retry_scale=0.01)  # 10 s, 20 s → 0.1 s, 0.2 s
        customer = emu.create(REALM, "Customer", {"DisplayName": "Hooked"})
        emu.update(REALM, "Customer", {"Id": customer["Id"], "Notes": "x"})
        await until(lambda: emu.counters(REALM).get("webhook_delivered") == 1)
        counters = emu.counters(REALM)
    assert (counters["webhook_notifications"], counters["webhook_attempts"]) == (1, 3)
    assert counters["webhook_failed"] == 2
    bodies = {body for _, body in sink.received}
    assert len(bodies) == 1  # retries re-send the same bytes
    headers, body = sink.received[-1]
    assert signed(headers, body)
    assert headers["User-Agent"] == "intuit_notification_server/0.1"
    document = orjson.loads(body)
    (notification,) = document["eventNotifications"]
    assert notification["realmId"] == REALM
    assert [
        (e["name"], e["id"], e["operation"]) for e in notification["dataChangeEvent"]["entities"]
    ] == [
        ("Customer", customer["Id"], "Create"),
        ("Customer", customer["Id"], "Update"),
    ]


async def test_cloudevents_drops_and_duplicates_through_the_control_api() -> None:
    sink = Sink()
    async with run_emulator(per_second=None) as emu, sink_server(sink) as url:
        emu.add_realm(REALM, seed=1, per_entity=2)
        async with aiohttp.ClientSession(base_url=emu.base_url) as http:
            target = {"url": url, "verifier": VERIFIER, "format": "cloudevents", "delay_s": 0}
            async with http.put(f"/_emulator/realms/{REALM}/webhooks", json=target) as reply:
                assert reply.status == 200
                assert await reply.json() == {"url": url, "format": "cloudevents", "delay_s": 0}
            async with http.post("/_emulator/webhooks", json={"drop_next": 1}) as reply:
                assert (await reply.json())["drop_next"] == 1
            invoice_id = emu.ids(REALM, "Invoice")[0]
            emu.delete(REALM, "Invoice", invoice_id)  # dropped
            await until(lambda: emu.counters(REALM).get("webhook_dropped") == 1)
            emu.webhook_switches(duplicates=True)
            emu.void(REALM, "Invoice", emu.ids(REALM, "Invoice")[0])
            await until(lambda: emu.counters(REALM).get("webhook_delivered") == 2)
            async with http.get("/_emulator/webhooks") as reply:
                status = await reply.json()
    assert status["pending"] == 0 and status["duplicates"] is True
    assert len(sink.received) == 2 and sink.received[0][1] == sink.received[1][1]
    headers, body = sink.received[0]
    assert headers["Content-Type"] == "application/cloudevents+json" and signed(headers, body)
    (event,) = orjson.loads(body)
    assert event["specversion"] == "1.0" and event["type"] == "qbo.invoice.voided.v1"
    assert event["intuitaccountid"] == REALM and event["time"].endswith("Z")
