"""The README's demo command: signed events within 30 seconds, and a clean exit."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest


def demo_processes(tmp: Path) -> list[psutil.Process]:
    """Processes (the embedded PostgreSQL) started under this test's own temporary directory."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if str(tmp / "qbo-poller-demo-") in " ".join(proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def run_demo(
    tmp: Path, *args: str, stop_with: signal.Signals | None = None, after: float = 0
) -> tuple[int, str]:
    env = {**os.environ, "TMPDIR": str(tmp)}  # the demo's working directory lands in tmp
    proc = subprocess.Popen(
        [sys.executable, "-m", "poller", "demo", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if stop_with is not None:
        time.sleep(after)
        proc.send_signal(stop_with)
    out, _ = proc.communicate(timeout=90)
    return proc.returncode, out


@pytest.mark.slow
def test_demo_shows_signed_events_within_30_seconds_and_exits_cleanly(tmp_path: Path) -> None:
    code, out = run_demo(tmp_path, "--duration", "25", "--rate", "4")
    assert code == 0, out
    lines = [line for line in out.splitlines() if "signature ok" in line]
    assert lines, out
    first = float(re.match(r"\s*([\d.]+)s", lines[0]).group(1))  # type: ignore[union-attr]
    assert first < 30
    assert "SIGNATURE FAILED" not in out
    summary = re.search(
        r"summary: (\d+) events in (\d+) signed callbacks.*signature failures: 0", out
    )
    assert summary and int(summary.group(1)) >= len(lines)
    assert demo_processes(tmp_path) == []
    # Its working directory is gone too (pgserver keeps only its runtime lock folder there).
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("qbo-poller-demo-")] == []


@pytest.mark.slow
def test_sigterm_cleans_up_every_process(tmp_path: Path) -> None:
    code, out = run_demo(tmp_path, stop_with=signal.SIGTERM, after=8)
    assert code == 0, out
    assert "summary:" in out
    deadline = time.monotonic() + 5
    while demo_processes(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert demo_processes(tmp_path) == []


@pytest.mark.slow
def test_demo_with_webhooks_shows_events_long_before_the_backstop(tmp_path: Path) -> None:
    """`--webhooks`: polling is a 60-minute backstop, so every event seen came from a webhook
    (each announced change polled at once)."""
    code, out = run_demo(tmp_path, "--webhooks", "--duration", "20", "--rate", "4")
    assert code == 0, out
    assert "Intuit webhooks announce changes" in out
    lines = [line for line in out.splitlines() if "signature ok" in line]
    assert lines, out
    first = float(re.match(r"\s*([\d.]+)s", lines[0]).group(1))  # type: ignore[union-attr]
    assert first < 20
    assert "SIGNATURE FAILED" not in out
    assert demo_processes(tmp_path) == []
