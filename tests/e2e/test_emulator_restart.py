"""End to end through an emulator restart (issue 14): a `qbo-poller run` process polls a
`qbo-emulator --state FILE` process; the emulator is stopped with SIGTERM in the middle of the
run and started again on the same port with the same state file.  Every change, made before,
just before and after the restart, reaches the receiver exactly once, ids go on where they
stopped, and the instance never goes to needs_reconnect (its tokens survived)."""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from poller.demo.receiver import Receiver, run_receiver
from tests.e2e.daemon import Daemon, base_env, free_port, write_instances

REALM = "4620816365100201"
REDIRECT = "http://127.0.0.1/oauth"
ACCESS_TOKEN_LIFETIME_S = "4"  # short: the daemon refreshes across the restart too


class EmulatorProcess:
    """`python -m qbo_emulator` on a fixed port with a state file, its output in a log."""

    def __init__(self, port: int, state: Path, log: Path) -> None:
        self.port, self.state, self.log = port, state, log
        self.base = f"http://127.0.0.1:{port}"
        self.lines: dict[str, str] = {}
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        offset = self.log.stat().st_size if self.log.exists() else 0  # this run's lines only
        with open(self.log, "ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "qbo_emulator",
                "--port",
                str(self.port),
                "--realm",
                REALM,
                "--per-entity",
                "3",
                "--access-token-lifetime",
                ACCESS_TOKEN_LIFETIME_S,
                "--state",
                str(self.state),
                "--state-interval",
                "1",
                stdout=out,
                stderr=out,
            )
        deadline = time.monotonic() + 30
        while "realm" not in self.lines:
            assert self.proc.returncode is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            await asyncio.sleep(0.1)
            for line in self.log.read_bytes()[offset:].decode().splitlines():
                key, _, value = line.partition("=")
                self.lines.setdefault(key, value)

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), timeout=10)
        self.proc = None
        self.lines.clear()
        return code

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


