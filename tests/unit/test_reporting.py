"""poller.reporting: every known failure is one masked line and its exit code."""

from __future__ import annotations

import errno
import io

import asyncpg
import pytest

from poller import logs, reporting
from poller.errors import ConfigError, DatabaseUnavailable, SchemaError
from poller.store import probe

DSN = "postgresql://qbo:hunter2hunter2@db.example:5432/qbo"


def reported(exc: BaseException) -> tuple[int | None, str]:
    out = io.StringIO()
    code = reporting.report(exc, out)
    return code, out.getvalue()


@pytest.mark.parametrize(
    ("exc", "code", "line"),
    [
        (ConfigError("X='y': bad"), 2, "qbo-poller: configuration error: X='y': bad\n"),
        (SchemaError("schema is newer"), 1, "qbo-poller: schema is newer\n"),
        (DatabaseUnavailable("gone"), 1, "qbo-poller: database error: gone\n"),
        (
            PermissionError(errno.EACCES, "Permission denied", "/srv/x"),
            1,
            "qbo-poller: Permission denied: /srv/x\n",
        ),
    ],
)
def test_known_failures_are_one_line_and_an_exit_code(
    exc: BaseException, code: int, line: str
) -> None:
    assert reported(exc) == (code, line)


def test_an_unknown_exception_is_left_to_its_traceback() -> None:
    assert reported(KeyError("bug")) == (None, "")


def test_the_first_known_failure_of_a_group_is_reported() -> None:
    group = ExceptionGroup("tasks", [KeyError("bug"), ConfigError("A=1: no")])
    assert reported(group) == (2, "qbo-poller: configuration error: A=1: no\n")


def test_the_line_is_masked_and_stays_one_line() -> None:
    logs.register_secret("hunter2hunter2")
    code, line = reported(ConfigError("NAME='a\nb\x1b[31m': hunter2hunter2"))
    assert code == 2
    assert line == "qbo-poller: configuration error: NAME='a b [31m': ***\n"


@pytest.mark.parametrize(
    ("exc", "says"),
    [
        (asyncpg.InvalidCatalogNameError('database "qbo" does not exist'), 'database "qbo"'),
        (
            asyncpg.InvalidAuthorizationSpecificationError('role "qbo" does not exist'),
            'authentication refused (role "qbo" does not exist)',
        ),
        (
            asyncpg.InvalidPasswordError('password authentication failed for user "qbo"'),
            "authentication refused (password authentication failed",
        ),
        (
            asyncpg.UndefinedObjectError('unrecognized configuration parameter "foo"'),
            'unknown option (unrecognized configuration parameter "foo")',
        ),
        (asyncpg.ClientConfigurationError("`sslmode` parameter must be one of"), "`sslmode`"),
    ],
)
def test_a_url_that_cannot_work_is_a_config_error(exc: BaseException, says: str) -> None:
    refused = probe.refusal(exc, DSN)
    assert refused is not None
    assert str(refused).startswith(
        f"DATABASE_URL=postgresql://qbo:********@db.example:5432/qbo: {says}"
    )


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
        TimeoutError(),
        OSError(errno.EHOSTUNREACH, "No route to host"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.ConnectionDoesNotExistError("connection was closed"),
    ],
)
def test_an_unreachable_server_is_retried(exc: BaseException) -> None:
    assert probe.refusal(exc, DSN) is None
