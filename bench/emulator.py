"""Benchmark the QBO emulator: requests per second for a 1000-object CDC
answer and for small queries, over real HTTP on loopback.

    .venv/bin/python bench/emulator.py [--seconds 5] [--clients 8] [--per-entity 1000]

Starts the emulator in-process (throttling off), fills one realm, then runs a
few concurrent aiohttp clients against each scenario for a bounded time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qbo_emulator import run_emulator

REALM = "9130350000000001"


async def _drive(
    session: aiohttp.ClientSession,
    url: str,
    params: dict[str, str],
    headers: dict[str, str],
    seconds: float,
    clients: int,
) -> tuple[int, float, list[float], int]:
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    size = 0

    async def client() -> None:
        nonlocal size
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            async with session.get(url, params=params, headers=headers) as r:
                body = await r.read()
                if r.status != 200:
                    raise RuntimeError(f"HTTP {r.status}: {body[:200]!r}")
                size = len(body)
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return len(latencies), time.perf_counter() - start, latencies, size


def _report(
    name: str, n: int, elapsed: float, latencies: list[float], size: int, objects: int
) -> None:
    lat = sorted(latencies)
    p50 = statistics.median(lat) * 1000
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
    print(
        f"{name:<34} {n / elapsed:9.1f} req/s  {n * objects / elapsed:11.0f} objects/s  "
        f"p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  body {size / 1024:7.1f} KiB  ({n} requests)"
    )


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--per-entity", type=int, default=1000)
    args = ap.parse_args()

    async with run_emulator(per_minute=None, per_second=None, in_flight=None) as emu:
        t0 = time.perf_counter()
        emu.add_realm(REALM, seed=1, per_entity=args.per_entity)
        print(
            f"filled realm {REALM}: {emu.count(REALM)} objects in {time.perf_counter() - t0:.2f} s"
        )
        emu.clock.advance(1)
        since = emu.clock.now()
        for i in range(1, 601):  # 600 customers and 400 invoices changed "now": a 1000-object CDC
            emu.update(REALM, "Customer", {"Id": str(i), "Notes": "bench"})
        for i in range(1, 401):
            emu.update(REALM, "Invoice", {"Id": str(i), "PrivateNote": "bench"})
        headers = {
            "Authorization": f"Bearer {emu.issue_tokens(REALM)['access_token']}",
            "Accept": "application/json",
        }
        base = f"{emu.base_url}/v3/company/{REALM}"
        cdc_params = {
            "entities": "Customer,Invoice",
            "changedSince": (since - timedelta(seconds=0)).isoformat(),
            "minorversion": "75",
        }
        print(f"{args.clients} concurrent clients, {args.seconds:.0f} s per scenario")
        connector = aiohttp.TCPConnector(limit=args.clients)
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.get(f"{base}/cdc", params=cdc_params, headers=headers) as r:
                body = await r.json(content_type=None)
            objects = sum(g["maxResults"] for g in body["CDCResponse"][0]["QueryResponse"])
            assert objects == 1000, objects
            scenarios = [
                ("CDC, 1000 objects", f"{base}/cdc", cdc_params, 1000),
                (
                    "query by Id (1 row)",
                    f"{base}/query",
                    {"query": "select * from Customer where Id = '42'"},
                    1,
                ),
                (
                    "query, 10 rows",
                    f"{base}/query",
                    {"query": "select * from Invoice startposition 101 maxresults 10"},
                    10,
                ),
                (
                    "query, filter+order 10 of 1000",
                    f"{base}/query",
                    {
                        "query": "select * from Customer where Balance > 0 "
                        "orderby MetaData.LastUpdatedTime desc maxresults 10"
                    },
                    10,
                ),
                ("count(*)", f"{base}/query", {"query": "select count(*) from Vendor"}, 1),
            ]
            for name, url, params, n_obj in scenarios:
                n, elapsed, lat, size = await _drive(
                    session, url, params, headers, args.seconds, args.clients
                )
                _report(name, n, elapsed, lat, size, n_obj)


if __name__ == "__main__":
    asyncio.run(main())
