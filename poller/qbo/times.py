"""QBO timestamps: the one place that parses what QuickBooks writes and formats what we send.

What QBO returns always carries an offset (reference §4): entity `MetaData` times at second
precision (`2015-12-23T12:55:50-08:00`, US Pacific per Intuit staff, `Z` in some samples), the
response `time` with milliseconds (`2015-12-23T12:56:06.196-08:00`), webhook-style `-0700`, and
the gateway's fault `time` as epoch milliseconds. Should a value without an offset ever come
back, it is read the way QBO itself reads one: as US Pacific. (Refusing it would fail the pair
on every poll while the object stays in the window; reading it as UTC would shift it by 7-8 h.)

What we send always carries an explicit offset, because QBO reads a bare timestamp as US
Pacific, not UTC (reference §1.1, §8.4): a naive datetime is refused before it can be sent.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

PACIFIC = ZoneInfo("America/Los_Angeles")
# Before any QBO company existed: the lower bound of a full listing by LastUpdatedTime.
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def parse_qbo_time(value: object) -> datetime:
    """Any QBO timestamp → an aware datetime. Raises ValueError for anything else.

    A string without an offset is US Pacific, as QBO reads one (see the module docstring).
    """
    if isinstance(value, bool):
        raise ValueError("not a timestamp")
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value / 1000.0, UTC)  # gateway faults: epoch ms
    if not isinstance(value, str) or not value:
        raise ValueError("not a timestamp")
    return _parse_text(value)


@functools.lru_cache(maxsize=4096)
def _parse_text(value: str) -> datetime:
    # Cached: an answer's objects share a few seconds' stamps, and each is read several times
    # (window filter, clock evidence, diff, seen versions); a datetime is immutable.
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    if len(text) >= 5 and text[-5] in "+-" and text[-3] != ":" and text[-4:].isdigit():
        text = text[:-2] + ":" + text[-2:]  # `-0700` (webhook style) → `-07:00`
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=PACIFIC)
    return parsed


def format_qbo_time(value: datetime, zone: tzinfo = UTC) -> str:
    """An aware datetime → `YYYY-MM-DDThh:mm:ss±hh:mm` in `zone`, floored to the second.

    UTC (`+00:00`) by default; `PACIFIC` writes it the way QBO writes its own `MetaData`
    times. Flooring only ever reaches further back, which an overlapping poll tolerates (every
    query we build uses `>=`); a naive datetime is refused because QBO would read it as Pacific.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("QBO timestamps need an explicit offset (a bare one is read as Pacific)")
    return value.astimezone(zone).replace(microsecond=0).isoformat()


def floor_to_second(instant: datetime) -> datetime:
    """Second precision: QBO's MetaData times have no fractions, its `time` has milliseconds."""
    return instant.replace(microsecond=0)


def last_updated_time(obj: dict[str, Any]) -> datetime | None:
    """`MetaData.LastUpdatedTime` of a QBO object, None when the object has none."""
    return _metadata_time(obj, "LastUpdatedTime")


def create_time(obj: dict[str, Any]) -> datetime | None:
    """`MetaData.CreateTime` of a QBO object (tombstones have none)."""
    return _metadata_time(obj, "CreateTime")


def _metadata_time(obj: dict[str, Any], key: str) -> datetime | None:
    meta = obj.get("MetaData")
    if isinstance(meta, dict) and isinstance(meta.get(key), str):
        return parse_qbo_time(meta[key])
    return None
