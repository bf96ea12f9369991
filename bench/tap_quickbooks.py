"""The singer tap-quickbooks on emulator data, for side-by-side figures (bench/burst.py --tap).

The tap (2.5.0) pins requests==2.33.0 and singer-python==6.1.1, so it lives in a venv of its
own (`.bench-venvs/tap-quickbooks-2.5.0`, git-ignored, built on first use with pip). It
hard-codes Intuit's URLs; a wrapper points `tap_quickbooks.client.PROD_ENDPOINT_BASE` and
`TOKEN_REFRESH_URL` at the emulator and calls the tap's own `main`. `run_taps` runs it once per
company, one after another (one process at a time, as the daemon is one process), with the
customers and invoices streams selected and `start_date` at the burst, and counts the RECORD
messages it prints.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

TAP_REQUIREMENT = "tap-quickbooks==2.5.0"
VENV = Path(__file__).resolve().parents[1] / ".bench-venvs" / "tap-quickbooks-2.5.0"
STREAMS = {"customers", "invoices"}

WRAPPER = """\
import os
import tap_quickbooks.client as client

client.PROD_ENDPOINT_BASE = os.environ["TAP_QBO_API_BASE"]
client.TOKEN_REFRESH_URL = os.environ["TAP_QBO_TOKEN_URL"]

from tap_quickbooks import main

main()
"""


def tap_python() -> tuple[Path, Path]:
    """The tap's venv (built once) and the wrapper script."""
    python = VENV / "bin" / "python"
    marker = VENV / "installed.txt"
    if not (marker.exists() and marker.read_text() == TAP_REQUIREMENT):
        VENV.parent.mkdir(exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", TAP_REQUIREMENT], check=True)
        marker.write_text(TAP_REQUIREMENT)
    wrapper = VENV / "run_tap.py"
    wrapper.write_text(WRAPPER)
    return python, wrapper


def _env(emu: Any) -> dict[str, str]:
    return {
        **os.environ,
        "TAP_QBO_API_BASE": str(emu.base_url),
        "TAP_QBO_TOKEN_URL": str(emu.token_url),
        "OAUTHLIB_INSECURE_TRANSPORT": "1",  # requests-oauthlib and a loopback http token URL
    }


def _config(emu: Any, realm: str, start: datetime, path: Path) -> Path:
    path.write_text(
        json.dumps(
            {
                "start_date": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "user_agent": "qbo-poller bench",
                "realm_id": realm,
                "client_id": emu.client_id,
                "client_secret": emu.client_secret,
                "refresh_token": emu.issue_tokens(realm)["refresh_token"],
            }
        )
    )
    return path


async def _run(python: Path, wrapper: Path, env: dict[str, str], *args: str) -> tuple[int, bytes]:
    proc = await asyncio.create_subprocess_exec(
        str(python),
        str(wrapper),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out


def _records(out: bytes) -> int:
    count = 0
    for line in out.splitlines():
        if b'"RECORD"' in line[:40]:
            message = json.loads(line)
            count += message.get("type") == "RECORD" and message.get("stream") in STREAMS
    return count


async def run_taps(
    emu: Any, realms: list[str], start: datetime, workdir: Path
) -> tuple[int, float, float]:
    """(records, wall seconds, CPU seconds) of the tap over every company, one at a time."""
    python, wrapper = tap_python()
    env = _env(emu)
    config = _config(emu, realms[0], start, workdir / "tap-config.json")
    code, out = await _run(python, wrapper, env, "--config", str(config), "--discover")
    if code != 0:
        raise SystemExit(f"tap-quickbooks --discover exited {code}")
    catalog = json.loads(out)
    for stream in catalog["streams"]:
        for entry in stream["metadata"]:
            if entry["breadcrumb"] == []:
                entry["metadata"]["selected"] = stream["tap_stream_id"] in STREAMS
    (workdir / "tap-catalog.json").write_text(json.dumps(catalog))
    records, seconds = 0, 0.0
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for n, realm in enumerate(realms):
        config = _config(emu, realm, start, workdir / f"tap-config-{n}.json")
        t0 = time.perf_counter()
        code, out = await _run(
            python,
            wrapper,
            env,
            "--config",
            str(config),
            "--catalog",
            str(workdir / "tap-catalog.json"),
        )
        seconds += time.perf_counter() - t0
        if code != 0:
            raise SystemExit(f"tap-quickbooks exited {code} for realm {realm}")
        records += _records(out)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return records, seconds, cpu
