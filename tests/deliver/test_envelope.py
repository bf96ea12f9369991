"""The Open Connectors envelope (DESIGN §6): shape, order, raw objects verbatim, dates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson

from poller.deliver.envelope import EventRow, InstanceInfo, build_body, format_date

INSTANCE = InstanceInfo(12, "API Instance", ("Docs", "prod"), "9130357766900456")
EVENT_ID = "6f1c0c3e-5d0b-4c7e-9a53-0c7bb3d3a3f1"
# As QBO sends it: key order, spacing, a decimal that a float round-trip would rewrite,
# an escaped slash and a non-ASCII name — all must reach the receiver untouched.
INVOICE = (
    '{"Id":"145","SyncToken":"3","TotalAmt":100.10,"Line":[],'
    '"CustomerRef":{"value":"1","name":"Caf\\u00e9 \\/ Ren\u00e9e"},'
    '"MetaData":{"CreateTime":"2026-11-24T02:10:00-08:00",'
    '"LastUpdatedTime":"2026-11-24T02:15:02-08:00"}}'
)
TOMBSTONE = (
    '{"Id": "146", "status": "Deleted", '
    '"MetaData": {"LastUpdatedTime": "2026-11-24T02:16:00-08:00"}}'
)
T1 = datetime(2026, 11, 24, 10, 15, 2, tzinfo=UTC)
T2 = datetime(2026, 11, 24, 10, 16, 0, tzinfo=UTC)


def body(instance: InstanceInfo = INSTANCE) -> bytes:
    return build_body(
        instance,
        "invoices",
        EVENT_ID,
        [EventRow("UPDATED", "145", T1, INVOICE), EventRow("DELETED", "146", T2, TOMBSTONE)],
    )


def test_envelope_shape_and_order() -> None:
    assert orjson.loads(body()) == {
        "message": {
            "elementKey": "quickbooks",
            "accountId": 0,
            "companyId": 0,
            "userId": 0,
            "instanceId": 12,
            "instance_id": 12,
            "instanceName": "API Instance",
            "instanceTags": ["Docs", "prod"],
            "realmId": "9130357766900456",
            "eventId": EVENT_ID,
            "raw": {
                "instance_id": 12,
                "objectType": "invoices",
                "invoices": [orjson.loads(INVOICE), orjson.loads(TOMBSTONE)],
            },
            "events": [
                {
                    "elementKey": "quickbooks",
                    "eventType": "UPDATED",
                    "objectType": "invoices",
                    "objectId": "145",
                    "date": "2026-11-24T10:15:02Z",
                },
                {
                    "elementKey": "quickbooks",
                    "eventType": "DELETED",
                    "objectType": "invoices",
                    "objectId": "146",
                    "date": "2026-11-24T10:16:00Z",
                },
            ],
        }
    }


def test_message_keys_keep_the_documented_order() -> None:
    keys = list(orjson.loads(body())["message"])
    assert keys == [
        "elementKey",
        "accountId",
        "companyId",
        "userId",
        "instanceId",
        "instance_id",
        "instanceName",
        "instanceTags",
        "realmId",
        "eventId",
        "raw",
        "events",
    ]


def test_raw_objects_are_spliced_in_byte_for_byte() -> None:
    data = body()
    assert b'"invoices":[' + INVOICE.encode() + b"," + TOMBSTONE.encode() + b"]" in data
    assert b"100.10" in data  # not 100.1


def test_changes_are_spliced_into_their_event_only() -> None:
    """DESIGN §12: an UPDATED event of an instance with `event.poller.changes` carries its
    changes as stored (QBO's literals: 100.10 stays 100.10); other events have no key."""
    changes = '[{"path":"/TotalAmt","old":90.00,"new":100.10},{"path":"/Memo","new":"x"}]'
    data = build_body(
        INSTANCE,
        "invoices",
        EVENT_ID,
        [
            EventRow("UPDATED", "145", T1, INVOICE, changes),
            EventRow("UPDATED", "147", T1, INVOICE, "null"),
            EventRow("DELETED", "146", T2, TOMBSTONE),
        ],
    )
    assert b',"changes":' + changes.encode() + b"}" in data
    events = orjson.loads(data)["message"]["events"]
    assert events[0]["changes"] == [
        {"path": "/TotalAmt", "old": 90.0, "new": 100.1},
        {"path": "/Memo", "new": "x"},
    ]
    assert "changes" in events[1] and events[1]["changes"] is None
    assert "changes" not in events[2]
    assert b'"changes"' not in body()  # events without changes: no key at all


def test_names_with_quotes_are_escaped() -> None:
    weird = InstanceInfo(3, 'Acme "West" \\ Ltd', ('a"b',), "1")
    assert orjson.loads(body(weird))["message"]["instanceName"] == 'Acme "West" \\ Ltd'


def test_dates_in_utc_or_the_instance_zone() -> None:
    pacific = datetime(2026, 11, 24, 2, 15, 2, tzinfo=timezone(timedelta(hours=-8)))
    assert format_date(pacific) == "2026-11-24T10:15:02Z"
    assert format_date(pacific, "Europe/Paris") == "2026-11-24T11:15:02+01:00"
    assert format_date(pacific, "America/Los_Angeles") == "2026-11-24T02:15:02-08:00"
    assert format_date(pacific, "Etc/UTC") == "2026-11-24T10:15:02Z"
    assert format_date(T1.replace(microsecond=500000)) == "2026-11-24T10:15:02.500000Z"
    tz = InstanceInfo(12, "x", (), "1", timezone="Asia/Kolkata")
    assert orjson.loads(body(tz))["message"]["events"][0]["date"] == "2026-11-24T15:45:02+05:30"
