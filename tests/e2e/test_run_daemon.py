"""`qbo-poller run` as a process: embedded PostgreSQL, health, readiness, SIGTERM, sd_notify."""

from __future__ import annotations

import copy
import socket
import time
from pathlib import Path

import psutil
import pytest

from tests.e2e.daemon import Daemon, base_env, free_port, write_instances
from tests.unit.test_instances import BODY


def postgres_processes(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if "postgres" in (proc.info["name"] or "") and marker in cmdline:
            found.append(proc)
    return found


@pytest.mark.slow
def test_embedded_run_serves_health_and_stops_cleanly(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    instances = write_instances(tmp_path / "instances.json", BODY)
    port = free_port()
    env = base_env(
        POLLER_DATA_DIR=str(data_dir),
        POLLER_INSTANCES_FILE=str(instances),
        POLLER_HTTP_ADDR=f"127.0.0.1:{port}",
    )
    daemon = Daemon(env, log_path=tmp_path / "daemon.log")
    try:
        assert daemon.wait_http(port, "/readyz", timeout=90) == 200
        assert daemon.wait_http(port, "/healthz") == 200
        assert postgres_processes(str(data_dir)), "the embedded server should be running"
        code, elapsed = daemon.terminate(timeout=10)
        assert code == 0, daemon.output()
        assert elapsed < 10
        log = daemon.output()
        assert '"event":"instance_loaded"' in log and '"action":"created"' in log
        assert '"event":"embedded_postgres_stopped"' in log
    finally:
        daemon.close()
    deadline = time.monotonic() + 5
    while postgres_processes(str(data_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert postgres_processes(str(data_dir)) == []


def test_sd_notify_ready_watchdog_stopping(tmp_path: Path, db_dsn: str) -> None:
    sock_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(sock_path))
    listener.settimeout(30)
    port = free_port()
    env = base_env(
        DATABASE_URL=db_dsn,
        NOTIFY_SOCKET=str(sock_path),
        WATCHDOG_USEC="200000",
        POLLER_HTTP_ADDR=f"127.0.0.1:{port}",
    )
    daemon = Daemon(env, log_path=tmp_path / "daemon.log")
    messages: list[str] = []
    try:
        while not any("READY=1" in m for m in messages):
            messages.append(listener.recv(4096).decode())
        watchdogs = 0
        while watchdogs < 3:
            message = listener.recv(4096).decode()
            messages.append(message)
            watchdogs += message == "WATCHDOG=1"
        daemon.proc.send_signal(15)
        while not any("STOPPING=1" in m for m in messages):
            messages.append(listener.recv(4096).decode())
        assert daemon.proc.wait(timeout=10) == 0
    finally:
        daemon.close()
        listener.close()
    ready = next(m for m in messages if "READY=1" in m)
    assert "STATUS=" in ready
    assert messages.index(ready) < messages.index("WATCHDOG=1")


def test_no_secret_reaches_the_logs(tmp_path: Path, db_dsn: str) -> None:
    secrets = {
        "client": "client-secret-7Hq2",
        "signature": "signature-key-9Zp4",
        "code": "auth-code-Qw81",
        "env_client": "env-client-secret-Lm55",
        "secret_key": "qlfCdy4F3dVDmRinehr7WNjiyrtDzNnzZjcLsFs5S9g=",
        "dsn_password": "dbpass-Xy77",
        "previous_key": "an-old-passphrase-Kk0123",
    }
    body = copy.deepcopy(BODY)
    body["configuration"]["oauth.api.secret"] = secrets["client"]
    body["configuration"]["event.notification.signature.key"] = secrets["signature"]
    body["providerData"]["code"] = secrets["code"]
    other = copy.deepcopy(BODY)
    other["name"] = "Env credentials"
    del other["configuration"]["oauth.api.secret"]
    instances = write_instances(tmp_path / "instances.json", [body, other])
    dsn = db_dsn.replace(
        "postgresql://postgres@", f"postgresql://postgres:{secrets['dsn_password']}@"
    )
    port = free_port()
    env = base_env(
        DATABASE_URL=dsn,
        POLLER_INSTANCES_FILE=str(instances),
        POLLER_LOG_LEVEL="debug",
        QBO_CLIENT_SECRET=secrets["env_client"],
        POLLER_SECRET_KEY=secrets["secret_key"],
        POLLER_SECRET_KEY_PREVIOUS=secrets["previous_key"],
        POLLER_HTTP_ADDR=f"127.0.0.1:{port}",
    )
    daemon = Daemon(env, log_path=tmp_path / "daemon.log")
    try:
        assert daemon.wait_http(port, "/readyz") == 200
        time.sleep(1.0)  # let the pollers try (and fail) to reach QuickBooks
        code, _ = daemon.terminate()
        assert code == 0
        log = daemon.output()
    finally:
        daemon.close()
    assert '"event":"daemon_ready"' in log
    for name, value in secrets.items():
        assert value not in log, f"{name} leaked into the log"
