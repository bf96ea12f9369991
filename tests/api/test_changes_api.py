"""Field-level changes through the daemon (DESIGN §12): `event.poller.changes` set through the
API, the changes in the signed callback and in the API's event record, and the stored objects
freed when a PATCH turns the option off."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from tests.api.harness import add_user, receiver, refresh_body, running_daemon
from tests.deliver.helpers import eventually

pytestmark = pytest.mark.slow


async def test_changes_in_callback_and_event_record_then_freed(
    emu: Any, pool: asyncpg.Pool, db_dsn: str
) -> None:
    realm = emu.add_realm(seed=31, per_entity=2)
    cid = emu.ids(realm, "Customer", include_inactive=False)[0]
    async with receiver() as hook, running_daemon(emu, db_dsn) as api:
        api.user_secret = await add_user(pool, "alice")
        body = refresh_body(
            emu,
            realm,
            "with-changes",
            callback=hook.url,
            interval_minutes="0.01",
            resources="customers",
            **{"event.poller.changes": True},
        )
        created = await api.call("POST", "/instances", body)
        assert created.status == 200, created.body
        inst = created.body
        assert inst["configuration"]["event.poller.changes"] == "true"

        async def polled() -> bool:
            row = await pool.fetchrow(
                "SELECT initialized FROM pair_cursors WHERE instance_id = $1", inst["id"]
            )
            return bool(row and row["initialized"])

        await eventually(polled, timeout=15)

        async def updated(version: str) -> None:
            async def there() -> bool:
                return bool(
                    await pool.fetchval(
                        "SELECT count(*) FROM events e JOIN notifications n "
                        "ON n.id = e.notification_id WHERE e.version = $1 "
                        "AND n.status = 'delivered'",
                        version,
                    )
                )

            await eventually(there, timeout=15)

        first = emu.update(realm, "Customer", {"Id": cid, "Notes": "seen in full"})
        await updated(first["SyncToken"])
        second = emu.update(realm, "Customer", {"Id": cid, "Notes": "a <b>new</b> note"})
        await updated(second["SyncToken"])

        # The callback: the event carries its changes; the unknown first one carries null.
        events = [
            event
            for request in hook.requests
            for event in request.json["message"]["events"]
            if event["objectId"] == cid
        ]
        assert [e.get("changes", "absent") for e in events] == [
            None,
            [{"path": "/Notes", "old": "seen in full", "new": "a <b>new</b> note"}],
        ]

        # The event record of the API (DESIGN §9) says the same.
        listed = await api.call("GET", f"/instances/{inst['id']}/events")
        assert listed.status == 200
        newest = listed.body[0]["events"][0]
        assert newest["eventType"] == "UPDATED" and newest["objectId"] == cid
        assert newest["changes"] == [
            {"path": "/Notes", "old": "seen in full", "new": "a <b>new</b> note"}
        ]
        assert "changes" in listed.body[1]["events"][0]
        assert listed.body[1]["events"][0]["changes"] is None

        kept = "SELECT count(object) FROM object_snapshots WHERE instance_id = $1"
        assert await pool.fetchval(kept, inst["id"]) == 1
        off = await api.call(
            "PATCH", f"/instances/{inst['id']}", {"configuration": {"event.poller.changes": False}}
        )
        assert off.status == 200, off.body
        assert await pool.fetchval(kept, inst["id"]) == 0  # freed by the same request
        third = emu.update(realm, "Customer", {"Id": cid, "Notes": "after"})
        await updated(third["SyncToken"])
        assert await pool.fetchval(kept, inst["id"]) == 0
        stored = await pool.fetchval(
            "SELECT changes FROM events WHERE version = $1", third["SyncToken"]
        )
        assert stored is None  # the option is off: no `changes` key
