"""POLLER_SECRET_KEY as a user meets it, through the real CLI: keygen, a refused passphrase, a
wrong or missing key for stored secrets (exit 2, one line, before /readyz can answer), rekey."""

from __future__ import annotations

import asyncio
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography.fernet import Fernet

from poller import secret_keys
from poller.cli import main
from poller.instances import parse_instance
from poller.store import db, instance_rows
from poller.store.crypto import SecretBox
from tests.e2e.daemon import Daemon, base_env, free_port, run_once, write_instances
from tests.e2e.test_config_errors import assert_one_line
from tests.unit.test_instances import BODY
from tests.unit.test_secret_keys import legacy_sealed

A = secret_keys.generate_key()
B = secret_keys.generate_key()
PASSPHRASE = "correct horse battery staple"
NAME = BODY["name"]
WRONG = (
    f"qbo-poller: configuration error: POLLER_SECRET_KEY=<hidden>: cannot decrypt the stored "
    f"secrets of instance {NAME!r} (wrong or missing key; set POLLER_SECRET_KEY_PREVIOUS to the "
    "old key and run qbo-poller rekey)"
)
SEALED = {
    "instances": ("client_secret_enc", "signature_key_enc"),
    "oauth_credentials": ("auth_code_enc",),
}
CLEAR = ("CLIENT-SECRET-XYZ", "SIGNATURE-KEY-1", "AUTH-CODE-1")


def env_for(db_dsn: str, **extra: str) -> dict[str, str]:
    return base_env(**{"DATABASE_URL": db_dsn, "POLLER_HTTP_ADDR": "", **extra})


def add_instance(tmp_path: Path, db_dsn: str, **extra: str) -> None:
    """What `qbo-poller instances add` stores, sealed with the key in `extra` (in process: this
    is the set-up, not what the test shows)."""
    box = SecretBox(extra.get("POLLER_SECRET_KEY"))

    async def go() -> None:
        conn = await db.connect(db_dsn)
        try:
            await instance_rows.upsert(conn, parse_instance(BODY), box)
        finally:
            await conn.close()

    asyncio.run(go())


def stored(db_dsn: str) -> list[str]:
    async def go() -> list[str]:
        conn = await asyncpg.connect(db_dsn)
        try:
            values = []
            for table, columns in SEALED.items():
                for row in await conn.fetch(f"SELECT {', '.join(columns)} FROM {table}"):
                    values.extend(row[column] for column in columns)
            return values
        finally:
            await conn.close()

    return asyncio.run(go())


def execute(db_dsn: str, statement: str, *args: Any) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(db_dsn)
        try:
            await conn.execute(statement, *args)
        finally:
            await conn.close()

    asyncio.run(go())


