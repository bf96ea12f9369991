"""Change Data Capture over HTTP (reference §1)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from qbo_emulator import Emulator
from qbo_emulator.clock import PACIFIC, parse_timestamp

from .conftest import Api, Reply, fault_of

LINE = {"Amount": 10, "DetailType": "SalesItemLineDetail", "SalesItemLineDetail": {}}


def _groups(reply: Reply) -> list[dict[str, Any]]:
    body = reply.json
    assert list(body) == ["CDCResponse", "time"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}-0[78]:00$", body["time"])
    (only,) = body["CDCResponse"]
    groups: list[dict[str, Any]] = only["QueryResponse"]
    return groups


async def test_changes_grouped_sorted_and_tombstones_last(emu: Emulator, blank: Api) -> None:
    realm = blank.realm
    emu.clock.freeze("2026-11-20T09:00:00-08:00")
    c1 = emu.create(realm, "Customer", {"DisplayName": "First"})
    inv_a = emu.create(realm, "Invoice", {"CustomerRef": {"value": c1["Id"]}, "Line": [LINE]})
    inv_b = emu.create(realm, "Invoice", {"CustomerRef": {"value": c1["Id"]}, "Line": [LINE]})
    emu.clock.advance(5)
    c2 = emu.create(realm, "Customer", {"DisplayName": "Second"})
    emu.clock.advance(5)
    emu.delete(realm, "Invoice", inv_a["Id"])  # a tombstone, older than inv_b's update
    emu.clock.advance(5)
    emu.update(
        realm, "Customer", {"Id": c1["Id"], "CompanyName": "Updated"}
    )  # changed twice: shows once
    emu.update(realm, "Invoice", {"Id": inv_b["Id"], "PrivateNote": "later"})

    groups = _groups(await blank.cdc("invoice,Customer", "2026-11-20T09:00:00-08:00"))
    assert [next(iter(g)) for g in groups] == ["Invoice", "Customer"]  # request order
    invoices, customers = groups[0]["Invoice"], groups[1]["Customer"]
    assert [c["Id"] for c in customers] == [c2["Id"], c1["Id"]]  # by LastUpdatedTime
    assert customers[1]["CompanyName"] == "Updated" and customers[1]["SyncToken"] == "1"
    assert [i["Id"] for i in invoices] == [inv_b["Id"], inv_a["Id"]]  # tombstone last
    assert invoices[1] == {
        "domain": "QBO",
        "status": "Deleted",
        "Id": inv_a["Id"],
        "MetaData": {"LastUpdatedTime": "2026-11-20T09:00:10-08:00"},
    }
    assert invoices[0]["PrivateNote"] == "later" and invoices[0]["Line"]  # full payload
    assert groups[0]["startPosition"] == 1 and groups[0]["maxResults"] == 2
    assert list(groups[1]) == ["Customer", "startPosition", "maxResults"]


async def test_ties_are_ordered_by_id(emu: Emulator, blank: Api) -> None:
    emu.clock.freeze("2026-11-20T09:00:00-08:00")
    made = [emu.create(blank.realm, "Class", {"Name": f"C{i}"}) for i in range(12)]
    emu.update(blank.realm, "Class", {"Id": made[0]["Id"], "Name": "C0 renamed"})
    (group,) = _groups(await blank.cdc("class", "2026-11-20T09:00:00-08:00"))
    assert [c["Id"] for c in group["Class"]] == [m["Id"] for m in made]
    assert made[0]["Id"].startswith("5000000000000")  # Class Ids are 19-digit


async def test_since_is_inclusive_and_bare_timestamp_is_pacific(emu: Emulator, blank: Api) -> None:
    emu.clock.freeze("2026-07-04T10:00:00-07:00")  # summer: PDT
    item = emu.create(blank.realm, "Item", {"Name": "Widget"})
    assert item["MetaData"]["LastUpdatedTime"] == "2026-07-04T10:00:00-07:00"
    emu.clock.advance(days=2)

    async def seen(since: str) -> bool:
        return bool(_groups(await blank.cdc("Item", since))[0])

    assert await seen("2026-07-04T10:00:00")  # bare = Pacific, >= is inclusive
    assert not await seen("2026-07-04T10:00:01")
    assert await seen("2026-07-04T17:00:00Z")  # same instant in UTC
    assert await seen("2026-07-04T17:00:00.900Z")  # fractions floor to the whole second
    assert not await seen("2026-07-04T10:00:00-08:00")  # an hour later than the change
    assert await seen("2026-07-04")  # bare date = midnight Pacific
    assert not await seen("2026-07-05")


async def test_thirty_day_limit(emu: Emulator, api: Api) -> None:
    now = emu.clock.freeze().replace(microsecond=0)
    inside = (now - timedelta(days=30) + timedelta(seconds=1)).isoformat()
    assert (await api.cdc("Customer", inside)).status == 200
    too_old = (now - timedelta(days=30, seconds=1)).astimezone(PACIFIC).isoformat()
    old = await api.cdc("Customer", too_old)
    assert old.status == 400
    error = fault_of(old)
    assert error["code"] == "500" and error["Message"] == "Unsupported Operation"
    assert error["Detail"] == (
        f"Operation cdc with changedSince date {too_old} "
        "which is older than fixed days is not supported."
    )


async def test_unsupported_and_unknown_entities(api: Api) -> None:
    now = api.emu.clock.now().isoformat()
    for name in ("TimeActivity", "taxcode", "TaxRate", "JournalCode", "TaxAgency", "Nonsense"):
        reply = await api.cdc(f"Customer,{name}", now)
        assert reply.status == 400, name
        assert name.lower() in fault_of(reply)["Detail"].lower()
    missing = await api.get("/cdc", changedSince=now)
    assert missing.status == 400 and fault_of(missing)["code"] == "2020"
    bad = await api.cdc("Customer", "yesterday")
    assert bad.status == 400


async def test_empty_answer_shape(emu: Emulator, api: Api) -> None:
    reply = await api.cdc("Customer,Invoice", emu.clock.now().isoformat())
    assert reply.json["CDCResponse"] == [{"QueryResponse": [{}]}]


async def test_deactivation_is_an_update_not_a_tombstone(emu: Emulator, blank: Api) -> None:
    emu.clock.freeze("2026-11-20T09:00:00-08:00")
    vendor = emu.create(blank.realm, "Vendor", {"DisplayName": "Hicks Hardware"})
    emu.delete(blank.realm, "Vendor", vendor["Id"])  # name list: Active=false
    (group,) = _groups(await blank.cdc("Vendor", "2026-11-20T09:00:00-08:00"))
    (row,) = group["Vendor"]
    assert (
        row["Active"] is False
        and row["DisplayName"] == "Hicks Hardware (deleted)"
        and "status" not in row
    )


async def test_thousand_object_cap_is_deterministic(emu: Emulator, blank: Api) -> None:
    emu.clock.freeze("2026-11-20T09:00:00-08:00")
    for i in range(700):
        emu.create(blank.realm, "Department", {"Name": f"D{i}"})
        if i % 100 == 0:
            emu.clock.advance(1)
    for i in range(600):
        emu.create(blank.realm, "Transfer", {"Amount": i + 1})
    first = await blank.cdc("Department,Transfer", "2026-11-20T09:00:00-08:00")
    second = await blank.cdc("Department,Transfer", "2026-11-20T09:00:00-08:00")
    g1, g2 = _groups(first), _groups(second)
    assert g1 == g2
    assert len(g1[0]["Department"]) == 700 and g1[0]["maxResults"] == 700
    assert len(g1[1]["Transfer"]) == 300 and g1[1]["maxResults"] == 300
    assert [t["Amount"] for t in g1[1]["Transfer"]][:3] == [1, 2, 3]  # the oldest are kept
    reversed_order = _groups(await blank.cdc("Transfer,Department", "2026-11-20T09:00:00-08:00"))
    assert len(reversed_order[0]["Transfer"]) == 600 and len(reversed_order[1]["Department"]) == 400


async def test_cdc_of_seeded_realm_is_large_and_fast(emu: Emulator, api: Api) -> None:
    emu.fill(api.realm, seed=2, per_entity={"Customer": 400, "Invoice": 400})
    since = emu.clock.now().replace(microsecond=0)
    reply = await api.cdc("Customer,Invoice", (since - timedelta(days=29)).isoformat())
    groups = _groups(reply)
    total = sum(g["maxResults"] for g in groups)
    assert 0 < total <= 1000
    for g in groups:
        rows = next(v for k, v in g.items() if isinstance(v, list))
        stamps = [r["MetaData"]["LastUpdatedTime"] for r in rows]
        assert len({r["Id"] for r in rows}) == len(rows)
        assert stamps == sorted(stamps, key=parse_timestamp)
