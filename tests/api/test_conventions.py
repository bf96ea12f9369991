"""Conventions and hostile input (DESIGN §9), the OAuth URL, the API switched off, the
OpenAPI document and its page."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
from openapi_spec_validator import validate

from poller.web.api.routes import BASE_PATH, ROUTES
from tests.api.harness import add_user, refresh_body, running_daemon

REQUEST_ID = re.compile(r"^[0-9a-f]{24}$")


async def test_hostile_bodies(emu: Any, pool: asyncpg.Pool, db_dsn: str) -> None:
    realm = emu.add_realm(seed=1)
    secret = await add_user(pool, "alice")
    async with running_daemon(emu, db_dsn) as api:
        api.user_secret = secret
        big = await api.call("POST", "/instances", raw=b"{" + b" " * (1024 * 1024) + b"}")
        assert big.status == 413
        text = await api.call("POST", "/instances", raw="name=x", content_type="text/plain")
        assert text.status == 415
        deep = await api.call("POST", "/instances", raw="[" * 100 + "]" * 100)
        assert deep.status == 400 and "nested deeper" in deep.body["message"]
        wide = await api.call("POST", "/instances", raw=json.dumps({"tags": ["t"] * 20_000}))
        assert wide.status == 400 and "array" in wide.body["message"]
        nan = await api.call("POST", "/instances", raw='{"name": NaN}')
        assert nan.status == 400
        secret_in_body = '{"name": "x", "configuration": {"oauth.api.secret": "hunter2-secret",}}'
        broken = await api.call("POST", "/instances", raw=secret_in_body)
        assert broken.status == 400 and broken.body["message"].startswith("invalid JSON at line 1")
        assert "hunter2" not in broken.body["message"], "the body is never quoted back"
        empty = await api.call("POST", "/instances", raw="")
        assert empty.status == 400
        shape = await api.call("POST", "/instances", {"name": 5})
        assert shape.status == 400
        assert shape.body["message"] == "instance: name=5: expected a string, got a number"
        # Names with markup are stored as given and answered as JSON; a control character is
        # refused (issue 16: a terminal or a log would show something else), shown escaped.
        name = "<script>alert(1)</script>"
        bell = await api.call(
            "POST", "/instances", refresh_body(emu, realm, name + "\u0007", enabled=False)
        )
        assert bell.status == 400 and bell.body["message"] == (
            "instance '<script>alert(1)</script>\\x07': name='<script>alert(1)</script>\\x07': "
            "control characters (CR, LF, ESC, ...) are not allowed"
        )
        created = await api.call(
            "POST", "/instances", refresh_body(emu, realm, name, enabled=False)
        )
        assert created.status == 200 and created.body["name"] == name
        assert created.headers["Content-Type"].startswith("application/json")
        for answer in (big, text, deep, wide, broken, empty, created):
            assert REQUEST_ID.match(answer.headers["Elements-Request-Id"])
        unknown = await api.call("GET", "/no/such/route")
        assert unknown.status == 404 and REQUEST_ID.match(unknown.body["requestId"])


async def test_oauth_url(emu: Any, pool: asyncpg.Pool, db_dsn: str) -> None:
    secret = await add_user(pool, "alice")
    async with running_daemon(emu, db_dsn) as api:
        api.user_secret = secret
        for method in ("GET", "POST"):
            answer = await api.call(
                method,
                "/elements/quickbooks/oauth/url",
                params={"callbackUrl": "https://myapp.example/oauth", "apiSecret": "ignored-1"},
            )
            assert answer.status == 200, answer.body
            assert answer.body["element"] == "quickbooks"
            url = urlsplit(answer.body["oauthUrl"])
            assert f"{url.scheme}://{url.netloc}{url.path}" == f"{emu.base_url}/connect/oauth2"
            query = parse_qs(url.query)
            assert query["client_id"] == [emu.client_id]
            assert query["scope"] == ["com.intuit.quickbooks.accounting"]
            assert query["state"] == ["quickbooks"]
            assert query["redirect_uri"] == ["https://myapp.example/oauth"]
            assert "ignored-1" not in answer.body["oauthUrl"]


async def test_api_off_answers_404_naming_the_variable(
    emu: Any, pool: asyncpg.Pool, db_dsn: str
) -> None:
    async with running_daemon(emu, db_dsn, api_organization_secret=None) as api:
        for method, path in [("GET", "/instances"), ("POST", "/instances"), ("GET", "/docs")]:
            answer = await api.call(method, path, {"name": "x"})
            assert answer.status == 404
            assert "POLLER_API_ORGANIZATION_SECRET" in answer.body["message"]
        async with api.session.get(api.root + "/healthz") as response:
            assert response.status == 200


async def test_openapi_document_validates_and_matches_the_routes(emu: Any, db_dsn: str) -> None:
    async with running_daemon(emu, db_dsn) as api:
        answer = await api.call("GET", "/openapi.json", authorization="")
        assert answer.status == 200
        document = answer.body
        validate(document)
        assert document["openapi"] == "3.1.0"
        assert document["servers"] == [{"url": BASE_PATH}]
        documented = {
            (method.upper(), path)
            for path, operations in document["paths"].items()
            for method in operations
        }
        assert documented == {(route.method, route.path) for route in ROUTES}
        # The running app serves each documented route (not 404/405 for lack of a route).
        for method, path in sorted(documented):
            concrete = path.replace("{id}", "1").replace("{eventId}", "x")
            probe = await api.call(method, concrete, authorization="")
            assert probe.status not in (404, 405) or probe.body["message"].startswith("no "), (
                method,
                path,
                probe.status,
                probe.body,
            )
        page = await api.call("GET", "/docs", authorization="")
        assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
        assert "<script" not in page.body
        for path in document["paths"]:
            assert f"<code>{path}</code>" in page.body