class InProcess:
    """`qbo-poller` called in this process (poller.cli.main): for the flows whose exit codes
    and lines the subprocess tests above already show, at a fraction of their start-up time."""

    def __init__(self, db_dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
        self.db_dsn, self.monkeypatch, self.capsys = db_dsn, monkeypatch, capsys

    def __call__(self, *args: str, **env: str) -> tuple[int, str, str]:
        for name in ("POLLER_SECRET_KEY", "POLLER_SECRET_KEY_PREVIOUS"):
            self.monkeypatch.delenv(name, raising=False)
        for name, value in {
            "DATABASE_URL": self.db_dsn,
            "POLLER_HTTP_ADDR": "",
            "POLLER_LOG_LEVEL": "warning",
            **env,
        }.items():
            self.monkeypatch.setenv(name, value)
        self.capsys.readouterr()
        code = main(list(args))
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def cli(db_dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> InProcess:
    return InProcess(db_dsn, monkeypatch, capsys)


def no_secret_in(text: str) -> None:
    for secret in (A, B, PASSPHRASE, *CLEAR):
        assert secret not in text


def test_keygen_prints_a_key_alone_whatever_the_environment(tmp_path: Path) -> None:
    # A refused POLLER_SECRET_KEY in the environment must not stop the command that fixes it.
    result = run_once(["keygen"], base_env(POLLER_SECRET_KEY=PASSPHRASE))
    assert result.returncode == 0 and result.stderr == ""
    key = result.stdout.removesuffix("\n")
    assert "\n" not in key and secret_keys.is_generated_key(key)
    assert Fernet(key).decrypt(Fernet(key).encrypt(b"x")) == b"x"
    assert run_once(["keygen"], base_env()).stdout != result.stdout
    checked = run_once(
        ["check-config"], base_env(POLLER_SECRET_KEY=key, POLLER_DATA_DIR=str(tmp_path / "d"))
    )
    assert checked.returncode == 0, checked.stderr


def test_a_passphrase_is_refused_by_every_command_but_keygen(tmp_path: Path) -> None:
    env = base_env(POLLER_SECRET_KEY=PASSPHRASE, POLLER_DATA_DIR=str(tmp_path / "data"))
    for command in (["run"], ["check-config"], ["rekey"]):
        result = run_once(command, env)
        assert_one_line(result, ["POLLER_SECRET_KEY=<hidden>", "qbo-poller keygen", "rekey"])
        no_secret_in(result.stderr)
    assert not (tmp_path / "data").exists()  # refused before anything started


def test_a_wrong_key_stops_run_at_start_up_before_readyz(tmp_path: Path, db_dsn: str) -> None:
    add_instance(tmp_path, db_dsn, POLLER_SECRET_KEY=A)
    port = free_port()
    env = env_for(db_dsn, POLLER_SECRET_KEY=B, POLLER_HTTP_ADDR=f"127.0.0.1:{port}")
    daemon = Daemon(env, log_path=tmp_path / "daemon.log")
    statuses = []
    try:
        deadline = time.monotonic() + 60
        while daemon.proc.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    statuses.append(r.status)
            except urllib.error.HTTPError as exc:
                statuses.append(exc.code)
            except OSError:
                pass
            time.sleep(0.05)
        code = daemon.proc.wait(timeout=10)
        log = daemon.output()
    finally:
        daemon.close()
    assert code == 2, log
    assert 200 not in statuses
    # The daemon's own log lines (JSON) and one line for the user, last; no traceback.
    plain = [line for line in log.splitlines() if line.strip() and not line.startswith("{")]
    assert plain == [WRONG], log
    assert "Traceback" not in log and '"event":"http_listening"' not in log
    assert '"event":"daemon_ready"' not in log
    no_secret_in(log)


def test_at_warning_level_a_wrong_key_is_the_only_line(tmp_path: Path, db_dsn: str) -> None:
    add_instance(tmp_path, db_dsn, POLLER_SECRET_KEY=A)
    result = run_once(["run"], env_for(db_dsn, POLLER_SECRET_KEY=B, POLLER_LOG_LEVEL="warning"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [WRONG] and result.stdout == ""


def test_check_config_checks_the_key_against_what_is_stored(tmp_path: Path, db_dsn: str) -> None:
    add_instance(tmp_path, db_dsn, POLLER_SECRET_KEY=A)
    wrong = run_once(["check-config"], env_for(db_dsn, POLLER_SECRET_KEY=B))
    assert_one_line(wrong, [WRONG])
    assert wrong.stderr.strip() == WRONG
    missing = run_once(["check-config"], env_for(db_dsn))
    assert_one_line(missing, ["POLLER_SECRET_KEY=<unset>:", f"instance {NAME!r}", "encrypted"])
    for ok_env in (
        env_for(db_dsn, POLLER_SECRET_KEY=A),
        env_for(db_dsn, POLLER_SECRET_KEY=B, POLLER_SECRET_KEY_PREVIOUS=A),
    ):
        ok = run_once(["check-config"], ok_env)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.startswith("configuration ok")
        lines = ok.stdout.splitlines()
        assert "  secret key: opens the 3 stored secret(s)" in lines[-1]
    assert lines[-1].endswith("3 not under the current key: run qbo-poller rekey")
    for result in (wrong, missing):
        no_secret_in(result.stderr + result.stdout)


def test_rekey_encrypts_secrets_stored_before_a_key_was_set(
    tmp_path: Path, db_dsn: str, cli: InProcess
) -> None:
    path = write_instances(tmp_path / "instance.json", BODY)
    assert cli("instances", "add", str(path))[0] == 0  # no key: stored in clear
    assert all(value.startswith("plain:") for value in stored(db_dsn))
    # Clear values stay readable once a key is set, until rekey encrypts them.
    assert cli("check-config", POLLER_SECRET_KEY=A)[0] == 0
    code, out, err = cli("rekey")
    assert code == 2 and out == ""
    assert err.startswith("qbo-poller: configuration error: POLLER_SECRET_KEY=<unset>: rekey")
    first = cli("rekey", POLLER_SECRET_KEY=A)
    assert first == (
        0,
        "rekey: 3 secret(s) re-encrypted under the current key (3 were in clear), 0 already were\n",
        "",
    )
    values = stored(db_dsn)
    assert all(value.startswith("fernet:") for value in values)
    assert sorted(SecretBox(A).open(value) or "" for value in values) == sorted(CLEAR)
    second = cli("rekey", POLLER_SECRET_KEY=A)
    assert second == (
        0,
        "rekey: 0 secret(s) re-encrypted under the current key (0 were in clear), 3 already were\n",
        "",
    )
    no_secret_in(first[1] + second[1])


def test_an_existing_passphrase_deployment_moves_to_a_generated_key(
    tmp_path: Path, db_dsn: str, cli: InProcess
) -> None:
    """Values sealed by earlier versions under a passphrase (HKDF, no work factor): the new key
    plus the passphrase as previous key reads them; rekey moves them; then the key alone."""
    path = write_instances(tmp_path / "instance.json", BODY)
    assert cli("instances", "add", str(path))[0] == 0
    for table, columns in SEALED.items():
        for column in columns:
            statement = f"UPDATE {table} SET {column} = $1"
            execute(db_dsn, statement, legacy_sealed(PASSPHRASE, column))
    code, _, err = cli("check-config", POLLER_SECRET_KEY=B)
    assert (code, err) == (2, WRONG + "\n")
    previous = {"POLLER_SECRET_KEY": B, "POLLER_SECRET_KEY_PREVIOUS": PASSPHRASE}
    assert cli("check-config", **previous)[0] == 0
    code, out, _ = cli("rekey", **previous)
    assert code == 0 and "3 secret(s) re-encrypted" in out
    assert cli("check-config", POLLER_SECRET_KEY=B)[0] == 0
    assert not any(SecretBox(A, [PASSPHRASE]).readable(value) for value in stored(db_dsn))


def test_rekey_refuses_and_changes_nothing_when_a_secret_cannot_be_opened(
    tmp_path: Path, db_dsn: str
) -> None:
    add_instance(tmp_path, db_dsn, POLLER_SECRET_KEY=A)
    before = stored(db_dsn)
    result = run_once(["rekey"], env_for(db_dsn, POLLER_SECRET_KEY=B))
    assert_one_line(result, [WRONG])
    assert stored(db_dsn) == before


def test_instances_add_refuses_to_mix_keys(tmp_path: Path, db_dsn: str) -> None:
    """An instance added under another key than the stored secrets' would stop the daemon
    that has the right key: `instances add` checks first, and adds nothing."""
    add_instance(tmp_path, db_dsn, POLLER_SECRET_KEY=A)
    other = dict(BODY, name="Second")
    path = write_instances(tmp_path / "second.json", other)
    result = run_once(["instances", "add", str(path)], env_for(db_dsn, POLLER_SECRET_KEY=B))
    assert_one_line(result, [WRONG])
    assert len(stored(db_dsn)) == 3  # the first instance's secrets only


def test_check_config_checks_the_key_of_an_embedded_database_and_stops_its_server(
    tmp_path: Path,
) -> None:
    """Embedded mode too: check-config opens the stored secrets of POLLER_DATA_DIR's database
    (a server started for the check, stopped after it), exit 2 for a wrong key, 0 for the
    right one; a directory with no database yet has nothing to check."""
    data_dir = tmp_path / "data"
    env = base_env(POLLER_DATA_DIR=str(data_dir), POLLER_HTTP_ADDR="")
    fresh = run_once(["check-config"], {**env, "POLLER_SECRET_KEY": A})
    assert fresh.returncode == 0, fresh.stderr
    assert "no database yet" in fresh.stdout.splitlines()[0]
    instances = write_instances(tmp_path / "one.json", BODY)
    added = run_once(["instances", "add", str(instances)], {**env, "POLLER_SECRET_KEY": A})
    assert added.returncode == 0, added.stderr
    wrong = run_once(["check-config"], {**env, "POLLER_SECRET_KEY": B})
    assert_one_line(wrong, [WRONG])
    right = run_once(["check-config"], {**env, "POLLER_SECRET_KEY": A})
    assert right.returncode == 0, right.stderr
    assert "  secret key: opens the 3 stored secret(s)" in right.stdout.splitlines()[-1]
    no_secret_in(wrong.stderr + wrong.stdout + right.stderr + right.stdout)
    left = subprocess.run(["pgrep", "-f", str(data_dir)], capture_output=True, text=True)
    assert left.stdout == "", "a postgres of the data directory outlived check-config"
