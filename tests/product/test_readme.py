"""The README stays true: its receiver snippet verifies what the daemon signs, and the
commands it names exist."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from poller.cli import build_parser
from poller.deliver.signing import callback_headers

README = Path(__file__).resolve().parents[2] / "README.md"
TEST_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/python -m pytest"
)


def receiver_snippet() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    [snippet] = [b for b in blocks if "def elements_ok" in b]
    return snippet


def load_snippet(key: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "readme_snippet"}
    exec(
        compile(
            receiver_snippet().replace('"<event.notification.signature.key>"', repr(key)),
            "README.md",
            "exec",
        ),
        namespace,
    )
    return namespace


@pytest.mark.parametrize("key", ["plain-signature-key", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])
def test_readme_receiver_verifies_both_signatures(key: str) -> None:
    snippet = load_snippet(key)
    body = orjson.dumps({"message": {"eventId": "e-1", "events": []}})
    headers = callback_headers("e-1", body, key, "both", int(time.time()))
    assert snippet["elements_ok"](body, headers["Elements-Webhook-Signature"])
    assert snippet["standard_ok"](body, headers)
    assert not snippet["elements_ok"](body + b" ", headers["Elements-Webhook-Signature"])
    assert not snippet["standard_ok"](body + b" ", headers)
    assert isinstance(snippet["app"], web.Application)


def test_readme_commands_exist() -> None:
    text = README.read_text()
    commands = set(re.findall(r"(?:`|bin/)qbo-poller ([a-z][a-z-]+)", text))
    parser_commands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert commands - {"demo", "emulator"} <= parser_commands
    assert TEST_COMMAND in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert TEST_COMMAND in ci


def layout_entries() -> list[str]:
    """The paths the README's Layout block names: indentation is nesting (two spaces)."""
    text = README.read_text()
    block = text[text.index("## Layout") :]
    block = block[block.index("```\n") + 4 : block.index("\n```", block.index("```\n") + 4)]
    parents: list[str] = []
    entries = []
    for line in block.splitlines():
        depth = (len(line) - len(line.lstrip(" "))) // 2
        name = line.split()[0]
        parents = parents[:depth]
        if name.endswith("/") or name.endswith(".py"):
            entries.append("".join(parents) + name)
        if name.endswith("/"):
            parents.append(name)
    return entries


def test_readme_layout_matches_the_tree() -> None:
    root = README.parent
    entries = layout_entries()
    missing = [entry for entry in entries if not (root / entry).exists()]
    assert missing == [], "named in the README's Layout but not in the tree"
    modules = sorted(
        str(path.relative_to(root))
        for path in (root / "poller").rglob("*.py")
        if path.name != "__init__.py"
    )
    packages = sorted(
        f"{path.parent.relative_to(root)}/" for path in (root / "poller").rglob("__init__.py")
    )
    unlisted = [name for name in modules + packages if name not in entries]
    assert unlisted == [], "in poller/ but not in the README's Layout"
