"""The container image's entry command, run the way the image runs it — without a container engine.

The Containerfile is parsed (COPY, RUN's pip install target, ENV, WORKDIR, USER, EXPOSE,
STOPSIGNAL, HEALTHCHECK, ENTRYPOINT, CMD). Its COPY instructions build the same context in a
temporary root, a fresh virtual environment gets a normal (non-editable, no extras) `pip install`
of it, and ENTRYPOINT + CMD run with the image's ENV in a clean environment, against an isolated
empty database: the daemon must migrate it from the SQL files the wheel ships, pass the
HEALTHCHECK command itself, and exit 0 within 10 s of SIGTERM.

Differences from a real image, by necessity: the interpreter is the one running the tests (the
image has python:3.12-slim's), the user is not switched, and POLLER_DATA_DIR / POLLER_HTTP_ADDR
point at a temporary folder and a free loopback port.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.daemon import free_port

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "Containerfile"
PIP_TIMEOUT_S = 900
# What .containerignore leaves out of anything COPY brings in.
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", "*.egg-info", "build", "dist")


@dataclass
class Image:
    copies: list[tuple[list[str], str]] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str = "root"
    expose: list[str] = field(default_factory=list)
    stopsignal: str = "SIGTERM"
    healthcheck: list[str] = field(default_factory=list)
    healthcheck_options: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) with continuation lines joined and comments dropped."""
    result: list[tuple[str, str]] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, args = current.partition(" ")
        result.append((keyword.upper(), args.strip()))
        current = ""
    assert not current, "Containerfile ends inside a continuation line"
    return result


def exec_form(args: str, what: str) -> list[str]:
    # The shell form would make /bin/sh PID 1, which does not pass SIGTERM on to the daemon.
    assert args.startswith("["), f"{what} must use the exec (JSON) form: {args}"
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def env_assignments(args: str) -> dict[str, str]:
    words = shlex.split(args)
    if "=" not in words[0]:  # legacy `ENV KEY value`
        return {words[0]: " ".join(words[1:])}
    return dict(word.partition("=")[::2] for word in words)


def healthcheck_options(options: str) -> dict[str, str]:
    return dict(option.removeprefix("--").partition("=")[::2] for option in options.split())


def parse_containerfile(text: str) -> Image:
    image = Image()
    for keyword, args in instructions(text):
        if keyword == "FROM":
            image = Image()  # only the final stage is the image
        elif keyword == "COPY":
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            assert "--from" not in args, "the test expects a single-stage build"
            image.copies.append((words[:-1], words[-1]))
        elif keyword == "RUN":
            image.runs.append(args)
        elif keyword == "ENV":
            image.env.update(env_assignments(args))
        elif keyword == "WORKDIR":
            image.workdir = args
        elif keyword == "USER":
            image.user = args
        elif keyword == "EXPOSE":
            image.expose.extend(args.split())
        elif keyword == "STOPSIGNAL":
            image.stopsignal = args
        elif keyword == "HEALTHCHECK":
            options, sep, command = args.partition("CMD ")
            assert sep, f"HEALTHCHECK needs CMD: {args}"
            image.healthcheck_options.update(healthcheck_options(options))
            image.healthcheck = exec_form(command.strip(), "HEALTHCHECK CMD")
        elif keyword == "ENTRYPOINT":
            image.entrypoint = exec_form(args, "ENTRYPOINT")
        elif keyword == "CMD":
            image.cmd = exec_form(args, "CMD")
    return image


def pip_install_target(image: Image) -> str:
    """The path the image's RUN installs with pip (`pip install [options] PATH`)."""
    for run in image.runs:
        for command in run.split("&&"):
            words = shlex.split(command)
            if words[:2] == ["pip", "install"]:
                paths = [w for w in words[2:] if not w.startswith("-")]
                assert len(paths) == 1 and paths[0].startswith("/"), command
                assert "[" not in paths[0], f"the image installs extras: {command}"
                return paths[0]
    raise AssertionError("no `pip install PATH` in the Containerfile's RUN instructions")


def build_context(image: Image, into: Path) -> None:
    """Lay out the image's filesystem as its COPY instructions would (sources from the repo)."""
    for sources, dest in image.copies:
        for source in sources:
            src = ROOT / source
            target = into / dest.lstrip("/")
            if dest.endswith("/") or len(sources) > 1:
                target = target / src.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, target, symlinks=True, ignore=IGNORED)
            else:
                shutil.copy2(src, target)


def image_environment(image: Image, venv: Path, workdir: Path, **overrides: str) -> dict[str, str]:
    """A clean environment: the base image's essentials, the Containerfile's ENV, overrides."""
    env = {
        "PATH": f"{venv}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(workdir),
    }
    env.update(image.env)
    env.update(overrides)
    return env


