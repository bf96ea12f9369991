"""The seed's curl against the daemon: only the host changes (DESIGN §9, issue 11)."""

from __future__ import annotations

from typing import Any

import asyncpg

from tests.api.harness import add_user, receiver, running_daemon, seed_text, token_calls
from tests.deliver.helpers import eventually

REDIRECT = "https://mycoolapp.com/oauth"


def seed_values(emu: Any, realm: str, code: str, hook_url: str) -> dict[str, str]:
    return {
        "<AUTHORIZATION_GRANT_CODE>": code,
        "<REALM_ID>": realm,
        "<CLIENT_ID>": emu.client_id,
        "<CLIENT_SECRET>": emu.client_secret,
        "<OPTIONAL_SIGNATURE_KEY>": "seed-signature-key-42",
        "https://mycoolapp.com/events": hook_url,
    }


async def test_seed_body_verbatim_then_fixed(emu: Any, pool: asyncpg.Pool, db_dsn: str) -> None:
    realm = emu.add_realm(seed=1, per_entity=1)
    code = emu.issue_auth_code(realm, redirect_uri=REDIRECT)
    secret = await add_user(pool, "alice")
    async with receiver() as hook, running_daemon(emu, db_dsn) as api:
        api.user_secret = secret
        text = seed_text("oauth2_polling.json", seed_values(emu, realm, code, hook.url))

        # Verbatim: the comma missing after oauth.api.secret.
        answer = await api.call("POST", "/instances", raw=text)
        assert answer.status == 400
        assert answer.body["message"] == (
            "invalid JSON at line 13 column 5: Expecting ',' delimiter"
        )
        assert answer.body["requestId"] == answer.headers["Elements-Request-Id"]
        assert len(answer.body["requestId"]) == 24
        assert emu.client_secret not in answer.body["message"]

        # The comma fixed: the seed's `https;//` redirect URI is named with its value.
        text = text.replace('"<CLIENT_SECRET>"\n', '"<CLIENT_SECRET>",\n').replace(
            f'"{emu.client_secret}"\n', f'"{emu.client_secret}",\n'
        )
        answer = await api.call("POST", "/instances", raw=text)
        assert answer.status == 400
        assert "oauth.callback.url='https;//mycoolapp.com'" in answer.body["message"]
        assert token_calls(emu) == 0, "nothing is exchanged for an invalid body"

        # Both fixed: created, the code exchanged once (redirect_uri = oauth.callback.url).
        text = text.replace("https;//mycoolapp.com", REDIRECT)
        answer = await api.call("POST", "/instances", raw=text)
        assert answer.status == 200, answer.body
        created = answer.body
        assert token_calls(emu) == 1
        assert created["name"] == "API Instance" and created["realmId"] == realm
        assert created["configuration"]["oauth.api.secret"] == "********"
        assert created["configuration"]["event.notification.signature.key"] == "********"
        assert "providerData" not in created
        assert created["token"] and len(created["token"]) >= 43
        assert created["status"] == "active" and created["eventsEnabled"] is True
        assert created["resources"] == ["customers", "invoices", "payments"]

        # A code Intuit refuses is a 400 naming invalid_grant, and creates nothing. (Not the
        # same code again: Intuit, and the emulator, revoke the grant of a reused code.)
        again = text.replace('"API Instance"', '"Second"').replace(code, "AB11-refused-code")
        answer = await api.call("POST", "/instances", raw=again)
        assert answer.status == 400 and "invalid_grant" in answer.body["message"]
        assert await pool.fetchval("SELECT count(*) FROM instances") == 1
        assert token_calls(emu) == 2

        # Poll quickly from now on (PATCH takes effect on the running daemon).
        answer = await api.call(
            "PATCH",
            f"/instances/{created['id']}",
            {"configuration": {"event.poller.refresh_interval": "0.02"}},
        )
        assert answer.status == 200, answer.body

        async def baseline_taken() -> bool:
            return bool(
                await pool.fetchval(
                    "SELECT bool_and(initialized) FROM pair_cursors WHERE instance_id = $1",
                    created["id"],
                )
            )

        await eventually(baseline_taken, timeout=15)
        customer_id = emu.ids(realm, "Customer")[0]
        emu.update(realm, "Customer", {"Id": customer_id, "DisplayName": "Changed by the test"})
        await eventually(lambda: len(hook.requests) > 0, timeout=15)
        message = hook.requests[0].json["message"]
        assert message["instanceId"] == created["id"]
        assert message["events"][0]["objectId"] == customer_id
        assert message["events"][0]["eventType"] == "UPDATED"
        assert token_calls(emu) == 2, "the exchanged access token is used, not refreshed"


async def test_seed_webhook_body_fixed_creates_a_webhook_instance(
    emu: Any, pool: asyncpg.Pool, db_dsn: str
) -> None:
    """The seed's webhook variant (event.vendor.type webhook, no refresh interval), its JSON
    syntax and its `https;//` fixed: a webhook instance, polled as the 60-minute backstop."""
    realm = emu.add_realm(seed=2, per_entity=1)
    code = emu.issue_auth_code(realm, redirect_uri=REDIRECT)
    secret = await add_user(pool, "bob")
    async with receiver() as hook, running_daemon(emu, db_dsn) as api:
        api.user_secret = secret
        text = seed_text("oauth2_webhook.json", seed_values(emu, realm, code, hook.url))
        text = text.replace(f'"{emu.client_secret}"\n', f'"{emu.client_secret}",\n')
        text = text.replace("https;//mycoolapp.com", REDIRECT)
        answer = await api.call("POST", "/instances", raw=text)
        assert answer.status == 200, answer.body
        created = answer.body
        assert token_calls(emu) == 1
        assert created["configuration"]["event.vendor.type"] == "webhook"
        row = await pool.fetchrow(
            "SELECT vendor_type, refresh_interval_s FROM instances WHERE id = $1", created["id"]
        )
        assert row is not None
        assert (row["vendor_type"], row["refresh_interval_s"]) == ("webhook", 3600.0)
