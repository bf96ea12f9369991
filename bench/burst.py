"""Burst benchmark (issue 17): many changes at once, end to end, with the default overlap.

The daemon runs as its own process (`python -m poller run`) with the DEFAULT settings
(`POLLER_OVERLAP_SECONDS` unset: 120 s) against a scratch database; this process runs the
emulator and a signature-checking receiver. Once every instance has made its first polls, the
burst is written at once: `--customers` customers and `--invoices` invoices updated in each of
`--companies` companies (each seeded with `--size` objects per entity, default: as many as
change). Printed: the time from the burst to the last callback, events/s end to end, when
detection finished (every event row in the database) versus delivery, the daemon's CPU per
event, QBO requests per company, and whether every event arrived exactly once. `--tap` then
runs the singer tap-quickbooks (its own venv, see bench/tap_quickbooks.py) over the same
burst, company after company, and prints its records/s beside the daemon's events/s.

    .venv/bin/python bench/burst.py                                # 38,000 changes, 20 companies
    .venv/bin/python bench/burst.py --companies 1 --customers 0 --invoices 1000 --size 20000
    .venv/bin/python bench/burst.py --tap
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.pipeline import (
    ADMIN_DSN,
    api_requests,
    daemon_env,
    free_port,
    instance_body,
    start_daemon,
    wait_ready,
)
from bench.scratch import drop_database, empty_database
from poller.demo.receiver import Received, Receiver, run_receiver
from qbo_emulator import run_emulator


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--companies", type=int, default=20)
    p.add_argument("--customers", type=int, default=950, help="customers changed per company")
    p.add_argument("--invoices", type=int, default=950, help="invoices changed per company")
    p.add_argument("--size", type=int, default=None, help="objects per entity per company")
    p.add_argument("--interval", type=float, default=2.0, help="poll interval, seconds")
    p.add_argument("--timeout", type=float, default=600.0, help="give up after, seconds")
    p.add_argument("--tap", action="store_true", help="also run tap-quickbooks on the burst")
    p.add_argument("--one-url", action="store_true", help="one callback URL for all companies")
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE for the daemon")
    p.add_argument(
        "--profile", type=float, default=0, help="py-spy the daemon and this process so long"
    )
    p.add_argument(
        "--overlap", type=int, default=None, help="POLLER_OVERLAP_SECONDS (default: unset)"
    )
    return p.parse_args()


@dataclass
class Arrivals:
    keys: set[tuple[str, str, str]] = field(default_factory=set)
    repeated: int = 0
    bad: int = 0
    last: float = 0.0

    def on_notification(self, received: Received) -> None:
        self.bad += received.elements_ok is False
        realm = str(received.message["realmId"])
        for event in received.events:
            key = (realm, event["objectType"], event["objectId"])
            if key in self.keys:
                self.repeated += 1
            self.keys.add(key)
        self.last = received.arrived


def write_burst(emu: object, realms: list[str], customers: int, invoices: int) -> int:
    made = 0
    for realm in realms:
        for entity, n, field_name in (
            ("Customer", customers, "Notes"),
            ("Invoice", invoices, "PrivateNote"),
        ):
            for object_id in emu.ids(realm, entity)[:n]:  # type: ignore[attr-defined]
                emu.update(realm, entity, {"Id": object_id, field_name: "burst"})  # type: ignore[attr-defined]
                made += 1
    return made


def postgres_cpu() -> float:
    """CPU seconds used so far by the PostgreSQL server's processes on this machine (all
    databases: the bench's scratch database is the only busy one)."""
    total = 0.0
    for proc in psutil.process_iter(["name", "cpu_times"]):
        times = proc.info["cpu_times"]
        if proc.info["name"] in ("postgres", "postmaster") and times is not None:
            total += times.user + times.system
    return total


