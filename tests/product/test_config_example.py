"""config.example.env documents every variable poller/config.py reads, with the real defaults."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from dotenv import dotenv_values

import poller.config
from poller.config import SECRET_VARIABLES, load_settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.env"
ASSIGNMENT = re.compile(r"^#?([A-Z][A-Z0-9_]*)=(.*)$")


def variables_read_by_config() -> set[str]:
    names = set(poller.config.variables())
    assert {"DATABASE_URL", "POLLER_HTTP_ADDR", "QBO_CLIENT_SECRET"} <= names, names
    return names


def documented() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in EXAMPLE.read_text().splitlines():
        match = ASSIGNMENT.match(line)
        if match:
            assert match.group(1) not in found, f"{match.group(1)} documented twice"
            found[match.group(1)] = match.group(2)
    return found


def differences_from_defaults(env: dict[str, str]) -> dict[str, tuple[object, object]]:
    loaded = dataclasses.asdict(load_settings(env=env))
    default = dataclasses.asdict(load_settings(env={}))
    return {k: (loaded[k], default[k]) for k in loaded if loaded[k] != default[k]}


def test_every_variable_is_documented_and_nothing_else() -> None:
    read = variables_read_by_config()
    doc = documented()
    assert sorted(read - doc.keys()) == [], "read by poller/config.py but not in config.example.env"
    assert sorted(doc.keys() - read) == [], "in config.example.env but never read"


def test_every_variable_has_a_comment_and_secrets_are_blank() -> None:
    lines = EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        match = ASSIGNMENT.match(line)
        if not match:
            continue
        # Directly under its explanation (or under a sibling variable that shares it).
        j = i - 1
        while j >= 0 and ASSIGNMENT.match(lines[j]):
            j -= 1
        assert j >= 0 and lines[j].startswith("# "), f"{match.group(1)} has no comment above it"
        if match.group(1) in SECRET_VARIABLES | {"QBO_CLIENT_ID"}:
            assert match.group(2) == "", f"{match.group(1)} must be left blank"


def test_example_loads_as_is() -> None:
    env = {k: v for k, v in dotenv_values(EXAMPLE).items() if v is not None}
    assert differences_from_defaults(env) == {}


def test_documented_defaults_are_the_real_defaults(tmp_path: Path) -> None:
    """Uncommenting every line must change nothing: each shown value is the code's default."""
    uncommented = tmp_path / "config.env"
    uncommented.write_text(
        "\n".join(
            line[1:] if ASSIGNMENT.match(line) and line.startswith("#") else line
            for line in EXAMPLE.read_text().splitlines()
        )
    )
    env = {k: v for k, v in dotenv_values(uncommented).items() if v is not None}
    assert env.keys() == documented().keys()
    assert differences_from_defaults(env) == {}, "(loaded, default) per field"
