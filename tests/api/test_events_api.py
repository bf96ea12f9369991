"""The events routes of DESIGN §9: records read from the outbox, filters, redelivery."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from aiohttp import web

from tests.api.harness import add_user, receiver, refresh_body, running_daemon
from tests.deliver.helpers import Change, eventually, insert_notification

CREATED = Change("CREATED", "145", "2026-11-24T10:15:02Z", '{"Id": "145", "SyncToken": "0"}')
UPDATED = Change("UPDATED", "146", "2026-11-24T10:16:02Z", '{"Id": "146", "SyncToken": "3"}')


async def test_event_records_filters_and_redelivery(
    emu: Any, pool: asyncpg.Pool, db_dsn: str
) -> None:
    realm = emu.add_realm(seed=1)
    alice = await add_user(pool, "alice")
    bob = await add_user(pool, "bob")
    failing = {"on": True}
    async with (
        receiver() as good,
        receiver() as bad,
        running_daemon(emu, db_dsn, retry_schedule_s=(0.1,)) as api,
    ):
        bad.respond = lambda _r: web.Response(status=500 if failing["on"] else 200)
        api.user_secret = alice
        ok_inst = (
            await api.call(
                "POST",
                "/instances",
                refresh_body(emu, realm, "ok", callback=good.url, enabled=False),
            )
        ).body
        bad_inst = (
            await api.call(
                "POST",
                "/instances",
                refresh_body(emu, realm, "bad", callback=bad.url, enabled=False),
            )
        ).body
        _, delivered_id = await insert_notification(pool, ok_inst["id"], [CREATED, UPDATED])
        _, dead_id = await insert_notification(pool, bad_inst["id"], [UPDATED], "customers")

        async def settled() -> bool:
            rows = await pool.fetch("SELECT status FROM notifications ORDER BY id")
            return [row["status"] for row in rows] == ["delivered", "dead"]

        await eventually(settled, timeout=10)

        listed = await api.call("GET", "/instances/events")
        assert listed.status == 200
        assert [record["id"] for record in listed.body] == [dead_id, delivered_id]  # newest first
        record = next(r for r in listed.body if r["id"] == delivered_id)
        assert record["status"] == "NOTIFIED" and record["instanceId"] == ok_inst["id"]
        assert record["objectType"] == "invoices" and record["eventDate"].endswith("Z")
        assert [e["eventType"] for e in record["events"]] == ["CREATED", "UPDATED"]
        assert [e["objectId"] for e in record["events"]] == ["145", "146"]
        raw = json.loads(record["providerData"])
        assert raw["objectType"] == "invoices" and [o["Id"] for o in raw["invoices"]] == [
            "145",
            "146",
        ]
        assert record["notifiedData"][0]["statusCode"] == 200
        assert record["notifiedData"][0]["durationMs"] is not None
        dead = next(r for r in listed.body if r["id"] == dead_id)
        assert dead["status"] == "FAILED" and dead["notifiedData"][0]["statusCode"] == 500

        for query, expected in [
            ({"eventType": "CREATED"}, [delivered_id]),
            ({"objectId": "146"}, [dead_id, delivered_id]),
            ({"status": "FAILED"}, [dead_id]),
            ({"objectType": "customers"}, [dead_id]),
            ({"from": "2000-01-01T00:00:00Z", "to": "2000-01-02T00:00:00Z"}, []),
        ]:
            answer = await api.call("GET", "/instances/events", params=query)
            assert [r["id"] for r in answer.body] == expected, query
        one = await api.call("GET", f"/instances/{ok_inst['id']}/events")
        assert [r["id"] for r in one.body] == [delivered_id]
        paged = await api.call("GET", "/instances/events", params={"pageSize": "1"})
        assert [r["id"] for r in paged.body] == [dead_id]
        rest = await api.call(
            "GET",
            "/instances/events",
            params={"nextPage": paged.headers["Elements-Next-Page-Token"]},
        )
        assert [r["id"] for r in rest.body] == [delivered_id]
        assert (await api.call("GET", f"/instances/events/{delivered_id}")).body["id"] == (
            delivered_id
        )
        wrong_instance = await api.call("GET", f"/instances/{bad_inst['id']}/events/{delivered_id}")
        assert wrong_instance.status == 404
        assert (
            await api.call("GET", f"/instances/events/{delivered_id}", secret=bob)
        ).status == 404
        assert (await api.call("GET", "/instances/events", secret=bob)).body == []
        bad_filter = await api.call("GET", "/instances/events", params={"status": "LOST"})
        assert bad_filter.status == 400 and "status" in bad_filter.body["message"]

        # Queued deliveries: list, then redeliver once the receiver is back.
        queued = await api.call(
            "GET",
            "/notifications/subscriptions/deliveries",
            params={"where": f"channel='webhook' and status='queued' and config.url='{bad.url}'"},
        )
        assert queued.status == 200 and [d["eventId"] for d in queued.body] == [dead_id]
        refused = await api.call(
            "GET", "/notifications/subscriptions/deliveries", params={"where": "id = 1"}
        )
        assert refused.status == 400 and "id = 1" in refused.body["message"]
        failing["on"] = False
        redone = await api.call(
            "PUT", "/notifications/subscriptions/deliveries", params={"where": "status = 'dead'"}
        )
        assert redone.body == {"redelivered": 1}
        await eventually(lambda: len(bad.requests) >= 2, timeout=10)

        # One delivered event again.
        again = await api.call(
            "POST", f"/instances/{ok_inst['id']}/events/{delivered_id}/redeliver"
        )
        assert again.status == 200 and again.body == {"redelivered": 1}
        await eventually(lambda: good.event_ids().count(delivered_id) == 2, timeout=10)
