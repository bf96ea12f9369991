"""``--state``: ids, objects, tokens and the clock survive a restart (issue 14)."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from qbo_emulator import Emulator
from qbo_emulator.clock import Clock
from qbo_emulator.state import CRASH_ID_GAP

from .conftest import present

REALM = "9130350000000151"


def test_save_and_load_keep_ids_objects_tokens_and_clock(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    first = Emulator()
    first.add_realm(REALM, seed=4, per_entity=3)
    first.clock.advance(days=2)
    created = first.create(REALM, "Customer", {"DisplayName": "Before Restart"})
    invoice_id = first.ids(REALM, "Invoice")[0]
    first.delete(REALM, "Invoice", invoice_id)
    tokens = first.issue_tokens(REALM)
    first.save_state(path)

    second = Emulator()
    assert second.load_state(path) is True
    assert second.get(REALM, "Customer", created["Id"]) == created
    assert second.get(REALM, "Invoice", invoice_id) is None
    again = second.create(REALM, "Customer", {"DisplayName": "After Restart"})
    assert int(again["Id"]) == int(created["Id"]) + 1  # the id sequence goes on
    since = (second.clock.now() - timedelta(minutes=5)).isoformat()
    changes = second.cdc(REALM, "Invoice,Customer", since)["CDCResponse"][0]["QueryResponse"]
    seen = {
        (name, row["Id"])
        for group in changes
        for name, rows in group.items()
        if isinstance(rows, list)
        for row in rows
    }
    assert ("Invoice", invoice_id) in seen and ("Customer", created["Id"]) in seen
    assert second.oauth.check(f"Bearer {tokens['access_token']}", REALM).ok
    refreshed, _ = second.oauth.token_request(
        {
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": second.client_id,
            "client_secret": second.client_secret,
        },
        None,
    )
    assert refreshed["access_token"]
    drift = abs((second.clock.now() - first.clock.now()).total_seconds())
    assert drift < 5  # the two-day offset came back


def test_a_loaded_realm_still_sends_webhooks(tmp_path: Path) -> None:
    first = Emulator()
    first.add_realm(REALM, seed=4, per_entity=1)
    first.save_state(tmp_path / "s.json")
    second = Emulator()
    second.load_state(tmp_path / "s.json")
    second.configure_webhooks(None, "http://127.0.0.1:9/hooks", "verifier")
    second.create(REALM, "Customer", {"DisplayName": "Announced After Restart"})
    assert second.webhooks.pending() == 1


def test_frozen_clock_and_missing_file(tmp_path: Path) -> None:
    emu = Emulator(clock=Clock(frozen=True))
    emu.clock.advance(hours=3)
    emu.save_state(tmp_path / "s.json")
    other = Emulator()
    assert other.load_state(tmp_path / "missing.json") is False
    other.load_state(tmp_path / "s.json")
    assert other.clock.frozen and other.clock.now() == emu.clock.now()


async def _start(path: Path, *options: str) -> tuple[asyncio.subprocess.Process, dict[str, str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "qbo_emulator",
        "--port",
        "0",
        "--realm",
        REALM,
        "--per-entity",
        "3",
        "--state",
        str(path),
        *options,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout = present(proc.stdout)
    lines: dict[str, str] = {}
    while "realm" not in lines:
        raw = await asyncio.wait_for(stdout.readline(), timeout=15)
        assert raw, (await present(proc.stderr).read()).decode()
        key, _, value = raw.decode().strip().partition("=")
        lines[key] = value
    return proc, lines


async def _stop(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), timeout=10) == 0


async def test_cli_restart_with_state_keeps_ids_objects_and_tokens(tmp_path: Path) -> None:
    path = tmp_path / "emulator-state.json"
    proc, lines = await _start(path)
    base = lines["base_url"]
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{base}/_emulator/oauth/tokens", json={"realm_id": REALM}
            ) as reply:
                tokens = await reply.json()
            async with session.post(
                f"{base}/_emulator/realms/{REALM}/entities/Customer",
                json={"DisplayName": "Kept Across Restarts"},
            ) as reply:
                kept = await reply.json()
    finally:
        await _stop(proc)
    assert path.exists()

    proc, lines = await _start(path)
    base = lines["base_url"]
    try:
        async with aiohttp.ClientSession() as session:
            headers = {
                "Authorization": f"Bearer {tokens['access_token']}",
                "Accept": "application/json",
            }
            async with session.get(
                f"{base}/v3/company/{REALM}/customer/{kept['Id']}", headers=headers
            ) as reply:
                assert reply.status == 200  # the old access token still works
                assert (await reply.json())["Customer"]["DisplayName"] == "Kept Across Restarts"
            async with session.post(
                f"{base}/_emulator/realms/{REALM}/entities/Customer",
                json={"DisplayName": "Made After Restart"},
            ) as reply:
                assert int((await reply.json())["Id"]) == int(kept["Id"]) + 1
            async with session.post(
                f"{base}/oauth2/v1/tokens/bearer",
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": tokens["refresh_token"],
                    "client_id": lines["client_id"],
                    "client_secret": lines["client_secret"],
                },
            ) as reply:
                assert reply.status == 200  # the old refresh token still works
    finally:
        await _stop(proc)


async def _customer(session: aiohttp.ClientSession, base: str, name: str) -> dict[str, Any]:
    async with session.post(
        f"{base}/_emulator/realms/{REALM}/entities/Customer", json={"DisplayName": name}
    ) as reply:
        assert reply.status == 200
        made: dict[str, Any] = await reply.json()
        return made


async def _saved_names(path: Path) -> set[str]:
    """The customers' names in the state file (retried over a rename in progress)."""
    for _ in range(20):
        try:
            data = orjson.loads(path.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            await asyncio.sleep(0.05)
            continue
        (realm,) = data["realms"]
        return {obj.get("DisplayName") for *_, obj in realm["tables"]["Customer"]["live"]}
    raise AssertionError(f"{path} never became readable")


async def test_kill_9_keeps_the_last_periodic_save_and_hands_out_no_id_twice(
    tmp_path: Path,
) -> None:
    """docs/emulator.md: a kill -9 loses the writes after the last periodic save, and the ids
    those writes took are skipped (CRASH_ID_GAP), never handed out again."""
    path = tmp_path / "emulator-state.json"
    proc, lines = await _start(path, "--state-interval", "2")
    try:
        async with aiohttp.ClientSession() as session:
            saved = await _customer(session, lines["base_url"], "Saved Periodically")
            deadline = time.monotonic() + 10
            while not path.exists() or "Saved Periodically" not in await _saved_names(path):
                assert time.monotonic() < deadline, "no periodic save within 10 s"
                await asyncio.sleep(0.05)
            # just after a save: the next one is two seconds away
            lost = await _customer(session, lines["base_url"], "Lost In The Crash")
            proc.kill()  # SIGKILL: no shutdown save
            assert await asyncio.wait_for(proc.wait(), timeout=10) == -signal.SIGKILL
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    names = await _saved_names(path)
    assert "Saved Periodically" in names and "Lost In The Crash" not in names

    proc, lines = await _start(path)
    try:
        async with aiohttp.ClientSession() as session:
            base = lines["base_url"]
            async with session.get(
                f"{base}/_emulator/realms/{REALM}/entities/Customer/{saved['Id']}"
            ) as reply:
                assert reply.status == 200
            async with session.get(
                f"{base}/_emulator/realms/{REALM}/entities/Customer/{lost['Id']}"
            ) as reply:
                assert reply.status == 404  # lost, as documented
            after = await _customer(session, base, "Made After The Crash")
            assert int(after["Id"]) == int(saved["Id"]) + 1 + CRASH_ID_GAP
            assert int(after["Id"]) > int(lost["Id"])  # the lost id is not reused
    finally:
        await _stop(proc)
    # a shutdown save needs no gap: ids go on from the last one
    proc, lines = await _start(path)
    try:
        async with aiohttp.ClientSession() as session:
            again = await _customer(session, lines["base_url"], "After A Clean Stop")
            assert int(again["Id"]) == int(after["Id"]) + 1
    finally:
        await _stop(proc)
