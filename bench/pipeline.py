"""Pipeline benchmark: emulator + daemon + receiver, N instances × 22 resources.

The daemon runs as its own process (`python -m poller run`, as in production) against a
scratch database; this process runs the emulator, a signature-checking receiver and a steady
stream of changes. Prints QuickBooks requests per instance per cycle, events per second,
p50/p99 latency from a change to its callback, and the daemon's peak RSS and CPU.

    .venv/bin/python bench/pipeline.py --instances 100 --interval 5 --rate 20 --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.scratch import drop_database, empty_database
from poller.demo.receiver import Received, Receiver, run_receiver
from qbo_emulator import run_emulator

ADMIN_DSN = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
API_ENDPOINTS = ("batch", "cdc", "query")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--instances", type=int, default=1)
    p.add_argument("--interval", type=float, default=2.0, help="poll interval, seconds")
    p.add_argument("--rate", type=float, default=5.0, help="changes per second, all instances")
    p.add_argument("--duration", type=float, default=30.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=None, help="seconds before measuring")
    return p.parse_args()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def instance_body(
    emu: object, realm: str, url: str, n: int, interval_s: float
) -> dict[str, object]:
    tokens = emu.issue_tokens(realm)  # type: ignore[attr-defined]
    return {
        "element": {"key": "quickbooks"},
        "name": f"bench-{n:05d}",
        "tags": ["bench"],
        "providerData": {"refreshToken": tokens["refresh_token"], "realmId": realm},
        "configuration": {
            "oauth.api.key": emu.client_id,
            "oauth.api.secret": emu.client_secret,  # type: ignore[attr-defined]
            "event.notification.enabled": True,
            "event.notification.callback.url": url,
            "event.notification.signature.key": "bench-signature-key",
            "event.poller.refresh_interval": str(interval_s / 60),
        },
    }


class Latencies:
    def __init__(self) -> None:
        self.changed: dict[tuple[str, str], float] = {}
        self.samples: list[float] = []
        self.events = 0
        self.bad = 0

    def on_notification(self, received: Received) -> None:
        self.bad += received.elements_ok is False
        realm = received.message["realmId"]
        for event in received.events:
            self.events += 1
            started = self.changed.pop((realm, event["objectId"]), None)
            if started is not None and event["eventType"] == "CREATED":
                self.samples.append(received.arrived - started)


async def drive_changes(
    emu: object, realms: list[str], rate: float, lat: Latencies, until: float
) -> int:
    rng = random.Random(1)
    made = 0
    while time.time() < until:
        realm = rng.choice(realms)
        customer = emu.create(realm, "Customer", {"DisplayName": f"Bench {uuid.uuid4().hex[:12]}"})  # type: ignore[attr-defined]
        lat.changed[(realm, customer["Id"])] = time.time()
        made += 1
        await asyncio.sleep(1.0 / rate)
    return made


def api_requests(emu: object) -> int:
    """HTTP requests to the QBO API (not OAuth), summed over realms."""
    per_realm = emu.counters()  # type: ignore[attr-defined]
    return sum(int(c.get(e, 0)) for c in per_realm.values() for e in API_ENDPOINTS)


def _ready(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
        return bool(r.status == 200)


async def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Until the daemon's /readyz is 200. Asked in a thread: this process's loop may carry the
    emulator (and a proxy) that the daemon needs to answer at all."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"daemon exited with {proc.returncode}")
        try:
            if await asyncio.to_thread(_ready, port):
                return
        except OSError:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit("daemon not ready")


def daemon_env(dsn: str, emu: Any, instances: Path, port: int, **extra: str) -> dict[str, str]:
    """A bench daemon's environment: the emulator, the instances file, its listener, quiet
    JSON logs; `extra` adds or overrides variables."""
    return {
        **os.environ,
        "DATABASE_URL": dsn,
        "QBO_API_BASE_URL": emu.base_url,
        "QBO_OAUTH_TOKEN_URL": emu.token_url,
        "POLLER_INSTANCES_FILE": str(instances),
        "POLLER_HTTP_ADDR": f"127.0.0.1:{port}",
        "POLLER_LOG_LEVEL": "warning",
        "POLLER_LOG_FORMAT": "json",
        **extra,
    }


def start_daemon(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`qbo-poller run` with its output in `log_path`."""
    with open(log_path, "wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "poller", "run"], env=env, stdout=log, stderr=subprocess.STDOUT
        )


