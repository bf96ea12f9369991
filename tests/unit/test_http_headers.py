"""Retry-After, read one way for QBO answers and callback receivers (RFC 9110 §10.2.3)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from poller.http_headers import retry_after_seconds

NOW = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)


def test_delay_seconds() -> None:
    assert retry_after_seconds("120", NOW) == 120.0
    assert retry_after_seconds(" 60 ", NOW) == 60.0
    assert retry_after_seconds("0", NOW) == 0.0


def test_a_decimal_fraction_is_accepted_leniently() -> None:
    # Not delay-seconds by the RFC (1*DIGIT), but sent in practice (the QBO client's test server
    # answers 429 with "0.05"): honoured as the finer wait it asks for.
    assert retry_after_seconds("1.5", NOW) == 1.5
    assert retry_after_seconds("0.05", NOW) == 0.05


@pytest.mark.parametrize(
    "value",
    [None, "", "  ", "soon", "-5", "+5", "1.5e3", "inf", "nan", "1.", ".5", "1,5", "١٢"],
)
def test_anything_else_is_unreadable(value: str | None) -> None:
    assert retry_after_seconds(value, NOW) is None


def test_http_dates_in_every_form_the_rfc_allows() -> None:
    assert retry_after_seconds("Tue, 24 Nov 2026 10:01:30 GMT", NOW) == 90.0  # IMF-fixdate
    assert retry_after_seconds("Tuesday, 24-Nov-26 10:01:30 GMT", NOW) == 90.0  # RFC 850
    assert retry_after_seconds("Tue Nov 24 10:01:30 2026", NOW) == 90.0  # asctime: GMT


def test_a_past_date_means_now() -> None:
    assert retry_after_seconds("Tue, 24 Nov 2026 09:00:00 GMT", NOW) == 0.0


def test_without_now_the_clock_is_read() -> None:
    seconds = retry_after_seconds("Thu, 01 Jan 2099 00:00:00 GMT")
    assert seconds is not None and seconds > 0
