"""The query dialect over HTTP (reference §2)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from qbo_emulator import Emulator

from .conftest import Api, fault_of

TIME_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}-0[78]:00$")


@pytest.fixture
def people(emu: Emulator, blank: Api) -> list[dict[str, Any]]:
    """A few customers with known names, in an empty realm."""
    names = ["Amy's Bird Sanctuary", "Bill's Windsurf Shop", "Cool Cars", "Diego Rodriguez"]
    return [
        emu.create(blank.realm, "Customer", {"DisplayName": n, "Balance": i * 10})
        for i, n in enumerate(names)
    ]


async def test_select_shape_and_default_order(api: Api) -> None:
    reply = await api.query("select * from Customer")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json;charset=utf-8"
    body = reply.json
    assert list(body) == ["QueryResponse", "time"] and TIME_MS.match(body["time"])
    qr = body["QueryResponse"]
    assert list(qr) == ["Customer", "startPosition", "maxResults"]  # no totalCount, as recorded
    ids = [int(c["Id"]) for c in qr["Customer"]]
    assert ids == sorted(ids) and qr["maxResults"] == len(ids) == 8 and qr["startPosition"] == 1
    first = qr["Customer"][0]
    assert (
        first["domain"] == "QBO"
        and first["sparse"] is False
        and isinstance(first["SyncToken"], str)
    )
    assert re.match(
        r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d-0[78]:00$", first["MetaData"]["LastUpdatedTime"]
    )


async def test_default_100_paging_and_past_the_end(emu: Emulator, api: Api) -> None:
    emu.fill(api.realm, seed=1, per_entity={"Vendor": 130})
    reply = await api.query("SELECT * FROM Vendor")
    assert reply.json["QueryResponse"]["maxResults"] == 100
    page2 = (await api.query("SELECT * FROM Vendor STARTPOSITION 101 MAXRESULTS 50")).json[
        "QueryResponse"
    ]
    assert (page2["startPosition"], page2["maxResults"]) == (101, 38)  # 8 seeded + 130
    page1 = (await api.query("select * from vendor maxresults 5 startposition 1")).json[
        "QueryResponse"
    ]
    assert [v["Id"] for v in page1["Vendor"]] == ["1", "2", "3", "4", "5"]
    empty = await api.query("SELECT * FROM Vendor STARTPOSITION 500")
    assert empty.status == 200 and empty.json["QueryResponse"] == {}


async def test_maxresults_over_1000_is_a_fault(api: Api) -> None:
    reply = await api.query("SELECT * FROM Customer MAXRESULTS 1500")
    assert reply.status == 400 and reply.headers["Content-Type"] == "application/json"
    error = fault_of(reply)
    assert error["code"] == "4001" and error["Message"] == "Invalid query"
    assert (
        error["Detail"]
        == "QueryValidationError: value 1500 is too large. Max allowed value is 1000"
    )
    assert (await api.query("SELECT * FROM Customer MAXRESULTS 1000")).status == 200


async def test_count(blank: Api, people: list[dict[str, Any]]) -> None:
    reply = await blank.query("SELECT COUNT(*) FROM Customer")
    assert reply.json["QueryResponse"] == {"totalCount": 4}
    reply = await blank.query("select count(*) from Customer where DisplayName LIKE '%Sanctuary'")
    assert reply.json["QueryResponse"] == {"totalCount": 1}


async def test_case_insensitive_keywords_entities_properties(
    blank: Api, people: list[dict[str, Any]]
) -> None:
    reply = await blank.query(
        "sElEcT * fRoM customer wHeRe displayname = 'Cool Cars' oRdErBy metadata.createtime dEsC"
    )
    assert [c["DisplayName"] for c in reply.json["QueryResponse"]["Customer"]] == ["Cool Cars"]


async def test_operators(blank: Api, people: list[dict[str, Any]]) -> None:
    async def names(where: str) -> list[str]:
        qr = (await blank.query(f"SELECT * FROM Customer WHERE {where} ORDERBY DisplayName")).json[
            "QueryResponse"
        ]
        return [c["DisplayName"] for c in qr.get("Customer", [])]

    ids = [p["Id"] for p in people]
    assert await names(f"Id = '{ids[2]}'") == ["Cool Cars"]
    assert await names(f"Id IN ('{ids[0]}', '{ids[3]}')") == [
        "Amy's Bird Sanctuary",
        "Diego Rodriguez",
    ]
    assert await names("DisplayName LIKE 'B%'") == ["Bill's Windsurf Shop"]
    assert await names("DisplayName LIKE '%o%' AND Balance >= 20") == [
        "Cool Cars",
        "Diego Rodriguez",
    ]
    assert await names("DisplayName IN ('Cool Cars', 'Nobody')") == ["Cool Cars"]
    assert await names("Balance > 10 AND Balance <= 30 AND DisplayName < 'D'") == ["Cool Cars"]
    assert await names("DisplayName = 'Amy\\'s Bird Sanctuary'") == [
        "Amy's Bird Sanctuary"
    ]  # \' escape


async def test_order_by_both_spellings(blank: Api, people: list[dict[str, Any]]) -> None:
    q1 = await blank.query("SELECT * FROM Customer WHERE Balance > 0 ORDER BY Balance DESC")
    q2 = await blank.query("SELECT * FROM Customer WHERE Balance > 0 ORDERBY Balance ASC")
    d = [c["Balance"] for c in q1.json["QueryResponse"]["Customer"]]
    a = [c["Balance"] for c in q2.json["QueryResponse"]["Customer"]]
    assert d == sorted(d, reverse=True) and a == sorted(a) and len(a) > 2


async def test_metadata_timestamps_compare_as_instants(emu: Emulator, blank: Api) -> None:
    api = blank
    emu.clock.freeze("2026-11-10T10:00:00-08:00")
    early = emu.create(api.realm, "Term", {"Name": "Net 7"})
    emu.clock.advance(seconds=30)
    late = emu.create(api.realm, "Term", {"Name": "Net 8"})
    assert late["MetaData"]["LastUpdatedTime"] == "2026-11-10T10:00:30-08:00"

    async def ids(where: str) -> list[str]:
        qr = (await api.query(f"SELECT * FROM Term WHERE {where}")).json["QueryResponse"]
        return [t["Id"] for t in qr.get("Term", [])]

    # The same instant written three ways: offset, UTC, bare (= Pacific).
    for ts in ("2026-11-10T10:00:30-08:00", "2026-11-10T18:00:30Z", "2026-11-10T10:00:30"):
        assert await ids(f"MetaData.LastUpdatedTime >= '{ts}'") == [late["Id"]]
    assert await ids("Metadata.LastUpdatedTime < '2026-11-10T18:00:30+00:00'") == [early["Id"]]
    assert await ids("MetaData.LastUpdatedTime > '2026-11-10T10:00:30-0800'") == []
    both = await ids(
        "MetaData.LastUpdatedTime >= '2026-11-10T10:00:00-08:00' "
        "AND MetaData.CreateTime <= '2026-11-10T10:00:30-08:00'"
    )
    assert both == [early["Id"], late["Id"]]


async def test_id_supports_only_equality_and_in(api: Api) -> None:
    for op in (">", "<", ">=", "<="):
        reply = await api.query(f"SELECT * FROM Customer WHERE Id {op} '3'")
        assert reply.status == 400 and fault_of(reply)["code"] == "4001"
    reply = await api.query("SELECT * FROM Customer WHERE Id LIKE '3%'")
    assert reply.status == 400


async def test_inactive_name_list_rows_are_hidden(
    emu: Emulator, blank: Api, people: list[dict[str, Any]]
) -> None:
    gone = emu.deactivate(blank.realm, "Customer", people[2]["Id"])
    assert gone["DisplayName"] == "Cool Cars (deleted)" and gone["Active"] is False
    default = (await blank.query("SELECT * FROM Customer MAXRESULTS 1000")).json["QueryResponse"][
        "Customer"
    ]
    assert gone["Id"] not in {c["Id"] for c in default}
    only_inactive = (await blank.query("SELECT * FROM Customer WHERE Active = false")).json[
        "QueryResponse"
    ]
    assert [c["Id"] for c in only_inactive["Customer"]] == [gone["Id"]]
    both = (await blank.query("SELECT * FROM Customer WHERE Active IN (true, false)")).json[
        "QueryResponse"
    ]
    assert len(both["Customer"]) == len(default) + 1
    assert (await blank.query("SELECT COUNT(*) FROM Customer")).json["QueryResponse"][
        "totalCount"
    ] == len(default)
    # Transactions are not name lists: nothing hidden, no Active needed.
    emu.create(
        blank.realm,
        "Invoice",
        {
            "CustomerRef": {"value": gone["Id"]},
            "Line": [{"Amount": 5, "DetailType": "SalesItemLineDetail", "SalesItemLineDetail": {}}],
        },
    )
    assert (await blank.query("SELECT COUNT(*) FROM Invoice")).json["QueryResponse"][
        "totalCount"
    ] == 1


async def test_post_with_application_text(blank: Api, people: list[dict[str, Any]]) -> None:
    reply = await blank.query_post("SELECT * FROM Customer WHERE DisplayName = 'Cool Cars'")
    assert (
        reply.status == 200
        and reply.json["QueryResponse"]["Customer"][0]["DisplayName"] == "Cool Cars"
    )


@pytest.mark.parametrize(
    "statement, code, detail",
    [
        (
            "SELECT * FROM Custmoer",
            "4001",
            "QueryValidationError: invalid context declaration: Custmoer",
        ),
        (
            "SELECT * FROM Customer WHERE Nonsense = 'x'",
            "4001",
            "QueryValidationError: property 'Nonsense' is not queryable",
        ),
        ("SELECT * FROM Customer WHERE DisplayName = 'a' OR Active = true", "4000", None),
        ("SELECT FROM Customer", "4000", None),
        ("SELECT * FROM Customer WHERE", "4000", None),
        ("SELECT * FROM Customer WHERE DisplayName = null", "4000", None),
        ("DELETE FROM Customer", "4000", None),
        ("", "4000", None),
    ],
)
async def test_errors_are_qbo_faults(
    api: Api, statement: str, code: str, detail: str | None
) -> None:
    reply = await api.query(statement)
    assert reply.status == 400
    error = fault_of(reply)
    assert error["code"] == code
    assert error["Message"] == ("Invalid query" if code == "4001" else "Error parsing query")
    if detail:
        assert error["Detail"] == detail
    if code == "4000":
        assert error["Detail"].startswith("QueryParserError: ")
    assert TIME_MS.match(reply.json["time"])


async def test_parse_error_mentions_the_column(api: Api) -> None:
    error = fault_of(await api.query("SELECT * FROM Customer WHERE DisplayName = null"))
    assert "at line 1, column 44" in error["Detail"]


async def test_item_select_with_projection_as_python_quickbooks_sends(api: Api) -> None:
    reply = await api.query("SELECT *, Sku FROM Item")
    assert reply.status == 200 and len(reply.json["QueryResponse"]["Item"]) == 8


async def test_ref_properties_compare_by_value(emu: Emulator, api: Api) -> None:
    customer = emu.ids(api.realm, "Customer")[0]
    mine = [
        i
        for i in emu.query(api.realm, "select * from Invoice")["QueryResponse"]["Invoice"]
        if i["CustomerRef"]["value"] == customer
    ]
    reply = await api.query(f"SELECT * FROM Invoice WHERE CustomerRef = '{customer}'")
    got = reply.json["QueryResponse"].get("Invoice", [])
    assert [i["Id"] for i in got] == [i["Id"] for i in mine]
