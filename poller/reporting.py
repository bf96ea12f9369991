"""The one way a command fails: one line on stderr and an exit code, never a traceback.

Every command (the daemon included) runs inside `poller.cli.main`, which hands what escapes it
to `report` (DESIGN §7). A failure the user can fix by changing configuration is a
`ConfigError` (or a subclass): exit code 2, which systemd's `RestartPreventExitStatus=2` does
not restart. Everything else that is known — the database failing us, a schema this build cannot
use, the operating system refusing something — is exit code 1. Anything else is a bug: it is
not caught here, so its traceback is printed.

Lines are masked with the registered secrets and flattened to one line.
"""

from __future__ import annotations

import re
import sys
from typing import TextIO

from poller import logs
from poller.errors import ConfigError, DatabaseError, PollerError, SchemaError

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
PREFIX = "qbo-poller"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def classify(exc: BaseException) -> tuple[int, str] | None:
    """(exit code, line) for a known failure, else None."""
    if isinstance(exc, ConfigError):
        return EXIT_CONFIG, f"configuration error: {exc}"
    if isinstance(exc, SchemaError):
        return EXIT_FAILED, str(exc)
    if isinstance(exc, DatabaseError):
        return EXIT_FAILED, f"database error: {exc}"
    if isinstance(exc, PollerError):
        return EXIT_FAILED, str(exc)
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return EXIT_FAILED, f"{exc.strerror or exc}{where}"
    return None


def _known(exc: BaseException) -> BaseException | None:
    """`exc`, or the first known failure inside an exception group (a TaskGroup's)."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _known(inner)
            if found is not None:
                return found
        return None
    return exc if classify(exc) is not None else None


def one_line(text: str) -> str:
    """`text` masked and without line breaks or control characters (escape sequences)."""
    return _CONTROL.sub(" ", logs.secrets.mask(text)).strip()


def report(exc: BaseException, stream: TextIO | None = None) -> int | None:
    """Print the line of a known failure and return its exit code; None for an unknown one."""
    known = _known(exc)
    if known is None:
        return None
    classified = classify(known)
    assert classified is not None
    code, line = classified
    print(f"{PREFIX}: {one_line(line)}", file=stream or sys.stderr)
    return code


def warn(line: str, stream: TextIO | None = None) -> None:
    """A warning for a person at a terminal (check-config): one line on stderr."""
    print(f"{PREFIX}: warning: {one_line(line)}", file=stream or sys.stderr)
