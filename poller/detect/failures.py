"""Failed pairs of a cycle: one accumulator for the error, the count and the retry.

A pair's poll can fail at several steps of a cycle (its QBO request, the test hook, reading
its snapshot, its diff, its commit, or the database under the whole cycle). Each step adds the
pair to the cycle's `CycleFailures`; adding counts the failure and fixes when the pair is tried
again, at once, so the settle written to the database and the outcome handed to the pair task
can never disagree or miss a retry time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from poller import metrics
from poller.detect.schedule import backoff_s
from poller.logs import get_logger
from poller.qbo.types import QboError
from poller.store.cursors import Settle

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a pair's poll ended: when it is due next (None: stop polling it) and its error."""

    next_due: float | None
    error: BaseException | None = None


class ErrorCounts:
    """Consecutive failures per pair of one instance, across cycles (they set the backoff)."""

    def __init__(self, refresh_interval_s: float) -> None:
        self.refresh_interval_s = refresh_interval_s
        self._counts: dict[str, int] = {}

    def count_failure(self, resource: str) -> int:
        errors = self._counts.get(resource, 0) + 1
        self._counts[resource] = errors
        return errors

    def reset(self, resource: str) -> None:
        # Absent means 0: a healthy instance keeps an empty dict, not 22 zeros (issue 17).
        if self._counts.pop(resource, None) is not None and not self._counts:
            self._counts = {}  # a dict never shrinks; a new one is small again


@dataclass(frozen=True, slots=True)
class _Failure:
    error: BaseException
    errors: int  # consecutive failures of the pair, this one included
    retry_at: float  # wall time of the next try


class CycleFailures:
    """The pairs that failed in one cycle.

    Pairs that failed with as many consecutive errors retry together, in one cycle: one draw
    of the backoff jitter per error count and cycle, not per pair.
    """

    def __init__(self, counts: ErrorCounts, context: dict[str, object]) -> None:
        self._counts = counts
        self._context = context
        self._failures: dict[str, _Failure] = {}
        self._draws: dict[int, float] = {}

    def add(self, resource: str, error: BaseException) -> None:
        """Record that the pair failed (once per cycle: a later step never sees it again)."""
        if resource in self._failures:
            return
        errors = self._counts.count_failure(resource)
        retry_at = self._draws.get(errors)
        if retry_at is None:
            retry_at = time.time() + backoff_s(errors, self._counts.refresh_interval_s)
            self._draws[errors] = retry_at
        self._failures[resource] = _Failure(error, errors, retry_at)

    def add_all(self, failed: dict[str, BaseException]) -> None:
        for resource, error in failed.items():
            self.add(resource, error)

    def __contains__(self, resource: object) -> bool:
        return resource in self._failures

    def names(self) -> list[str]:
        return list(self._failures)

    def settles(self, resources: list[str] | None = None) -> list[Settle]:
        """The failed pairs (or those of `resources`) as written: error counted, retry set."""
        names = list(self._failures) if resources is None else resources
        return [self._settle(name) for name in names]

    def _settle(self, resource: str) -> Settle:
        failure = self._failures[resource]
        next_due_at = datetime.fromtimestamp(failure.retry_at, UTC)
        return Settle(resource, next_due_at, error=_describe(failure.error))

    def outcomes(self, resources: list[str] | None = None) -> dict[str, Outcome]:
        """Each failed pair's outcome (or those of `resources`); logged once per distinct
        error (a failed request fails every pair it carried with the same exception)."""
        names = list(self._failures) if resources is None else resources
        by_error: dict[int, tuple[BaseException, list[str]]] = {}
        for name in names:
            error = self._failures[name].error
            metrics.POLLS.labels("error").inc()
            by_error.setdefault(id(error), (error, []))[1].append(name)
        for error, failed_names in by_error.values():
            self._log(error, failed_names)
        return {name: self._outcome(name) for name in names}

    def _outcome(self, resource: str) -> Outcome:
        failure = self._failures[resource]
        return Outcome(failure.retry_at, failure.error)

    def _log(self, error: BaseException, resources: list[str]) -> None:
        failures = [self._failures[resource] for resource in resources]
        retry_at = min(failure.retry_at for failure in failures)
        fields: dict[str, Any] = self._context | {
            "resources": resources,
            "error": _describe(error),
            "errors": max(failure.errors for failure in failures),
            "retry_in_s": round(retry_at - time.time(), 3),
        }
        if isinstance(error, QboError):
            intuit_tid = error.fault.intuit_tid if error.fault else None
            log.warning("pair_poll_failed", **fields, intuit_tid=intuit_tid)
        else:
            log.error("pair_poll_failed", **fields, exc_info=error)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
