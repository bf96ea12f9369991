"""``python -m qbo_emulator``: prints its URLs and tokens, serves, exits 0 on SIGTERM."""

from __future__ import annotations

import asyncio
import base64
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from qbo_emulator import control
from qbo_emulator.cli import main


async def test_cli_serves_and_stops_on_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "qbo_emulator",
        "--port",
        "0",
        "--realm",
        "111",
        "--realm",
        "222",
        "--per-entity",
        "3",
        "--access-token-lifetime",
        "120",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    stdout, stderr = proc.stdout, proc.stderr
    try:
        lines: dict[str, str] = {}
        tokens: dict[str, str] = {}
        while len(tokens) < 2:
            raw = await asyncio.wait_for(stdout.readline(), timeout=15)
            assert raw, (await stderr.read()).decode()
            text = raw.decode().strip()
            if text.startswith("realm="):
                realm, refresh = (part.split("=", 1)[1] for part in text.split())
                tokens[realm] = refresh
            elif "=" in text:
                key, value = text.split("=", 1)
                lines[key] = value
        assert lines["base_url"].startswith("http://127.0.0.1:")
        assert lines["token_url"] == lines["base_url"] + "/oauth2/v1/tokens/bearer"
        async with aiohttp.ClientSession() as s:
            basic = base64.b64encode(
                f"{lines['client_id']}:{lines['client_secret']}".encode()
            ).decode()
            form = {"grant_type": "refresh_token", "refresh_token": tokens["222"]}
            async with s.post(
                lines["token_url"], data=form, headers={"Authorization": f"Basic {basic}"}
            ) as r:
                body = await r.json(content_type=None)
            assert body["expires_in"] == 120
            headers = {
                "Authorization": f"Bearer {body['access_token']}",
                "Accept": "application/json",
            }
            async with s.get(
                f"{lines['base_url']}/v3/company/222/query",
                params={"query": "select count(*) from Customer"},
                headers=headers,
            ) as r:
                assert (await r.json(content_type=None))["QueryResponse"] == {"totalCount": 3}
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), timeout=10)
    assert code == 0


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--port", "not-a-number"]) == 2
    assert main(["--help"]) == 0


def test_every_control_route_is_in_the_user_docs() -> None:
    """docs/emulator.md documents the control API: each route of control.py appears in it."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "emulator.md").read_text()
    app = web.Application()
    control.add_routes(app)
    missing = []
    for resource in app.router.resources():
        template = resource.canonical
        pattern = re.sub(r"\\\{\w+\\\}", r"[^/\\s\"'`]+", re.escape(template))
        if not re.search(pattern + r"(?=[\s\"'`?]|$)", docs):
            missing.append(template)
    assert missing == []
