"""QboClock: an answer's `time` moves watermarks only as far as the evidence goes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from structlog.testing import capture_logs

from poller.detect.diff import PairContext, diff
from poller.detect.qbo_clock import QboClock
from poller.qbo import times

T0 = datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


class Ticks:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def stamped(at: datetime, oid: str = "1") -> dict:
    text = times.format_qbo_time(at, times.PACIFIC)
    return {"Id": oid, "SyncToken": "0", "MetaData": {"CreateTime": text, "LastUpdatedTime": text}}


def clock_at(t0: datetime = T0) -> tuple[QboClock, Ticks]:
    ticks = Ticks()
    clock = QboClock(timedelta(seconds=120), monotonic=ticks)
    assert clock.accept(t0) == t0  # no history: only the local clock, far away here
    ticks.now += 10
    assert clock.accept(t0 + timedelta(seconds=10)) == t0 + timedelta(seconds=10)
    return clock, ticks


def test_tolerance_is_at_most_half_the_overlap() -> None:
    assert QboClock(timedelta(seconds=5)).tolerance == timedelta(seconds=2.5)
    assert QboClock(timedelta(seconds=120)).tolerance == timedelta(seconds=30)


def test_a_jump_ahead_is_held_at_the_evidence_reported_once_then_forgotten() -> None:
    clock, ticks = clock_at()
    with capture_logs() as logged:
        for step in range(5):  # several answers from the jumped clock: no ratchet
            ticks.now += 1
            accepted = clock.accept(T0 + timedelta(seconds=11 + step) + HOUR)
            assert accepted == T0 + timedelta(seconds=11 + step + 30)
        ticks.now += 1
        assert clock.accept(T0 + timedelta(seconds=16)) == T0 + timedelta(seconds=16)  # back
        ticks.now += 1
        clock.accept(T0 + timedelta(seconds=17) + HOUR)  # a second jump
    jumps = [entry for entry in logged if entry["event"] == "qbo_clock_jump"]
    assert [entry["direction"] for entry in jumps] == ["ahead", "ahead"]


def test_objects_stamped_by_the_clock_are_evidence() -> None:
    clock, ticks = clock_at()
    ticks.now += 1
    ahead = T0 + timedelta(days=31)
    assert clock.accept(ahead + timedelta(seconds=2), [stamped(ahead)]) == ahead + timedelta(
        seconds=2
    )
    ticks.now += 5
    assert clock.now() == ahead + timedelta(seconds=5)  # learned, up to the evidence


def test_a_clock_going_back_is_followed_at_once() -> None:
    clock, ticks = clock_at()
    ticks.now += 1
    back = T0 - HOUR
    with capture_logs() as logged:
        assert clock.accept(back) == back
    assert clock.now() == back
    assert logged[0]["direction"] == "behind"


def test_a_refused_window_raises_the_clock() -> None:
    clock, _ = clock_at()
    clock.raise_to(T0 + timedelta(days=30))
    assert clock.now() >= T0 + timedelta(days=30)
    clock.raise_to(T0)  # never lowers it
    assert clock.now() >= T0 + timedelta(days=30)


def test_first_listing_of_a_now_pair_reports_changes_made_after_the_baseline_second() -> None:
    baseline = T0.replace(microsecond=400000)
    ctx = PairContext(baseline=baseline, record_only=True, complete=True, observed_at=baseline)
    old = stamped(T0 - HOUR, "1")
    same_second = stamped(T0, "2")  # ambiguous: before or after the baseline instant
    later_page = stamped(T0 + timedelta(seconds=3), "3")  # met by a later page of the listing
    result = diff({}, [old, same_second, later_page], ctx)
    assert [(e.object_id, e.event_type) for e in result.events] == [("3", "CREATED")]
    assert {row.object_id for row in result.snapshots} == {"1", "2", "3"}