async def bench(args: argparse.Namespace) -> None:
    dsn = await empty_database(ADMIN_DSN)
    workdir = Path(tempfile.mkdtemp(prefix="qbo-bench-"))
    lat = Latencies()
    receiver = Receiver(default_key="bench-signature-key", on_notification=lat.on_notification)
    try:
        async with (
            run_emulator(per_second=None, per_minute=None, in_flight=None) as emu,
            run_receiver(receiver) as url,
        ):
            realms = [
                emu.add_realm(f"91{n:014d}", seed=n, per_entity=1) for n in range(args.instances)
            ]
            bodies = [instance_body(emu, r, url, n, args.interval) for n, r in enumerate(realms)]
            (workdir / "instances.json").write_text(json.dumps(bodies))
            port = free_port()
            env = daemon_env(
                dsn,
                emu,
                workdir / "instances.json",
                port,
                POLLER_OVERLAP_SECONDS="5",
                POLLER_DELIVERY_POLL_INTERVAL="0.5s",
                POLLER_DB_POOL_SIZE="20",
            )
            proc = start_daemon(env, workdir / "daemon.log")
            ps = psutil.Process(proc.pid)
            try:
                await wait_ready(port, proc)
                warmup = args.warmup if args.warmup is not None else max(3 * args.interval, 5)
                await asyncio.sleep(warmup)
                cpu0, req0, t0 = ps.cpu_times(), api_requests(emu), time.time()
                events0 = lat.events
                peak_rss = ps.memory_info().rss
                driver = asyncio.create_task(
                    drive_changes(emu, realms, args.rate, lat, t0 + args.duration)
                )
                while not driver.done():
                    peak_rss = max(peak_rss, ps.memory_info().rss)
                    await asyncio.sleep(0.5)
                made = await driver
                await asyncio.sleep(args.interval * 2 + 2)  # let the last changes arrive
                t1, cpu1, req1 = time.time(), ps.cpu_times(), api_requests(emu)
                peak_rss = max(peak_rss, ps.memory_info().rss)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
        elapsed = t1 - t0
        cycles = elapsed / args.interval
        cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
        samples = sorted(lat.samples)

        def p(q: float) -> float:
            return (
                samples[min(len(samples) - 1, int(q * len(samples)))] if samples else float("nan")
            )

        print(
            f"instances={args.instances} resources/instance=22 interval={args.interval:g}s "
            f"rate={args.rate:g}/s window={elapsed:.1f}s"
        )
        print(
            "  QBO requests per instance per cycle: "
            f"{(req1 - req0) / (args.instances * cycles):.2f}"
        )
        print(
            f"  changes made: {made}; events received: {lat.events - events0} "
            f"({(lat.events - events0) / elapsed:.1f}/s); created-latency samples: {len(samples)}"
        )
        print(
            f"  change→callback latency: p50 {p(0.50):.2f}s  p99 {p(0.99):.2f}s  "
            f"mean {statistics.fmean(samples) if samples else float('nan'):.2f}s"
        )
        print(
            f"  daemon: CPU {cpu:.1f}s over {elapsed:.0f}s ({100 * cpu / elapsed:.0f}% of a core), "
            f"{1000 * cpu / max(cycles, 1):.0f} ms CPU per cycle, "
            f"peak RSS {peak_rss / 2**20:.0f} MiB"
        )
        print(f"  signature failures: {lat.bad}; duplicates: {receiver.duplicates}")
    finally:
        await drop_database(ADMIN_DSN, dsn)


if __name__ == "__main__":
    asyncio.run(bench(parse_args()))
