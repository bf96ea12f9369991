"""Notification event ids (DESIGN §6): UUIDv7, assigned once when the notification is written.

RFC 9562 §5.7: 48 bits of Unix milliseconds, the version, 12 bits of sub-millisecond time
(method 3 of §6.2, so ids made in one process sort in creation order), the variant, and 62
random bits. Random bits, not anything local, make the id globally unique: two deployments, a
rebuilt database or two demo runs with identical data never produce the same id. Python 3.11
has no `uuid.uuid7`; this is the whole of it.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable

_VERSION = 0x7
_VARIANT = 0b10
_SUB_MS_STEPS = 1 << 12  # rand_a holds the fraction of the millisecond in 1/4096 steps
_MS_MASK = (1 << 48) - 1
_RAND_B_MASK = (1 << 62) - 1


class Uuid7Generator:
    """Strictly increasing UUIDv7s: an id made when the clock repeats or steps back is the
    previous one's instant plus one step (so ids of one process sort in creation order)."""

    def __init__(
        self,
        clock_ns: Callable[[], int] = time.time_ns,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._clock_ns = clock_ns
        self._random_bytes = random_bytes
        self._last = (0, -1)  # (Unix milliseconds, sub-millisecond steps) of the last id

    def new(self) -> uuid.UUID:
        millis, rest = divmod(self._clock_ns(), 1_000_000)
        steps = rest * _SUB_MS_STEPS // 1_000_000
        if (millis, steps) <= self._last:
            last_millis, last_steps = self._last
            millis, steps = divmod(last_millis * _SUB_MS_STEPS + last_steps + 1, _SUB_MS_STEPS)
        self._last = (millis, steps)
        tail = int.from_bytes(self._random_bytes(8), "big") & _RAND_B_MASK
        value = (millis & _MS_MASK) << 80 | _VERSION << 76 | steps << 64 | _VARIANT << 62 | tail
        return uuid.UUID(int=value)


_PROCESS_GENERATOR = Uuid7Generator()


def uuid7() -> uuid.UUID:
    """A new UUIDv7 from the process's generator."""
    return _PROCESS_GENERATOR.new()


def unix_ms(event_id: uuid.UUID) -> int:
    """The millisecond timestamp of a UUIDv7 (tests, and anyone reading ids by eye)."""
    return event_id.int >> 80
