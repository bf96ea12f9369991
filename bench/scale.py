"""Scale benchmark: N idle instances × 22 resources in one daemon (DESIGN §2, issue 17).

The daemon runs as its own process (`python -m poller run`, as in production) against a
scratch database reached through a counting proxy in this process; this process also runs the
emulator (throttling off) and a receiver. Nothing changes in QuickBooks during the measured
window, so every cycle is an idle one. Prints, for the steady window after every instance has
polled once:
- the daemon's RSS, and its CPU per idle instance cycle (ms) and share of a core;
- QuickBooks requests per instance per cycle (the emulator's counters);
- database round trips per idle instance cycle: the proxy counts the frontend messages that
  end a round trip (Sync of the extended protocol, Query of the simple one; the pool's reset
  query is a simple Query, so it shows apart);
- the time from the daemon being ready until every pair has been polled once;
- the event loop's longest pause and its GC time (the daemon's own metrics, sampled);
- `/metrics`: size, lines and scrape time; the load average before and after (shared machine).

    .venv/bin/python bench/scale.py --instances 4500 --interval 60 --duration 120
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
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
from poller.demo.receiver import Receiver, run_receiver
from qbo_emulator import run_emulator

STARTUP_CODES = {196608}  # protocol 3.0; SSL/GSS requests and cancels are answered otherwise
SSL_REQUEST, GSS_REQUEST, CANCEL_REQUEST = 80877103, 80877104, 80877102


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--instances", type=int, default=4500)
    p.add_argument("--interval", type=float, default=60.0, help="poll interval, seconds")
    p.add_argument("--duration", type=float, default=120.0, help="measured seconds")
    p.add_argument(
        "--first-poll-timeout", type=float, default=600.0, help="give up waiting after this"
    )
    p.add_argument("--pool-size", type=int, default=10, help="POLLER_DB_POOL_SIZE")
    p.add_argument("--env", action="append", default=[], help="extra KEY=VALUE for the daemon")
    p.add_argument(
        "--burst",
        type=int,
        default=0,
        help="after the idle window: this many customers created at once in the first company; "
        "prints the dispatcher's queueing delay and the event loop's longest pause meanwhile",
    )
    return p.parse_args()


@dataclass
class Counts:
    syncs: int = 0  # extended-protocol round trips (Sync)
    queries: int = 0  # simple-protocol round trips (Query): the pool's reset, BEGIN/COMMIT...
    connections: int = 0

    @property
    def total(self) -> int:
        return self.syncs + self.queries


@dataclass
class CountingProxy:
    """A TCP proxy to PostgreSQL that counts the client's round trips (frontend messages
    Sync 'S' and Query 'Q'). Connections must not use TLS (`ssl=disable` in the DSN)."""

    upstream: tuple[str, int]
    counts: Counts = field(default_factory=Counts)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counts.connections += 1
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        back = asyncio.create_task(_pipe(up_reader, writer))
        try:
            await self._forward(reader, up_writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            up_writer.close()
            await asyncio.gather(back, return_exceptions=True)
            writer.close()

    async def _forward(self, reader: asyncio.StreamReader, up: asyncio.StreamWriter) -> None:
        while True:  # untyped start-up messages (SSLRequest answered 'N', then StartupMessage)
            head = await reader.readexactly(8)
            length, code = struct.unpack("!ii", head)
            up.write(head + await reader.readexactly(length - 8))
            await up.drain()
            if code in STARTUP_CODES or code == CANCEL_REQUEST:
                break
        while True:
            head = await reader.readexactly(5)
            kind, length = head[:1], struct.unpack("!i", head[1:])[0]
            body = await reader.readexactly(length - 4)
            if kind == b"S":
                self.counts.syncs += 1
            elif kind == b"Q":
                self.counts.queries += 1
            up.write(head + body)
            await up.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


def _get(url: str, timeout: float) -> tuple[int, bytes, float]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read(), time.perf_counter() - started


async def scrape(port: int) -> tuple[bytes, float]:
    """GET /metrics in a thread: this process's loop carries the proxy and the emulator, which
    the daemon needs to answer at all."""
    _, body, took = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics", 30)
    return body, took


def metric_value(body: bytes, name: str, labels: str = "") -> float | None:
    """The sum of a metric's samples named exactly `name` whose labels contain `labels`
    (e.g. 'loop="main"')."""
    total, seen = 0.0, False
    for line in body.decode().splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            if labels and labels not in line:
                continue
            total += float(line.rsplit(" ", 1)[1])
            seen = True
    return total if seen else None


def lag_counts(body: bytes, loop: str) -> tuple[float, float, float]:
    """The loop's lag probes so far: all, those over 100 ms, those over 1 s."""
    label = f'loop="{loop}"'
    total = metric_value(body, "qbo_poller_event_loop_lag_seconds_count", label) or 0.0
    upto_100ms = _labelled(body, "qbo_poller_event_loop_lag_seconds_bucket", label, "0.1")
    upto_1s = _labelled(body, "qbo_poller_event_loop_lag_seconds_bucket", label, "1.0")
    return total, total - upto_100ms, total - upto_1s


