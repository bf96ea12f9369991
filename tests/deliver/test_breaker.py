"""The per-URL breaker on a fake clock."""

from __future__ import annotations

from poller.backoff import Backoff
from poller.deliver.breaker import Breaker

URL = "https://example.com/hook"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock) -> Breaker:
    return Breaker(3, Backoff(base_s=10, cap_s=25), probe_wait_s=2, clock=clock)


def test_timeouts_in_a_row_pause_the_url_and_probes_double_the_pause() -> None:
    clock = Clock()
    b = breaker(clock)
    assert b.record(URL, clock.now, timed_out=True) is None
    assert b.record(URL, clock.now, timed_out=False) is None  # an answer starts over
    stale = clock.now
    assert [b.record(URL, clock.now, timed_out=True) for _ in range(3)] == [None, None, 10]
    assert b.is_open(URL) and b.room(URL, 8) == 0 and b.admit(URL) == 10
    assert b.record(URL, stale, timed_out=True) is None  # in flight before it paused
    clock.now += 10
    assert not b.is_open(URL) and b.room(URL, 8) == 1
    assert b.admit(URL) == 0  # the probe
    assert b.room(URL, 8) == 0 and b.admit(URL) == 2  # the others wait for its answer
    assert b.record(URL, clock.now, timed_out=True) == 20
    clock.now += 20
    assert b.admit(URL) == 0
    assert b.record(URL, clock.now, timed_out=True) == 25  # capped
    clock.now += 25
    assert b.admit(URL) == 0
    assert b.record(URL, clock.now, timed_out=False) is None
    assert b.room(URL, 8) == 8 and b.urls() == [] and b.open_count() == 0


def test_a_cancelled_probe_lets_another_go() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.record(URL, clock.now, timed_out=True)
    clock.now += 10
    started = clock.now
    assert b.admit(URL) == 0 and b.room(URL, 8) == 0
    b.abandon(URL, started)
    assert b.room(URL, 8) == 1 and b.admit(URL) == 0
