"""Every failure a user can cause, through the real CLI: one exact line, its exit code, no
traceback, nothing left running (DESIGN §7).

The database cases use the real server on 127.0.0.1:5432 (or TEST_DATABASE_URL): a missing
database, a role that does not exist, an option the server refuses, a closed port.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from poller.store import migrate
from tests.conftest import with_database
from tests.e2e.daemon import Daemon, base_env, free_port, run_once
from tests.e2e.test_run_daemon import postgres_processes

LATEST = migrate.latest_version()
RESULT = subprocess.CompletedProcess[str]


def plain_lines(result: RESULT) -> tuple[list[str], list[dict[str, object]]]:
    """stderr's lines that are not JSON log records, and the records. Asserts no traceback."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    plain, records = [], []
    for line in result.stderr.splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
        elif line.strip():
            plain.append(line)
    return plain, records


def failure_line(result: RESULT, code: int) -> str:
    """The one line a failed command printed: its last line on stderr, the only one that is
    not a log record; nothing on stdout."""
    assert result.returncode == code, result.stderr
    plain, _ = plain_lines(result)
    assert len(plain) == 1, result.stderr
    assert result.stderr.rstrip("\n").splitlines()[-1] == plain[0]
    assert result.stdout == ""
    return plain[0]


def with_user(dsn: str, userinfo: str) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{userinfo}@{host}", parts.path, parts.query, ""))


def with_query(dsn: str, query: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def closed_port_dsn() -> str:
    return f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"


def db_env(dsn: str, **extra: str) -> dict[str, str]:
    return base_env(DATABASE_URL=dsn, POLLER_HTTP_ADDR="", **extra)


async def schema_version(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await migrate.current_version(conn))
    finally:
        await conn.close()


# --- a DATABASE_URL that cannot work: exit 2 at once, for `run` and `check-config` ------------


def bad_urls(server: str) -> dict[str, tuple[str, str]]:
    """case → (DATABASE_URL, what the line says after `DATABASE_URL=<masked>: `)."""
    missing = f"qbo_missing_{uuid.uuid4().hex[:8]}"
    return {
        "mysql": (
            "mysql://app:hunter2hunter2@db.example/app",
            "not a PostgreSQL URL (expected postgresql://user:password@host/db)",
        ),
        "bad sslmode": (
            with_query(server, "sslmode=bogus"),
            "sslmode='bogus': expected one of disable, allow, prefer, require, verify-ca, "
            "verify-full",
        ),
        "bad port": (server.replace(":5432", ":fivefourthreetwo"), "port 'fivefourthreetwo'"),
        "unknown option": (
            with_query(server, "connect_timeout=10"),
            'unknown option (unrecognized configuration parameter "connect_timeout")',
        ),
        "missing database": (
            with_database(server, missing),
            f'database "{missing}" does not exist',
        ),
        "unknown role": (
            with_user(server, "qbo_no_such_role:hunter2hunter2"),
            'authentication refused (role "qbo_no_such_role" does not exist)',
        ),
    }


def masked(dsn: str) -> str:
    return dsn.replace(":hunter2hunter2@", ":********@")


@pytest.mark.parametrize("command", ["run", "check-config"])
@pytest.mark.parametrize(
    "case",
    ["mysql", "bad sslmode", "bad port", "unknown option", "missing database", "unknown role"],
)
def test_database_url_that_cannot_work_exits_2(
    command: str, case: str, pg_server_dsn: str, tmp_path: Path
) -> None:
    if ":5432" not in pg_server_dsn:
        pytest.skip("the cases rewrite port 5432 of the test server's DSN")
    dsn, says = bad_urls(pg_server_dsn)[case]
    result = run_once([command], db_env(dsn, POLLER_DATA_DIR=str(tmp_path / "data")))
    line = failure_line(result, 2)
    if case == "bad port":
        assert line.startswith(f"qbo-poller: configuration error: DATABASE_URL={dsn}: {says}")
    else:
        assert line == f"qbo-poller: configuration error: DATABASE_URL={masked(dsn)}: {says}"
    assert "hunter2hunter2" not in result.stderr
    assert not (tmp_path / "data").exists()


def test_check_config_offline_still_refuses_a_url_it_can_judge_alone() -> None:
    result = run_once(["check-config", "--offline"], db_env("mysql://app:hunter2hunter2@db/app"))
    assert failure_line(result, 2) == (
        "qbo-poller: configuration error: DATABASE_URL=mysql://app:********@db/app: "
        "not a PostgreSQL URL (expected postgresql://user:password@host/db)"
    )
    # A server it does not try to reach: fine offline.
    ok = run_once(["check-config", "--offline"], db_env(closed_port_dsn()))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == (
        "configuration ok: database DATABASE_URL (not checked: --offline); 0 instance(s)\n"
    )


# --- a server that cannot be reached: retried, then exit 1 -----------------------------------


def test_run_retries_an_unreachable_server_then_exits_1() -> None:
    dsn = closed_port_dsn()
    result = run_once(["run"], db_env(dsn, POLLER_STARTUP_TIMEOUT="2s"))
    line = failure_line(result, 1)
    assert re.fullmatch(
        rf"qbo-poller: database error: DATABASE_URL={re.escape(dsn)}: database unreachable: "
        r"connection refused \(gave up after (\d+) attempts in 2 s\)",
        line,
    ), line
    attempts = int(re.findall(r"after (\d+) attempts", line)[0])
    _, records = plain_lines(result)
    retries = [r for r in records if r["event"] == "database_unreachable"]
    # One warning per attempt that was followed by another.
    assert [r["attempt"] for r in retries] == list(range(1, attempts))
    assert attempts >= 3  # backoff from 0.5 s within 2 s: more than one retry
    assert all(r["error"] == "connection refused" for r in retries)


def test_check_config_tries_an_unreachable_server_once() -> None:
    dsn = closed_port_dsn()
    result = run_once(["check-config"], db_env(dsn))
    assert failure_line(result, 1) == (
        f"qbo-poller: database error: DATABASE_URL={dsn}: database unreachable: connection refused"
    )


def test_unknown_host_is_reported_as_unreachable() -> None:
    dsn = "postgresql://postgres@qbo-poller-no-such-host.invalid:5432/postgres"
    result = run_once(["check-config"], db_env(dsn))
    line = failure_line(result, 1)
    assert line.startswith(
        f"qbo-poller: database error: DATABASE_URL={dsn}: database unreachable: host name not "
        "found ("
    ), line


# --- the schema -------------------------------------------------------------------------------


def test_check_config_on_a_good_database_exits_0(db_dsn: str) -> None:
    result = run_once(["check-config"], db_env(db_dsn))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == (
        f"configuration ok: database {db_dsn} (schema version {LATEST}, up to date); "
        "0 instance(s)\n"
        # The secret key step (a current schema: the stored secrets are checked).
        "  secret key: opens the 0 stored secret(s)\n"
    )


def test_check_config_reports_pending_migrations_and_writes_nothing(empty_db_dsn: str) -> None:
    result = run_once(["check-config"], db_env(empty_db_dsn))
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"configuration ok: database {empty_db_dsn} (schema version 0, {LATEST} migration(s) "
        "pending, applied by run); 0 instance(s)\n"
    )
    refused = run_once(["check-config"], db_env(empty_db_dsn, POLLER_AUTO_MIGRATE="false"))
    assert failure_line(refused, 2) == (
        f"qbo-poller: configuration error: DATABASE_URL={empty_db_dsn}: database schema is at "
        f"version 0, this build needs {LATEST} and POLLER_AUTO_MIGRATE=false: run "
        "`qbo-poller migrate`"
    )
    assert asyncio.run(schema_version(empty_db_dsn)) == 0


