"""Webhook benchmark: p50/p99 latency from a change in QuickBooks to its callback, when Intuit
webhooks announce the change (DESIGN §11).

The daemon runs as its own process (`python -m poller run`) against a scratch database, with a
60-minute backstop, so every callback comes from a webhook: the emulator (in this process)
sends legacy notifications to one instance's realm and CloudEvents to the other's, after its
aggregation delay; the daemon records them, coalesces them per realm for
POLLER_WEBHOOK_COALESCE, polls, and delivers to a receiver here.

    .venv/bin/python bench/webhooks.py --changes 200 --rate 5 --delay 0.2 --coalesce 1s
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.scratch import drop_database, empty_database
from poller.demo.receiver import Receiver, run_receiver
from poller.errors import DatabaseError
from poller.store import polls
from qbo_emulator import run_emulator

ADMIN_DSN = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
VERIFIER = "bench-verifier-token"
PATH = "/elements/api-v2/events/quickbooks"
FORMATS = {"legacy": "9130351000000001", "cloudevents": "9130351000000002"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=200, help="changes in all (both formats)")
    parser.add_argument("--rate", type=float, default=5.0, help="changes per second")
    parser.add_argument("--delay", type=float, default=0.2, help="emulator batching delay, s")
    parser.add_argument("--coalesce", default="1s", help="POLLER_WEBHOOK_COALESCE")
    return parser.parse_args()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def instance_body(emu: Any, realm: str, url: str, name: str) -> dict[str, Any]:
    tokens = emu.issue_tokens(realm)
    return {
        "name": name,
        "providerData": {"refreshToken": tokens["refresh_token"], "realmId": realm},
        "configuration": {
            "oauth.api.key": emu.client_id,
            "oauth.api.secret": emu.client_secret,
            "event.notification.enabled": True,
            "event.notification.callback.url": url,
            "event.vendor.type": "webhook",  # the 60-minute backstop
            "event.poller.urls": "customers|invoices",
        },
    }


async def wait_baseline(dsn: str, daemon: subprocess.Popen[bytes]) -> None:
    """Both instances polled once and nothing due for the backstop's hour."""
    deadline = time.monotonic() + 90
    conn = None
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise SystemExit(f"the daemon exited with {daemon.returncode}")
        try:
            conn = conn or await asyncpg.connect(dsn)
            settled = await conn.fetchval(
                "SELECT count(*) = 4 AND bool_and(polls >= 1 AND next_due_at > now() + "
                "interval '50 minutes') FROM pair_cursors"
            )
            if settled:
                await conn.close()
                return
            # Take the baseline now rather than at the start-up phase (up to 30 s away).
            for instance_id in await conn.fetch(
                "SELECT DISTINCT instance_id FROM pair_cursors WHERE polls = 0"
            ):
                await polls.request_poll(conn, instance_id=instance_id[0])
        except (OSError, asyncpg.PostgresError, DatabaseError):
            pass
        await asyncio.sleep(0.5)
    raise SystemExit("the instances never settled")


async def main() -> None:
    args = parse_args()
    dsn = await empty_database(ADMIN_DSN, prefix="qbo_bench_hooks")
    receiver = Receiver()
    port = free_port()
    try:
        async with run_emulator(per_second=None) as emu, run_receiver(receiver) as url:
            for realm in FORMATS.values():
                emu.add_realm(realm, seed=1, per_entity=2)
            workdir = Path(tempfile.mkdtemp(prefix="qbo-bench-hooks-"))
            bodies = [instance_body(emu, realm, url, kind) for kind, realm in FORMATS.items()]
            (workdir / "instances.json").write_text(json.dumps(bodies))
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith(("POLLER_", "QBO_"))},
                "DATABASE_URL": dsn,
                "QBO_API_BASE_URL": emu.base_url,
                "QBO_OAUTH_TOKEN_URL": emu.token_url,
                "POLLER_INSTANCES_FILE": str(workdir / "instances.json"),
                "POLLER_HTTP_ADDR": f"127.0.0.1:{port}",
                "POLLER_LOG_LEVEL": "warning",
                "POLLER_WEBHOOK_COALESCE": args.coalesce,
                "QBO_WEBHOOK_VERIFIER_TOKEN": VERIFIER,
            }
            log = open(workdir / "daemon.log", "wb")  # noqa: SIM115 — closed below
            daemon = subprocess.Popen(
                [sys.executable, "-m", "poller", "run"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                await wait_baseline(dsn, daemon)
                for kind, realm in FORMATS.items():
                    emu.configure_webhooks(
                        realm,
                        f"http://127.0.0.1:{port}{PATH}",
                        VERIFIER,
                        format=kind,
                        delay_s=args.delay,
                    )
                made: dict[tuple[str, str], tuple[str, float]] = {}
                kinds = list(FORMATS)
                for n in range(args.changes):
                    kind = kinds[n % 2]
                    realm = FORMATS[kind]
                    customer = emu.create(realm, "Customer", {"DisplayName": f"Hook {n}"})
                    made[(realm, customer["Id"])] = (kind, time.time())
                    await asyncio.sleep(1 / args.rate)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and len(arrivals(receiver)) < len(made):
                    await asyncio.sleep(0.1)
            finally:
                daemon.terminate()
                daemon.wait(timeout=15)
                log.close()
            report(args, made, arrivals(receiver), emu)
    finally:
        await drop_database(ADMIN_DSN, dsn)


def arrivals(receiver: Receiver) -> dict[tuple[str, str], float]:
    found: dict[tuple[str, str], float] = {}
    for notification in receiver.notifications.values():
        for event in notification.events:
            key = (notification.message["realmId"], event["objectId"])
            found.setdefault(key, notification.arrived)
    return found


def report(
    args: argparse.Namespace,
    made: dict[tuple[str, str], tuple[str, float]],
    arrived: dict[tuple[str, str], float],
    emu: Any,
) -> None:
    print(
        f"changes={args.changes} rate={args.rate:g}/s emulator delay={args.delay:g}s "
        f"coalesce={args.coalesce} backstop=60min"
    )
    every: list[float] = []
    for kind in FORMATS:
        latencies = sorted(
            arrived[key] - at for key, (k, at) in made.items() if k == kind and key in arrived
        )
        every.extend(latencies)
        missing = sum(1 for key, (k, _) in made.items() if k == kind and key not in arrived)
        print(f"  {kind:<12} {summary(latencies)}  missing={missing}")
    print(f"  {'all':<12} {summary(sorted(every))}")
    for kind, realm in FORMATS.items():
        counters = emu.counters(realm)
        print(
            f"  {kind:<12} webhooks sent={counters.get('webhook_notifications', 0)} "
            f"cdc requests={counters.get('cdc', 0)}"
        )


def summary(latencies: list[float]) -> str:
    if not latencies:
        return "no callbacks"
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    return f"n={len(latencies)} p50={p50:.3f}s p99={p99:.3f}s max={latencies[-1]:.3f}s"


if __name__ == "__main__":
    asyncio.run(main())
