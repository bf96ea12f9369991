"""systemd/qbo-poller.service: the directives the daemon's contract relies on, `systemd-analyze
verify`, and `systemd-analyze security` under a ceiling.

verify needs ExecStart's binary to exist, so it runs with --root on a scratch tree that holds
the unit, the distribution's system units and an executable at the unit's ExecStart path (the
venv's own console script): the host's /usr/local/bin is never touched. Without
systemd-analyze (Debian package `systemd`) these checks skip, except under CI=true, where they
fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from poller.config import load_settings
from poller.store.database import POOL_CLOSE_TIMEOUT_S
from poller.store.db import POOL_COMMAND_TIMEOUT_S

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "qbo-poller.service"
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
# systemd-analyze security's overall exposure, 0.0 (locked down) … 10.0; ours is 1.2.
EXPOSURE_CEILING = 2.0


def directives() -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found[key.strip()].append(value.strip())
    return found


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, value
    return int(match.group(1)) * (60 if match.group(2) == "min" else 1)


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing: apt-get install -y systemd")
        pytest.skip("systemd-analyze is not installed (Debian package: systemd)")
    return path


def test_unit_declares_the_process_contract() -> None:
    d = directives()
    single = {key: values[-1] for key, values in d.items()}
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "ExecStart": "/usr/local/bin/qbo-poller run",
        "Restart": "on-failure",
        "RestartSec": "5",
        "KillMode": "mixed",
        "DynamicUser": "yes",
        "StateDirectory": "qbo-poller",
        "WorkingDirectory": "%S/qbo-poller",
        "EnvironmentFile": "/etc/qbo-poller/config.env",
        "UMask": "0077",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "MemoryDenyWriteExecute": "yes",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "ProtectProc": "invisible",
        "ProcSubset": "pid",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "SystemCallArchitectures": "native",
    }
    assert {k: single.get(k) for k in expected} == expected
    assert d["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    assert "POLLER_DATA_DIR=%S/qbo-poller" in d["Environment"]
    # Bad configuration exits 2: restarting cannot fix it.
    assert "2" in single["RestartPreventExitStatus"].split()
    # Pings every WatchdogSec/2, so the loop may stall for a whole half period unnoticed.
    assert seconds(single["WatchdogSec"]) >= 10
    # A service is stuck when one turn of its loop outlasts the watchdog period (poller.progress):
    # one database call within the pool's command timeout must not count as stuck.
    assert seconds(single["WatchdogSec"]) > POOL_COMMAND_TIMEOUT_S
    # systemctl reload: SIGHUP re-reads POLLER_INSTANCES_FILE (DESIGN §7).
    assert single["ExecReload"] == "/bin/kill -HUP $MAINPID"
    # systemd must not SIGKILL a daemon that is still inside its own graceful shutdown.
    default_grace = load_settings(env={}).shutdown_grace_s
    assert seconds(single["TimeoutStopSec"]) > default_grace + POOL_CLOSE_TIMEOUT_S


def test_install_notes_match_execstart() -> None:
    text = UNIT.read_text()
    assert "ln -sf /opt/qbo-poller/venv/bin/qbo-poller /usr/local/bin/qbo-poller" in text
    assert "/etc/qbo-poller/config.env" in text


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = systemd_analyze()
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / SYSTEM_UNITS.relative_to("/"), symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy2(UNIT, root / "etc/systemd/system" / UNIT.name)
    exec_start = directives()["ExecStart"][-1].split()[0]
    binary = root / exec_start.lstrip("/")
    binary.parent.mkdir(parents=True, exist_ok=True)
    console_script = Path(sys.executable).parent / "qbo-poller"
    assert console_script.is_file(), "the project is not installed in this interpreter's venv"
    shutil.copy2(console_script, binary)
    # ExecReload's kill, as every system has it (procps / util-linux).
    reload_binary = root / directives()["ExecReload"][-1].split()[0].lstrip("/")
    reload_binary.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(shutil.which("kill") or "/bin/kill", reload_binary)

    done = subprocess.run(
        [analyze, "verify", "--man=no", f"--root={root}", UNIT.name],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and not done.stderr.strip() and not done.stdout.strip(), (
        done.stdout + done.stderr
    )


def test_systemd_analyze_security_exposure() -> None:
    analyze = systemd_analyze()
    done = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "--offline" in done.stderr and "unrecognized" in done.stderr:
        pytest.skip("this systemd-analyze has no --offline (systemd < 250)")
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= EXPOSURE_CEILING, done.stdout