def run_healthcheck(image: Image, env: dict[str, str], cwd: Path) -> int:
    timeout = float(image.healthcheck_options.get("timeout", "30s").rstrip("s"))
    executable = shutil.which(image.healthcheck[0], path=env["PATH"])
    assert executable, f"{image.healthcheck[0]} not on the image's PATH"
    try:
        done = subprocess.run(
            [executable, *image.healthcheck[1:]],
            env=env,
            cwd=cwd,
            capture_output=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return -1
    return done.returncode


def test_containerfile_declares_the_sidecar_contract() -> None:
    image = parse_containerfile(CONTAINERFILE.read_text())
    assert image.entrypoint == ["qbo-poller"] and image.cmd == ["run"]
    assert image.stopsignal == "SIGTERM"
    assert image.user.split(":")[0] not in ("", "0", "root")
    assert image.env["POLLER_LOG_FORMAT"] == "json"
    assert image.env["PYTHONUNBUFFERED"] == "1"
    host, _, port = image.env["POLLER_HTTP_ADDR"].rpartition(":")
    assert host == "0.0.0.0" and f"{port}" in {e.split("/")[0] for e in image.expose}
    # Configured only from outside: no database, credentials or keys baked in.
    assert (
        not {
            "DATABASE_URL",
            "QBO_CLIENT_ID",
            "QBO_CLIENT_SECRET",
            "POLLER_SECRET_KEY",
            "POLLER_INSTANCES_FILE",
        }
        & image.env.keys()
    )
    assert image.healthcheck and "/healthz" in " ".join(image.healthcheck)
    assert pip_install_target(image)


@pytest.mark.slow
def test_image_entry_command_runs_health_checks_and_stops(
    tmp_path: Path, empty_db_dsn: str
) -> None:
    image = parse_containerfile(CONTAINERFILE.read_text())
    fs = tmp_path / "image"
    build_context(image, fs)
    target = fs / pip_install_target(image).lstrip("/")
    assert (target / "poller" / "migrations").is_symlink(), "the context should carry the symlink"

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            str(target),
        ],
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT_S,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr

    workdir = tmp_path / "workdir"  # the image's WORKDIR: empty, no .env
    workdir.mkdir()
    port = free_port()
    env = image_environment(
        image,
        venv,
        workdir,
        POLLER_DATA_DIR=str(tmp_path / "data"),
        POLLER_HTTP_ADDR=f"127.0.0.1:{port}",
        DATABASE_URL=empty_db_dsn,
    )

    # The installed package is the wheel's copy, with every SQL file the repo has.
    shipped = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import json, poller, importlib.resources as r; f = r.files('poller');"
            "sql = lambda d: sorted(p.name for p in d.iterdir() if p.name.endswith('.sql'))"
            " if d.is_dir() else [];"
            "print(json.dumps([poller.__file__, sql(f / 'migrations'), sql(f / 'store' / 'sql')]))",
        ],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shipped.returncode == 0, shipped.stderr
    module_file, migrations, queries = json.loads(shipped.stdout)
    assert Path(module_file).is_relative_to(venv), f"not installed into the venv: {module_file}"
    assert migrations == sorted(p.name for p in (ROOT / "migrations").glob("*.sql")), (
        "the wheel is missing migrations"
    )
    assert queries == sorted(p.name for p in (ROOT / "poller" / "store" / "sql").glob("*.sql")), (
        "the wheel is missing poller/store/sql files"
    )

    entry = shutil.which(image.entrypoint[0], path=env["PATH"])
    assert entry and Path(entry).is_relative_to(venv), entry
    assert run_healthcheck(image, env, workdir) != 0, "healthy before the daemon started?"

    log_path = tmp_path / "daemon.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [entry, *image.entrypoint[1:], *image.cmd],
            env=env,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while run_healthcheck(image, env, workdir) != 0:
                assert proc.poll() is None, f"exited with {proc.returncode}: {log_path.read_text()}"
                assert time.monotonic() < deadline, f"never healthy: {log_path.read_text()}"
                time.sleep(0.3)
            for path in ("/readyz", "/metrics"):  # readyz: migrated from the wheel's SQL
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
                    assert resp.status == 200, path

            started = time.monotonic()
            proc.send_signal(getattr(signal, image.stopsignal))
            code = proc.wait(timeout=10)
            assert code == 0, log_path.read_text()
            assert time.monotonic() - started < 10
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)

    # POLLER_LOG_FORMAT=json from the image: every line is one JSON object.
    events = [
        json.loads(line)["event"] for line in log_path.read_text().splitlines() if line.strip()
    ]
    assert "schema_ready" in events and "daemon_ready" in events and events[-1] == "daemon_stopped"
    assert os.listdir(workdir) == [], "the daemon wrote into its working directory"
