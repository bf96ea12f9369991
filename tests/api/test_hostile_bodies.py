"""Hostile instance bodies through the real API (a running daemon on loopback): every one of
tests/unit/test_input_limits.py's bodies is a 400 whose message is the same exact line the CLI
prints, nothing is created, and no value that is or may hold a secret is echoed."""

from __future__ import annotations

import copy
from typing import Any

import asyncpg

from poller import logs
from tests.api.harness import add_user, refresh_body, running_daemon
from tests.unit.test_input_limits import HOSTILE, PASTED_SECRET, PREFIX


def with_refresh_token(body: dict[str, Any], token: str) -> dict[str, Any]:
    """The shared body with the emulator's refresh token where it carries a code (a code would
    be exchanged: these bodies must be refused before that)."""
    body = copy.deepcopy(body)
    data = body.get("providerData")
    if isinstance(data, dict) and isinstance(data.get("code"), str):
        body["providerData"] = {"refreshToken": token, "realmId": data["realmId"]}
    return body


async def test_every_hostile_body_is_a_400_with_the_cli_s_line(
    emu: Any, pool: asyncpg.Pool, db_dsn: str
) -> None:
    realm = emu.add_realm(seed=1)
    secret = await add_user(pool, "alice")
    token = emu.issue_tokens(realm)["refresh_token"]
    async with running_daemon(emu, db_dsn) as api:
        api.user_secret = secret
        for case, (body, message) in sorted(HOSTILE.items()):
            answer = await api.call("POST", "/instances", with_refresh_token(body, token))
            assert answer.status == 400, (case, answer.body)
            assert answer.body["message"] == message, case
            assert not logs.CONTROL_CHARS.search(answer.body["message"])
            assert PASTED_SECRET not in answer.body["message"]
        listed = await api.call("GET", "/instances")
        assert listed.status == 200 and listed.body == []


async def test_patch_and_put_apply_the_same_limits(
    emu: Any, pool: asyncpg.Pool, db_dsn: str
) -> None:
    realm = emu.add_realm(seed=1)
    secret = await add_user(pool, "alice")
    async with running_daemon(emu, db_dsn) as api:
        api.user_secret = secret
        created = await api.call("POST", "/instances", refresh_body(emu, realm, "API Instance"))
        assert created.status == 200, created.body
        path = f"/instances/{created.body['id']}"
        as_string = await api.call("PATCH", path, {"configuration": f"secret={PASTED_SECRET}"})
        assert as_string.status == 400
        assert as_string.body["message"] == (  # a patch without a name: no name to show
            "instance: configuration: expected a JSON object, got a string "
            "(not shown: it may hold secrets)"
        )
        ansi = await api.call("PATCH", path, {"name": "evil\x1b[2J"})
        assert ansi.status == 400
        assert ansi.body["message"] == (
            "instance 'evil\\x1b[2J': name='evil\\x1b[2J': "
            "control characters (CR, LF, ESC, ...) are not allowed"
        )
        typed = await api.call("PATCH", path, {"providerData": {"code": ["x"], "realmId": realm}})
        assert typed.status == 400
        assert typed.body["message"] == (
            PREFIX + "providerData.code=<hidden>: expected a string, got an array"
        )
        body = refresh_body(emu, realm, "API Instance")
        body["configuration"]["event.poller.urls"] = "bills" * 1000
        long_list = await api.call("PUT", path, body)
        assert long_list.status == 400
        assert long_list.body["message"] == (
            PREFIX + "event.poller.urls: longer than 4096 characters (5000)"
        )
        unchanged = await api.call("GET", path)
        assert unchanged.body["name"] == "API Instance"
        assert unchanged.body["resources"] == ["customers", "invoices"]


async def test_a_body_that_is_not_utf8_says_where(
    emu: Any, pool: asyncpg.Pool, db_dsn: str
) -> None:
    secret = await add_user(pool, "alice")
    async with running_daemon(emu, db_dsn) as api:
        api.user_secret = secret
        answer = await api.call("POST", "/instances", raw=b'{\n "name": "caf\xe9"}')
        assert answer.status == 400
        assert answer.body["message"] == (
            "invalid JSON: the body is not UTF-8: byte 0xe9 at line 2 column 14 (byte offset 15)"
        )
