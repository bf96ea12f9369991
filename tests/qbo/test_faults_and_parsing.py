"""Fault bodies and successful bodies, straight from the recorded samples."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from poller.qbo import parse
from poller.qbo.faults import error_for, is_throttle, parse_fault
from poller.qbo.times import PACIFIC, format_qbo_time, last_updated_time, parse_qbo_time
from poller.qbo.types import (
    AuthenticationError,
    AuthorizationError,
    CdcItem,
    CdcResult,
    Fault,
    NotFoundError,
    QueryItem,
    QueryResult,
    ServerError,
    ThrottledError,
    ValidationError,
)

SAMPLES = Path(__file__).parent / "samples"

# sample → (HTTP status QBO sends it with, type, code, error class)
FAULTS = {
    "fault_authentication_401.xml": (401, "AuthenticationFault", "100", AuthenticationError),
    "fault_authentication_401_lowercase.json": (401, "AUTHENTICATION", "3200", AuthenticationError),
    "fault_authentication_401_lowercase_malformed_token.json": (
        401,
        "AUTHENTICATION",
        "3200",
        AuthenticationError,
    ),
    "fault_authorization_403_lowercase.json": (403, "SERVICE", "3100", AuthorizationError),
    "fault_object_not_found.json": (400, "ValidationFault", "610", NotFoundError),
    "fault_query_parse_error.json": (400, "ValidationFault", "4000", ValidationError),
    "fault_required_param_missing.json": (400, "ValidationFault", "2020", ValidationError),
    "fault_stale_object.json": (400, "ValidationFault", "5010", ValidationError),
    "fault_system_10000.xml": (500, "SystemFault", "10000", ServerError),
    "fault_validation_duplicate_name.json": (400, "ValidationFault", "6240", ValidationError),
    "fault_validation_duplicate_name_taxrate.json": (
        400,
        "ValidationFault",
        "6240",
        ValidationError,
    ),
    "fault_validation_invalid_id.json": (400, "ValidationFault", "2030", ValidationError),
    "fault_validation_invalid_query.json": (400, "ValidationFault", "4001", ValidationError),
    "fault_validation_unrecognized_property.json": (
        400,
        "ValidationFault",
        "2010",
        ValidationError,
    ),
    # code "500" is "Unsupported Operation" sent with HTTP 400: not a server error.
    "fault_validation_unsupported_operation.json": (400, "ValidationFault", "500", ValidationError),
    "throttle_exceeded_429.xml": (429, "SERVICE", "3001", ThrottledError),
    "throttle_exceeded_403_legacy.xml": (403, "SERVICE", "3001", ThrottledError),
}


def test_every_fault_sample_is_covered() -> None:
    on_disk = {p.name for p in SAMPLES.glob("fault_*")} | {
        p.name for p in SAMPLES.glob("throttle_*")
    }
    assert on_disk == set(FAULTS)


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_fault_samples_parse_and_map(name: str) -> None:
    status, ftype, code, error_cls = FAULTS[name]
    fault = parse_fault((SAMPLES / name).read_bytes(), status, "1-tid")
    assert fault is not None
    assert (fault.type, fault.code, fault.status, fault.intuit_tid) == (
        ftype,
        code,
        status,
        "1-tid",
    )
    assert fault.message
    error = error_for(status, fault)
    assert type(error) is error_cls and error.fault is fault


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_fault_class_does_not_need_the_status(name: str) -> None:
    """A 200 can carry a Fault: the code and type alone must still say what it is."""
    error_cls = FAULTS[name][3]
    fault = parse_fault((SAMPLES / name).read_bytes())
    assert type(error_for(None, fault)) is error_cls


def test_fault_details_are_read() -> None:
    fault = parse_fault((SAMPLES / "throttle_exceeded_429.xml").read_bytes(), 429)
    assert fault is not None and fault.detail == "The request limit was reached.  Try again later"
    assert is_throttle(429, fault) and is_throttle(None, fault)
    lower = parse_fault((SAMPLES / "fault_authorization_403_lowercase.json").read_bytes(), 403)
    assert lower is not None and lower.detail == ""  # `"detail": null`


def test_no_fault_in_ordinary_bodies() -> None:
    for name in ("query_response.json", "cdc_response.json", "batch_response.json"):
        assert parse_fault((SAMPLES / name).read_bytes(), 200) is None
    assert parse_fault(b"", 500) is None
    assert parse_fault(b"<html>bad gateway</html>", 502) is None
    assert parse_fault(b'{"Fault": ', 400) is None


def test_a_200_with_a_fault_is_a_fault() -> None:
    body = (
        b'<IntuitResponse time="2020-01-01T00:00:00.000-08:00"><Fault type="ValidationFault">'
        b'<Error code="4001"><Message>Invalid query</Message></Error></Fault></IntuitResponse>'
    )
    fault = parse_fault(body, 200)
    assert fault is not None and type(error_for(200, fault)) is ValidationError


# --- timestamps -------------------------------------------------------------------------------


def test_qbo_times_parse_to_aware_datetimes() -> None:
    t = parse_qbo_time("2015-12-23T12:56:06.196-08:00")
    assert t == datetime(2015, 12, 23, 20, 56, 6, 196000, tzinfo=UTC)
    assert parse_qbo_time("2015-12-23T12:55:50-08:00").utcoffset() == timedelta(hours=-8)
    assert parse_qbo_time("2025-09-10T21:31:25.179Z").tzinfo is not None
    assert parse_qbo_time("2015-10-05T14:42:19-0700") == parse_qbo_time("2015-10-05T14:42:19-07:00")
    assert parse_qbo_time(1601391072830) == datetime(2020, 9, 29, 14, 51, 12, 830000, tzinfo=UTC)
    # No offset: US Pacific, as QBO reads it (issue 9 unified the two parsers on this rule).
    assert parse_qbo_time("2015-12-23T12:55:50").utcoffset() == timedelta(hours=-8)


def test_offset_less_values_mean_pacific_both_ways() -> None:
    """The rule (reference §1.1, §4): QBO reads a bare timestamp as US Pacific, so nothing is
    ever sent without an explicit offset, and a bare value read back (QBO always writes an
    offset, but should one come) means what it would mean to QBO: Pacific, not UTC."""
    winter = datetime(2015, 12, 23, 20, 55, 50, tzinfo=UTC)  # PST, UTC-8
    summer = datetime(2015, 7, 1, 19, 0, 0, tzinfo=UTC)  # PDT, UTC-7
    assert parse_qbo_time("2015-12-23T12:55:50") == winter
    assert parse_qbo_time("2015-07-01T12:00:00") == summer
    milliseconds = datetime(2015, 12, 23, 20, 56, 6, 196000, tzinfo=UTC)
    assert parse_qbo_time("2015-12-23T12:56:06.196") == milliseconds
    with pytest.raises(ValueError, match="Pacific"):
        format_qbo_time(datetime(2026, 1, 2, 3, 4, 5))
    assert last_updated_time({"MetaData": {"LastUpdatedTime": "2015-12-23T12:55:50"}}) == winter
    # Written in Pacific, the way QBO writes its MetaData, the offset is still explicit.
    instant = datetime(2026, 1, 15, 20, 0, 0, 999000, tzinfo=UTC)
    assert format_qbo_time(instant, PACIFIC) == "2026-01-15T12:00:00-08:00"
    assert parse_qbo_time(format_qbo_time(instant, PACIFIC)) == instant.replace(microsecond=0)


def test_timestamps_sent_always_carry_an_offset() -> None:
    pacific = timezone(timedelta(hours=-8))
    assert (
        format_qbo_time(datetime(2026, 1, 2, 3, 4, 5, 999999, tzinfo=pacific))
        == "2026-01-02T11:04:05+00:00"
    )
    with pytest.raises(ValueError):
        format_qbo_time(datetime(2026, 1, 2, 3, 4, 5))


# --- successful bodies ------------------------------------------------------------------------


def load(name: str) -> object:
    return orjson.loads((SAMPLES / name).read_bytes())


def test_cdc_sample_with_tombstone() -> None:
    result = parse.parse_cdc(load("cdc_response_intuit_docs_deleted.json"))
    assert result.time == parse_qbo_time("2015-12-23T12:56:06.196-08:00")
    assert list(result.objects) == ["Customer", "Estimate"]
    assert result.count == 5
    assert result.objects["Estimate"][-1]["status"] == "Deleted"


def test_cdc_without_changes_and_recorded_cdc() -> None:
    empty = parse.parse_cdc(load("cdc_response_intuit_docs_no_changes.json"))
    assert empty.objects == {} and empty.count == 0
    recorded = parse.parse_cdc(load("cdc_response.json"))
    assert recorded.count == sum(len(v) for v in recorded.objects.values()) > 0


def test_query_samples() -> None:
    result = parse.parse_query(load("query_response.json"), "select * from Customer")
    assert result.rows and result.entity and result.start_position == 1
    empty = parse.parse_query(
        load("query_response_empty.json"), "SELECT * FROM Invoice WHERE Id = '9'"
    )
    assert (empty.entity, empty.rows) == ("Invoice", [])
    count = parse.parse_query(load("query_count_response.json"), "SELECT COUNT(*) FROM Customer")
    assert count.total_count == 41 and count.rows == []


def test_batch_sample_with_faults_and_queries() -> None:
    # bid1 (a Vendor write answer) was not sent by us: it is ignored.
    items = [
        QueryItem("bid2", "select * from Vendor"),
        QueryItem("bid3", "select * from Bill"),
        QueryItem("bid4", "select * from SalesReceipt"),
    ]
    result = parse.parse_batch(load("batch_response.json"), items, "tid-9")
    assert set(result.answers) == {"bid2", "bid3", "bid4"}
    assert isinstance(result.answers["bid2"], Fault) and result.answers["bid2"].code == "610"
    assert result.answers["bid2"].intuit_tid == "tid-9"
    assert isinstance(result.answers["bid3"], Fault) and result.answers["bid3"].code == "5010"
    receipts = result.answers["bid4"]
    assert isinstance(receipts, QueryResult) and receipts.entity == "SalesReceipt"
    assert len(receipts.rows) == 2 and receipts.time == result.time


@pytest.mark.parametrize("shape", ["array", "object"])
def test_batch_cdc_item_in_either_shape(shape: str) -> None:
    cdc = load("cdc_response_intuit_docs_deleted.json")["CDCResponse"]  # type: ignore[index]
    doc = {
        "BatchItemResponse": [
            {"bId": "cdc", "CDCResponse": cdc if shape == "array" else cdc[0]},
            {
                "bId": "q",
                "QueryResponse": {"TaxCode": [{"Id": "2"}], "startPosition": 1, "maxResults": 1},
            },
        ],
        "time": "2015-12-23T12:56:06.196-08:00",
    }
    since = datetime(2015, 12, 22, tzinfo=UTC)
    items = [
        CdcItem("cdc", ("Customer", "Estimate"), since),
        QueryItem("q", "select * from TaxCode"),
    ]
    result = parse.parse_batch(doc, items)
    assert isinstance(result.answers["cdc"], CdcResult) and result.answers["cdc"].count == 5
    assert isinstance(result.answers["q"], QueryResult) and result.answers["q"].rows == [
        {"Id": "2"}
    ]


def test_batch_request_shape_and_missing_answers() -> None:
    since = datetime(2019, 1, 1, tzinfo=timezone(timedelta(hours=-8)))
    body = parse.batch_request(
        [CdcItem("1", ("Customer", "Account"), since), QueryItem("2", "select * from TaxRate")]
    )
    assert body == {
        "BatchItemRequest": [
            {
                "bId": "1",
                "CDCQuery": {
                    "Entities": "Customer,Account",
                    "ChangedSince": "2019-01-01T08:00:00+00:00",
                },
            },
            {"bId": "2", "Query": "select * from TaxRate"},
        ]
    }
    result = parse.parse_batch(
        {"BatchItemResponse": [], "time": "2020-01-01T00:00:00.000-08:00"},
        [QueryItem("x", "select * from Class")],
    )
    assert isinstance(result.answers["x"], Fault)


def test_malformed_bodies_raise() -> None:
    for doc in (
        {},
        {"QueryResponse": {}},
        {"QueryResponse": [], "time": "2020-01-01T00:00:00Z"},
        {"QueryResponse": {}, "time": "yesterday"},
    ):
        with pytest.raises((KeyError, TypeError, ValueError)):
            parse.parse_query(doc, "select * from Customer")
    with pytest.raises((KeyError, TypeError, ValueError)):
        parse.parse_cdc({"CDCResponse": ["x"], "time": "2020-01-01T00:00:00Z"})
