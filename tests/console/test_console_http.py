"""The console over plain HTTP: sign-in, sessions, CSRF, visibility, the OAuth state, escaping,
headers (DESIGN §10). The browser flow is in test_browser.py."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from yarl import URL

from poller.manage import users
from tests.api.harness import ORG_SECRET, add_user, receiver, running_daemon
from tests.console.harness import ConsoleClient, instance_form
from tests.deliver.helpers import eventually, insert_instance, insert_many

pytestmark = pytest.mark.slow


@pytest.fixture
async def daemon(emu: Any, db_dsn: str) -> AsyncIterator[Any]:
    emu.add_realm(seed=1, per_entity=2)
    async with running_daemon(emu, db_dsn) as api:
        yield api


async def signed_in(daemon: Any, pool: asyncpg.Pool, name: str) -> ConsoleClient:
    client = ConsoleClient.open(daemon.root)
    secret = await add_user(pool, name)
    page = await client.sign_in(secret, ORG_SECRET)
    assert page.status == 200 and page.url.endswith("/ui/instances"), page.text[:300]
    return client


async def create_instance(client: ConsoleClient, name: str, callback: str) -> int:
    connected = await client.post("/ui/connect", {})
    assert connected.status == 200 and connected.url.endswith("/ui/instances/new"), connected.text
    assert 'id="connected"' in connected.text
    created = await client.post(
        "/ui/instances/new", instance_form(name, callback, ["customers", "invoices", "vendors"])
    )
    assert created.status == 200, created.text
    match = re.search(r"/ui/instances/(\d+)", created.url)
    assert match is not None, created.url
    return int(match.group(1))


async def test_sign_in_sets_strict_http_only_cookie_and_headers(
    daemon: Any, pool: asyncpg.Pool
) -> None:
    client = ConsoleClient.open(daemon.root)
    try:
        page = await client.get("/ui/instances")
        assert page.url.endswith("/ui/signin")
        policy = page.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy
        assert "unsafe-inline" not in policy
        secret = await add_user(pool, "alice")
        async with client.session.get(daemon.root + "/ui/signin") as response:
            text = await response.text()
        client.csrf = re.search(r'name="csrf" value="([^"]*)"', text).group(1)  # type: ignore[union-attr]
        async with client.session.post(
            daemon.root + "/ui/signin",
            data={"csrf": client.csrf, "user_secret": secret, "organization_secret": ORG_SECRET},
            allow_redirects=False,
        ) as response:
            assert response.status == 302
            cookie = response.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie
        assert "Secure" not in cookie  # http:// (POLLER_PUBLIC_URL unset)
        page = await client.get("/ui/instances")
        assert page.status == 200 and 'id="empty-instances"' in page.text
        assert "Connect to QuickBooks" in page.text
        async with pool.acquire() as conn:
            stored = await conn.fetchval("SELECT id_hash FROM console_sessions")
        session_id = client.session.cookie_jar.filter_cookies(URL(daemon.root + "/ui/"))[
            "qbo_console"
        ].value
        assert stored != session_id and len(stored) == 64
    finally:
        await client.close()


async def test_wrong_secrets_refused_then_throttled(daemon: Any, pool: asyncpg.Pool) -> None:
    secret = await add_user(pool, "alice")
    client = ConsoleClient.open(daemon.root)
    try:
        wrong = await client.sign_in(secret, "not-the-organization-secret")
        assert wrong.status == 401 and "Invalid user secret" in wrong.text
        for _ in range(9):
            await client.sign_in("nobody", ORG_SECRET)
        blocked = await client.sign_in(secret, ORG_SECRET)
        assert blocked.status == 429 and "Too many failed sign-ins" in blocked.text
    finally:
        await client.close()


async def test_post_without_csrf_token_is_refused(daemon: Any, pool: asyncpg.Pool) -> None:
    client = await signed_in(daemon, pool, "alice")
    try:
        refused = await client.post("/ui/connect", {}, with_csrf=False)
        assert refused.status == 403 and "security token" in refused.text
        forged = await client.post("/ui/connect", {"csrf": "0" * 64}, with_csrf=False)
        assert forged.status == 403
        signout = await client.post("/ui/signout", {}, with_csrf=False)
        assert signout.status == 403
        assert (await client.get("/ui/instances")).url.endswith("/ui/instances")  # still in
    finally:
        await client.close()


async def test_another_users_session_cannot_see_the_instance(
    daemon: Any, pool: asyncpg.Pool
) -> None:
    alice = await signed_in(daemon, pool, "alice")
    bob = await signed_in(daemon, pool, "bob")
    try:
        instance_id = await create_instance(alice, "Alice's books", "http://127.0.0.1:9/hook")
        mine = await alice.get(f"/ui/instances/{instance_id}")
        assert mine.status == 200 and "Alice&#39;s books" in mine.text
        for path in ("", "/events", "/edit", "/delete"):
            theirs = await bob.get(f"/ui/instances/{instance_id}{path}")
            assert theirs.status == 404, (path, theirs.status)
            assert "Alice" not in theirs.text
        assert "Alice" not in (await bob.get("/ui/instances")).text
        paused = await bob.post(f"/ui/instances/{instance_id}/pause", {})
        assert paused.status == 404
        assert 'id="pause"' in (await alice.get(f"/ui/instances/{instance_id}")).text
    finally:
        await alice.close()
        await bob.close()


async def test_callback_with_another_sessions_state_is_refused(
    daemon: Any, pool: asyncpg.Pool, emu: Any
) -> None:
    alice = await signed_in(daemon, pool, "alice")
    mallory = await signed_in(daemon, pool, "mallory")
    try:
        # Alice starts a consent; her state comes back in the redirect to Intuit.
        async with alice.session.post(
            daemon.root + "/ui/connect", data={"csrf": alice.csrf}, allow_redirects=False
        ) as response:
            assert response.status == 302
            consent = response.headers["Location"]
        assert consent.startswith(f"{emu.base_url}/connect/oauth2?")
        state = re.search(r"state=([^&]+)", consent).group(1)  # type: ignore[union-attr]
        realm = next(iter(emu.realms))
        code = emu.issue_auth_code(realm, redirect_uri=f"{daemon.root}/ui/oauth/callback")
        stolen = await mallory.get("/ui/oauth/callback", code=code, state=state, realmId=realm)
        assert stolen.status == 400 and "state does not match" in stolen.text
        forged = await alice.get("/ui/oauth/callback", code=code, state="forged", realmId=realm)
        assert forged.status == 400
        new = await mallory.get("/ui/instances/new")
        assert 'id="connected"' not in new.text
    finally:
        await alice.close()
        await mallory.close()


async def test_denied_consent_shows_intuits_error(daemon: Any, pool: asyncpg.Pool) -> None:
    client = await signed_in(daemon, pool, "alice")
    try:
        async with client.session.post(
            daemon.root + "/ui/connect", data={"csrf": client.csrf}, allow_redirects=False
        ) as response:
            state = re.search(r"state=([^&]+)", response.headers["Location"]).group(1)  # type: ignore[union-attr]
        denied = await client.get(
            "/ui/oauth/callback",
            error="access_denied",
            error_description="User denied access",
            state=state,
        )
        assert denied.status == 400
        assert "access_denied" in denied.text and "User denied access" in denied.text
    finally:
        await client.close()


async def test_script_in_a_name_renders_as_text(daemon: Any, pool: asyncpg.Pool) -> None:
    client = await signed_in(daemon, pool, "alice")
    try:
        instance_id = await create_instance(
            client, "<script>alert(1)</script>", "http://127.0.0.1:9/hook"
        )
        for path in ("/ui/instances", f"/ui/instances/{instance_id}"):
            page = await client.get(path)
            assert "<script>alert(1)</script>" not in page.text
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    finally:
        await client.close()


async def test_validation_errors_next_to_their_field_in_the_apis_words(
    daemon: Any, pool: asyncpg.Pool
) -> None:
    client = await signed_in(daemon, pool, "alice")
    try:
        await client.post("/ui/connect", {})
        refused = await client.post(
            "/ui/instances/new",
            instance_form("Bad", "not a url", ["customers"]),
        )
        assert refused.status == 400
        match = re.search(r'id="error-callback_url"[^>]*>([^<]*)<', refused.text)
        assert match is not None, refused.text
        assert "event.notification.callback.url=" in match.group(1)
        assert 'value="Bad"' in refused.text  # the form keeps what was typed
        # The code was not spent: fixing the field creates the instance.
        fixed = await client.post(
            "/ui/instances/new", instance_form("Good", "http://127.0.0.1:9/hook", ["customers"])
        )
        assert fixed.status == 200 and "Instance created" in fixed.text
    finally:
        await client.close()


async def test_rotate_ends_sessions_and_sessions_survive_a_restart(
    emu: Any, db_dsn: str, pool: asyncpg.Pool
) -> None:
    emu.add_realm(seed=1)
    secret = await add_user(pool, "alice")
    async with running_daemon(emu, db_dsn) as api:
        client = ConsoleClient.open(api.root)
        await client.sign_in(secret, ORG_SECRET)
        jar = client.session.cookie_jar
    async with running_daemon(emu, db_dsn) as api:
        client.root = api.root
        page = await client.get("/ui/instances")
        assert page.url.endswith("/ui/instances"), "a session survives a restart"
        async with pool.acquire() as conn:
            assert await users.rotate(conn, "alice") is not None
        page = await client.get("/ui/instances")
        assert page.url.endswith("/ui/signin"), "users rotate ends the session"
        assert jar is client.session.cookie_jar
        await client.close()


async def test_pause_resume_poll_now_and_delete_with_confirmation(
    daemon: Any, pool: asyncpg.Pool
) -> None:
    client = await signed_in(daemon, pool, "alice")
    async with receiver() as hook:
        try:
            instance_id = await create_instance(client, "Ops", hook.url)
            base = f"/ui/instances/{instance_id}"
            assert "Paused" in (await client.post(f"{base}/pause", {})).text
            assert 'id="resume"' in (await client.get(base)).text
            assert "Resumed" in (await client.post(f"{base}/resume", {})).text
            assert "Poll requested" in (await client.post(f"{base}/poll", {})).text
            wrong = await client.post(f"{base}/delete", {"confirm_name": "nope"})
            assert wrong.status == 400 and (await client.get(base)).status == 200
            gone = await client.post(f"{base}/delete", {"confirm_name": "Ops"})
            assert gone.url.endswith("/ui/instances?done=deleted")
            assert (await client.get(base)).status == 404
        finally:
            await client.close()


async def test_control_characters_refused_in_the_form_and_urls_redacted_in_the_list(
    daemon: Any, pool: asyncpg.Pool
) -> None:
    """Issue 16: a name with a terminal escape is refused next to its field, the message
    escaped; the deliveries list shows a URL without credentials or query."""
    client = await signed_in(daemon, pool, "alice")
    try:
        await client.post("/ui/connect", {})
        refused = await client.post(
            "/ui/instances/new", instance_form("evil\x1b[31m", "http://127.0.0.1:9/h", ["bills"])
        )
        assert refused.status == 400
        match = re.search(r'id="error-name"[^>]*>([^<]*)<', refused.text)
        assert match is not None, refused.text
        assert "\x1b" not in match.group(1)
        # The field keeps what was typed, as for any refusal (HTML-escaped; a page is not a
        # terminal): submitting it again is refused again rather than silently changed.
        assert 'value="evil\x1b[31m"' in refused.text
        assert match.group(1).endswith(
            "name=&#39;evil\\x1b[31m&#39;: control characters (CR, LF, ESC, ...) are not allowed"
        )
    finally:
        await client.close()
    url = "http://alice:s3cr3t-pass@127.0.0.1:9/hook?token=tok-abc123"
    iid = await insert_instance(pool, url, name="held-one")
    await insert_many(pool, iid, 1, notify=False)
    await pool.execute("UPDATE notifications SET status = 'held', target_url = $1", url)
    admin = ConsoleClient.open(daemon.root)
    try:
        page = await admin.sign_in(await add_user(pool, "root", admin=True), ORG_SECRET)
        assert page.status == 200
        listed = await admin.get("/ui/deliveries")
        assert listed.status == 200 and "<td>http://***@127.0.0.1:9/hook?***</td>" in listed.text
        assert "s3cr3t-pass" not in listed.text and "tok-abc123" not in listed.text
    finally:
        await admin.close()


async def test_field_changes_option_and_event_page_show_changes_escaped(
    emu: Any, daemon: Any, pool: asyncpg.Pool
) -> None:
    """DESIGN §10, §12: the form's "Field changes" box sets `event.poller.changes`, and the
    event page lists each change (path, before, after), escaped."""
    client = await signed_in(daemon, pool, "alice")
    try:
        await client.post("/ui/connect", {})
        form = instance_form("Diffs", "http://127.0.0.1:9/hook", ["customers"], changes="on")
        created = await client.post("/ui/instances/new", form)
        assert created.status == 200, created.text
        match = re.search(r"/ui/instances/(\d+)", created.url)
        assert match is not None
        instance_id = int(match.group(1))
        row = await pool.fetchrow(
            "SELECT realm_id, changes FROM instances WHERE id = $1", instance_id
        )
        assert row["changes"] is True
        edit = await client.get(f"/ui/instances/{instance_id}/edit")
        assert re.search(r'id="changes" name="changes" checked', edit.text), "kept on edit"
        realm = row["realm_id"]
        cid = emu.ids(realm, "Customer", include_inactive=False)[0]

        async def initialized() -> bool:
            return bool(
                await pool.fetchval(
                    "SELECT initialized FROM pair_cursors WHERE instance_id = $1", instance_id
                )
            )

        async def event_of(version: str) -> Any:
            async def there() -> bool:
                return bool(
                    await pool.fetchval("SELECT count(*) FROM events WHERE version = $1", version)
                )

            await eventually(there, timeout=15)
            return await pool.fetchval(
                "SELECT n.event_id FROM events e JOIN notifications n ON n.id = e.notification_id"
                " WHERE e.version = $1",
                version,
            )

        await eventually(initialized, timeout=15)
        first = emu.update(realm, "Customer", {"Id": cid, "Notes": "plain"})
        unknown_id = await event_of(first["SyncToken"])
        second = emu.update(realm, "Customer", {"Id": cid, "Notes": "<script>x()</script>"})
        known_id = await event_of(second["SyncToken"])

        page = await client.get(f"/ui/instances/{instance_id}/events/{known_id}")
        assert page.status == 200
        table = re.search(r'<table class="changes"[^>]*>(.*?)</table>', page.text, re.S)
        assert table is not None, page.text
        cells = re.findall(r"<td>(.*?)</td>", table.group(1), re.S)
        assert cells == [
            "<code>/Notes</code>",
            "<code>&#34;plain&#34;</code>",
            "<code>&#34;&lt;script&gt;x()&lt;/script&gt;&#34;</code>",
        ]
        assert "<script>x()" not in page.text
        unknown = await client.get(f"/ui/instances/{instance_id}/events/{unknown_id}")
        assert 'class="changes-unknown"' in unknown.text
    finally:
        await client.close()
