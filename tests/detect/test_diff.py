"""The pure diff: every rule of DESIGN §5 that it implements."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from poller.detect.diff import PairContext, diff
from poller.qbo import times
from poller.records import EventType, SnapshotRow

CREATED, UPDATED, DELETED = EventType.CREATED, EventType.UPDATED, EventType.DELETED

UTC = UTC
BASE = datetime(2026, 3, 10, 18, 0, 0, 250000, tzinfo=UTC)  # QBO `time` has milliseconds


def qbo(dt: datetime) -> str:
    return times.format_qbo_time(dt, times.PACIFIC)


def obj(
    oid: str, token: str, created: datetime, updated: datetime | None = None, **fields: object
) -> dict:
    return {
        "Id": oid,
        "SyncToken": token,
        **fields,
        "MetaData": {"CreateTime": qbo(created), "LastUpdatedTime": qbo(updated or created)},
    }


def tomb(oid: str, at: datetime) -> dict:
    return {
        "domain": "QBO",
        "status": "Deleted",
        "Id": oid,
        "MetaData": {"LastUpdatedTime": qbo(at)},
    }


def snap(
    oid: str, token: str | None, at: datetime, active: bool | None = None, deleted: bool = False
) -> SnapshotRow:
    return SnapshotRow(oid, token, at.replace(microsecond=0), active, deleted)


CTX = PairContext(baseline=BASE, observed_at=BASE + timedelta(minutes=5))
LIST_CTX = PairContext(baseline=BASE, is_list=True, observed_at=BASE + timedelta(minutes=5))


def kinds(result) -> list[tuple[str, str, str]]:
    return [(e.object_id, e.event_type, e.version) for e in result.events]


def test_seen_sync_token_gives_nothing() -> None:
    t = BASE + timedelta(seconds=30)
    r = diff({"1": snap("1", "3", t)}, [obj("1", "3", BASE - timedelta(days=1), t)], CTX)
    assert r.events == [] and r.snapshots == []


def test_older_sync_token_is_stale_and_ignored() -> None:
    t = BASE + timedelta(seconds=30)
    r = diff({"1": snap("1", "4", t)}, [obj("1", "3", BASE, t)], CTX)
    assert r.events == [] and r.snapshots == []


def test_new_object_created_at_or_after_baseline_second_is_created() -> None:
    # Same second as the baseline (which has 250 ms): second precision says CREATED.
    same_second = BASE.replace(microsecond=0)
    r = diff({}, [obj("7", "0", same_second), obj("8", "0", BASE + timedelta(seconds=3))], CTX)
    assert kinds(r) == [("7", CREATED, "0"), ("8", CREATED, "0")]
    assert {s.object_id for s in r.snapshots} == {"7", "8"}


def test_unseen_old_object_updated_after_baseline_is_updated() -> None:
    r = diff({}, [obj("5", "2", BASE - timedelta(days=3), BASE + timedelta(seconds=10))], CTX)
    assert kinds(r) == [("5", UPDATED, "2")]


def test_unseen_object_unchanged_since_baseline_only_enters_snapshot() -> None:
    r = diff({}, [obj("5", "2", BASE - timedelta(days=3), BASE - timedelta(seconds=10))], CTX)
    assert r.events == []
    assert [(s.object_id, s.sync_token) for s in r.snapshots] == [("5", "2")]


def test_known_object_with_new_token_is_updated() -> None:
    t0, t1 = BASE + timedelta(seconds=5), BASE + timedelta(seconds=50)
    r = diff({"1": snap("1", "0", t0)}, [obj("1", "1", t0, t1)], CTX)
    assert kinds(r) == [("1", UPDATED, "1")]
    assert r.snapshots[0].sync_token == "1" and r.snapshots[0].last_updated == t1.replace(
        microsecond=0
    )


def test_tombstone_of_known_object_is_deleted() -> None:
    at = BASE + timedelta(minutes=1)
    r = diff({"9": snap("9", "2", BASE)}, [tomb("9", at)], CTX)
    assert kinds(r) == [("9", DELETED, "deleted")]
    assert r.events[0].raw["status"] == "Deleted"
    assert r.snapshots[0].deleted and r.snapshots[0].sync_token is None


def test_tombstone_of_never_seen_object_after_baseline_is_deleted() -> None:
    r = diff({}, [tomb("11", BASE + timedelta(seconds=1))], CTX)
    assert kinds(r) == [("11", DELETED, "deleted")]


def test_tombstone_older_than_baseline_is_ignored() -> None:
    r = diff({}, [tomb("11", BASE - timedelta(seconds=1))], CTX)
    assert r.events == [] and r.snapshots == []


def test_tombstone_for_already_deleted_snapshot_gives_nothing() -> None:
    at = BASE + timedelta(minutes=1)
    r = diff({"9": snap("9", None, at, deleted=True)}, [tomb("9", at)], CTX)
    assert r.events == [] and r.snapshots == []


def test_live_copy_of_deleted_object_is_stale() -> None:
    at = BASE + timedelta(minutes=1)
    r = diff({"9": snap("9", None, at, deleted=True)}, [obj("9", "5", BASE, at)], CTX)
    assert r.events == []


def test_deactivation_is_updated_by_default() -> None:
    t0, t1 = BASE + timedelta(seconds=1), BASE + timedelta(seconds=9)
    prev = {"3": snap("3", "0", t0, active=True)}
    r = diff(prev, [obj("3", "1", t0, t1, Active=False)], LIST_CTX)
    assert kinds(r) == [("3", UPDATED, "1")]
    assert r.snapshots[0].active is False


def test_deactivation_is_deleted_when_configured() -> None:
    t0, t1 = BASE + timedelta(seconds=1), BASE + timedelta(seconds=9)
    ctx = PairContext(baseline=BASE, is_list=True, deactivated_as_deleted=True)
    prev = {"3": snap("3", "0", t0, active=True)}
    r = diff(prev, [obj("3", "1", t0, t1, Active=False)], ctx)
    assert kinds(r) == [("3", DELETED, "1")]  # the full object, version = its SyncToken
    # An edit of an already inactive row is an update, and reactivation too.
    prev = {"3": snap("3", "1", t1, active=False)}
    r = diff(prev, [obj("3", "2", t0, t1 + timedelta(seconds=5), Active=False)], ctx)
    assert kinds(r) == [("3", UPDATED, "2")]
    r = diff(prev, [obj("3", "2", t0, t1 + timedelta(seconds=5), Active=True)], ctx)
    assert kinds(r) == [("3", UPDATED, "2")]


def test_versions_of_one_object_fold_into_latest() -> None:
    t = BASE + timedelta(seconds=10)
    versions = [
        obj("4", "2", t, t + timedelta(seconds=2)),
        obj("4", "0", t),
        obj("4", "1", t, t + timedelta(seconds=1)),
    ]
    r = diff({}, versions, CTX)
    assert kinds(r) == [("4", CREATED, "2")]
    r = diff({}, [*versions, tomb("4", t + timedelta(seconds=3))], CTX)
    assert kinds(r) == [("4", DELETED, "deleted")]


def test_events_ordered_by_last_updated_then_numeric_id() -> None:
    t = BASE + timedelta(seconds=20)
    fetched = [
        obj("10", "0", t),
        obj("9", "0", t),
        obj("2", "0", t + timedelta(seconds=1)),
        tomb("1", t - timedelta(seconds=5)),
    ]
    r = diff({}, fetched, CTX)
    assert [e.object_id for e in r.events] == ["1", "9", "10", "2"]


def test_offsets_are_compared_as_instants() -> None:
    # 10:00:05 in Berlin (+01:00) is 09:00:05 UTC, before a 09:00:06 UTC baseline.
    baseline = datetime(2026, 1, 5, 9, 0, 6, tzinfo=UTC)
    ctx = PairContext(baseline=baseline)
    early = {
        "Id": "1",
        "SyncToken": "0",
        "MetaData": {
            "CreateTime": "2026-01-05T10:00:05+01:00",
            "LastUpdatedTime": "2026-01-05T01:00:07-08:00",
        },
    }
    late = {
        "Id": "2",
        "SyncToken": "0",
        "MetaData": {
            "CreateTime": "2026-01-05T01:00:06-08:00",
            "LastUpdatedTime": "2026-01-05T01:00:06-08:00",
        },
    }
    r = diff({}, [early, late], ctx)
    assert kinds(r) == [("2", CREATED, "0"), ("1", UPDATED, "0")]


def test_complete_listing_deletes_missing_objects_with_qbo_shaped_tombstone() -> None:
    seen = BASE + timedelta(seconds=1)
    prev = {
        "1": snap("1", "0", seen),
        "2": snap("2", "0", seen),
        "3": snap("3", None, seen, deleted=True),
    }
    observed = BASE + timedelta(hours=7, milliseconds=123)
    ctx = PairContext(baseline=BASE, complete=True, observed_at=observed)
    r = diff(prev, [obj("1", "0", seen)], ctx)
    assert kinds(r) == [("2", DELETED, "deleted")]
    raw = r.events[0].raw
    assert raw == {
        "domain": "QBO",
        "status": "Deleted",
        "Id": "2",
        "MetaData": {"LastUpdatedTime": times.format_qbo_time(observed, times.PACIFIC)},
    }
    assert r.events[0].occurred_at == observed.replace(microsecond=0)


def test_record_only_first_answer_emits_nothing_but_remembers() -> None:
    ctx = PairContext(baseline=BASE, record_only=True)
    r = diff({}, [obj("1", "0", BASE), tomb("2", BASE)], ctx)
    assert r.events == []
    assert {(s.object_id, s.deleted) for s in r.snapshots} == {("1", False), ("2", True)}


def test_backfill_creates_everything() -> None:
    ctx = PairContext(baseline=None, is_list=True, deactivated_as_deleted=True)
    r = diff(
        {},
        [
            obj("1", "5", BASE - timedelta(days=900), BASE - timedelta(days=3)),
            obj("2", "1", BASE - timedelta(days=90), Active=False),
        ],
        ctx,
    )
    assert kinds(r) == [("2", CREATED, "1"), ("1", CREATED, "5")]


def test_objects_without_id_are_skipped() -> None:
    assert diff({}, [{"SyncToken": "0"}], CTX).events == []
