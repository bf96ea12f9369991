"""Run `python -m poller` as a subprocess, the way systemd or a container would."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

# A closed loopback port: nothing a test starts ever talks to Intuit.
UNREACHABLE = "http://127.0.0.1:9"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("POLLER_", "QBO_", "DATABASE_URL", "NOTIFY_SOCKET", "WATCHDOG_"))
    }
    env.update(
        {
            "POLLER_LOG_FORMAT": "json",
            "QBO_API_BASE_URL": UNREACHABLE,
            "QBO_OAUTH_TOKEN_URL": UNREACHABLE + "/token",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def write_instances(path: Path, bodies: list[dict[str, Any]] | dict[str, Any]) -> Path:
    path.write_text(json.dumps(bodies))
    return path


class Daemon:
    def __init__(
        self,
        env: dict[str, str],
        args: tuple[str, ...] = ("run",),
        cwd: Path | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb") if log_path else subprocess.PIPE  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "poller", *args],
            env=env,
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_http(self, port: int, path: str, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited early with {self.proc.returncode}: {self.output()}"
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                    return int(r.status)
            except urllib.error.HTTPError as exc:
                last = exc.code
            except OSError:
                last = 0
            time.sleep(0.2)
        raise AssertionError(f"{path} not ready (last status {last}): {self.output()}")

    def terminate(self, timeout: float = 10.0) -> tuple[int, float]:
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def output(self) -> str:
        if self.log_path is not None:
            self._log.flush()  # type: ignore[union-attr]
            return self.log_path.read_text(errors="replace")
        return ""

    def close(self) -> None:
        self.kill()
        if self.log_path is not None:
            self._log.close()  # type: ignore[union-attr]


def run_once(
    args: list[str], env: dict[str, str], timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "poller", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
