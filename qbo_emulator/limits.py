"""Per-realm throttling and fault injection.

Throttling (reference §5.1): per realm, a sliding window of 500 requests per
minute, at most 10 per second and at most 10 in flight; past any of them QBO
answers HTTP 429 with the XML ``ThrottleExceeded`` body, even when JSON was
asked for.  Intuit documents the burst limit only as "10 requests per second,
per realm ID and app" (limits-and-throttles page, 2025 blog), never as a
sliding window; the emulator counts it in one-second buckets: a bucket opens
with the first request after the previous one closed and admits 10 until it
closes, so eleven calls inside one second are served when they straddle two
buckets (a sliding window would refuse the eleventh).  Every limit is
configurable (``None`` disables it), globally or per realm.  An optional
``batch_per_minute`` (Intuit: 40 per realm and app) is off by default.
Windows run on real monotonic time, not the emulator clock, so a test that
freezes the clock cannot wedge a realm; ``hold`` forces 429s for a while (also
real time).

Fault injection: rules matched by endpoint and realm, each firing for the next
``count`` requests, with a ``probability``, or (neither given) until cleared:
``latency`` (sleep ``seconds`` before answering, inside the in-flight slot),
``error`` (HTTP 5xx with QBO's XML SystemFault), ``reset`` (close the
connection without answering) and ``malformed`` (a truncated JSON body).
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from .clock import monotonic

FAULT_KINDS = ("latency", "error", "reset", "malformed")
# Endpoint names used by counters and fault rules.  "entity" groups the
# single-object endpoints; "api" is every /v3 endpoint.
ENTITY_ENDPOINTS = frozenset({"read", "create", "update", "delete", "void"})
UNSET: Any = object()  # "leave this setting as it is"


@dataclass(frozen=True)
class LimitConfig:
    per_minute: int | None = 500
    per_second: int | None = 10
    in_flight: int | None = 10
    batch_per_minute: int | None = None


@dataclass
class _Gate:
    minute: deque[float] = field(default_factory=deque)
    second_opened: float = float("-inf")  # when the current one-second bucket opened
    second_count: int = 0
    batch: deque[float] = field(default_factory=deque)
    in_flight: int = 0
    held_until: float = 0.0


class Limiter:
    def __init__(self, defaults: LimitConfig) -> None:
        self.defaults = defaults
        self.overrides: dict[str, LimitConfig] = {}
        self.gates: dict[str, _Gate] = {}

    def config(self, realm: str) -> LimitConfig:
        return self.overrides.get(realm, self.defaults)

    def configure(self, realm: str | None = None, **changes: Any) -> LimitConfig:
        changes = {k: v for k, v in changes.items() if v is not UNSET}
        if realm is None:
            self.defaults = replace(self.defaults, **changes)
            return self.defaults
        self.overrides[realm] = replace(self.config(realm), **changes)
        return self.overrides[realm]

    def hold(self, realm: str, seconds: float) -> None:
        self._gate(realm).held_until = monotonic() + seconds

    def release_hold(self, realm: str) -> None:
        self._gate(realm).held_until = 0.0

    def admit(self, realm: str, *, batch: bool = False) -> bool:
        """Take a slot for a request, or say no (the caller answers 429)."""
        gate, cfg, now = self._gate(realm), self.config(realm), monotonic()
        if now < gate.held_until:
            return False
        _trim(gate.minute, now - 60.0)
        if now - gate.second_opened >= 1.0:
            gate.second_opened, gate.second_count = now, 0
        _trim(gate.batch, now - 60.0)
        if cfg.per_minute is not None and len(gate.minute) >= cfg.per_minute:
            return False
        if cfg.per_second is not None and gate.second_count >= cfg.per_second:
            return False
        if cfg.in_flight is not None and gate.in_flight >= cfg.in_flight:
            return False
        if batch and cfg.batch_per_minute is not None and len(gate.batch) >= cfg.batch_per_minute:
            return False
        gate.minute.append(now)
        gate.second_count += 1
        if batch:
            gate.batch.append(now)
        gate.in_flight += 1
        return True

    def release(self, realm: str) -> None:
        gate = self._gate(realm)
        gate.in_flight = max(gate.in_flight - 1, 0)

    def reset(self) -> None:
        self.gates.clear()

    def _gate(self, realm: str) -> _Gate:
        gate = self.gates.get(realm)
        if gate is None:
            gate = self.gates[realm] = _Gate()
        return gate


def _trim(window: deque[float], cutoff: float) -> None:
    while window and window[0] <= cutoff:
        window.popleft()


@dataclass
class FaultRule:
    id: int
    kind: str
    endpoint: str | None = None
    realm: str | None = None
    remaining: int | None = None
    probability: float | None = None
    seconds: float = 0.0
    status: int = 500

    def matches(self, endpoint: str, realm: str | None) -> bool:
        if self.realm is not None and self.realm != realm:
            return False
        if self.endpoint in (None, "*"):
            return True
        if self.endpoint == "entity":
            return endpoint in ENTITY_ENDPOINTS
        if self.endpoint == "api":
            return endpoint not in ("token", "revoke", "discovery")
        return self.endpoint == endpoint

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "endpoint": self.endpoint,
            "realm": self.realm,
            "count": self.remaining,
            "probability": self.probability,
            "seconds": self.seconds,
            "status": self.status,
        }


class FaultInjector:
    def __init__(self, seed: int | None = None) -> None:
        self.rules: list[FaultRule] = []
        self._ids = itertools.count(1)
        self._rng = random.Random(seed)

    def add(
        self,
        kind: str,
        *,
        endpoint: str | None = None,
        realm: str | None = None,
        count: int | None = None,
        probability: float | None = None,
        seconds: float = 0.0,
        status: int = 500,
    ) -> int:
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {FAULT_KINDS}, not {kind!r}")
        if count is not None and count < 1:
            raise ValueError("count must be >= 1")
        if probability is not None and not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        if kind == "error" and not 500 <= status <= 599:
            raise ValueError("status must be a 5xx code")
        rule = FaultRule(
            next(self._ids), kind, endpoint, realm, count, probability, seconds, status
        )
        self.rules.append(rule)
        return rule.id

    def remove(self, rule_id: int) -> bool:
        before = len(self.rules)
        self.rules = [r for r in self.rules if r.id != rule_id]
        return len(self.rules) != before

    def clear(self) -> None:
        self.rules.clear()

    def draw(self, endpoint: str, realm: str | None) -> list[FaultRule]:
        """The rules that fire for this request (consuming their counts)."""
        fired: list[FaultRule] = []
        for rule in list(self.rules):
            if not rule.matches(endpoint, realm):
                continue
            if rule.probability is not None and self._rng.random() >= rule.probability:
                continue
            fired.append(rule)
            if rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self.rules.remove(rule)
        return fired
