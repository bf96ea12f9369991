"""HTTP header values read the same way by the QBO client and the callback dispatcher."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# RFC 9110 §10.2.3: `Retry-After = HTTP-date / delay-seconds`, delay-seconds = 1*DIGIT. A
# decimal fraction ("1.5", "0.05") is accepted as well, on purpose: servers do send them (the
# QBO emulator does), and honouring a finer wait than whole seconds is harmless. Anything else
# a number could be written as (sign, exponent, "inf", "nan", non-ASCII digits) is refused.
_DELAY_SECONDS = re.compile(r"[0-9]+(\.[0-9]+)?")


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds from `now`: None when absent or unreadable.

    - delay-seconds (`120`, leniently `1.5`) → that many seconds;
    - an HTTP-date (IMF-fixdate, or the obsolete RFC 850 and asctime forms) → the seconds
      until then, 0.0 when it has passed; a date without a zone is GMT, as HTTP dates are.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _DELAY_SECONDS.fullmatch(text):
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())
