"""Hostile instance files through the real CLI (`python -m poller` in a subprocess): through
POLLER_INSTANCES_FILE at `run` and through `instances add FILE`, each is one exact line on
stderr, exit 2, no traceback, nothing on stdout, and nothing started (no data directory: no
embedded PostgreSQL)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from poller import logs
from tests.e2e.daemon import base_env, run_once
from tests.unit.test_input_limits import FILE_CASES, HOSTILE, PASTED_SECRET

# The CLI's prefix for a configuration error (poller/cli.py).
CONFIG_ERROR = "qbo-poller: configuration error: "

# The cases the issue names, and one per kind of refusal; every HOSTILE body is checked to the
# character by tests/unit/test_input_limits.py.
BODY_CASES = (
    "code is an array",
    "providerData is a string",
    "name with ANSI escapes",
    "name with CR LF",
    "long run-together resource list",
    "deep nesting",
)


Result = subprocess.CompletedProcess[str]


def assert_refused(result: Result, line: str, data_dir: Path) -> None:
    stderr, stdout = result.stderr, result.stdout
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr
    assert stderr.splitlines() == [line], stderr
    assert not logs.CONTROL_CHARS.search(stderr.removesuffix("\n"))
    assert PASTED_SECRET not in stderr and "CLIENT-SECRET-XYZ" not in stderr
    assert stdout == ""
    assert not data_dir.exists()  # nothing started: no embedded PostgreSQL, no migration


def run_at_start(tmp_path: Path, path: Path) -> Result:
    env = base_env(POLLER_INSTANCES_FILE=str(path), POLLER_DATA_DIR=str(tmp_path / "data"))
    return run_once(["run"], env)


def instances_add(tmp_path: Path, path: Path) -> Result:
    return run_once(
        ["instances", "add", str(path)], base_env(POLLER_DATA_DIR=str(tmp_path / "data"))
    )


def file_case(tmp_path: Path, case: str) -> tuple[Path, str]:
    data, expected = FILE_CASES[case]
    path = tmp_path / "instances.json"
    path.write_bytes(data)
    offset = data.find(b"\xff")
    return path, expected.format(col=offset + 1, off=offset)


@pytest.mark.parametrize("case", BODY_CASES)
def test_hostile_body_in_the_instances_file(case: str, tmp_path: Path) -> None:
    body, message = HOSTILE[case]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps([body]))
    assert_refused(run_at_start(tmp_path, path), CONFIG_ERROR + message, tmp_path / "data")


@pytest.mark.parametrize("case", sorted(set(FILE_CASES) - {"too many instances"}))
def test_hostile_instances_file(case: str, tmp_path: Path) -> None:
    path, expected = file_case(tmp_path, case)
    line = f"{CONFIG_ERROR}POLLER_INSTANCES_FILE={str(path)!r}: {expected}"
    assert_refused(run_at_start(tmp_path, path), line, tmp_path / "data")


@pytest.mark.parametrize("case", ["name with ANSI escapes", "providerData is a string"])
def test_instances_add_refuses_a_hostile_body(case: str, tmp_path: Path) -> None:
    body, message = HOSTILE[case]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(body))
    assert_refused(instances_add(tmp_path, path), CONFIG_ERROR + message, tmp_path / "data")


@pytest.mark.parametrize("case", ["not UTF-8 on a later line", "nested past the parser's stack"])
def test_instances_add_refuses_a_hostile_file(case: str, tmp_path: Path) -> None:
    path, expected = file_case(tmp_path, case)
    line = f"{CONFIG_ERROR}FILE={str(path)!r}: {expected}"
    assert_refused(instances_add(tmp_path, path), line, tmp_path / "data")


def test_a_file_over_8_mib_and_a_directory(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    with big.open("wb") as handle:
        handle.truncate(8 * 1024 * 1024 + 1)  # sparse: no disk used
    line = f"{CONFIG_ERROR}POLLER_INSTANCES_FILE={str(big)!r}: larger than 8 MiB"
    assert_refused(run_at_start(tmp_path, big), line, tmp_path / "data")
    folder = tmp_path / "folder"
    folder.mkdir()
    line = f"{CONFIG_ERROR}FILE={str(folder)!r}: cannot read: Is a directory"
    assert_refused(instances_add(tmp_path, folder), line, tmp_path / "data")
