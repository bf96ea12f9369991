"""The Intuit webhook receiver on a real aiohttp server and PostgreSQL (DESIGN §11).

Intuit's own signed sample bodies (reference/samples/responses/*.raw.txt, with the verifier
tokens of the SDK tests that produced them) verify; anything else is refused with 401 and
leaves no row; both formats are recorded once (duplicates too); unreadable signed bodies are
kept raw and answered 200; the intake turns a burst into one poll request.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

from poller.config import HttpAddr
from poller.instances import parse_instance
from poller.store import db, instance_rows
from poller.store.crypto import SecretBox
from poller.web.app import build_app, serve
from poller.web.webhooks import (
    PATH,
    WebhookIntake,
    WebhookReceiver,
    parse_body,
    signature,
)

SAMPLES = Path("/work/shared/reference/samples/responses")
DOTNET_TOKEN = "00faeec4-08d0-4996-bb37-698ae19f0149"
DOTNET_SIGNATURE = "6q+xGyMirJupwKTh2/WBl2NcdxzxqdIbk3sneKTxLWM="
JAVA_TOKEN = "b5771f19b12ddb4bcdb9f08bdc50bc63878a"
JAVA_SIGNATURE = "JC2GUwciPmRBwEO7WvrRmKqu9tGOKL8FFallocTFi8Q="
TOKEN = "verifier-token-of-the-test-app"
REALM = "4620816365100500"

# The SDK test vectors, byte-exact (no trailing newline), as in the reference samples.
LEGACY_DOTNET = (
    b'{"eventNotifications":[{"realmId":"1269959970","dataChangeEvent":{"entities":[{"name":'
    b'"Vendor","id":"40","operation":"Update","lastUpdated":"2016-10-05T03:09:04.000Z"},{"name":'
    b'"Customer","id":"43","operation":"Create","lastUpdated":"2016-10-05T03:07:04.000Z"}]}}]}'
)
LEGACY_JAVA = (
    b'{"eventNotifications":[{"realmId":"1185883450","dataChangeEvent":{"entities":[{"name":'
    b'"Customer","id":"1","operation":"Create","lastUpdated":"2015-10-05T14:42:19-0700"}]}}]}'
)


def legacy(realm: str, *changes: tuple[str, str, str, str]) -> bytes:
    entities = [
        {"name": name, "id": object_id, "operation": operation, "lastUpdated": last}
        for name, object_id, operation, last in changes
    ]
    return orjson.dumps(
        {"eventNotifications": [{"realmId": realm, "dataChangeEvent": {"entities": entities}}]}
    )


def cloudevent(realm: str, event_id: str, entity: str, verb: str, object_id: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "intuit.test",
        "type": f"qbo.{entity}.{verb}.v1",
        "datacontenttype": "application/json",
        "time": "2026-03-17T16:19:17.123456789Z",
        "intuitentityid": object_id,
        "intuitaccountid": realm,
        "data": {},
    }


def instance_body(name: str, realm: str, **config: Any) -> dict[str, Any]:
    return {
        "name": name,
        "providerData": {"refreshToken": "refresh-token", "realmId": realm},
        "configuration": {
            "oauth.api.key": "client",
            "oauth.api.secret": "secret",
            "event.notification.enabled": True,
            "event.notification.callback.url": "http://127.0.0.1:9/callback",
            "event.vendor.type": "webhook",
            "event.poller.urls": "customers|invoices|time-activities",
            **config,
        },
    }


class Harness:
    def __init__(self, url: str, pool: asyncpg.Pool, intake: WebhookIntake) -> None:
        self.url = url
        self.pool = pool
        self.intake = intake

    async def post(
        self,
        body: bytes,
        *,
        token: str | None = TOKEN,
        sig: str | None = None,
        content_type: str = "application/json",
        path: str = PATH,
    ) -> tuple[int, Any]:
        headers = {"Content-Type": content_type}
        if sig is None and token is not None:
            sig = signature(token, body)
        if sig is not None:
            headers["intuit-signature"] = sig
        async with (
            aiohttp.ClientSession() as session,
            # Large bodies go as a stream (chunked: no Content-Length to refuse them by).
            session.post(
                self.url + path,
                data=io.BytesIO(body) if len(body) > 65536 else body,
                headers=headers,
            ) as response,
        ):
            return response.status, await response.read()

    async def rows(self) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn:
            return list(await conn.fetch("SELECT * FROM webhook_notifications ORDER BY id"))

    async def count(self, table: str) -> int:
        async with self.pool.acquire() as conn:
            return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))


@contextlib.asynccontextmanager
async def receiving(
    pool: asyncpg.Pool, *, env_token: str | None = TOKEN, coalesce_s: float = 0.3
) -> AsyncIterator[Harness]:
    intake = WebhookIntake(pool, coalesce_s)
    receiver = WebhookReceiver(
        pool, SecretBox(None), intake, verifier_token=env_token, events_per_notification=10
    )
    stop = asyncio.Event()
    task = asyncio.create_task(intake.run(stop), name="intake")
    try:
        async with serve(build_app([receiver]), HttpAddr("127.0.0.1", 0)) as port:
            yield Harness(f"http://127.0.0.1:{port}", pool, intake)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def add_instance(pool: asyncpg.Pool, name: str, realm: str, **config: Any) -> int:
    async with db.acquire(pool) as conn:
        result = await instance_rows.upsert(
            conn, parse_instance(instance_body(name, realm, **config)), SecretBox(None)
        )
    return result.instance_id


def test_intuit_sample_signatures_verify() -> None:
    if SAMPLES.exists():  # the reference copy, where this checkout has it
        assert (SAMPLES / "webhook_legacy_eventNotifications.raw.txt").read_bytes() == LEGACY_DOTNET
        assert (SAMPLES / "webhook_legacy_eventNotifications_java_sdk.raw.txt").read_bytes() == (
            LEGACY_JAVA
        )
    assert signature(DOTNET_TOKEN, LEGACY_DOTNET) == DOTNET_SIGNATURE
    assert signature(JAVA_TOKEN, LEGACY_JAVA) == JAVA_SIGNATURE


def test_both_formats_parse() -> None:
    kind, found = parse_body(LEGACY_JAVA)
    assert kind == "legacy"
    assert [(n.realm_id, n.entity, n.object_id, n.operation) for n in found] == [
        ("1185883450", "Customer", "1", "Create")
    ]
    assert found[0].occurred_at is not None and found[0].occurred_at.utcoffset() is not None
    events = [cloudevent("310687", "e-1", "class", "created", "1234")]
    kind, found = parse_body(orjson.dumps(events))
    assert kind == "cloudevents"
    assert [(n.dedupe_key, n.entity, n.operation) for n in found] == [("ce:e-1", "class", "Create")]
    # A single event (application/cloudevents+json, not a batch) reads too.
    assert parse_body(orjson.dumps(events[0]))[1][0].dedupe_key == "ce:e-1"


async def test_sample_bodies_accepted_with_their_verifier_tokens(pool: asyncpg.Pool) -> None:
    async with receiving(pool, env_token=DOTNET_TOKEN) as hub:
        status, _ = await hub.post(LEGACY_DOTNET, sig=DOTNET_SIGNATURE)
        assert status == 200
        # An instance names the Java SDK app's token: accepted as well (several Intuit apps).
        await add_instance(
            pool, "JavaApp", "1185883450", **{"event.webhook.verifier.token": JAVA_TOKEN}
        )
        # The receiver re-reads instances' tokens every TOKEN_CACHE_S.
        assert await _wait_tokens(hub, LEGACY_JAVA, JAVA_SIGNATURE) == 200
    rows = await hub.rows()
    assert [(r["realm_id"], r["entity"], r["object_id"], r["operation"]) for r in rows] == [
        ("1269959970", "Vendor", "40", "Update"),
        ("1269959970", "Customer", "43", "Create"),
        ("1185883450", "Customer", "1", "Create"),
    ]


async def _wait_tokens(hub: Harness, body: bytes, sig: str) -> int:
    for _ in range(80):
        status, _ = await hub.post(body, sig=sig)
        if status == 200:
            return status
        await asyncio.sleep(0.1)
    return status


async def test_forged_missing_or_unconfigured_signature_is_401_and_nothing_recorded(
    pool: asyncpg.Pool,
) -> None:
    body = legacy(REALM, ("Customer", "1", "Update", "2026-01-01T00:00:00.000Z"))
    await add_instance(pool, "Watched", REALM)
    async with receiving(pool) as hub:
        assert (await hub.post(body, token="another-apps-token"))[0] == 401
        assert (await hub.post(body, token=None))[0] == 401
        assert (await hub.post(body, sig="not base64 at all"))[0] == 401
        await asyncio.sleep(0.5)  # longer than the coalescing window: nothing was requested
        assert await hub.count("webhook_notifications") == 0
        assert await hub.count("webhook_rejects") == 0
    async with pool.acquire() as conn:
        due = await conn.fetchval("SELECT count(*) FROM pair_cursors WHERE next_due_at > now()")
    assert due == 0  # no pair was touched (new pairs are due at creation; none made due since)
    async with receiving(pool, env_token=None) as hub:
        assert (await hub.post(body))[0] == 401  # no token configured at all


async def test_duplicates_are_recorded_once(pool: asyncpg.Pool) -> None:
    change = ("Invoice", "130", "Update", "2026-01-01T00:00:00.000Z")
    events = orjson.dumps([cloudevent(REALM, "ce-id-1", "invoice", "updated", "130")])
    async with receiving(pool) as hub:
        for _ in range(3):  # Intuit's retries re-send the same body
            assert (await hub.post(legacy(REALM, change)))[0] == 200
            status, answer = await hub.post(events, content_type="application/cloudevents+json")
            assert status == 200
        assert orjson.loads(answer) == {"received": 1, "new": 0}
        status, _ = await hub.post(
            events, content_type="application/cloudevents-batch+json", path=PATH + "/"
        )
        assert status == 200
    assert [(r["format"], r["dedupe_key"]) for r in await hub.rows()] == [
        ("legacy", f"legacy:{REALM}:invoice:130:update:2026-01-01T00:00:00.000Z"),
        ("cloudevents", "ce:ce-id-1"),
    ]


async def test_signed_unreadable_body_is_kept_raw_and_answered_200(pool: asyncpg.Pool) -> None:
    async with receiving(pool) as hub:
        for body in (b"{not json", b'{"eventNotifications": "nope"}', b'"a string"'):
            assert (await hub.post(body))[0] == 200
        async with pool.acquire() as conn:
            kept = [bytes(r["body"]) for r in await conn.fetch("SELECT body FROM webhook_rejects")]
        assert kept == [b"{not json", b'{"eventNotifications": "nope"}', b'"a string"']
        assert await hub.count("webhook_notifications") == 0


async def test_body_over_1_mib_is_413(pool: asyncpg.Pool) -> None:
    async with receiving(pool) as hub:
        big = b"[" + b" " * (1024 * 1024) + b"]"
        assert (await hub.post(big))[0] == 413
        assert await hub.count("webhook_rejects") == 0


async def test_burst_for_one_realm_is_one_poll_request(pool: asyncpg.Pool, db_dsn: str) -> None:
    instance_id = await add_instance(pool, "Burst", REALM)
    other = await add_instance(pool, "SameCompany", REALM, **{"event.vendor.type": "polling"})
    async with pool.acquire() as conn:
        await conn.execute("UPDATE pair_cursors SET next_due_at = now() + interval '1 hour'")
    notified: list[str] = []
    watcher = await asyncpg.connect(db_dsn)
    await watcher.add_listener("qbo_poller_poll", lambda *args: notified.append(args[3]))
    try:
        # The promise is for notifications arriving within the window; the window is wide
        # enough that a loaded machine (the 100 signed POSTs took up to ~2 s beside a parallel
        # suite) still lands them all in it, and the burst's own span is checked below.
        coalesce_s = 4.0
        async with receiving(pool, coalesce_s=coalesce_s) as hub:
            bodies = [
                legacy(REALM, ("Customer", str(n), "Update", f"2026-01-01T00:00:{n % 60:02}Z"))
                for n in range(100)
            ]
            started = time.monotonic()
            statuses = await asyncio.gather(*(hub.post(b) for b in bodies))
            burst_s = time.monotonic() - started
            assert set(s for s, _ in statuses) == {200}
            assert burst_s < coalesce_s, f"the burst itself took {burst_s:.1f} s"
            unknown = legacy("999", ("Customer", "1", "Update", "2026-01-01T00:00:00Z"))
            assert (await hub.post(unknown))[0] == 200  # unknown realm: 200, counted, dropped
            await asyncio.sleep(coalesce_s - burst_s + 1.0)
    finally:
        await watcher.close()
    assert len(notified) == 1, notified
    assert orjson.loads(notified[0]) == {
        "instances": sorted([instance_id, other]),
        "resources": ["customers"],
    }
    async with pool.acquire() as conn:
        due = await conn.fetch(
            "SELECT instance_id, resource FROM pair_cursors WHERE next_due_at <= now() "
            "ORDER BY 1, 2"
        )
    assert [(r["instance_id"], r["resource"]) for r in due] == [
        (instance_id, "customers"),
        (other, "customers"),
    ]


async def test_time_activity_delete_is_a_deleted_event(pool: asyncpg.Pool) -> None:
    instance_id = await add_instance(pool, "Timesheets", REALM)
    body = legacy(REALM, ("TimeActivity", "77", "Delete", "2026-02-03T04:05:06.000Z"))
    async with receiving(pool) as hub:
        assert (await hub.post(body))[0] == 200
        assert (await hub.post(body))[0] == 200  # the retry makes no second event
        ce = cloudevent(REALM, "ce-ta", "timeactivity", "deleted", "77")
        assert (await hub.post(orjson.dumps([ce])))[0] == 200  # same object version: no event
    async with pool.acquire() as conn:
        events = await conn.fetch(
            "SELECT instance_id, resource, object_id, version, event_type, occurred_at, "
            "raw::text AS raw, notification_id FROM events"
        )
        snapshot = await conn.fetchrow(
            "SELECT deleted FROM object_snapshots WHERE resource = 'time-activities'"
        )
    assert len(events) == 1
    event = events[0]
    assert (event["instance_id"], event["resource"], event["object_id"]) == (
        instance_id,
        "time-activities",
        "77",
    )
    assert (event["version"], event["event_type"]) == ("deleted", "DELETED")
    assert event["occurred_at"].isoformat() == "2026-02-03T04:05:06+00:00"
    assert orjson.loads(event["raw"]) == {
        "domain": "QBO",
        "status": "Deleted",
        "Id": "77",
        "MetaData": {"LastUpdatedTime": "2026-02-02T20:05:06-08:00"},
    }
    assert event["notification_id"] is not None  # in the outbox, for delivery
    assert snapshot is not None and snapshot["deleted"] is True
