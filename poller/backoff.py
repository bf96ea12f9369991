"""Exponential backoff with jitter: the one formula every retry loop uses.

The step of attempt n (n ≥ 1) is `base_s × factor^(n−1)`, capped at `cap_s`; the delay is
that step times a random factor drawn uniformly from the jitter's range:

- `NO_JITTER` (×1): a single loop retrying on its own (the LISTEN connection, token posts);
- `EQUAL_JITTER` (×[0.5, 1]): half fixed, half random, never zero (the QBO client);
- `spread(0.2)` (×[0.8, 1.2]): many clients that failed together (pairs, notifications in an
  outage) do not come back as one synchronised wave.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

# Doublings past this change nothing once capped, and `factor ** n` must not overflow a float.
_MAX_EXPONENT = 64


@dataclass(frozen=True)
class Jitter:
    """A delay is multiplied by a factor drawn uniformly from [low, low + span]."""

    low: float
    span: float

    def apply(self, step_s: float, rand: Callable[[], float] = random.random) -> float:
        """`step_s` × a factor in [low, low + span]; `rand` is a uniform draw in [0, 1)."""
        return max(0.0, step_s * (self.low + self.span * rand()))


def spread(fraction: float) -> Jitter:
    """±`fraction` around the step: `spread(0.2)` is ×[0.8, 1.2]."""
    return Jitter(low=1.0 - fraction, span=2.0 * fraction)


NO_JITTER = Jitter(low=1.0, span=0.0)
EQUAL_JITTER = Jitter(low=0.5, span=0.5)


@dataclass(frozen=True)
class Backoff:
    """`base_s` for the first retry, multiplied by `factor` per attempt, at most `cap_s`."""

    base_s: float
    cap_s: float
    jitter: Jitter = NO_JITTER
    factor: float = 2.0

    def step(self, attempt: int) -> float:
        """The un-jittered delay before retry number `attempt` (1 for the first retry)."""
        exponent = min(attempt - 1, _MAX_EXPONENT)
        return min(self.cap_s, self.base_s * self.factor**exponent)

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """The delay before retry number `attempt`, jittered."""
        return self.jitter.apply(self.step(attempt), rand)
