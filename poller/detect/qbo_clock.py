"""QBO's clock as the evidence shows it (DESIGN §5; issue 10, finding 5).

Watermarks come from QBO's `time`, never the local clock: QBO stamps the objects' MetaData with
that same clock, so only it tells which changes a window covered. But one answer with a future
`time` (QBO's clock an hour ahead for a few seconds) would carry every watermark past the
changes made once the clock is back, and those would never be read. So an answer's `time` is
trusted only as far as the evidence goes:

- the clock as tracked: the last trusted QBO time moved on by the local monotonic time elapsed
  since (before any answer, the local clock): QBO's clock does not run faster than ours;
- the newest `LastUpdatedTime` among the answer's objects: QBO's clock certainly reached that;
- QBO's refusal of a CDC window older than 30 days (`raise_to`): its clock is past it.

`accept(time, objects)` returns `min(time, evidence + tolerance)`; the tracked clock becomes
`min(time, evidence)` (the tolerance is never absorbed, so a clock that keeps jumping cannot
ratchet the watermarks ahead) and follows a `time` that went back at once (a smaller watermark
only re-reads more). The tolerance is at most half the overlap, so a watermark is never further
ahead of QBO's real clock than the overlap reaches back: nothing is skipped.

A jump beyond the tolerance, either way, is logged once as a warning (`qbo_clock_jump`) and
counted (`qbo_poller_qbo_clock_jumps_total`), until QBO's `time` agrees with the evidence again.
A QBO clock persistently ahead of ours is learned from the first object it stamps; until then
the watermarks stay with the tracked clock and each poll re-reads the difference (safe).
What stays impossible: objects changed *while* QBO's clock is ahead carry the jumped time, and
that is evidence like any other; should the clock then come back by more than the overlap,
later changes stamped before that evidence are not read (QBO's own timestamps are wrong then).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from poller import metrics
from poller.logs import get_logger
from poller.qbo import times
from poller.qbo.types import QboObject

log = get_logger(__name__)

MAX_TOLERANCE = timedelta(seconds=30)  # QBO's `time` vs our estimate: latency, not a jump


class QboClock:
    """One per feed (instance): QBO's clock as far as the evidence allows."""

    def __init__(
        self,
        overlap: timedelta,
        *,
        name: str = "",
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tolerance = min(MAX_TOLERANCE, overlap / 2)
        self.name = name
        self._monotonic = monotonic
        self._trusted: tuple[datetime, float] | None = None  # (QBO time, monotonic) trusted
        self._jumped = False  # a jump was reported and QBO has not agreed since

    @property
    def seen(self) -> bool:
        """An answer (or a refusal) has told us something about QBO's clock."""
        return self._trusted is not None

    def now(self) -> datetime:
        """QBO's clock as trusted, moved on by the time elapsed since (local clock if none)."""
        if self._trusted is None:
            return datetime.now(UTC)
        seen, at = self._trusted
        return seen + timedelta(seconds=self._monotonic() - at)

    def accept(self, qbo_time: datetime, objects: Iterable[QboObject] = ()) -> datetime:
        """The time an answer may move watermarks to (see the module docstring)."""
        expected = self.now()
        evidence = max([expected, *_updated_times(objects)])
        accepted = min(qbo_time, evidence + self.tolerance)
        if qbo_time > accepted:
            self._report(qbo_time, expected, accepted, "ahead")
        elif qbo_time < expected - self.tolerance:
            self._report(qbo_time, expected, qbo_time, "behind")
        else:
            self._jumped = False
        self._trusted = (min(qbo_time, evidence), self._monotonic())
        return accepted

    def raise_to(self, at_least: datetime) -> None:
        """QBO's own word that its clock is at least `at_least` (a refused 30-day window)."""
        if at_least > self.now():
            self._trusted = (at_least, self._monotonic())

    def _report(
        self, qbo_time: datetime, expected: datetime, accepted: datetime, direction: str
    ) -> None:
        if self._jumped:
            return
        self._jumped = True
        metrics.QBO_CLOCK_JUMPS.inc()
        log.warning(
            "qbo_clock_jump",
            feed=self.name,
            direction=direction,
            qbo_time=qbo_time.isoformat(),
            expected=expected.isoformat(),
            ahead_s=round((qbo_time - expected).total_seconds(), 3),
            watermark=accepted.isoformat(),
            action=(
                "watermarks held at the evidence (our clock, the objects' LastUpdatedTime)"
                if direction == "ahead"
                else "watermarks follow QBO's clock back (more is re-read)"
            ),
        )


def _updated_times(objects: Iterable[QboObject]) -> list[datetime]:
    found = (times.last_updated_time(obj) for obj in objects)
    return [instant for instant in found if instant is not None]


__all__ = ["MAX_TOLERANCE", "QboClock"]