def spy(pid: int, seconds: float, path: Path) -> subprocess.Popen[bytes]:
    """py-spy (from this venv) sampling a process for `seconds` into folded stacks."""
    spy_bin = Path(sys.executable).with_name("py-spy")
    command = [str(spy_bin), "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "50"]
    proc = subprocess.Popen(
        [*command, "-f", "raw", "-o", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    proc.path = path  # type: ignore[attr-defined]
    return proc


async def event_rows(conn: asyncpg.Connection) -> int:
    try:
        return int(await conn.fetchval("SELECT count(*) FROM events"))
    except asyncpg.UndefinedTableError:
        return 0


DELIVERY_FIGURES = """
SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY a.duration_ms) AS post_ms,
       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (
           ORDER BY extract(epoch FROM a.started_at - n.created_at)) AS wait_s,
       sum(a.duration_ms) / 1000.0 / nullif(extract(epoch FROM max(a.started_at
           + make_interval(secs => a.duration_ms / 1000.0)) - min(a.started_at)), 0) AS in_flight
FROM delivery_attempts a JOIN notifications n ON n.id = a.notification_id
WHERE a.attempt = 1 AND n.created_at >= $1
"""


async def delivery_figures(conn: asyncpg.Connection, since: datetime) -> str:
    """Each first attempt's POST time and its queueing delay (written → attempt started)."""
    row = await conn.fetchrow(DELIVERY_FIGURES, since)
    if row is None or row["post_ms"] is None:
        return "no attempts recorded"
    post, wait = row["post_ms"], row["wait_s"]
    return (
        f"callback POST p50 {post[0]:.0f} ms, p99 {post[1]:.0f} ms; queueing delay (written → "
        f"first attempt) p50 {wait[0]:.1f} s, p99 {wait[1]:.1f} s; "
        f"{row['in_flight']:.1f} POSTs in flight on average"
    )


async def bench(args: argparse.Namespace) -> dict[str, float]:
    dsn = await empty_database(ADMIN_DSN)
    workdir = Path(tempfile.mkdtemp(prefix="qbo-burst-"))
    arrivals = Arrivals()
    receiver = Receiver(default_key="bench-signature-key", on_notification=arrivals.on_notification)
    size = args.size or max(args.customers, args.invoices, 1)
    figures: dict[str, float] = {}
    try:
        async with (
            run_emulator(per_second=None, per_minute=None, in_flight=None) as emu,
            run_receiver(receiver) as url,
        ):
            t_seed = time.time()
            realms = [
                emu.add_realm(f"92{n:014d}", seed=n, per_entity={"Customer": size, "Invoice": size})
                for n in range(args.companies)
            ]
            print(
                f"seeded {args.companies} companies × {size} customers + invoices "
                f"in {time.time() - t_seed:.1f} s"
            )
            # Each company its own callback URL (its tenant's receiver), unless --one-url: the
            # dispatcher's per-URL concurrency (8) then caps the whole burst.
            bodies = [
                instance_body(
                    emu, r, url if args.one_url else f"{url}?tenant={n}", n, args.interval
                )
                for n, r in enumerate(realms)
            ]
            for body in bodies:  # only the two resources the burst touches
                body["configuration"]["event.poller.urls"] = "customers|invoices"  # type: ignore[index]
            (workdir / "instances.json").write_text(json.dumps(bodies))
            port = free_port()
            env = daemon_env(dsn, emu, workdir / "instances.json", port, POLLER_DB_POOL_SIZE="20")
            env.pop("POLLER_OVERLAP_SECONDS", None)  # the default, 120 s
            if args.overlap is not None:
                env["POLLER_OVERLAP_SECONDS"] = str(args.overlap)
            env.update(dict(item.split("=", 1) for item in args.env))
            proc = start_daemon(env, workdir / "daemon.log")
            ps = psutil.Process(proc.pid)
            db = None
            try:
                await wait_ready(port, proc)
                await asyncio.sleep(max(3 * args.interval, 8))  # first polls: baselines, listings
                db = await asyncpg.connect(dsn)
                events_before = await event_rows(db)
                load0 = os.getloadavg()
                cpu0, req0 = ps.cpu_times(), api_requests(emu)
                own0 = psutil.Process().cpu_times()
                pg0 = postgres_cpu()
                t0 = time.time()
                burst_at = datetime.now(UTC)
                made = write_burst(emu, realms, args.customers, args.invoices)
                t_written = time.time()
                spies = (
                    [
                        spy(pid, args.profile, workdir / f"{who}.folded")
                        for who, pid in (("daemon", proc.pid), ("bench", os.getpid()))
                    ]
                    if args.profile
                    else []
                )
                detected_at, req_detected = None, 0
                peak_rss = ps.memory_info().rss
                while len(arrivals.keys) < made and time.time() - t0 < args.timeout:
                    await asyncio.sleep(0.25)
                    peak_rss = max(peak_rss, ps.memory_info().rss)
                    if detected_at is None and await event_rows(db) - events_before >= made:
                        detected_at, req_detected = time.time(), api_requests(emu)
                t_end = arrivals.last if len(arrivals.keys) >= made else time.time()
                for one in spies:
                    while one.poll() is None:
                        await asyncio.sleep(0.2)
                    print(f"  profile: {one.path} (py-spy folded stacks)")  # type: ignore[attr-defined]
                await asyncio.sleep(2 * args.interval)  # anything sent twice shows up now
                cpu1, req1 = ps.cpu_times(), api_requests(emu)
                own1 = psutil.Process().cpu_times()
                pg = postgres_cpu() - pg0
                load1 = os.getloadavg()
                delivery = await delivery_figures(db, burst_at)
            finally:
                if db is not None:
                    await db.close()
                proc.terminate()
                proc.wait(timeout=30)
            # The emulator serves nothing while the burst is written (same event loop): the
            # burst appears to the daemon at once, when writing ends; time counts from then.
            elapsed = t_end - t_written
            cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
            got = len(arrivals.keys)
            figures = {
                "events_per_s": got / elapsed,
                "elapsed_s": elapsed,
                "cpu_ms_per_event": 1000 * cpu / max(got, 1),
            }
            print(
                f"burst: {made} changes ({args.customers} customers + {args.invoices} invoices "
                f"× {args.companies} companies of {size} per entity), interval "
                f"{args.interval:g} s, overlap {args.overlap or 'default (120 s)'}; "
                f"written in {t_written - t0:.1f} s"
            )
            print(
                f"  delivered {got}/{made} in {elapsed:.1f} s: "
                f"{got / elapsed:,.0f} events/s end to end; "
                f"repeated {arrivals.repeated}, receiver duplicates {receiver.duplicates}, "
                f"bad signatures {arrivals.bad}"
            )
            if detected_at is not None:
                print(
                    "  detection done (every event row written) at "
                    f"{detected_at - t_written:.1f} s, after "
                    f"{(req_detected - req0) / args.companies:.1f} QBO requests per company; "
                    f"delivery done {t_end - detected_at:.1f} s later"
                )
            print(
                f"  daemon CPU {cpu:.1f} s ({100 * cpu / elapsed:.0f}% of a core), "
                f"{1000 * cpu / max(got, 1):.3f} ms per event; "
                f"peak RSS {peak_rss / 2**20:.0f} MiB; "
                f"QBO requests {(req1 - req0) / args.companies:.1f} per company"
            )
            own = (own1.user + own1.system) - (own0.user + own0.system)
            print(f"  {delivery}")
            print(
                f"  this process (emulator and receiver, one event loop) CPU {own:.1f} s "
                f"({100 * own / elapsed:.0f}% of a core)"
            )
            print(f"  PostgreSQL CPU {pg:.1f} s ({100 * pg / elapsed:.0f}% of a core)")
            # The machine's whole budget: every process of the burst on the same two cores.
            per_event = (cpu + own + pg) / max(got, 1)
            print(
                f"  all three per event: {1000 * per_event:.3f} ms of CPU, so at most "
                f"{(os.cpu_count() or 1) / per_event:,.0f} events/s on this machine's "
                f"{os.cpu_count()} cores"
            )
            print(f"  load average before {load0[0]:.2f}, after {load1[0]:.2f} (shared machine)")
            if args.tap:
                from bench.tap_quickbooks import run_taps

                records, seconds, cpu_s = await run_taps(emu, realms, burst_at, workdir)
                figures["tap_records_per_s"] = records / seconds
                print(
                    f"  tap-quickbooks on the same burst: {records} records in {seconds:.1f} s: "
                    f"{records / seconds:,.0f} records/s ({1000 * cpu_s / max(records, 1):.3f} ms "
                    f"CPU per record); the daemon is {got / elapsed / (records / seconds):.1f}× "
                    "that (and signs and delivers each event, where the tap only prints)"
                )
    finally:
        await drop_database(ADMIN_DSN, dsn)
    return figures


if __name__ == "__main__":
    asyncio.run(bench(parse_args()))
