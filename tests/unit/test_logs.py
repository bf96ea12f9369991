"""Secret redaction in log output."""

from __future__ import annotations

import io
import logging

import orjson

from poller import logs


def capture() -> io.StringIO:
    stream = io.StringIO()
    logs.configure("debug", "json", stream)
    return stream


def test_secret_named_keys_are_redacted() -> None:
    stream = capture()
    logs.get_logger("t").info(
        "token_refreshed",
        access_token="abc",
        client_secret="xyz",
        Authorization="Bearer q",
        signature_key="k",
        realm="123",
    )
    record = orjson.loads(stream.getvalue())
    assert record["access_token"] == record["client_secret"] == "***"
    assert record["Authorization"] == record["signature_key"] == "***"
    assert record["realm"] == "123" and record["event"] == "token_refreshed"


def test_registered_values_are_masked_anywhere() -> None:
    stream = capture()
    logs.register_secret("s3cr3t-value-1")
    logs.get_logger("t").warning(
        "oops",
        detail="the body said s3cr3t-value-1 twice: s3cr3t-value-1",
        nested={"list": ["x s3cr3t-value-1"]},
    )
    text = stream.getvalue()
    assert "s3cr3t-value-1" not in text
    assert text.count("***") == 3


def test_slots_rotate_but_keep_the_previous_value() -> None:
    stream = capture()
    logs.register_secret("refresh-token-AAAA", slot="rt:1")
    logs.register_secret("refresh-token-BBBB", slot="rt:1")
    logs.register_secret("refresh-token-CCCC", slot="rt:1")
    logs.get_logger("t").info(
        "x", a="refresh-token-CCCC", b="refresh-token-BBBB", c="refresh-token-AAAA"
    )
    record = orjson.loads(stream.getvalue())
    assert record["a"] == record["b"] == "***"
    assert record["c"] == "refresh-token-AAAA"  # two rotations ago: no longer tracked


def test_exceptions_and_stdlib_records_are_masked() -> None:
    stream = capture()
    logs.register_secret("hunter2-hunter2")
    try:
        raise ValueError("bad token hunter2-hunter2")
    except ValueError:
        logs.get_logger("t").exception("failed")
    logging.getLogger("aiohttp.client").warning("leaked hunter2-hunter2 here")
    text = stream.getvalue()
    assert "hunter2-hunter2" not in text
    assert "failed" in text and "leaked *** here" in text


def test_short_values_are_not_registered() -> None:
    logs.register_secret("abc")
    assert logs.secrets.mask("abc abc") == "abc abc"


def test_many_rotating_secrets_are_all_masked_longest_first() -> None:
    registry = logs.SecretRegistry()
    for n in range(3000):  # thousands of instances, each rotating its token twice
        registry.add(f"token-{n:05d}-old", slot=f"rt:{n}")
        registry.add(f"token-{n:05d}-new", slot=f"rt:{n}")
        registry.add(f"token-{n:05d}-newest", slot=f"rt:{n}")
    registry.add("static-secret")
    registry.add("static-secret-longer")
    text = "a token-00042-newest b token-02999-new c token-00001-old d static-secret-longer!"
    assert registry.mask(text) == "a *** b *** c token-00001-old d ***!"
    assert registry.mask("token-00042-ne") == "token-00042-ne"  # a prefix is no secret
    registry.clear()
    assert registry.mask(text) == text


class _HungUpTerminal(io.StringIO):
    """A stream whose writes fail as a hung-up terminal's do (EIO)."""

    def write(self, text: str) -> int:
        raise OSError(5, "Input/output error")

    def isatty(self) -> bool:
        return False


def test_a_log_line_that_cannot_be_written_is_dropped_not_raised() -> None:
    """Between a terminal's hang-up and the SIGHUP handler's redirect, any thread may log: a
    failed write must not become that service's failure (exit 1 instead of 0, seen in CI)."""
    logs.configure("info", "json", _HungUpTerminal())
    logs.get_logger("test").info("after_the_hang_up", n=1)
    logging.getLogger("aiohttp.test").warning("stdlib too")