def _labelled(body: bytes, name: str, label: str, le: str) -> float:
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name + "{") and label in line and f'le="{le}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def loop_pauses(body: bytes) -> dict[str, float]:
    """The longest recent pause of each event loop (the main one, the dispatcher's)."""
    found = {}
    for loop in ("main", "deliver"):
        value = metric_value(body, "qbo_poller_event_loop_lag_max_seconds", f'loop="{loop}"')
        if value is not None:
            found[loop] = value
    return found


async def wait_first_polls(dsn: str, pairs: int, timeout: float) -> tuple[float, int]:
    """Seconds until every pair has been polled once (polls > 0), or until `timeout`; and how
    many pairs had been polled by then."""
    conn = await asyncpg.connect(dsn)
    started = time.monotonic()
    polled = 0
    try:
        while time.monotonic() - started < timeout:
            polled = await conn.fetchval("SELECT count(*) FROM pair_cursors WHERE polls > 0")
            if polled >= pairs:
                break
            await asyncio.sleep(1.0)
    finally:
        await conn.close()
    return time.monotonic() - started, polled


async def run_burst(
    args: argparse.Namespace,
    emu: object,
    realm: str,
    receiver: Receiver,
    port: int,
    dsn: str,
) -> str:
    """`args.burst` customers created at once in `realm`: until all are delivered, the event
    loop's longest pause, and per notification the delay from its outbox row (the commit's
    start) to its first delivery attempt (the dispatcher's queueing delay)."""
    if not args.burst:
        return ""
    before = len(receiver.events())
    started = time.monotonic()
    for n in range(args.burst):
        emu.create(realm, "Customer", {"DisplayName": f"Burst {n} {uuid.uuid4().hex[:8]}"})  # type: ignore[attr-defined]
    made_s = time.monotonic() - started
    pauses: dict[str, float] = {}
    first: float | None = None
    deadline = time.monotonic() + 4 * args.interval + 120
    while len(receiver.events()) - before < args.burst and time.monotonic() < deadline:
        await asyncio.sleep(1)
        if first is None and len(receiver.events()) > before:
            first = time.monotonic()
        body, _ = await scrape(port)
        for loop, pause in loop_pauses(body).items():
            pauses[loop] = max(pauses.get(loop, 0.0), pause)
    done = time.monotonic()
    delivered = len(receiver.events()) - before
    conn = await asyncpg.connect(dsn)
    try:
        delays = await conn.fetch(
            """SELECT extract(epoch FROM min(a.started_at) - n.created_at) AS delay
               FROM notifications n JOIN delivery_attempts a ON a.notification_id = n.id
               JOIN instances i ON i.id = n.instance_id
               WHERE i.realm_id = $1 GROUP BY n.id, n.created_at""",
            realm,
        )
    finally:
        await conn.close()
    waits = sorted(float(r["delay"]) for r in delays)

    def q(x: float) -> float:
        return waits[min(len(waits) - 1, int(x * len(waits)))] if waits else float("nan")

    span = done - (first or done)
    return (
        f"  burst: {args.burst} customers created in {made_s:.1f} s; {delivered} events "
        f"delivered, {span:.1f} s from first to last ({delivered / max(span, 1e-9):.0f}/s)\n"
        f"  dispatcher queueing delay (outbox row → first attempt) over {len(waits)} "
        f"notifications: p50 {q(0.5):.2f} s, p99 {q(0.99):.2f} s, max {q(1.0):.2f} s\n"
        "  event loops during the burst, longest pause: "
        + (", ".join(f"{loop} {1000 * p:.0f} ms" for loop, p in pauses.items()) or "n/a")
    )


