"""`qbo-poller run` as a process, outside the happy path (DESIGN §7): SIGHUP reloads the instances
file, the embedded PostgreSQL dies with its daemon however it dies and is never shared by two
daemons, a closed terminal stops the daemon gracefully, SIGTERM releases the leases."""

from __future__ import annotations

import asyncio
import copy
import fcntl
import json
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from poller.demo.receiver import Receiver, run_receiver
from poller.store import db
from qbo_emulator import run_emulator
from tests.e2e.daemon import Daemon, base_env, free_port, run_once, write_instances
from tests.e2e.pipeline import instance_body
from tests.e2e.test_run_daemon import postgres_processes
from tests.unit.test_instances import BODY


def log_events(daemon: Daemon, event: str) -> list[dict[str, Any]]:
    found = []
    for line in daemon.output().splitlines():
        if f'"event":"{event}"' in line:
            found.append(json.loads(line))
    return found


def wait_for(check: Any, timeout: float, what: str, daemon: Daemon) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if daemon.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {daemon.proc.returncode}: {daemon.output()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {daemon.output()[-4000:]}")
        time.sleep(0.05)


def no_postgres_within(marker: str, seconds: float) -> list[Any]:
    deadline = time.monotonic() + seconds
    while postgres_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    return postgres_processes(marker)


# --- SIGHUP: re-read POLLER_INSTANCES_FILE -----------------------------------------------------


@pytest.mark.slow
async def test_sighup_reloads_the_instances_file_and_an_invalid_one_keeps_the_running_set(
    db_dsn: str, tmp_path: Path
) -> None:
    receiver = Receiver()
    async with run_emulator(per_second=None) as emu, run_receiver(receiver) as url:
        realm_a = emu.add_realm("4620816365100101", seed=1, per_entity=1)
        realm_b = emu.add_realm("4620816365100102", seed=2, per_entity=1)
        body_a = instance_body(emu, realm_a, url, "ReloadA", interval_minutes="5")
        body_b = instance_body(emu, realm_b, url, "ReloadB", interval_minutes="5")
        path = write_instances(tmp_path / "instances.json", [body_a])
        env = base_env(
            DATABASE_URL=db_dsn,
            QBO_API_BASE_URL=emu.base_url,
            QBO_OAUTH_TOKEN_URL=emu.token_url,
            POLLER_INSTANCES_FILE=str(path),
            POLLER_HTTP_ADDR=f"127.0.0.1:{free_port()}",
        )
        daemon = Daemon(env, log_path=tmp_path / "daemon.log")
        try:
            polling = lambda: {e["instance"]: e for e in log_events(daemon, "instance_polling")}  # noqa: E731
            await asyncio.to_thread(wait_for, lambda: "ReloadA" in polling(), 60, "A", daemon)

            # A new instance, and a changed one.
            changed_a = copy.deepcopy(body_a)
            changed_a["configuration"]["event.poller.refresh_interval"] = "7"
            write_instances(path, [changed_a, body_b])
            daemon.proc.send_signal(signal.SIGHUP)

            def reloaded() -> bool:
                starts = [e for e in log_events(daemon, "instance_polling")]
                return any(e["instance"] == "ReloadB" for e in starts) and any(
                    e["instance"] == "ReloadA" and e["refresh_interval_s"] == 420 for e in starts
                )

            await asyncio.to_thread(wait_for, reloaded, 30, "the reloaded instances", daemon)
            actions = {e["instance"]: e["action"] for e in log_events(daemon, "instance_loaded")}
            assert actions == {"ReloadA": "updated", "ReloadB": "created"}
            assert log_events(daemon, "instances_reloaded")[-1]["instances"] == 2

            # An invalid file: one line, nothing stops, the daemon goes on.
            stops_before = len(log_events(daemon, "instance_stopping"))
            path.write_text('[{"name": "broken", ')
            daemon.proc.send_signal(signal.SIGHUP)
            await asyncio.to_thread(
                wait_for,
                lambda: log_events(daemon, "instances_reload_failed"),
                10,
                "the reload failure",
                daemon,
            )
            failed = [line for line in daemon.output().splitlines() if "reload_failed" in line]
            assert len(failed) == 1 and "POLLER_INSTANCES_FILE" in failed[0], failed
            assert "Traceback" not in daemon.output()
            await asyncio.sleep(3)  # more than a rescan: nothing may stop
            assert daemon.proc.poll() is None
            assert len(log_events(daemon, "instance_stopping")) == stops_before

            # SIGTERM: exit 0 within 10 s, every lease released for a successor.
            conn = await db.connect(db_dsn)
            try:
                deadline = time.monotonic() + 30
                while await leases_held(conn) < 1 and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)  # an instance takes its lease at its first cycle
                assert await leases_held(conn) >= 1, daemon.output()[-3000:]
                code, elapsed = daemon.terminate(timeout=10)
                assert code == 0, daemon.output()
                assert elapsed < 10
                assert await leases_held(conn) == 0
            finally:
                await conn.close()
        finally:
            daemon.close()