async def _record_future_migration(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, 'future')", LATEST + 1
        )
    finally:
        await conn.close()


def test_a_schema_newer_than_the_build(db_dsn: str) -> None:
    asyncio.run(_record_future_migration(db_dsn))
    checked = run_once(["check-config"], db_env(db_dsn))
    says = (
        f"database schema is at version {LATEST + 1}, newer than this build knows ({LATEST}): "
        "upgrade qbo-poller"
    )
    assert failure_line(checked, 2) == (
        f"qbo-poller: configuration error: DATABASE_URL={db_dsn}: {says}"
    )
    ran = run_once(["run"], db_env(db_dsn))
    assert failure_line(ran, 1) == f"qbo-poller: {says}"


# --- the listener -----------------------------------------------------------------------------


def test_http_addr_in_use_exits_2_before_migrations(empty_db_dsn: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addr = f"127.0.0.1:{taken.getsockname()[1]}"
        result = run_once(["run"], base_env(DATABASE_URL=empty_db_dsn, POLLER_HTTP_ADDR=addr))
    assert failure_line(result, 2) == (
        f"qbo-poller: configuration error: POLLER_HTTP_ADDR={addr}: address already in use "
        "(another process listens there: stop it or choose another host:port)"
    )
    assert asyncio.run(schema_version(empty_db_dsn)) == 0  # nothing was migrated


# --- warnings: unknown variables, nothing to poll ---------------------------------------------


def test_check_config_warns_of_unknown_variables_and_an_empty_file(tmp_path: Path) -> None:
    instances = tmp_path / "instances.json"
    instances.write_text("[]")
    env_file = tmp_path / "poller.env"
    env_file.write_text("QBO_CLIENTID=abc\nPOLLER_INSTANCES_FILE=" + str(instances) + "\n")
    result = run_once(
        ["check-config", "--offline", "--env-file", str(env_file)],
        base_env(POLLER_INSTANCE_FILE="x.json", POLLER_DATA_DIR=str(tmp_path / "data")),
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "qbo-poller: warning: POLLER_INSTANCE_FILE: unknown variable, did you mean "
        "POLLER_INSTANCES_FILE?",
        "qbo-poller: warning: QBO_CLIENTID: unknown variable, did you mean QBO_CLIENT_ID?",
        f"qbo-poller: warning: POLLER_INSTANCES_FILE='{instances}': no instance in the file",
    ]
    assert result.stdout.endswith("; 0 instance(s)\n")


@pytest.mark.slow
def test_run_warns_once_and_goes_on(db_dsn: str, tmp_path: Path) -> None:
    instances = tmp_path / "instances.json"
    instances.write_text("[]")
    port = free_port()
    env = base_env(
        DATABASE_URL=db_dsn,
        POLLER_HTTP_ADDR=f"127.0.0.1:{port}",
        POLLER_INSTANCES_FILE=str(instances),
        POLLER_INSTANCE_FILE=str(instances),
    )
    daemon = Daemon(env, log_path=tmp_path / "daemon.log")
    try:
        assert daemon.wait_http(port, "/readyz") == 200
        code, _ = daemon.terminate()
        output = daemon.output()
    finally:
        daemon.close()
    assert code == 0
    assert "Traceback" not in output
    records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    events = [r["event"] for r in records]
    unknown = [r for r in records if r["event"] == "unknown_variable"]
    assert [r["detail"] for r in unknown] == [
        "POLLER_INSTANCE_FILE: unknown variable, did you mean POLLER_INSTANCES_FILE?"
    ]
    assert events.count("instances_file_empty") == 1
    idle = [r for r in records if r["event"] == "nothing_to_poll"]
    assert [r["reason"] for r in idle] == ["no instances"]


# --- admin commands: only their output on stdout; --env-file anywhere ------------------------


@pytest.mark.parametrize("where", ["before", "after"])
def test_env_file_before_or_after_the_command(where: str, tmp_path: Path) -> None:
    env_file = tmp_path / "poller.env"
    env_file.write_text("POLLER_SIGNATURE_SCHEME=sha1\n")
    option = ["--env-file", str(env_file)]
    args = [*option, "check-config"] if where == "before" else ["check-config", *option]
    result = run_once([*args, "--offline"], base_env())
    assert failure_line(result, 2) == (
        "qbo-poller: configuration error: POLLER_SIGNATURE_SCHEME='sha1': expected one of "
        "elements, standard, both"
    )


def test_admin_command_prints_only_its_output(empty_db_dsn: str, tmp_path: Path) -> None:
    env_file = tmp_path / "poller.env"
    env_file.write_text(f"DATABASE_URL={empty_db_dsn}\n")
    # Migrations run (info lines) but an admin command logs warnings only...
    quiet = run_once(["instances", "list", "--env-file", str(env_file)], base_env())
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "no instances\n", "")
    assert asyncio.run(schema_version(empty_db_dsn)) == LATEST  # it did migrate, silently
    # -v before the command's name too; still only the output on stdout.
    verbose = run_once(["-v", "migrate"], base_env(DATABASE_URL=empty_db_dsn))
    assert verbose.stdout == f"schema at version {LATEST} (up to date)\n"
    assert plain_lines(verbose)[0] == []


