"""Named SQL loaded from `.sql` files next to this module.

A file holds blocks that start with `-- name: <query_name>`; `queries("instances")` returns
them as a dict. SQL is only ever literal text from these files; values go in as parameters.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


@cache
def queries(group: str) -> dict[str, str]:
    text = (resources.files("poller.store") / "sql" / f"{group}.sql").read_text(encoding="utf-8")
    parts = _NAME.split(text)
    named: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in named:
            raise ValueError(f"{group}.sql: query {name!r} is defined twice")
        named[name] = body.strip()
    return named