class Control:
    """The emulator's documented control API (docs/emulator.md)."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        url = f"{self.base}/_emulator{path}"
        async with self.session.request(method, url, json=body) as reply:
            assert reply.status == 200, await reply.text()
            return await reply.json()

    async def entity(self, method: str, entity: str, obj_id: str = "", body: Any = None) -> Any:
        path = f"/realms/{REALM}/entities/{entity}" + (f"/{obj_id}" if obj_id else "")
        return await self.call(method, path, body)

    async def polls(self) -> int:
        counts = await self.call("GET", f"/counters?realm={REALM}")
        return int(counts.get("cdc", 0)) + int(counts.get("batch", 0))


def instance(code: str, callback: str, client: tuple[str, str]) -> dict[str, Any]:
    return {
        "element": {"key": "quickbooks"},
        "providerData": {"code": code, "realmId": REALM},
        "configuration": {
            "oauth.callback.url": REDIRECT,
            "oauth.api.key": client[0],
            "oauth.api.secret": client[1],
            "authentication.type": "oauth2",
            "event.notification.enabled": True,
            "event.notification.callback.url": callback,
            "event.poller.refresh_interval": "0.01",  # the key's floor: 0.6 s
            "event.poller.urls": "customers|invoices|vendors",
        },
        "tags": ["e2e"],
        "name": "Through A Restart",
    }


async def until(predicate: Any, what: str, timeout: float = 45.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_daemon_polls_through_an_emulator_restart(tmp_path: Path, db_dsn: str) -> None:
    receiver = Receiver()
    emulator = EmulatorProcess(free_port(), tmp_path / "emulator-state.json", tmp_path / "emu.log")
    await emulator.start()
    daemon: Daemon | None = None
    expected: list[tuple[str, str, str]] = []
    try:
        async with aiohttp.ClientSession() as session, run_receiver(receiver) as callback:
            control = Control(session, emulator.base)
            code = (
                await control.call(
                    "POST", "/oauth/codes", {"realm_id": REALM, "redirect_uri": REDIRECT}
                )
            )["code"]
            client = (emulator.lines["client_id"], emulator.lines["client_secret"])
            port = free_port()
            env = base_env(
                DATABASE_URL=db_dsn,
                QBO_API_BASE_URL=emulator.base,
                QBO_OAUTH_TOKEN_URL=f"{emulator.base}/oauth2/v1/tokens/bearer",
                POLLER_INSTANCES_FILE=str(
                    write_instances(tmp_path / "instances.json", instance(code, callback, client))
                ),
                POLLER_HTTP_ADDR=f"127.0.0.1:{port}",
                POLLER_OVERLAP_SECONDS="2",
                POLLER_RETRY_SCHEDULE="0.2s,0.5s,1s",
                POLLER_DELIVERY_POLL_INTERVAL="0.2s",
            )
            daemon = Daemon(env, log_path=tmp_path / "daemon.log")
            assert await asyncio.to_thread(daemon.wait_http, port, "/readyz") == 200

            async def polled(more: int) -> None:
                target = await control.polls() + more
                await until(lambda: _at_least(control, target), f"{more} polls")

            await polled(3)  # the baseline: what exists now is not an event

            def delivered() -> Any:
                async def check() -> bool:
                    return collections.Counter(events(receiver)) >= collections.Counter(expected)

                return check

            # 1. changes while the emulator runs
            first = await control.entity("POST", "Customer", body={"DisplayName": "First Run"})
            await control.entity("PATCH", "Customer", "1", {"Notes": "edited in the first run"})
            await control.entity("DELETE", "Invoice", "1")
            expected += [
                ("CREATED", "customers", first["Id"]),
                ("UPDATED", "customers", "1"),
                ("DELETED", "invoices", "1"),
            ]
            await until(delivered(), "the first run's callbacks")

            # 2. changes the daemon may not have seen yet, then SIGTERM (the state is saved)
            last = await control.entity("POST", "Customer", body={"DisplayName": "Just Before"})
            await control.entity("PATCH", "Vendor", "2", {"Notes": "edited just before the stop"})
            expected += [("CREATED", "customers", last["Id"]), ("UPDATED", "vendors", "2")]
            assert await emulator.stop() == 0
            await asyncio.sleep(5)  # the daemon's polls (and a token refresh) meet a closed port

            # 3. the same port and state: the old tokens work, ids go on
            await emulator.start()
            after = await control.entity("POST", "Customer", body={"DisplayName": "After"})
            assert int(after["Id"]) == int(last["Id"]) + 1  # no id handed out twice
            await control.entity("PATCH", "Customer", first["Id"], {"Notes": "edited after"})
            await control.entity("DELETE", "Invoice", "2")
            expected += [
                ("CREATED", "customers", after["Id"]),
                ("UPDATED", "customers", first["Id"]),
                ("DELETED", "invoices", "2"),
            ]
            await until(delivered(), "every callback")
            await polled(5)  # and then some more polls: nothing comes twice

            code_, _ = await asyncio.to_thread(daemon.terminate)
            assert code_ == 0, daemon.output()
            log = daemon.output()
    finally:
        if daemon is not None:
            daemon.close()
        await emulator.kill()
    got = collections.Counter(events(receiver))
    assert got == collections.Counter(expected), (got, expected)  # each exactly once
    assert receiver.duplicates == 0
    assert "instance_needs_reconnect" not in log
    conn = await asyncpg.connect(db_dsn)
    try:
        statuses = [r["status"] for r in await conn.fetch("SELECT status FROM instances")]
    finally:
        await conn.close()
    assert statuses == ["active"]
    logged = [json.loads(line).get("event") for line in log.splitlines() if line.startswith("{")]
    failed = [n for n, event in enumerate(logged) if event == "pair_poll_failed"]
    assert failed, "the daemon should have met the stopped emulator"
    # its refresh token (issued and rotated before the stop) still works after the restart
    assert "oauth_tokens_refreshed" in logged[failed[-1] :]
    assert json.loads(emulator.state.read_text())["realms"][0]["id"] == REALM


async def _at_least(control: Control, target: int) -> bool:
    try:
        return await control.polls() >= target
    except aiohttp.ClientError:
        return False


def events(receiver: Receiver) -> list[tuple[str, str, str]]:
    return [(e["eventType"], e["objectType"], e["objectId"]) for e in receiver.events()]
