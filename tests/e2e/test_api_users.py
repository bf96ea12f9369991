"""`qbo-poller users …` as a process, and a running daemon seeing new and rotated users at
once; the API's secrets never reach the log or an answer (DESIGN §7, §9)."""

from __future__ import annotations

import copy
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.e2e.daemon import Daemon, base_env, free_port, run_once
from tests.unit.test_instances import BODY

ORG = "org-secret-for-e2e-0123456789"


def call(port: int, method: str, path: str, authorization: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/elements/api-v2{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": authorization, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_users_commands_and_a_running_daemon(tmp_path: Path, db_dsn: str) -> None:
    env = base_env(DATABASE_URL=db_dsn, POLLER_API_ORGANIZATION_SECRET=ORG)
    added = run_once(["users", "add", "alice"], env)
    assert added.returncode == 0, added.stderr
    secret = added.stdout.splitlines()[-1]
    assert len(secret) == 43 and " " not in secret
    assert run_once(["users", "add", "alice"], env).returncode == 1
    admin = run_once(["users", "add", "root", "--admin"], env)
    listed = run_once(["users", "list"], env)
    assert "alice  user" in listed.stdout and "root  admin" in listed.stdout
    assert secret not in listed.stdout
    port = free_port()
    daemon = Daemon(
        {**env, "POLLER_HTTP_ADDR": f"127.0.0.1:{port}"}, log_path=tmp_path / "daemon.log"
    )
    try:
        daemon.wait_http(port, "/readyz")
        header = f"User {secret}, Organization {ORG}"
        assert call(port, "GET", "/instances", header) == (200, "[]")
        rotated = run_once(["users", "rotate", "alice"], env)
        new_secret = rotated.stdout.splitlines()[-1]
        assert new_secret != secret
        assert call(port, "GET", "/instances", header)[0] == 401, "the old secret stops at once"
        assert call(port, "GET", "/instances", f"User {new_secret}, Organization {ORG}")[0] == 200
        bob = run_once(["users", "add", "bob"], env).stdout.splitlines()[-1]
        assert call(port, "GET", "/instances", f"Organization {ORG}, User {bob}")[0] == 200
        assert run_once(["users", "remove", "bob"], env).returncode == 0
        assert call(port, "GET", "/instances", f"User {bob}, Organization {ORG}")[0] == 401
        assert admin.returncode == 0
    finally:
        daemon.close()


def test_no_api_secret_reaches_the_logs_or_answers(tmp_path: Path, db_dsn: str) -> None:
    """The secret-leak test of test_run_daemon, for the API's secrets: user secrets, the
    organization secret, instance tokens (and the body's secrets in answers)."""
    env = base_env(
        DATABASE_URL=db_dsn,
        POLLER_API_ORGANIZATION_SECRET=ORG,
        POLLER_LOG_LEVEL="debug",
        POLLER_SECRET_KEY="qlfCdy4F3dVDmRinehr7WNjiyrtDzNnzZjcLsFs5S9g=",
    )
    user = run_once(["users", "add", "alice"], env).stdout.splitlines()[-1]
    port = free_port()
    daemon = Daemon(
        {**env, "POLLER_HTTP_ADDR": f"127.0.0.1:{port}"}, log_path=tmp_path / "daemon.log"
    )
    body = copy.deepcopy(BODY)
    body["providerData"] = {"refreshToken": "refresh-token-Zq31", "realmId": "123145"}
    body["configuration"]["oauth.api.secret"] = "client-secret-7Hq2"
    body["configuration"]["event.notification.signature.key"] = "signature-key-9Zp4"
    answers: list[str] = []
    try:
        daemon.wait_http(port, "/readyz")
        header = f"User {user}, Organization {ORG}"
        status, text = call(port, "POST", "/instances", header, body)
        assert status == 200, text
        created = json.loads(text)
        token = created["token"]
        answers.append(text)
        element = f"{header}, Element {token}"
        answers.append(call(port, "PATCH", "/instances", element, {"tags": ["x"]})[1])
        answers.append(call(port, "GET", "/instances", header)[1])
        answers.append(call(port, "GET", "/instances", f"User {user}, Organization wrong")[1])
        time.sleep(1.0)  # let the poller try (and fail) to reach QuickBooks
        code, _ = daemon.terminate()
        assert code == 0
        log = daemon.output()
    finally:
        daemon.close()
    assert '"event":"instance_created"' in log
    for name, value in {"user secret": user, "org secret": ORG, "instance token": token}.items():
        assert value not in log, f"{name} leaked into the log"
    for name, value in {
        "user secret": user,
        "org secret": ORG,
        "client secret": "client-secret-7Hq2",
        "signature key": "signature-key-9Zp4",
        "refresh token": "refresh-token-Zq31",
    }.items():
        assert all(value not in text for text in answers), f"{name} in an answer"
    # The token is shown to its owner, in the answers made for it only.
    assert token in answers[0]
