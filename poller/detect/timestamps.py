"""QBO timestamps: parse them as instants, write them with an explicit offset.

QBO writes `MetaData` times at second precision in US Pacific with an offset
(`2015-12-23T12:55:50-08:00`) and reads a timestamp *without* an offset as Pacific, not
UTC (reference §1.1, §8.4). So everything we send carries an offset, and everything we read
without one is taken as Pacific.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

PACIFIC = ZoneInfo("America/Los_Angeles")
UTC = UTC
# Before any QBO company existed: the lower bound of a full listing by LastUpdatedTime.
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def parse(value: str) -> datetime:
    """A QBO timestamp → aware datetime (bare timestamps are Pacific, like QBO reads them)."""
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=PACIFIC)
    return parsed


def to_qbo(instant: datetime) -> str:
    """An instant as QBO writes it: Pacific, whole seconds (floored), explicit offset.

    Flooring never skips anything: QBO's own times have whole seconds, and every query we
    build uses `>=`.
    """
    return instant.astimezone(PACIFIC).replace(microsecond=0).isoformat()


def to_second(instant: datetime) -> datetime:
    """Second precision: QBO's MetaData times have no fractions, its `time` has milliseconds."""
    return instant.replace(microsecond=0)


def last_updated(obj: dict[str, Any]) -> datetime | None:
    meta = obj.get("MetaData")
    if isinstance(meta, dict) and isinstance(meta.get("LastUpdatedTime"), str):
        return parse(meta["LastUpdatedTime"])
    return None


def create_time(obj: dict[str, Any]) -> datetime | None:
    meta = obj.get("MetaData")
    if isinstance(meta, dict) and isinstance(meta.get("CreateTime"), str):
        return parse(meta["CreateTime"])
    return None