@pytest.mark.slow
def test_embedded_admin_command_is_quiet_and_leaves_nothing_running(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = base_env(POLLER_DATA_DIR=str(data_dir))
    env.pop("XDG_RUNTIME_DIR", None)  # platformdirs warned about it on every embedded run
    result = run_once(["instances", "list"], env, timeout=120)
    assert (result.returncode, result.stdout, result.stderr) == (0, "no instances\n", "")
    assert not postgres_processes(str(data_dir))
    verbose = run_once(["instances", "list", "-v"], env, timeout=120)
    assert verbose.stdout == "no instances\n"
    events = [json.loads(line)["event"] for line in verbose.stderr.splitlines()]
    assert events[0] == "embedded_postgres_starting" and events[-1] == "embedded_postgres_stopped"
    assert not postgres_processes(str(data_dir))


def test_sigterm_while_waiting_for_the_database_stops_at_once(tmp_path: Path) -> None:
    daemon = Daemon(
        db_env(closed_port_dsn(), POLLER_STARTUP_TIMEOUT="60s"), log_path=tmp_path / "daemon.log"
    )
    try:
        deadline = time.monotonic() + 30
        while '"event":"database_unreachable"' not in daemon.output():
            assert time.monotonic() < deadline, daemon.output()
            assert daemon.proc.poll() is None, daemon.output()
            time.sleep(0.1)
        code, _ = daemon.terminate(timeout=10)
        output = daemon.output()
    finally:
        daemon.close()
    assert code == 0, output
    assert "Traceback" not in output
    assert '"reason":"stopped while waiting for the database"' in output


@pytest.mark.parametrize("command", ["run", "check-config", "migrate"])
def test_a_data_dir_that_cannot_be_created_exits_2(command: str, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    data_dir = f"{blocker}/qbo-poller"  # below a regular file: not even root can create it
    result = run_once([command], base_env(POLLER_DATA_DIR=data_dir, POLLER_HTTP_ADDR=""))
    line = failure_line(result, 2)
    if command == "check-config":
        assert line == (
            f"qbo-poller: configuration error: POLLER_DATA_DIR='{data_dir}': {blocker} is not a "
            "directory"
        )
    else:
        assert line == (
            f"qbo-poller: configuration error: POLLER_DATA_DIR='{data_dir}': cannot create "
            f"{data_dir}/pgdata: Not a directory"
        )