async def leases_held(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM instance_leases WHERE owner IS NOT NULL"))


# --- the embedded PostgreSQL -------------------------------------------------------------------


def embedded_env(tmp_path: Path, data_dir: Path, port: int) -> dict[str, str]:
    instances = write_instances(tmp_path / "instances.json", BODY)
    return base_env(
        POLLER_DATA_DIR=str(data_dir),
        POLLER_INSTANCES_FILE=str(instances),
        POLLER_HTTP_ADDR=f"127.0.0.1:{port}",
    )


@pytest.mark.slow
def test_embedded_postgres_dies_with_a_killed_daemon_and_is_never_shared(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    env = embedded_env(tmp_path, data_dir, port)
    first = Daemon(env, log_path=tmp_path / "first.log")
    try:
        assert first.wait_http(port, "/readyz", timeout=90) == 200
        [server] = postgres_processes(str(data_dir))

        # A second daemon on the same POLLER_DATA_DIR: one line, exit 2, the first unharmed.
        second = run_once(["run"], {**env, "POLLER_HTTP_ADDR": f"127.0.0.1:{free_port()}"})
        assert second.returncode == 2, second.stdout + second.stderr
        assert "Traceback" not in second.stderr
        # The daemon's start-up log lines (JSON) come first; then the one error line, last.
        lines = second.stderr.strip().splitlines()
        assert (
            [line for line in lines if not line.startswith("{")]
            == lines[-1:]
            == [
                f"qbo-poller: configuration error: POLLER_DATA_DIR={str(data_dir)!r}: its embedded "
                f"PostgreSQL belongs to another running qbo-poller (pid {first.proc.pid}, "
                "qbo-poller run); stop that one, or give this daemon its own POLLER_DATA_DIR "
                "(several replicas share one server through DATABASE_URL)"
            ]
        )
        # A one-shot command joins the running daemon's server, and leaves it running.
        listed = run_once(["instances", "list"], env)
        assert listed.returncode == 0, listed.stderr
        assert str(BODY["name"])[:24] in listed.stdout
        assert [p.pid for p in postgres_processes(str(data_dir))] == [server.pid]
        assert first.wait_http(port, "/readyz") == 200

        first.proc.kill()  # kill -9: no graceful stop, no atexit
        first.proc.wait(timeout=10)
        assert no_postgres_within(str(data_dir), 5) == []
    finally:
        first.close()

    # The next run starts its own server, cleanly: nothing was left to stop or to join.
    port = free_port()
    env["POLLER_HTTP_ADDR"] = f"127.0.0.1:{port}"
    nxt = Daemon(env, log_path=tmp_path / "next.log")
    try:
        assert nxt.wait_http(port, "/readyz", timeout=90) == 200
        assert '"event":"embedded_postgres_leftover_stopping"' not in nxt.output()
        [server] = postgres_processes(str(data_dir))
        assert server.ppid() == nxt.proc.pid  # the daemon's own child, not a re-parented orphan
        started = time.monotonic()
        nxt.proc.send_signal(signal.SIGINT)  # Ctrl-C: the same graceful stop as SIGTERM
        assert nxt.proc.wait(timeout=10) == 0, nxt.output()
        assert time.monotonic() - started < 10
        assert '"event":"embedded_postgres_stopped"' in nxt.output()
    finally:
        nxt.close()
    assert no_postgres_within(str(data_dir), 5) == []


@pytest.mark.slow
def test_a_server_nobody_owns_is_stopped_not_joined(tmp_path: Path) -> None:
    """A server left running by an earlier daemon (pgserver's `pg_ctl start` detached it) is
    stopped with one warning before the daemon starts its own."""
    data_dir = tmp_path / "data"
    port = free_port()
    env = embedded_env(tmp_path, data_dir, port)
    assert run_once(["migrate"], env, timeout=90).returncode == 0  # initialises pgdata
    assert postgres_processes(str(data_dir)) == []
    pgdata = data_dir / "pgdata"
    from poller.store.embedded import _run_as, binaries

    pg_ctl = [str(binaries() / "pg_ctl"), "-D", str(pgdata), "-w", "-l", str(pgdata / "orphan.log")]
    subprocess.run(
        [*pg_ctl, "-o", f"-h '' -k {pgdata}", "start"],
        check=True,
        capture_output=True,
        user=_run_as(),
    )
    [orphan] = postgres_processes(str(data_dir))
    daemon = Daemon(env, log_path=tmp_path / "daemon.log")
    try:
        assert daemon.wait_http(port, "/readyz", timeout=90) == 200
        [warning] = log_events(daemon, "embedded_postgres_leftover_stopping")
        assert warning["pid"] == orphan.pid
        [server] = postgres_processes(str(data_dir))
        assert server.pid != orphan.pid and server.ppid() == daemon.proc.pid
        code, _ = daemon.terminate(timeout=10)
        assert code == 0, daemon.output()
    finally:
        daemon.close()
    assert no_postgres_within(str(data_dir), 5) == []


def _take_terminal(slave: int) -> None:
    # In the child, before exec: a new session whose controlling terminal is the pty, as a
    # shell in a terminal window gives a foreground command.
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)


@pytest.mark.slow
def test_a_closed_terminal_stops_the_daemon_and_its_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    env = embedded_env(tmp_path, data_dir, port)
    env.pop("POLLER_LOG_FORMAT")  # on a terminal, as a person would run it
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "poller", "run"],
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=lambda: _take_terminal(0),  # the test process forks no threads
    )
    os.close(slave)
    output = bytearray()
    try:
        deadline = time.monotonic() + 90
        while b"daemon_ready" not in output and time.monotonic() < deadline:
            assert proc.poll() is None, output.decode(errors="replace")
            try:
                output += os.read(master, 65536)
            except OSError:
                break
        assert b"daemon_ready" in output, output.decode(errors="replace")
        assert postgres_processes(str(data_dir))
        os.close(master)  # the terminal window closes: the kernel hangs the terminal up
        master = -1
        assert proc.wait(timeout=20) == 0
        assert no_postgres_within(str(data_dir), 5) == []
    finally:
        if master >= 0:
            os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- the watchdog ------------------------------------------------------------------------------


