"""Bad configuration: exit code 2 and one line naming the problem, before anything starts."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.daemon import base_env, run_once, write_instances
from tests.unit.test_instances import BODY


def with_config(**changes: Any) -> dict[str, Any]:
    b = copy.deepcopy(BODY)
    for key, value in changes.items():
        if value is None:
            b["configuration"].pop(key.replace("__", "."))
        else:
            b["configuration"][key.replace("__", ".")] = value
    return b


def oauth1() -> dict[str, Any]:
    b = copy.deepcopy(BODY)
    b["providerData"] = {"oauth_token": "qyprd-token", "oauth_verifier": "v", "realmId": "1"}
    return b


CASES = {
    "unknown resource": (
        with_config(event__poller__urls="customers|gizmos"),
        ["event.poller.urls", "'gizmos'", "valid resources"],
    ),
    "oauth1": (oauth1(), ["OAuth 1.0", "2019-12-17"]),
    "no callback": (
        with_config(event__notification__callback__url=None),
        ["event.notification.callback.url", "required"],
    ),
    "ftp callback": (
        with_config(event__notification__callback__url="ftp://files.example/x"),
        ["event.notification.callback.url='ftp://files.example/x'", "http"],
    ),
}


def assert_one_line(result: Any, fragments: list[str]) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_instance_exits_2(case: str, tmp_path: Path) -> None:
    body, fragments = CASES[case]
    path = write_instances(tmp_path / "instances.json", body)
    result = run_once(
        ["run"], base_env(POLLER_INSTANCES_FILE=str(path), POLLER_DATA_DIR=str(tmp_path / "data"))
    )
    assert_one_line(result, fragments)
    assert not (tmp_path / "data").exists()  # nothing started


def test_non_numeric_overlap_exits_2(tmp_path: Path) -> None:
    result = run_once(
        ["run"],
        base_env(POLLER_OVERLAP_SECONDS="two minutes", POLLER_DATA_DIR=str(tmp_path / "data")),
    )
    assert_one_line(result, ["POLLER_OVERLAP_SECONDS='two minutes'"])


def test_malformed_instances_json_exits_2_with_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "instances.json"
    path.write_text('[\n  {"name": "a",\n   "configuration": {"x": 1,}}\n]\n')
    result = run_once(["run"], base_env(POLLER_INSTANCES_FILE=str(path)))
    assert_one_line(result, ["POLLER_INSTANCES_FILE=", "invalid JSON at line 3 column 29"])


def test_check_config_validates_without_starting(tmp_path: Path) -> None:
    path = write_instances(tmp_path / "instances.json", BODY)
    ok = run_once(["check-config"], base_env(POLLER_INSTANCES_FILE=str(path)))
    assert ok.returncode == 0 and "1 instance(s)" in ok.stdout
    bad = run_once(
        ["check-config"], base_env(POLLER_INSTANCES_FILE=str(path), POLLER_SIGNATURE_SCHEME="sha1")
    )
    assert_one_line(bad, ["POLLER_SIGNATURE_SCHEME='sha1'"])
