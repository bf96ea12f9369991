"""OAuth 2.0 token endpoint, bearer checks and revocation (reference §6)."""

from __future__ import annotations

import base64
from typing import Any

import aiohttp

from qbo_emulator import Emulator

from .conftest import Api, Reply, present

REDIRECT = "https://app.example/oauth"


def basic(emu: Emulator, secret: str | None = None) -> dict[str, str]:
    raw = f"{emu.client_id}:{secret or emu.client_secret}".encode()
    return {
        "Authorization": "Basic " + base64.b64encode(raw).decode(),
        "Accept": "application/json",
    }


async def token(
    session: aiohttp.ClientSession,
    emu: Emulator,
    form: dict[str, str],
    headers: dict[str, str] | None = None,
) -> Reply:
    async with session.post(
        present(emu.token_url), data=form, headers=headers if headers is not None else basic(emu)
    ) as r:
        return Reply(r.status, r.headers, await r.read())


async def test_code_exchange_is_single_use(
    emu: Emulator, realm: str, session: aiohttp.ClientSession
) -> None:
    code = emu.issue_auth_code(realm, emu.client_id, REDIRECT)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    first = await token(session, emu, form)
    assert first.status == 200 and first.headers["intuit_tid"]
    body = first.json
    assert list(body) == [
        "token_type",
        "expires_in",
        "refresh_token",
        "x_refresh_token_expires_in",
        "access_token",
    ]
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600
    assert body["x_refresh_token_expires_in"] == 8726400
    api = Api(session, emu, realm, body["access_token"])
    assert (await api.query("select * from Term")).status == 200
    second = await token(session, emu, form)
    assert second.status == 400 and second.json == {"error": "invalid_grant"}
    # the replay poisons what the first exchange issued
    assert (await api.query("select * from Term")).status == 401
    refreshed = await token(
        session, emu, {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}
    )
    assert refreshed.json["error"] == "invalid_grant"


async def test_code_bound_to_redirect_uri_and_client(
    emu: Emulator, realm: str, session: aiohttp.ClientSession
) -> None:
    code = emu.issue_auth_code(realm, emu.client_id, REDIRECT)
    wrong = await token(
        session,
        emu,
        {"grant_type": "authorization_code", "code": code, "redirect_uri": "https://evil"},
    )
    assert wrong.status == 400 and wrong.json["error"] == "invalid_grant"
    bad_secret = await token(
        session,
        emu,
        {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT},
        headers=basic(emu, "nope"),
    )
    assert bad_secret.status == 401 and bad_secret.json == {"error": "invalid_client"}
    # client_secret_post is accepted too
    post_auth = await token(
        session,
        emu,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": emu.client_id,
            "client_secret": emu.client_secret,
        },
        headers={},
    )
    assert post_auth.status == 200
    unsupported = await token(session, emu, {"grant_type": "password"})
    assert unsupported.json == {"error": "unsupported_grant_type"}


