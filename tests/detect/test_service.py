"""PollerService: instances come and go without a restart; failures stay where they happen."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from unittest.mock import AsyncMock

import asyncpg
import pytest

from poller.detect.feed import PairAnswer
from poller.qbo.limiter import LimiterConfig
from poller.store import cursors, instance_rows
from poller.store.cursors import PairKey
from tests.detect.harness import Env, add_instance, events, qbo_client, running_service, wait_until


async def polls(pool: asyncpg.Pool, iid: int, resource: str = "customers") -> int:
    return (
        await pool.fetchval(
            "SELECT coalesce(polls, 0) FROM pair_cursors WHERE instance_id = $1 AND resource = $2",
            iid,
            resource,
        )
        or 0
    )


async def test_instances_added_changed_paused_and_removed_while_running(env: Env) -> None:
    emu, pool = env.emu, env.pool
    realm = emu.add_realm(seed=1, per_entity=1)
    settings = env.settings()
    async with qbo_client(settings, pool) as client, running_service(pool, settings, client) as svc:
        a = await add_instance(pool, emu, realm, name="a", interval_s=0.1, resources=["customers"])
        await wait_until(lambda: _gt(polls(pool, a), 2))
        new = emu.create(realm, "Customer", {"DisplayName": "Seen By Service"})
        await wait_until(lambda: _has(pool, new["Id"]))
        # Changed: another resource list → restarted with the new pairs.
        await add_instance(
            pool, emu, realm, name="a", interval_s=0.1, resources=["customers", "vendors"]
        )
        await wait_until(lambda: _gt(polls(pool, a, "vendors"), 1))
        assert set(svc.running[a].pairs.names()) == {"customers", "vendors"}
        # Paused → its tasks stop.
        async with pool.acquire() as conn:
            await instance_rows.set_status(conn, a, "paused", "test")
        await wait_until(lambda: _true(a not in svc.running))
        frozen = await polls(pool, a)
        await asyncio.sleep(0.4)
        assert await polls(pool, a) == frozen
        # Back to active, then removed.
        async with pool.acquire() as conn:
            await instance_rows.set_status(conn, a, "active", None)
        await wait_until(lambda: _gt(polls(pool, a), frozen + 1))
        async with pool.acquire() as conn:
            await instance_rows.remove(conn, "a")
        await wait_until(lambda: _true(not svc.running))


async def test_reconnect_required_stops_only_that_instance(env: Env) -> None:
    emu, pool = env.emu, env.pool
    r1, r2 = emu.add_realm(seed=1, per_entity=1), emu.add_realm(seed=2, per_entity=1)
    settings = env.settings()
    good = await add_instance(pool, emu, r1, name="good", interval_s=0.1, resources=["customers"])
    bad = await add_instance(
        pool, emu, r2, name="bad", interval_s=0.1, resources=["customers", "bills"]
    )
    # The grant is gone: Intuit answers invalid_grant to its refresh token.
    await pool.execute(
        "UPDATE oauth_credentials SET refresh_token_enc = 'plain:revoked-long-ago', "
        "access_token_enc = NULL WHERE instance_id = $1",
        bad,
    )
    async with qbo_client(settings, pool) as client, running_service(pool, settings, client) as svc:
        await wait_until(lambda: _status_is(pool, bad, "needs_reconnect"))
        base = await polls(pool, good)
        await wait_until(lambda: _gt(polls(pool, good), base + 3))
        assert bad not in svc.running
    assert await polls(pool, bad) == 0


async def test_a_throttled_realm_slows_only_itself(env: Env) -> None:
    emu, pool = env.emu, env.pool
    slow_realm, fast_realm = (
        emu.add_realm(seed=1, per_entity=1),
        emu.add_realm(seed=2, per_entity=1),
    )
    settings = env.settings()
    slow = await add_instance(
        pool, emu, slow_realm, name="slow", interval_s=0.1, resources=["customers"]
    )
    fast = await add_instance(
        pool, emu, fast_realm, name="fast", interval_s=0.1, resources=["customers"]
    )
    limits = LimiterConfig(throttle_pause_s=1.0)  # the real limiter; Intuit's pause is 60 s
    async with (
        qbo_client(settings, pool, limits) as client,
        running_service(pool, settings, client),
    ):
        await wait_until(lambda: _gt(polls(pool, slow), 1))
        await wait_until(lambda: _gt(polls(pool, fast), 1))
        emu.throttle(slow_realm, 2.0)
        await asyncio.sleep(0.3)  # let the slow realm hit its 429
        slow0, fast0 = await polls(pool, slow), await polls(pool, fast)
        t0 = time.monotonic()
        await asyncio.sleep(1.2)
        slow1, fast1 = await polls(pool, slow), await polls(pool, fast)
        assert fast1 - fast0 >= 5  # ~every 0.1 s, undisturbed
        assert slow1 - slow0 <= 1  # waiting out its pause
        assert emu.counters(slow_realm)["throttled"] >= 1
        await wait_until(lambda: _gt(polls(pool, slow), slow1 + 2), timeout=8)
        assert time.monotonic() - t0 < 8


async def test_errors_back_off_the_pair_and_recover(env: Env) -> None:
    emu, pool = env.emu, env.pool
    realm = emu.add_realm(seed=3, per_entity=1)
    settings = env.settings()
    iid = await add_instance(pool, emu, realm, interval_s=0.05, resources=["customers"])
    async with qbo_client(settings, pool) as client, running_service(pool, settings, client):
        await wait_until(lambda: _gt(polls(pool, iid), 1))
        emu.inject_fault("error", endpoint="cdc", realm=realm, count=4, status=503)
        await wait_until(lambda: _errors_at_least(pool, iid, 1))
        row = await pool.fetchrow(
            "SELECT last_error, next_due_at FROM pair_cursors WHERE instance_id = $1", iid
        )
        assert "ServerError" in row["last_error"]
        new = emu.create(realm, "Customer", {"DisplayName": "After The Outage"})
        await wait_until(lambda: _has(pool, new["Id"]), timeout=8)
        assert (
            await pool.fetchval(
                "SELECT consecutive_errors FROM pair_cursors WHERE instance_id = $1", iid
            )
            == 0
        )


async def test_stop_is_prompt_even_with_a_request_in_flight(env: Env) -> None:
    emu, pool = env.emu, env.pool
    realm = emu.add_realm(seed=4, per_entity=1)
    settings = env.settings()
    iid = await add_instance(pool, emu, realm, interval_s=0.05, resources=["customers"])
    async with qbo_client(settings, pool) as client:
        ctx = running_service(pool, settings, client)
        await ctx.__aenter__()
        await wait_until(lambda: _gt(polls(pool, iid), 1))
        emu.inject_fault("latency", endpoint="cdc", realm=realm, seconds=30)
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        await ctx.__aexit__(None, None, None)
        assert time.monotonic() - t0 < 1.0
    lease = await pool.fetchval("SELECT owner FROM instance_leases WHERE instance_id = $1", iid)
    assert lease is None  # released on the way out


async def _gt(value, bound: int) -> bool:  # type: ignore[no-untyped-def]
    return await value > bound


async def _true(value: bool) -> bool:
    return value


async def _has(pool: asyncpg.Pool, object_id: str) -> bool:
    return any(e.object_id == object_id for e in await events(pool))


async def _status_is(pool: asyncpg.Pool, iid: int, status: str) -> bool:
    return await pool.fetchval("SELECT status FROM instances WHERE id = $1", iid) == status


async def _errors_at_least(pool: asyncpg.Pool, iid: int, n: int) -> bool:
    return (
        await pool.fetchval(
            "SELECT consecutive_errors FROM pair_cursors WHERE instance_id = $1", iid
        )
        or 0
    ) >= n


async def _owners(pool: asyncpg.Pool, iids: list[int]) -> dict[int, str | None]:
    rows = await pool.fetch(
        "SELECT instance_id, owner FROM instance_leases WHERE instance_id = ANY($1::bigint[])", iids
    )
    return {r["instance_id"]: r["owner"] for r in rows}


async def test_two_replicas_never_split_an_instance_and_take_over_from_a_crashed_one(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu, pool = env.emu, env.pool
    resources = ["customers", "invoices", "tax-rates"]
    realms = [emu.add_realm(seed=10 + n, per_entity=1) for n in range(3)]
    iids = [
        await add_instance(pool, emu, r, name=f"i{n}", interval_s=0.2, resources=resources)
        for n, r in enumerate(realms)
    ]
    cycles: dict[tuple[str, int, float], set[str]] = defaultdict(set)

    def recorder(replica: str):  # type: ignore[no-untyped-def]
        async def hook(key: PairKey, answer: PairAnswer) -> None:
            cycles[(replica, key.instance_id, answer.cycle_started)].add(key.resource)

        return hook

    made: list[tuple[int, str]] = []  # (instance, object id): Ids repeat across realms

    async def churn(n: int) -> None:
        for i in range(n):
            obj = emu.create(realms[i % 3], "Customer", {"DisplayName": f"C {len(made)}"})
            made.append((iids[i % 3], obj["Id"]))
            await asyncio.sleep(0.05)

    async def seen() -> Counter[tuple[int, str]]:
        got: Counter[tuple[int, str]] = Counter()
        for iid in iids:
            got.update(
                (iid, e.object_id) for e in await events(pool, iid) if e.resource == "customers"
            )
        return got

    a_settings = env.settings(replica_id="replica-a", replica_timeout_s=0.5)
    b_settings = env.settings(replica_id="replica-b", replica_timeout_s=0.5)
    async with qbo_client(a_settings, pool) as ca, qbo_client(b_settings, pool) as cb:
        a = running_service(pool, a_settings, ca, before_commit=recorder("a"))
        await a.__aenter__()
        try:
            await wait_until(
                lambda: _true_async(
                    _owners(pool, iids), lambda o: o == dict.fromkeys(iids, "replica-a")
                )
            )
            # ...and has its baselines: a change made before them is not an event (`now` mode).
            await wait_until(
                lambda: _true_async(
                    pool.fetchval("SELECT bool_and(initialized) FROM pair_cursors"), bool
                )
            )
            async with running_service(pool, b_settings, cb, before_commit=recorder("b")):
                await churn(12)  # both run: a keeps everything
                assert not [k for k in cycles if k[0] == "b"], cycles  # b spent no QBO request
                # a crashes: it never releases, b takes over once a's leases lapse.
                noop = AsyncMock(return_value=False)
                monkeypatch.setattr(cursors, "release", noop)
                await a.__aexit__(None, None, None)
                a = None
                monkeypatch.undo()
                await churn(12)

                async def all_seen() -> bool:
                    return set(await seen()) >= set(made)

                await wait_until(all_seen)
                owners = await _owners(pool, iids)
                assert owners == dict.fromkeys(iids, "replica-b"), owners
        finally:
            if a is not None:
                await a.__aexit__(None, None, None)
    got = await seen()
    assert got == Counter(made), (got, made)  # each exactly once
    assert {e.resource for e in await events(pool)} == {"customers"}
    # Every cycle of either replica carried all the pairs of its instance: never split.
    assert cycles and all(pairs == set(resources) for pairs in cycles.values()), cycles
    assert {k[0] for k in cycles} == {"a", "b"}
    tokens = await pool.fetch("SELECT token FROM instance_leases")
    assert [r["token"] for r in tokens] == [2, 2, 2], tokens  # one takeover each


async def _true_async(value, check) -> bool:  # type: ignore[no-untyped-def]
    return check(await value)
