"""Crash safety: a failure between reading QBO and committing, then a restart, loses nothing
and duplicates nothing (DESIGN §2); also a `kill -9` of the real daemon process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from poller.store import outbox, polls
from tests.detect.harness import Env, add_instance, cursor_row, events, wait_until

ROOT = Path(__file__).resolve().parents[2]


class Boom(RuntimeError):
    pass


async def test_failure_before_commit_then_restart(env: Env) -> None:
    emu, pool = env.emu, env.pool
    realm = emu.add_realm(seed=1, per_entity=2)
    iid = await add_instance(pool, emu, realm, resources=["customers", "invoices", "tax-rates"])
    crash = {"on": False}

    async def hook(key: object, answer: object) -> None:
        if crash["on"]:
            raise Boom("crash between QBO's answer and the commit")

    async with env.driver(iid, before_commit=hook) as d:
        await d.cycle()
        wm = (await cursor_row(pool, iid, "customers"))["watermark"]
        c = emu.create(realm, "Customer", {"DisplayName": "Crash Test"})
        inv = emu.update(realm, "Invoice", {"Id": emu.ids(realm, "Invoice")[0], "PrivateNote": "x"})
        rate = emu.create(realm, "TaxRate", {"Name": "Crash Rate", "RateValue": 3})
        crash["on"] = True
        outcomes = await d.cycle(return_exceptions=True)
        assert all(isinstance(o, Boom) for o in outcomes)
    assert await events(pool) == []  # nothing half-written
    assert (await cursor_row(pool, iid, "customers"))["watermark"] == wm
    crash["on"] = False
    async with env.driver(iid) as d:  # the restarted process
        await d.cycle()
        await d.cycle()
    got = await events(pool)
    assert sorted((e.object_id, e.version, e.event_type) for e in got) == sorted(
        [
            (c["Id"], "0", "CREATED"),
            (inv["Id"], inv["SyncToken"], "UPDATED"),
            (rate["Id"], "0", "CREATED"),
        ]
    )


async def test_failure_inside_the_transaction_rolls_everything_back(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu, pool = env.emu, env.pool
    realm = emu.add_realm(seed=2, per_entity=2)
    iid = await add_instance(pool, emu, realm, resources=["customers", "invoices", "vendors"])
    async with env.driver(iid) as d:
        await d.cycle()
        wm = {
            r["resource"]: r["watermark"]
            for r in await pool.fetch(
                "SELECT resource, watermark FROM pair_cursors WHERE instance_id = $1", iid
            )
        }
        c = emu.create(realm, "Customer", {"DisplayName": "Half Written"})
        inv = emu.update(realm, "Invoice", {"Id": emu.ids(realm, "Invoice")[0], "PrivateNote": "x"})
        real = outbox.cursors.settle

        async def dies(*args: object, **kw: object) -> None:
            raise Boom("after events and notifications, before the watermarks")

        monkeypatch.setattr(outbox.cursors, "settle", dies)
        outcomes = await d.cycle(return_exceptions=True)
        assert all(isinstance(o, Boom) for o in outcomes)
        assert await pool.fetchval("SELECT count(*) FROM events") == 0
        assert await pool.fetchval("SELECT count(*) FROM notifications") == 0
        assert (
            await pool.fetchval(
                "SELECT count(*) FROM object_snapshots WHERE object_id = $1", c["Id"]
            )
            == 0
        )
        assert {
            r["resource"]: r["watermark"]
            for r in await pool.fetch(
                "SELECT resource, watermark FROM pair_cursors WHERE instance_id = $1", iid
            )
        } == wm
        monkeypatch.setattr(outbox.cursors, "settle", real)
        await d.cycle()
    assert sorted((e.object_id, e.event_type) for e in await events(pool)) == sorted(
        [(c["Id"], "CREATED"), (inv["Id"], "UPDATED")]
    )


def _daemon_env(env: Env) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("POLLER_", "QBO_"))}
    return {
        **keep,
        "DATABASE_URL": env.dsn,
        "QBO_API_BASE_URL": env.emu.base_url,
        "QBO_OAUTH_TOKEN_URL": env.emu.token_url,
        "POLLER_HTTP_ADDR": "",
        "POLLER_LOG_FORMAT": "json",
        "POLLER_LOG_LEVEL": "warning",
        "POLLER_OVERLAP_SECONDS": "5",
        "POLLER_REPLICA_TIMEOUT": "1s",
        "POLLER_SHUTDOWN_GRACE_SECONDS": "1",
        "PYTHONPATH": str(ROOT),
    }


async def _spawn(env: Env, daemon_env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "poller",
        "run",
        env=daemon_env or _daemon_env(env),
        cwd=str(ROOT),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_kill_9_of_the_daemon_loses_and_duplicates_nothing(env: Env) -> None:
    emu, pool = env.emu, env.pool
    realm = emu.add_realm(seed=3, per_entity=2)
    iid = await add_instance(pool, emu, realm, interval_s=0.1, resources=["customers", "invoices"])
    made: list[str] = []

    async def churn(n: int) -> None:
        for _ in range(n):
            made.append(emu.create(realm, "Customer", {"DisplayName": f"Churn {len(made)}"})["Id"])
            await asyncio.sleep(0.03)

    async def polled() -> bool:
        return (await cursor_row(pool, iid, "customers"))["polls"] > 2

    proc = await _spawn(env)
    try:
        await wait_until(polled, timeout=20)
        await churn(20)  # changes while it runs...
        proc.send_signal(signal.SIGKILL)  # ...and a kill -9 in the middle
        await proc.wait()
        await churn(10)  # changes while it is dead
        proc = await _spawn(env)  # restart (takes the expired leases)
        await churn(10)

        async def all_seen() -> bool:
            return {
                e.object_id for e in await events(pool, iid) if e.resource == "customers"
            } >= set(made)

        await wait_until(all_seen, timeout=20)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 15)
    got = [e for e in await events(pool, iid) if e.resource == "customers"]
    assert Counter(e.object_id for e in got) == Counter(made)  # each exactly once
    assert all(e.event_type == "CREATED" for e in got)
    orphans = await pool.fetchval("SELECT count(*) FROM events WHERE notification_id IS NULL")
    assert orphans == 0
    assert proc.returncode == 0


async def test_kill_9_and_restart_polls_within_the_replica_timeout_at_a_15_minute_interval(
    env: Env,
) -> None:
    """Issue 10, finding 3: the restarted process takes the dead one's instance over once its
    heartbeat is older than POLLER_REPLICA_TIMEOUT (default 15 s), not when a lease sized on the
    poll interval lapses (15 min + POLLER_PAIR_LEASE before); and it keeps the stored schedule:
    no poll before the pair is due, none after it until the next interval."""
    emu, pool = env.emu, env.pool
    realm = emu.add_realm(seed=4, per_entity=1)
    iid = await add_instance(pool, emu, realm, interval_s=900.0, resources=["customers"])
    daemon_env = {k: v for k, v in _daemon_env(env).items() if k != "POLLER_REPLICA_TIMEOUT"}

    async def polls_done() -> int:
        return int((await cursor_row(pool, iid, "customers"))["polls"])

    async def first_poll() -> bool:
        # The first poll now, not at the instance's start-up phase (up to 30 s): a poll request,
        # repeated until one has landed. Two requests can both land before the count is read
        # (seen once under load: the count went 0 → 2 and `== 1` never held), so it is read
        # again after the kill, when nothing can move it.
        if await polls_done() >= 1:
            return True
        async with pool.acquire() as conn:
            await polls.request_poll(conn, instance_id=iid)
        await asyncio.sleep(0.5)
        return await polls_done() >= 1

    proc = await _spawn(env, daemon_env)
    try:
        await wait_until(first_poll, timeout=30)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        killed = time.monotonic()
        before_crash = await polls_done()
        # The pair comes due 3 s after the crash (as if the kill came just before its time).
        due = await pool.fetchval(
            "UPDATE pair_cursors SET next_due_at = now() + interval '3 s' "
            "WHERE instance_id = $1 RETURNING next_due_at",
            iid,
        )
        customer = emu.create(realm, "Customer", {"DisplayName": "Polled After The Crash"})
        proc = await _spawn(env, daemon_env)  # restart at once

        async def polled_again() -> bool:
            return await polls_done() > before_crash

        await wait_until(polled_again, timeout=60, every=0.1)
        resumed_after = time.monotonic() - killed
        row = await cursor_row(pool, iid, "customers")
        assert row["last_polled_at"] >= due  # not before it was due
        assert {e.object_id for e in await events(pool, iid)} == {customer["Id"]}
        await asyncio.sleep(3)
        assert await polls_done() == before_crash + 1  # and then nothing until the next interval
        next_due = (await cursor_row(pool, iid, "customers"))["next_due_at"]
        assert (next_due - row["last_polled_at"]).total_seconds() > 800
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 15)
    print(f"kill -9 → next poll of the restarted daemon: {resumed_after:.1f} s")
    assert resumed_after < 20, f"polled again {resumed_after:.1f} s after the kill"
    assert proc.returncode == 0
