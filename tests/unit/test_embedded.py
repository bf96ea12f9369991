"""What the embedded server's log says when it exits at start-up."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from poller.store import embedded


def test_the_reason_is_the_fatal_line_not_the_shutdown_after_it(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_text(
        "LOG:  starting PostgreSQL 16.2\n"
        'FATAL:  could not create lock file "/tmp/x/.s.PGSQL.5432.lock": File exists\n'
        "LOG:  database system is shut down\n\n"
    )
    assert embedded._last_line(log) == (
        'FATAL:  could not create lock file "/tmp/x/.s.PGSQL.5432.lock": File exists'
    )


def test_without_a_fatal_line_the_reason_is_the_last_line(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_text("LOG:  starting PostgreSQL 16.2\nLOG:  listening on socket\n")
    assert embedded._last_line(log) == "LOG:  listening on socket"
    assert embedded._last_line(tmp_path / "missing") == "no log"


def test_a_long_tmpdir_puts_the_socket_in_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    pgdata = deep / "pgdata"
    pgdata.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(deep))  # TMPDIR as long as pgdata's parent
    folder = embedded._socket_dir(pgdata, None)
    try:
        assert folder.parent == Path("/tmp") and folder.name.startswith("qbo-poller-")
        assert len(str(folder / ".s.PGSQL.5432")) <= embedded.SOCKET_PATH_MAX
        assert folder.is_dir() and folder.stat().st_mode & 0o777 == 0o700
    finally:
        folder.rmdir()


def test_a_short_pgdata_holds_its_own_socket() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as short:
        assert embedded._socket_dir(Path(short), None) == Path(short)
