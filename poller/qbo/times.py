"""QBO timestamps: parse what QuickBooks writes, format what we send.

QBO writes `2015-12-23T12:56:06.196-08:00` (response `time`, milliseconds), entity MetaData at
second precision, the gateway's fault `time` as epoch milliseconds, and some samples use `Z`.
Whatever we send carries an explicit offset: a bare timestamp is read as US Pacific time by QBO
(reference §1.1, §8.4).
"""

from __future__ import annotations

from datetime import UTC, datetime

UTC = UTC


def parse_qbo_time(value: object) -> datetime:
    """Any QBO timestamp → an aware datetime. Raises ValueError for anything else.

    A value without an offset is not guessed at: QBO always writes one, so its absence means the
    body is not what QBO sends.
    """
    if isinstance(value, bool):
        raise ValueError("not a timestamp")
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value / 1000.0, UTC)  # gateway faults: epoch ms
    if not isinstance(value, str) or not value:
        raise ValueError("not a timestamp")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    if len(text) >= 5 and text[-5] in "+-" and text[-3] != ":" and text[-4:].isdigit():
        text = text[:-2] + ":" + text[-2:]  # `-0700` (webhook style) → `-07:00`
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp without an offset: {value!r}")
    return parsed


def format_qbo_time(value: datetime) -> str:
    """An aware datetime → `YYYY-MM-DDThh:mm:ss+00:00` for QBO (floored to the second).

    Flooring only ever reaches further back, which an overlapping poll tolerates; a naive
    datetime is refused because QBO would read it as Pacific time.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("QBO timestamps need an explicit offset (a bare one is read as Pacific)")
    return value.astimezone(UTC).replace(microsecond=0).isoformat()
