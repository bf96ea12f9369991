"""The emulator's clock and QBO's timestamp formats.

QBO writes every timestamp in US Pacific time with an explicit offset: entity
``MetaData`` at second precision (``2026-11-24T02:15:02-08:00``) and the
response-level ``time`` with milliseconds (``2026-11-24T02:15:02.123-08:00``).
A timestamp sent *without* an offset is read as Pacific, not UTC (reference
§1.1), and a bare date is midnight Pacific.

The clock is real UTC time by default; tests can freeze it, set it and move it
forward or backward.  Everything that depends on "now" (MetaData, ``time``,
token expiry, the CDC 30-day window, code expiry) reads this clock, never the
system clock directly.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

PACIFIC = ZoneInfo("America/Los_Angeles")
UTC = UTC

__all__ = [
    "PACIFIC",
    "Clock",
    "TimestampError",
    "format_epoch_meta",
    "format_meta",
    "format_time",
    "parse_timestamp",
]


class Clock:
    """Real time by default; freezable, settable and movable.

    Internally: either a frozen instant, or an offset added to real time.
    ``advance`` works in both modes, so a test can jump 31 days ahead and the
    clock keeps ticking from there.
    """

    def __init__(self, start: datetime | None = None, *, frozen: bool = False) -> None:
        self._offset = timedelta(0)
        self._frozen: datetime | None = None
        if start is not None:
            self.set(start)
        if frozen:
            self.freeze()

    # -- reading ---------------------------------------------------------
    def now(self) -> datetime:
        """The current instant, timezone-aware UTC."""
        if self._frozen is not None:
            return self._frozen
        return datetime.now(UTC) + self._offset

    def timestamp(self) -> float:
        """The current instant as Unix seconds."""
        return self.now().timestamp()

    @property
    def frozen(self) -> bool:
        return self._frozen is not None

    # -- controlling -----------------------------------------------------
    def freeze(self, at: datetime | str | None = None) -> datetime:
        """Stop the clock (at ``at``, or at the current instant)."""
        self._frozen = _coerce(at) if at is not None else self.now()
        return self._frozen

    def unfreeze(self) -> datetime:
        """Let the clock tick again from where it stands."""
        if self._frozen is not None:
            self._offset = self._frozen - datetime.now(UTC)
            self._frozen = None
        return self.now()

    def set(self, at: datetime | str) -> datetime:
        """Jump to ``at`` (keeps frozen/ticking mode)."""
        target = _coerce(at)
        if self._frozen is not None:
            self._frozen = target
        else:
            self._offset = target - datetime.now(UTC)
        return self.now()

    def advance(
        self, seconds: float = 0, *, minutes: float = 0, hours: float = 0, days: float = 0
    ) -> datetime:
        """Move the clock forward (negative values move it back)."""
        delta = timedelta(seconds=seconds, minutes=minutes, hours=hours, days=days)
        if self._frozen is not None:
            self._frozen = self._frozen + delta
        else:
            self._offset += delta
        return self.now()

    def reset(self) -> None:
        """Back to real time."""
        self._offset = timedelta(0)
        self._frozen = None


def _coerce(at: datetime | str) -> datetime:
    if isinstance(at, str):
        return parse_timestamp(at)
    if at.tzinfo is None:
        # A naive datetime is Pacific, exactly as QBO reads a bare timestamp.
        at = at.replace(tzinfo=PACIFIC)
    return at.astimezone(UTC)


# -- formatting -------------------------------------------------------------
def format_meta(dt: datetime) -> str:
    """``2026-11-24T02:15:02-08:00``: second precision, Pacific, DST-aware."""
    local = dt.astimezone(PACIFIC)
    return local.strftime("%Y-%m-%dT%H:%M:%S") + _offset(local)


def format_epoch_meta(epoch: int) -> str:
    return format_meta(datetime.fromtimestamp(epoch, UTC))


def format_time(dt: datetime) -> str:
    """``2026-11-24T02:15:02.123-08:00``: the response-level ``time``."""
    local = dt.astimezone(PACIFIC)
    ms = local.microsecond // 1000
    return f"{local.strftime('%Y-%m-%dT%H:%M:%S')}.{ms:03d}{_offset(local)}"


def pacific_date(dt: datetime) -> date:
    return dt.astimezone(PACIFIC).date()


def _offset(local: datetime) -> str:
    off = local.utcoffset() or timedelta(0)
    total = int(off.total_seconds())
    sign = "-" if total < 0 else "+"
    total = abs(total)
    return f"{sign}{total // 3600:02d}:{(total % 3600) // 60:02d}"


# -- parsing ----------------------------------------------------------------
class TimestampError(ValueError):
    """A timestamp QBO would not accept."""


_TS_RE = re.compile(
    r"""^\s*(?P<date>\d{4}-\d{2}-\d{2})
        (?:[T\s](?P<h>\d{2}):(?P<m>\d{2})(?::(?P<s>\d{2})(?:\.(?P<frac>\d{1,9}))?)?
           \s*(?P<tz>Z|z|[+-]\d{2}(?::?\d{2})?)?)?\s*$""",
    re.X,
)


def parse_timestamp(text: str) -> datetime:
    """Parse a QBO date/time literal into an aware UTC datetime.

    Offsets may be ``Z``, ``-08:00``, ``-0800`` or ``-08``; no offset means
    US Pacific (DST-correct for that date); a bare date is midnight Pacific.
    """
    parts = _TS_RE.match(text)
    if not parts:
        raise TimestampError(f"not a timestamp: {text!r}")
    try:
        day = date.fromisoformat(parts["date"])
        if parts["h"] is None:
            naive = datetime(day.year, day.month, day.day)
        else:
            frac = (parts["frac"] or "0")[:6].ljust(6, "0")
            naive = datetime(
                day.year,
                day.month,
                day.day,
                int(parts["h"]),
                int(parts["m"]),
                int(parts["s"] or 0),
                int(frac),
            )
    except ValueError as exc:
        raise TimestampError(f"not a timestamp: {text!r}") from exc
    tz = parts["tz"]
    if tz is None:
        return naive.replace(tzinfo=PACIFIC).astimezone(UTC)
    if tz in ("Z", "z"):
        return naive.replace(tzinfo=UTC)
    sign = -1 if tz[0] == "-" else 1
    digits = tz[1:].replace(":", "")
    hours = int(digits[:2])
    minutes = int(digits[2:4] or 0)
    offset = timezone(sign * timedelta(hours=hours, minutes=minutes))
    return naive.replace(tzinfo=offset).astimezone(UTC)


def monotonic() -> float:
    """Real monotonic seconds: used for rate windows and held throttles,
    which follow wall time even when the emulator clock is frozen."""
    return time.monotonic()
