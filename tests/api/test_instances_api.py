"""The instance routes of DESIGN §9 against a running daemon, PostgreSQL and the emulator."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import asyncpg

from poller import metrics
from poller.instances import parse_instance
from poller.store import instance_rows
from tests.api.harness import (
    ORG_SECRET,
    add_user,
    auth,
    receiver,
    refresh_body,
    running_daemon,
)
from tests.deliver.helpers import BOX, Change, eventually, insert_notification

PAID = Change("UPDATED", "145", "2026-11-24T10:15:02Z", '{"Id": "145", "SyncToken": "3"}')


async def test_secrets_masked_and_provider_data_never_echoed(
    emu: Any, pool: asyncpg.Pool, db_dsn: str
) -> None:
    realm = emu.add_realm(seed=1)
    secret = await add_user(pool, "alice")
    async with running_daemon(emu, db_dsn) as api:
        api.user_secret = secret
        body = refresh_body(emu, realm, "Masked", enabled=False)
        created = await api.call("POST", "/instances", body)
        assert created.status == 200, created.body
        for answer in (
            created,
            await api.call("GET", f"/instances/{created.body['id']}"),
        ):
            shown = answer.body
            assert shown["configuration"]["oauth.api.secret"] == "********"
            assert shown["configuration"]["event.notification.signature.key"] == "********"
            assert shown["configuration"]["event.notification.enabled"] == "false"
            assert "providerData" not in shown
            text = str(shown)
            assert emu.client_secret not in text and "sig-key-for-tests-77" not in text
            assert body["providerData"]["refreshToken"] not in text
            assert shown["element"] == {
                "id": 39,
                "key": "quickbooks",
                "name": "QuickBooks Online",
                "hub": "finance",
            }
            assert shown["elementId"] == 39 and shown["provisionInteractions"] == []
            assert shown["externalAuthentication"] == "none"
            assert shown["user"] == {"id": shown["user"]["id"], "name": "alice"}
            assert shown["createdDate"].endswith("Z") and shown["status"] == "paused"
        listed = await api.call("GET", "/instances")
        assert listed.status == 200 and [i["name"] for i in listed.body] == ["Masked"]
        assert listed.headers["Elements-Returned-Count"] == "1"
        assert "Elements-Next-Page-Token" not in listed.headers
        # A secret echoed back as the mask keeps the stored one.
        put = await api.call(
            "PUT",
            f"/instances/{created.body['id']}",
            {**body, "configuration": {**body["configuration"], "oauth.api.secret": "********"}},
            params={"reAuthenticate": "false"},
        )
        assert put.status == 200, put.body
        stored = await pool.fetchval("SELECT client_secret_enc FROM instances")
        assert BOX.open(stored) == emu.client_secret


async def test_pagination_across_450_instances(emu: Any, pool: asyncpg.Pool, db_dsn: str) -> None:
    realm = emu.add_realm(seed=2)
    secret = await add_user(pool, "bulk")
    async with running_daemon(emu, db_dsn) as api:
        api.user_secret = secret
        for number in range(450):
            body = refresh_body(emu, realm, f"inst-{number:03d}", enabled=False)
            assert (await api.call("POST", "/instances", body)).status == 200
        seen: list[str] = []
        pages: list[int] = []
        cursor: str | None = None
        while True:
            params = {"pageSize": "200"} | ({"nextPage": cursor} if cursor else {})
            page = await api.call("GET", "/instances", params=params)
            assert page.status == 200
            assert page.headers["Elements-Returned-Count"] == str(len(page.body))
            seen.extend(item["name"] for item in page.body)
            pages.append(len(page.body))
            cursor = page.headers.get("Elements-Next-Page-Token")
            if cursor is None:
                break
        assert pages == [200, 200, 50]
        assert seen == [f"inst-{number:03d}" for number in range(450)]
        default = await api.call("GET", "/instances")
        assert len(default.body) == 200
        for bad in ("0", "501", "x"):
            answer = await api.call("GET", "/instances", params={"pageSize": bad})
            assert answer.status == 400 and "pageSize" in answer.body["message"]
        answer = await api.call("GET", "/instances", params={"nextPage": "garbage"})
        assert answer.status == 400 and "nextPage" in answer.body["message"]


async def test_authorization_forms_and_failures(emu: Any, pool: asyncpg.Pool, db_dsn: str) -> None:
    secret = await add_user(pool, "alice")
    async with running_daemon(emu, db_dsn) as api:
        accepted = [
            f"User {secret}, Organization {ORG_SECRET}",
            f"Organization {ORG_SECRET}, User {secret}",
            f"  organization   {ORG_SECRET} ,user {secret}  ",
            f"USER {secret},ORGANIZATION {ORG_SECRET}",
        ]
        for header in accepted:
            answer = await api.call("GET", "/instances", authorization=header)
            assert answer.status == 200, header
            assert answer.body == []
        before = metrics.API_AUTH_FAILURES.labels("invalid")._value.get()
        refused = [
            f"User {secret}, Organization wrong-org-secret-123",
            f"User not-a-user-secret, Organization {ORG_SECRET}",
            f"User {secret}",
            f"Bearer {secret}",
            f"User {secret}, Organization {ORG_SECRET}, Element not-a-token",
            "",
        ]
        for header in refused:
            answer = await api.call("GET", "/instances", authorization=header)
            assert answer.status == 401, header
            assert answer.body["message"] == (
                "Invalid Organization or User secret, or invalid Element token provided."
            )
            assert answer.body["requestId"] == answer.headers["Elements-Request-Id"]
        assert metrics.API_AUTH_FAILURES.labels("invalid")._value.get() == before + len(refused)
        # Ten failures within a minute: the address gets 429, even with good secrets.
        for _ in range(10 - len(refused)):
            await api.call("GET", "/instances", authorization="User x, Organization y")
        answer = await api.call("GET", "/instances")
        assert answer.status == 429 and "Retry-After" in answer.headers
        async with api.session.get(api.root + "/metrics") as response:
            text = await response.text()
        assert 'qbo_poller_api_auth_failures_total{outcome="throttled"}' in text


async def test_visibility_other_users_and_admins(emu: Any, pool: asyncpg.Pool, db_dsn: str) -> None:
    realm = emu.add_realm(seed=3)
    alice = await add_user(pool, "alice")
    bob = await add_user(pool, "bob")
    admin = await add_user(pool, "root", admin=True)
    file_body = refresh_body(emu, realm, "From the file", enabled=False)
    async with pool.acquire() as conn:
        await instance_rows.upsert(conn, parse_instance(file_body), BOX)
    async with running_daemon(emu, db_dsn) as api:
        created = await api.call(
            "POST", "/instances", refresh_body(emu, realm, "Alice's", enabled=False), secret=alice
        )
        instance_id = created.body["id"]
        file_id = await pool.fetchval("SELECT id FROM instances WHERE name = 'From the file'")
        for method, path in [
            ("GET", f"/instances/{instance_id}"),
            ("PATCH", f"/instances/{instance_id}"),
            ("DELETE", f"/instances/{instance_id}"),
            ("DELETE", f"/instances/{instance_id}/enabled"),
            ("GET", f"/instances/{file_id}"),
            ("GET", "/instances/999999"),
        ]:
            body = {"tags": ["x"]} if method == "PATCH" else None
            answer = await api.call(method, path, body, secret=bob)
            assert answer.status == 404, (method, path, answer.body)
        assert (await api.call("GET", "/instances", secret=bob)).body == []
        mine = await api.call("GET", "/instances", secret=alice)
        assert [i["name"] for i in mine.body] == ["Alice's"]
        everything = await api.call("GET", "/instances", secret=admin)
        assert sorted(i["name"] for i in everything.body) == ["Alice's", "From the file"]
        # The token is shown to its owner only.
        as_admin = await api.call("GET", f"/instances/{instance_id}", secret=admin)
        assert as_admin.body["token"] == "********"
        assert mine.body[0]["token"] == created.body["token"]
        # Names are unique: 409.
        dup = await api.call(
            "POST", "/instances", refresh_body(emu, realm, "Alice's", enabled=False), secret=bob
        )
        assert dup.status == 409


async def test_element_token_routes_and_put(emu: Any, pool: asyncpg.Pool, db_dsn: str) -> None:
    realm = emu.add_realm(seed=4)
    alice = await add_user(pool, "alice")
    async with running_daemon(emu, db_dsn) as api:
        api.user_secret = alice
        body = refresh_body(emu, realm, "Tokened", enabled=False)
        created = (await api.call("POST", "/instances", body)).body
        header = auth(alice, element=created["token"])
        patched = await api.call(
            "PATCH",
            "/instances",
            {
                "name": "Renamed",
                "tags": ["a", "b"],
                "configuration": {"event.poller.urls": "bills"},
            },
            authorization=header,
        )
        assert patched.status == 200, patched.body
        assert patched.body["name"] == "Renamed" and patched.body["tags"] == ["a", "b"]
        assert patched.body["resources"] == ["bills"]
        pairs = await pool.fetch("SELECT resource FROM pair_cursors")
        assert [row["resource"] for row in pairs] == ["bills"]
        answer = await api.call("PATCH", "/instances", {"tags": []})
        assert answer.status == 400 and "Element" in answer.body["message"]
        paused = await api.call("DELETE", "/instances/enabled", authorization=header)
        assert paused.status == 200 and paused.body["disabled"] is True
        resumed = await api.call("PUT", "/instances/enabled", authorization=header)
        assert resumed.status == 200 and resumed.body["disabled"] is False
        put = await api.call(
            "PUT",
            f"/instances/{created['id']}",
            {**body, "name": "Replaced"},
            params={"reAuthenticate": "false"},
        )
        assert put.status == 200 and put.body["name"] == "Replaced"
        assert put.body["resources"] == ["customers", "invoices"]
        bad = await api.call(
            "PATCH",
            f"/instances/{created['id']}",
            {"configuration": {"event.poller.urls": "nonsense"}},
        )
        assert bad.status == 400
        assert "event.poller.urls='nonsense'" in bad.body["message"]
        assert "valid resources" in bad.body["message"]


async def test_patch_callback_url_applies_to_queued_notifications(
    emu: Any, pool: asyncpg.Pool, db_dsn: str
) -> None:
    realm = emu.add_realm(seed=5)
    alice = await add_user(pool, "alice")
    async with (
        receiver() as first,
        receiver() as second,
        running_daemon(emu, db_dsn, retry_schedule_s=(0.5,) * 20) as api,
    ):
        from aiohttp import web

        first.respond = lambda _r: web.Response(status=500)
        api.user_secret = alice
        body = refresh_body(emu, realm, "Moving", callback=first.url, enabled=False)
        created = (await api.call("POST", "/instances", body)).body
        await insert_notification(pool, created["id"], [PAID])
        await insert_notification(pool, created["id"], [replace(PAID, object_id="146")])
        await eventually(lambda: len(first.requests) >= 2, timeout=10)
        patched = await api.call(
            "PATCH",
            f"/instances/{created['id']}",
            {"configuration": {"event.notification.callback.url": second.url}},
        )
        assert patched.status == 200
        assert patched.body["eventsNotificationCallbackUrl"] == second.url
        await eventually(lambda: len(set(second.event_ids())) == 2, timeout=10)

        async def delivered_to_second() -> bool:
            rows = await pool.fetch("SELECT status, target_url FROM notifications")
            return {(row["status"], row["target_url"]) for row in rows} == {
                ("delivered", second.url)
            }

        await eventually(delivered_to_second, timeout=10)


async def test_pause_stops_qbo_requests_and_resume_restarts(
    emu: Any, pool: asyncpg.Pool, db_dsn: str
) -> None:
    realm = emu.add_realm(seed=6, per_entity=1)
    alice = await add_user(pool, "alice")
    async with running_daemon(emu, db_dsn) as api:
        api.user_secret = alice
        body = refresh_body(emu, realm, "Busy", interval_minutes="0.01")
        created = (await api.call("POST", "/instances", body)).body

        def requests() -> int:
            return int(emu.counters(realm).get("total", 0))

        await eventually(lambda: requests() >= 3, timeout=15)
        paused = await api.call("DELETE", f"/instances/{created['id']}/enabled")
        assert paused.status == 200 and paused.body["status"] == "paused"
        await asyncio.sleep(3.0)  # the rescan (2 s) stops the instance's cycles
        after_pause = requests()
        await asyncio.sleep(3.0)
        assert requests() == after_pause, "a paused instance sends QuickBooks nothing"
        resumed = await api.call("PUT", f"/instances/{created['id']}/enabled")
        assert resumed.body["status"] == "active"
        await eventually(lambda: requests() > after_pause, timeout=10)


async def test_delete_cancels_undelivered_notifications(
    emu: Any, pool: asyncpg.Pool, db_dsn: str
) -> None:
    realm = emu.add_realm(seed=7)
    alice = await add_user(pool, "alice")
    async with running_daemon(emu, db_dsn, retry_schedule_s=(3600.0,)) as api:
        api.user_secret = alice
        created = (
            await api.call("POST", "/instances", refresh_body(emu, realm, "Doomed", enabled=False))
        ).body
        for object_id in ("1", "2", "3"):
            await insert_notification(pool, created["id"], [replace(PAID, object_id=object_id)])
        deleted = await api.call("DELETE", f"/instances/{created['id']}")
        assert deleted.status == 200
        assert deleted.body == {"id": created["id"], "name": "Doomed", "cancelledNotifications": 3}
        assert await pool.fetchval("SELECT count(*) FROM notifications") == 0
        assert (await api.call("GET", f"/instances/{created['id']}")).status == 404
        assert (await api.call("DELETE", f"/instances/{created['id']}")).status == 404
