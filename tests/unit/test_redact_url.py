"""`poller.logs.redact_url`: the one rendering of a callback URL in logs and CLI output."""

from __future__ import annotations

import io
import json

import pytest
import structlog

from poller import logs


@pytest.mark.parametrize(
    "url,shown",
    [
        (
            "https://user:pass@host.example:8443/p/x?token=abc#f",
            "https://***@host.example:8443/p/x?***#***",
        ),
        ("https://host.example/hooks/qbo", "https://host.example/hooks/qbo"),
        ("https://host.example?x=1", "https://host.example?***"),
        ("https://a@b@host.example/p", "https://***@host.example/p"),
        ("https://host.example/p#frag?x", "https://host.example/p#***"),
        ("http://[::1]:8080/p?q", "http://[::1]:8080/p?***"),
        ("https://host.example/\x1b[2J", "https://host.example/\\x1b[2J"),
        ("not a url at all", "not a url at all"),
        ("", ""),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert logs.redact_url(url) == shown
    assert logs.redact_url(shown) == shown  # idempotent: redacting twice changes nothing


def test_urls_inside_a_text_are_redacted() -> None:
    text = "InvalidUrlClientError: http://u:p@h:99999/x?t=1 (Location: https://h2/y?sig=2)"
    assert logs.redact_urls(text) == (
        "InvalidUrlClientError: http://***@h:99999/x?*** (Location: https://h2/y?***)"
    )


def test_the_log_pipeline_redacts_url_keys() -> None:
    saved = structlog.get_config()
    out = io.StringIO()
    try:
        logs.configure("info", "json", stream=out)
        logs.get_logger("t").info(
            "x", url="https://u:pw@h/p?token=t1", target_url="http://h/?a=b", other="http://h/?k"
        )
    finally:
        structlog.configure(**saved)
    line = json.loads(out.getvalue())
    assert line["url"] == "https://***@h/p?***" and line["target_url"] == "http://h/?***"
    assert line["other"] == "http://h/?k"  # only URL-named keys: other texts are left as they are
