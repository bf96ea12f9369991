"""One backoff formula, with the numbers each retry loop has always used."""

from __future__ import annotations

import pytest

from poller.backoff import EQUAL_JITTER, NO_JITTER, Backoff, spread
from poller.detect.schedule import BACKOFF_CAP_S, backoff_s
from poller.qbo.auth import TOKEN_BACKOFF
from poller.qbo.client import RetryPolicy
from poller.store.listener import LISTEN_BACKOFF

LOW, MID, HIGH = (lambda: 0.0), (lambda: 0.5), (lambda: 1.0)


def test_steps_double_up_to_the_cap() -> None:
    backoff = Backoff(base_s=0.5, cap_s=15.0)
    assert [backoff.step(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0]
    assert backoff.step(10_000) == 15.0  # no overflow however long it fails


def test_jitter_ranges() -> None:
    assert NO_JITTER.apply(4.0, HIGH) == 4.0
    assert (EQUAL_JITTER.apply(4.0, LOW), EQUAL_JITTER.apply(4.0, HIGH)) == (2.0, 4.0)
    twenty_percent = spread(0.2)
    assert twenty_percent.apply(10.0, LOW) == pytest.approx(8.0)
    assert twenty_percent.apply(10.0, MID) == 10.0
    assert twenty_percent.apply(10.0, HIGH) == pytest.approx(12.0)


def test_qbo_client_equal_jitter() -> None:
    policy = RetryPolicy()
    for failures in range(1, 10):
        ceiling = min(15.0, 0.5 * 2 ** (failures - 1))
        delay = policy.delay(failures)
        assert ceiling / 2 <= delay <= ceiling


def test_failing_pair_backoff() -> None:
    for errors in range(1, 20):
        base = min(60.0 * 2**errors, BACKOFF_CAP_S)
        assert base * 0.8 - 1e-9 <= backoff_s(errors, 60.0) <= base * 1.2 + 1e-9
    # Never faster than the interval, even when the interval is longer than the cap.
    assert backoff_s(5, 3600.0) >= 3600.0 * 0.8


def test_listen_and_token_backoffs() -> None:
    assert [LISTEN_BACKOFF.delay(n) for n in (1, 2, 3, 7, 8)] == [0.5, 1.0, 2.0, 30.0, 30.0]
    assert [TOKEN_BACKOFF.delay(n) for n in (1, 2)] == [0.2, 0.4]
