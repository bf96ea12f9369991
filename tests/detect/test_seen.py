"""SeenVersions: what the feed may drop from a re-read answer (never what the diff would keep)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from poller.detect.seen import SeenVersions
from poller.qbo import times

NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)


def live(oid: str, token: str, at: datetime = NOW) -> dict:
    stamp = times.format_qbo_time(at, times.PACIFIC)
    return {"Id": oid, "SyncToken": token, "MetaData": {"LastUpdatedTime": stamp}}


def gone(oid: str, at: datetime = NOW) -> dict:
    stamp = times.format_qbo_time(at, times.PACIFIC)
    return {"Id": oid, "status": "Deleted", "MetaData": {"LastUpdatedTime": stamp}}


def test_drops_exactly_what_the_diff_would_drop() -> None:
    seen = SeenVersions(timedelta(minutes=5))
    seen.remember("invoices", [live("1", "3"), live("2", "0"), gone("3"), live("4", "a")], NOW)
    fetched = [
        live("1", "3"),  # same version: dropped
        live("1", "2"),  # older: dropped
        live("1", "4"),  # newer: kept
        gone("2"),  # a live object deleted: kept
        live("3", "9"),  # a copy of a deleted object: dropped
        gone("3"),  # deleted again: dropped
        live("4", "b"),  # another non-numeric token: kept
        live("5", "0"),  # never seen: kept
        {"SyncToken": "1"},  # no Id: kept (the diff decides)
    ]
    kept = seen.unseen("invoices", fetched)
    assert kept == [fetched[2], fetched[3], fetched[6], fetched[7], fetched[8]]
    assert seen.skipped == 4
    assert seen.unseen("customers", fetched) == fetched  # per pair


def test_old_versions_are_forgotten() -> None:
    seen = SeenVersions(timedelta(minutes=5))
    seen.remember("invoices", [live("1", "0", NOW - timedelta(minutes=10))], NOW)
    assert len(seen) == 0  # older than the horizon: no later poll reaches back so far
    seen.remember("invoices", [live("2", "0", NOW)], NOW)
    seen.remember(
        "invoices", [live("3", "0", NOW + timedelta(minutes=6))], NOW + timedelta(minutes=6)
    )
    assert len(seen) == 1 and seen.unseen("invoices", [live("2", "0")]) == [live("2", "0")]
