"""Replicas sharing one database (DESIGN §8; issue 10, findings 3 and 8): heartbeats keep the
instance leases, whatever the length of a cycle; a database outage does not leave the pairs in
a long backoff once the database is back."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from poller.config import load_settings
from poller.detect.feed import PairAnswer
from poller.detect.heartbeat import Heartbeat, Liveness
from poller.store import db
from poller.store.cursors import PairKey
from tests.detect.harness import (
    Env,
    add_instance,
    cursor_row,
    events,
    qbo_client,
    running_service,
    wait_until,
)

CYCLE_S = 12.0  # a large reconciliation, two 429 waits: longer than interval + timeout


async def test_two_replicas_with_12_s_cycles_and_a_5_s_timeout_both_make_progress(
    env: Env,
) -> None:
    """Finding 3: the lease is not renewed at commit only, so a cycle longer than the poll
    interval plus the lease is not taken over mid-cycle (which fenced its commit out, forever,
    every QBO request wasted)."""
    emu, pool = env.emu, env.pool
    realms = [emu.add_realm(seed=20 + n, per_entity=1) for n in range(2)]
    iids = [
        await add_instance(
            pool,
            emu,
            realm,
            name=f"slow{n}",
            interval_s=1.0,
            resources=["customers"],
            initial="backfill",
        )
        for n, realm in enumerate(realms)
    ]

    stopping = asyncio.Event()  # the test is over: cycles in progress may end

    async def slow(key: PairKey, answer: PairAnswer) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), CYCLE_S)

    async def polls_done() -> list[int]:
        return [int((await cursor_row(pool, iid, "customers"))["polls"]) for iid in iids]

    async def progressed() -> bool:
        return min(await polls_done()) >= 2

    a_settings = env.settings(replica_id="replica-a", replica_timeout_s=5.0)
    b_settings = env.settings(replica_id="replica-b", replica_timeout_s=5.0)
    started = time.monotonic()
    async with (
        qbo_client(a_settings, pool) as client_a,
        qbo_client(b_settings, pool) as client_b,
        running_service(pool, a_settings, client_a, before_commit=slow),
        running_service(pool, b_settings, client_b, before_commit=slow),
    ):
        await wait_until(progressed, timeout=4 * CYCLE_S, every=0.2)
        took = time.monotonic() - started
        done = await polls_done()
        requests = [env.qbo_requests(realm) for realm in realms]
        stopping.set()
    print(
        f"two replicas, {CYCLE_S:.0f} s cycles: {done} polls in {took:.1f} s, {requests} requests"
    )
    # Every instance's existing customer, each once (the backfill of its first cycle).
    assert sorted(e.event_type for e in await events(pool)) == ["CREATED", "CREATED"]
    tokens = await pool.fetch("SELECT token FROM instance_leases ORDER BY instance_id")
    assert [row["token"] for row in tokens] == [1, 1]  # never taken mid-cycle
    # A QBO request per committed cycle, but the one in flight when the services stopped.
    assert all(sent <= polled + 1 for sent, polled in zip(requests, done, strict=True))


class Proxy:
    """A TCP proxy in front of PostgreSQL: `cut` is an outage (every connection dropped, new
    ones refused), `restore` ends it."""

    def __init__(self, dsn: str) -> None:
        parts = urlsplit(dsn)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._parts = parts
        self.port = 0
        self._server: asyncio.Server | None = None
        self._transports: list[asyncio.WriteTransport] = []

    @property
    def dsn(self) -> str:
        user = f"{self._parts.username}@" if self._parts.username else ""
        netloc = f"{user}127.0.0.1:{self.port}"
        return urlunsplit((self._parts.scheme, netloc, self._parts.path, self._parts.query, ""))

    async def restore(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for transport in self._transports:
            transport.abort()
        self._transports.clear()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        self._transports += [writer.transport, up_writer.transport]
        await asyncio.gather(
            _pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True
        )


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def proxied_pool(dsn: str) -> AsyncIterator[tuple[Proxy, asyncpg.Pool]]:
    proxy = Proxy(dsn)
    await proxy.restore()
    pool = await db.create_pool(proxy.dsn, max_size=4)
    try:
        yield proxy, pool
    finally:
        with contextlib.suppress(Exception):
            await proxy.restore()
        pool.terminate()
        with contextlib.suppress(Exception):
            await proxy.cut()


OUTAGE_S = 20.0  # the pairs' backoff has grown to 16 s (± 20 %) by its end
RECOVERY_BOUND_S = 3.5


async def test_after_a_database_outage_the_first_event_comes_within_seconds(env: Env) -> None:
    """Finding 8: pairs that failed only because the database was unreachable retry as soon as
    it is back (the heartbeat notices), not at the end of the backoff they grew meanwhile."""
    emu = env.emu
    realm = emu.add_realm(seed=30, per_entity=1)
    iid = await add_instance(env.pool, emu, realm, interval_s=1.0, resources=["customers"])
    settings = env.settings(replica_id="replica-outage", replica_timeout_s=15.0)

    async def polled_twice() -> bool:
        return int((await cursor_row(env.pool, iid, "customers"))["polls"]) >= 2

    async with (
        proxied_pool(env.dsn) as (proxy, pool),
        qbo_client(settings, pool) as client,
        running_service(pool, settings, client),
    ):
        await wait_until(polled_twice, timeout=20)
        await proxy.cut()
        await asyncio.sleep(OUTAGE_S)
        customer = emu.create(realm, "Customer", {"DisplayName": "After The Outage"})
        await proxy.restore()
        recovered = time.monotonic()

        async def seen() -> bool:
            return customer["Id"] in {e.object_id for e in await events(env.pool, iid)}

        await wait_until(seen, timeout=60, every=0.1)
        latency = time.monotonic() - recovered
    print(f"database back → first event: {latency:.2f} s")
    assert latency < RECOVERY_BOUND_S, f"first event {latency:.2f} s after the database came back"


async def test_a_replica_that_cannot_beat_stops_believing_it_is_alive(env: Env) -> None:
    async with proxied_pool(env.dsn) as (proxy, pool):
        heartbeat = Heartbeat(pool, "replica-dark", timeout_s=0.9)
        stop = asyncio.Event()
        task = asyncio.create_task(heartbeat.run(stop))
        try:
            await wait_until(lambda: _true(heartbeat.liveness.alive_until() > time.monotonic()))
            row = await env.pool.fetchrow("SELECT * FROM replicas WHERE id = 'replica-dark'")
            assert row is not None and row["started_at"] <= row["heartbeat_at"]
            await proxy.cut()
            await asyncio.sleep(1.0)
            assert heartbeat.liveness.alive_until() < time.monotonic()
            assert heartbeat.liveness.down
            recovered: list[bool] = []
            heartbeat.liveness.subscribe(lambda: recovered.append(True))
            await proxy.restore()
            await wait_until(lambda: _true(bool(recovered)), timeout=5)
            assert heartbeat.liveness.alive_until() > time.monotonic()
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
    # A graceful stop removes the replica's row.
    assert await env.pool.fetchval("SELECT count(*) FROM replicas") == 0


def test_the_default_replica_id_is_unique_per_process_start_and_can_be_set() -> None:
    show = "from poller.config import load_settings; print(load_settings(env={}).replica_id)"
    started = {
        subprocess.run(
            [sys.executable, "-c", show], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    }
    assert len(started) == 2, started  # two starts (same host, maybe the same pid): two ids
    first = load_settings(env={}).replica_id
    assert load_settings(env={}).replica_id == first  # the same process: the same replica
    host, pid, nonce = first.rsplit(":", 2)
    assert host and pid.isdigit() and len(nonce) == 8
    assert load_settings(env={"POLLER_REPLICA_ID": "r-7"}).replica_id == "r-7"
    assert load_settings(env={"POLLER_REPLICA_TIMEOUT": "5s"}).replica_timeout_s == 5.0
    assert load_settings(env={}).replica_timeout_s == 15.0


def test_liveness_lasts_the_timeout_from_the_last_beat() -> None:
    liveness = Liveness(15.0)
    assert liveness.alive_until() == float("-inf")
    liveness.beaten(100.0)
    liveness.beaten(90.0)  # a slow beat that was sent earlier changes nothing
    assert liveness.alive_until() == 115.0


async def _true(value: bool) -> bool:
    return value