class NotifySocket:
    """systemd's side of NOTIFY_SOCKET: a unix datagram socket collecting what the daemon says."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.received: list[tuple[float, str]] = []

    def pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self.received.append((time.monotonic(), self.sock.recv(4096).decode()))
            except TimeoutError:
                continue

    def pings_since(self, moment: float) -> list[float]:
        return [at for at, message in self.received if message == "WATCHDOG=1" and at > moment]

    def close(self) -> None:
        self.sock.close()


async def test_the_watchdog_stops_pinging_while_the_dispatcher_is_stuck(
    db_dsn: str, tmp_path: Path
) -> None:
    """A dispatcher whose claim query hangs on a table lock (beyond the watchdog period, inside
    the pool's command timeout) stops the pings: systemd would restart the daemon. Idle is not
    stuck: the pings flow while there is nothing to deliver, and again once the lock goes."""
    notify = NotifySocket(tmp_path / "notify.sock")
    env = base_env(
        DATABASE_URL=db_dsn,
        NOTIFY_SOCKET=str(notify.path),
        WATCHDOG_USEC="1000000",  # a 1 s period: pings every 0.5 s
        POLLER_HTTP_ADDR="",
        POLLER_DELIVERY_POLL_INTERVAL="0.2",
    )
    daemon = Daemon(env, log_path=tmp_path / "daemon.log")
    conn = await db.connect(db_dsn)
    try:

        def healthy() -> bool:
            notify.pump(0.1)
            return len(notify.pings_since(0)) >= 4

        await asyncio.to_thread(wait_for, healthy, 60, "healthy pings", daemon)
        [watching] = log_events(daemon, "watchdog_started")
        assert watching["watches"] == ["poller", "dispatcher"] and watching["period_s"] == 1.0

        # The dispatcher's next claim waits on this lock for as long as the test holds it.
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute("LOCK TABLE notifications IN ACCESS EXCLUSIVE MODE")
        locked = time.monotonic()
        await asyncio.to_thread(notify.pump, 1.5)  # one poll interval, one period, one ping
        pings_stopped = time.monotonic()
        await asyncio.to_thread(notify.pump, 3.0)  # three periods: systemd would have acted
        assert notify.pings_since(pings_stopped) == [], daemon.output()[-3000:]
        assert notify.pings_since(0)[-1] - locked < 1.5
        [withheld] = log_events(daemon, "watchdog_withheld")
        assert "dispatcher" in withheld["stuck"] and withheld["period_s"] == 1.0

        await transaction.rollback()  # the lock goes: the claim returns, the loop comes round
        resumed = time.monotonic()
        await asyncio.to_thread(notify.pump, 1.5)
        assert notify.pings_since(resumed), daemon.output()[-3000:]
        assert log_events(daemon, "watchdog_resumed")
        code, _ = daemon.terminate(timeout=10)
        assert code == 0, daemon.output()
    finally:
        await conn.close()
        daemon.close()
        notify.close()


def test_an_embedded_server_that_cannot_start_is_one_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "pgdata").mkdir(parents=True, mode=0o700)
    (data_dir / "pgdata" / "PG_VERSION").write_text("12\n")  # another version's data directory
    env = embedded_env(tmp_path, data_dir, free_port())
    done = run_once(["run"], env)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert [line for line in lines if not line.startswith("{")] == lines[-1:]
    # The server's own last log line says why (here: no postgresql.conf in a foreign pgdata).
    assert re.fullmatch(
        rf"qbo-poller: the embedded PostgreSQL in {re.escape(str(data_dir.resolve()))}/pgdata "
        r"exited at start-up \(code \d+\): .*postgresql\.conf.*",
        lines[-1],
    ), lines[-1]
    assert postgres_processes(str(data_dir)) == []
