"""Poll-cycle cost: QBO requests, CPU time and database round trips per instance per cycle.

Runs the QBO emulator in a child process (so its CPU is not counted), a scratch database on
PostgreSQL (BENCH_DATABASE_URL, DATABASE_URL, or 127.0.0.1:5432), and for 1 and 100 instances
with all 22 resources each: a warm-up cycle (first start), then CYCLES cycles with no changes
and one cycle with a change per instance. A cycle polls every pair of every instance once,
through the real instance cycles (lease, ChangeFeed, QBO client, diff, outbox). Round trips
are the statements sent to PostgreSQL (BEGIN, COMMIT and the pool's reset on release
included), counted by wrapping asyncpg.

    .venv/bin/python bench/poll_cycle.py [--instances 1,100] [--cycles 5] [--no-batch-cdc]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scratch import drop_database, scratch_database  # noqa: E402  (bench/scratch.py)

from poller import logs  # noqa: E402
from poller.config import Settings  # noqa: E402
from poller.detect.cycle import InstanceConfig, InstanceCycles  # noqa: E402
from poller.detect.feed import ChangeFeed  # noqa: E402
from poller.detect.pairs import PairPoller  # noqa: E402
from poller.detect.schedule import InstanceSchedule  # noqa: E402
from poller.instances import parse_instance  # noqa: E402
from poller.qbo.client import QboClient  # noqa: E402
from poller.resources import DEFAULT_NAMES, get  # noqa: E402
from poller.store import (  # noqa: E402
    db,
    instance_rows,
)
from poller.store.crypto import SecretBox  # noqa: E402
from poller.store.tokens import PgTokenStore  # noqa: E402

BOX = SecretBox(None)


class RoundTrips:
    """Counts statements sent to PostgreSQL (each one round trip: BEGIN, COMMIT and the pool's
    reset on release included; first-use PREPAREs are not counted) by wrapping asyncpg."""

    count = 0

    @classmethod
    def install(cls) -> None:
        conn_cls = asyncpg.connection.Connection
        execute, _execute, _executemany = conn_cls.execute, conn_cls._execute, conn_cls._executemany

        async def counted_execute(self: Any, query: str, *args: Any, **kw: Any) -> Any:
            if not args:
                cls.count += 1
            return await execute(self, query, *args, **kw)

        async def counted(fn: Any, self: Any, *args: Any, **kw: Any) -> Any:
            cls.count += 1
            return await fn(self, *args, **kw)

        conn_cls.execute = counted_execute  # type: ignore[method-assign]
        conn_cls._execute = lambda self, *a, **kw: counted(_execute, self, *a, **kw)  # type: ignore[method-assign]
        conn_cls._executemany = lambda self, *a, **kw: counted(_executemany, self, *a, **kw)  # type: ignore[method-assign]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Emulator:
    """The emulator in a child process, driven through its control API."""

    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "qbo_emulator",
                "--port",
                str(self.port),
                "--per-entity",
                "0",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def ready(self) -> dict[str, Any]:
        for _ in range(200):
            try:
                return await self.call("GET", "")
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
        raise RuntimeError("emulator did not start")

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.http.request(method, f"{self.base}/_emulator{path}", json=body) as r:
            r.raise_for_status()
            return await r.json()

    async def api_requests(self) -> int:
        counters = await self.call("GET", "/counters")
        return sum(c.get(k, 0) for c in counters.values() for k in ("cdc", "query", "batch"))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


async def add_instances(
    emu: Emulator, pool: asyncpg.Pool, n: int, tag: str, batch_cdc: bool, info: dict[str, Any]
) -> list[tuple[int, str]]:
    made = []
    for i in range(n):
        realm = (await emu.call("POST", "/realms", {"seed": i, "per_entity": 5}))["realm_id"]
        if not batch_cdc:
            await emu.call("POST", f"/realms/{realm}/cdc_in_batch", {"allowed": False})
        tokens = await emu.call("POST", "/oauth/tokens", {"realm_id": realm})
        body = {
            "name": f"{tag}-{i}",
            "providerData": {"refreshToken": tokens["refresh_token"], "realmId": realm},
            "configuration": {
                "oauth.api.key": info["client_id"],
                "oauth.api.secret": info["client_secret"],
                "event.notification.enabled": True,
                "event.notification.callback.url": "http://127.0.0.1:9/h",
                "event.poller.refresh_interval": "60",
            },
        }
        async with pool.acquire() as conn:
            made.append(
                ((await instance_rows.upsert(conn, parse_instance(body), BOX)).instance_id, realm)
            )
    return made


def pairs_for(
    pool: asyncpg.Pool, client: QboClient, settings: Settings, instances: list[tuple[int, str]]
) -> tuple[list[InstanceCycles], list[PairPoller]]:
    loops, pairs = [], []
    for iid, realm in instances:
        feed = ChangeFeed(client.realm(iid, realm), overlap_s=settings.overlap_seconds)
        cfg = InstanceConfig(
            iid,
            str(iid),
            3600.0,
            "now",
            False,
            settings.reconcile_interval_s,
            settings.events_per_notification,
            60.0,
            "bench",
        )
        cycles = InstanceCycles(pool, feed, cfg, InstanceSchedule(3600.0, 0.0), window_s=0.02)
        loops.append(cycles)
        pairs.extend(PairPoller(cycles, get(name)) for name in DEFAULT_NAMES)
    return loops, pairs


async def measure(
    emu: Emulator,
    pool: asyncpg.Pool,
    settings: Settings,
    n: int,
    cycles: int,
    batch_cdc: bool,
    info: dict[str, Any],
) -> None:
    instances = await add_instances(
        emu, pool, n, f"b{n}{'' if batch_cdc else 'x'}", batch_cdc, info
    )
    async with aiohttp.ClientSession() as http:
        client = QboClient(http, settings, PgTokenStore(pool, BOX))
        loops, pairs = pairs_for(pool, client, settings, instances)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(c.run(stop)) for c in loops]

        async def cycle() -> tuple[int, float, float, int]:
            before, cpu, wall = await emu.api_requests(), time.process_time(), time.perf_counter()
            trips = RoundTrips.count
            await asyncio.gather(*(p.poll_once() for p in pairs))
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            trips = RoundTrips.count - trips
            return await emu.api_requests() - before, cpu, wall, trips

        await cycle()  # first start: baselines, listings
        rows = [await cycle() for _ in range(cycles)]
        for _, realm in instances:  # one change per instance
            await emu.call("POST", f"/realms/{realm}/entities/Customer", {"DisplayName": "Bench"})
        changed = await cycle()
        stop.set()
        await asyncio.gather(*tasks)
    reqs = sum(r[0] for r in rows) / (cycles * n)
    cpu = sum(r[1] for r in rows) / cycles
    wall = sum(r[2] for r in rows) / cycles
    trips = sum(r[3] for r in rows) / (cycles * n)
    mode = "batch-CDC" if batch_cdc else "/cdc + /batch"
    print(
        f"{n:>4} instance(s) x 22 resources [{mode}]: {reqs:.2f} QBO requests/instance/cycle; "
        f"CPU {cpu * 1000:.1f} ms/cycle ({cpu / n * 1000:.2f} ms/instance), "
        f"wall {wall * 1000:.0f} ms; "
        f"DB round trips {trips:.1f}/instance/cycle; with 1 change/instance: "
        f"{changed[0] / n:.2f} req/instance, CPU {changed[1] * 1000:.1f} ms, "
        f"{changed[3] / n:.1f} round trips/instance"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", default="1,100")
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--no-batch-cdc", action="store_true")
    args = parser.parse_args()
    logs.configure("error", "console")
    RoundTrips.install()
    server = (
        os.environ.get("BENCH_DATABASE_URL")
        or os.environ.get("DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    dsn = await scratch_database(server)
    async with aiohttp.ClientSession() as http:
        emu = Emulator(http)
        try:
            info = await emu.ready()
            settings = Settings(
                database_url=dsn,
                qbo_api_base_url=emu.base,
                qbo_oauth_token_url=f"{emu.base}/oauth2/v1/tokens/bearer",
                http_addr=None,
                replica_id="bench",
            )
            pool = await db.create_pool(dsn, max_size=20)
            try:
                for n in (int(x) for x in args.instances.split(",")):
                    await measure(emu, pool, settings, n, args.cycles, not args.no_batch_cdc, info)
            finally:
                await pool.close()
        finally:
            emu.stop()
            await drop_database(server, dsn)


if __name__ == "__main__":
    asyncio.run(main())