async def test_refresh_rotates_and_supersedes(
    emu: Emulator, realm: str, session: aiohttp.ClientSession
) -> None:
    issued = emu.issue_tokens(realm)
    r1 = await token(
        session,
        emu,
        {"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]},
        headers={**basic(emu), "x-include-refresh-token-hard-expires-in": "true"},
    )
    assert r1.status == 200
    new = r1.json
    assert (
        new["refresh_token"] != issued["refresh_token"]
        and new["access_token"] != issued["access_token"]
    )
    assert 0 < new["x_refresh_token_hard_expires_in"] <= 5 * 365 * 86400
    old = await token(
        session, emu, {"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]}
    )
    assert old.status == 400
    assert old.json == {
        "error_description": "Incorrect or invalid refresh token",
        "error": "invalid_grant",
    }
    r2 = await token(
        session, emu, {"grant_type": "refresh_token", "refresh_token": new["refresh_token"]}
    )
    assert r2.status == 200 and "x_refresh_token_hard_expires_in" not in r2.json
    assert emu.counters(realm)["token"] == 3


async def test_daily_rotation_and_grace(
    emu: Emulator, realm: str, session: aiohttp.ClientSession
) -> None:
    emu.configure_oauth(refresh_rotation="daily", refresh_grace_seconds=600)
    emu.clock.freeze()
    first = emu.issue_tokens(realm)["refresh_token"]

    async def refresh(value: str) -> dict[str, Any]:
        form = {"grant_type": "refresh_token", "refresh_token": value}
        body: dict[str, Any] = (await token(session, emu, form)).json
        return body

    emu.clock.advance(hours=5)
    assert (await refresh(first))["refresh_token"] == first  # same value within the day
    emu.clock.advance(hours=20)
    second = (await refresh(first))["refresh_token"]
    assert second != first
    emu.clock.advance(seconds=300)
    assert (await refresh(first))["refresh_token"] == second  # within the grace period
    emu.clock.advance(seconds=301)
    assert (await refresh(first))["error"] == "invalid_grant"
    assert (await refresh(second))["refresh_token"] == second


async def test_access_token_expires_on_the_emulator_clock(emu: Emulator, api: Api) -> None:
    assert (await api.query("select * from Term")).status == 200
    emu.clock.advance(seconds=3599)
    assert (await api.query("select * from Term")).status == 200
    emu.clock.advance(seconds=2)
    expired = await api.query("select * from Term")
    assert expired.status == 401
    assert expired.headers["WWW-Authenticate"] == 'Bearer realm="Intuit", error="invalid_token"'
    body = expired.json
    assert body["fault"]["type"] == "AUTHENTICATION" and isinstance(body["time"], int)
    (error,) = body["fault"]["error"]
    assert error["code"] == "3200" and error["detail"].startswith("Token expired: ")
    assert error["message"] == "message=AuthenticationFailed; errorCode=003200; statusCode=401"


async def test_configurable_lifetime_and_xml_style(emu: Emulator, api: Api) -> None:
    emu.configure_oauth(access_token_lifetime=60)
    emu.expired_token_fault = "xml"
    api.token = emu.issue_tokens(api.realm)["access_token"]
    emu.clock.advance(seconds=61)
    reply = await api.query("select * from Term")
    assert reply.status == 401 and reply.headers["Content-Type"] == "application/xml"
    assert b'<Fault type="AuthenticationFault"><Error code="100">' in reply.body


async def test_unknown_missing_and_foreign_tokens(emu: Emulator, api: Api) -> None:
    api.token = "eyJlbmMiOiJBMTI4Q0JDLUhTMjU2IiwiYWxnIjoiZGlyIn0..forged.token.value"
    unknown = await api.query("select * from Term")
    assert unknown.status == 401 and unknown.json["fault"]["error"][0]["code"] == "3200"
    api.token = "short"
    assert (
        "Malformed" in (await api.query("select * from Term")).json["fault"]["error"][0]["detail"]
    )
    api.token = None
    missing = await api.query("select * from Term")
    assert missing.status == 401 and missing.body.startswith(b"<?xml")
    other = emu.add_realm("42")
    api.token = emu.issue_tokens(other)["access_token"]
    assert (await api.query("select * from Term")).status == 403  # valid token, other realm


async def test_revoke(emu: Emulator, api: Api) -> None:
    tokens = emu.issue_tokens(api.realm)
    api.token = tokens["access_token"]
    assert (await api.query("select * from Term")).status == 200
    async with api.session.post(
        present(emu.revoke_url), json={"token": tokens["refresh_token"]}, headers=basic(emu)
    ) as r:
        assert r.status == 200
    assert (await api.query("select * from Term")).status == 401
    again = await token(
        api.session, emu, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert again.json["error"] == "invalid_grant"
    async with api.session.post(
        present(emu.revoke_url), json={"token": "x"}, headers=basic(emu, "wrong")
    ) as r:
        assert r.status == 401


async def test_discovery_document_and_authorize(
    emu: Emulator, realm: str, session: aiohttp.ClientSession
) -> None:
    async with session.get(present(emu.discovery_url)) as r:
        doc = await r.json(content_type=None)
    assert doc["token_endpoint"] == emu.token_url and doc["revocation_endpoint"] == emu.revoke_url
    params = {
        "client_id": emu.client_id,
        "response_type": "code",
        "scope": "com.intuit.quickbooks.accounting",
        "redirect_uri": REDIRECT,
        "state": "xyz",
        "realmId": realm,
    }
    async with session.get(
        doc["authorization_endpoint"], params=params, allow_redirects=False
    ) as r:
        assert r.status == 302
        location = r.headers["Location"]
    assert (
        location.startswith(REDIRECT + "?code=")
        and "state=xyz" in location
        and f"realmId={realm}" in location
    )