async def bench(args: argparse.Namespace) -> None:
    direct_dsn = await empty_database(ADMIN_DSN, prefix="qbo_scale")
    name = direct_dsn.rsplit("/", 1)[1]
    workdir = Path(tempfile.mkdtemp(prefix="qbo-scale-"))
    receiver = Receiver(default_key="bench-signature-key")
    load_before = os.getloadavg()
    proxy = CountingProxy(("127.0.0.1", 5432))
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    proxy_port = server.sockets[0].getsockname()[1]
    proxied_dsn = f"postgresql://postgres@127.0.0.1:{proxy_port}/{name}?sslmode=disable"
    try:
        async with (
            run_emulator(per_second=None, per_minute=None, in_flight=None) as emu,
            run_receiver(receiver) as url,
        ):
            t_setup = time.monotonic()
            realms = [
                emu.add_realm(f"92{n:014d}", seed=n, per_entity=1) for n in range(args.instances)
            ]
            bodies = [instance_body(emu, r, url, n, args.interval) for n, r in enumerate(realms)]
            (workdir / "instances.json").write_text(json.dumps(bodies))
            print(f"emulator: {args.instances} realms in {time.monotonic() - t_setup:.1f} s")
            port = free_port()
            env = daemon_env(
                proxied_dsn,
                emu,
                workdir / "instances.json",
                port,
                POLLER_DB_POOL_SIZE=str(args.pool_size),
            )
            env.update(kv.split("=", 1) for kv in args.env)
            t_start = time.monotonic()
            proc = start_daemon(env, workdir / "daemon.log")
            ps = psutil.Process(proc.pid)
            try:
                await wait_ready(port, proc, timeout=600)
                ready_s = time.monotonic() - t_start
                first_s, polled = await wait_first_polls(
                    direct_dsn, args.instances * 22, args.first_poll_timeout
                )
                # One more interval so that the window holds steady cycles only.
                await asyncio.sleep(min(args.interval, 30))
                cpu0, req0, rt0 = ps.cpu_times(), api_requests(emu), proxy.counts.total
                q0 = proxy.counts.queries
                body0, _ = await scrape(port)
                gc0 = metric_value(body0, "qbo_poller_gc_seconds_total") or 0.0
                lags0 = {loop: lag_counts(body0, loop) for loop in ("main", "deliver")}
                t0 = time.monotonic()
                rss: list[int] = []
                pauses: dict[str, float] = {}
                while time.monotonic() - t0 < args.duration:
                    await asyncio.sleep(5)
                    rss.append(ps.memory_info().rss)
                    body, _ = await scrape(port)
                    for loop, pause in loop_pauses(body).items():
                        pauses[loop] = max(pauses.get(loop, 0.0), pause)
                t1, cpu1 = time.monotonic(), ps.cpu_times()
                req1, rt1, q1 = api_requests(emu), proxy.counts.total, proxy.counts.queries
                scrapes = [await scrape(port) for _ in range(3)]
                gc1 = metric_value(scrapes[-1][0], "qbo_poller_gc_seconds_total") or 0.0
                lags1 = {loop: lag_counts(scrapes[-1][0], loop) for loop in ("main", "deliver")}
                burst = await run_burst(args, emu, realms[0], receiver, port, direct_dsn)
            finally:
                proc.terminate()
                # Waited for off the loop: the daemon's database connections go through the
                # proxy on this loop, and it needs them to shut down.
                try:
                    await asyncio.to_thread(proc.wait, 60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    await asyncio.to_thread(proc.wait, 10)
        load_after = os.getloadavg()
        elapsed = t1 - t0
        instance_cycles = args.instances * elapsed / args.interval
        cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
        size = len(scrapes[-1][0])
        lines = scrapes[-1][0].count(b"\n")
        print(
            f"instances={args.instances} pairs={args.instances * 22} "
            f"interval={args.interval:g}s window={elapsed:.0f}s "
            f"instance cycles={instance_cycles:.0f}"
        )
        pairs = args.instances * 22
        if polled >= pairs:
            print(f"  ready after {ready_s:.1f} s; every pair polled once {first_s:.1f} s later")
        else:
            print(
                f"  ready after {ready_s:.1f} s; only {polled} of {pairs} pairs polled "
                f"{first_s:.0f} s later (gave up waiting)"
            )
        print(
            f"  RSS: median {statistics.median(rss) / 2**20:.0f} MiB, "
            f"max {max(rss) / 2**20:.0f} MiB"
        )
        print(
            f"  daemon CPU: {1000 * cpu / instance_cycles:.2f} ms per idle instance cycle "
            f"({100 * cpu / elapsed:.1f}% of a core); GC {100 * (gc1 - gc0) / max(cpu, 1e-9):.0f}%"
            " of it"
        )
        print(f"  QBO requests per instance per cycle: {(req1 - req0) / instance_cycles:.2f}")
        print(
            "  database round trips per idle instance cycle: "
            f"{(rt1 - rt0) / instance_cycles:.2f} "
            f"(of which simple queries, e.g. the pool's reset: {(q1 - q0) / instance_cycles:.2f})"
        )
        if pauses:
            print(
                "  event loops, longest pause: "
                + ", ".join(f"{loop} {1000 * p:.0f} ms" for loop, p in pauses.items())
            )
        else:
            print("  event loop: no lag metric exposed")
        for loop in ("main", "deliver"):
            n, over_100ms, over_1s = (b - a for a, b in zip(lags0[loop], lags1[loop], strict=True))
            if n:
                print(
                    f"  {loop} loop in the window: {n:.0f} lag probes (every 250 ms), "
                    f"{over_100ms:.0f} late by over 100 ms, {over_1s:.0f} by over 1 s"
                )
        print(
            f"  /metrics: {size / 1024:.1f} KiB, {lines} lines, scrape "
            f"{1000 * statistics.median(s for _, s in scrapes):.0f} ms (median of 3)"
        )
        print(
            "  load average (1, 5, 15 min): before "
            + " ".join(f"{x:.2f}" for x in load_before)
            + ", after "
            + " ".join(f"{x:.2f}" for x in load_after)
            + " (a shared 2-core machine)"
        )
        if burst:
            print(burst)
    finally:
        server.close()
        await drop_database(ADMIN_DSN, direct_dsn)


if __name__ == "__main__":
    asyncio.run(bench(parse_args()))
