"""Creates, updates, deletes, voids and deactivations (reference §3, §4)."""

from __future__ import annotations

import re

from qbo_emulator import Emulator

from .conftest import Api, fault_of, present

META = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d-0[78]:00$")
LINE = {
    "Amount": 100,
    "DetailType": "SalesItemLineDetail",
    "SalesItemLineDetail": {"ItemRef": {"value": "1"}},
}


async def test_create_fills_server_fields(emu: Emulator, api: Api) -> None:
    reply = await api.post(
        "Customer",
        {
            "DisplayName": "Dukes Basketball Camp",
            "GivenName": "Peter",
            "Title": "",
            "MetaData": {"CreateTime": "1999-01-01T00:00:00Z"},
        },
    )
    assert reply.status == 200
    body = reply.json
    assert list(body) == ["Customer", "time"]
    c = body["Customer"]
    assert (
        c["SyncToken"] == "0"
        and c["domain"] == "QBO"
        and c["sparse"] is False
        and c["Active"] is True
    )
    assert (
        META.match(c["MetaData"]["CreateTime"])
        and c["MetaData"]["CreateTime"] != "1999-01-01T00:00:00Z"
    )
    assert c["MetaData"]["CreateTime"] == c["MetaData"]["LastUpdatedTime"]
    assert c["FullyQualifiedName"] == c["PrintOnCheckName"] == "Dukes Basketball Camp"
    assert "Title" not in c  # only properties with values come back
    assert int(c["Id"]) == 9


async def test_invoice_create_like_qbo(emu: Emulator, api: Api) -> None:
    customer = present(emu.get(api.realm, "Customer", "1"))
    reply = await api.post("Invoice", {"Line": [LINE], "CustomerRef": {"value": "1"}})
    inv = reply.json["Invoice"]
    assert inv["DocNumber"] and inv["TxnDate"] and inv["DueDate"] > inv["TxnDate"]
    assert inv["CustomerRef"] == {"value": "1", "name": customer["DisplayName"]}
    assert inv["BillAddr"] == customer["BillAddr"]
    assert inv["Line"][0]["Id"] == "1" and inv["Line"][0]["LineNum"] == 1
    assert inv["Line"][-1] == {
        "Amount": 100.0,
        "DetailType": "SubTotalLineDetail",
        "SubTotalLineDetail": {},
    }
    assert inv["TotalAmt"] == inv["Balance"] == 100
    assert b'"TotalAmt":100.00' in reply.body  # money has two decimals on the wire
    missing = await api.post("Invoice", {"Line": [LINE]})
    assert missing.status == 400 and fault_of(missing)["code"] == "2020"


async def test_sparse_and_full_update_with_synctoken(emu: Emulator, api: Api) -> None:
    created = (
        await api.post(
            "Vendor", {"DisplayName": "Hicks Hardware", "CompanyName": "Hicks", "AcctNum": "42"}
        )
    ).json["Vendor"]
    sparse = await api.post(
        "Vendor", {"Id": created["Id"], "SyncToken": "0", "sparse": True, "AcctNum": "43"}
    )
    v1 = sparse.json["Vendor"]
    assert v1["SyncToken"] == "1" and v1["AcctNum"] == "43" and v1["CompanyName"] == "Hicks"
    assert v1["MetaData"]["CreateTime"] == created["MetaData"]["CreateTime"]
    full = await api.post(
        "Vendor", {"Id": created["Id"], "SyncToken": "1", "DisplayName": "Hicks Hardware"}
    )
    v2 = full.json["Vendor"]
    assert (
        v2["SyncToken"] == "2" and "CompanyName" not in v2 and "AcctNum" not in v2
    )  # full replaces
    stale = await api.post(
        "Vendor", {"Id": created["Id"], "SyncToken": "1", "sparse": True, "AcctNum": "44"}
    )
    assert stale.status == 400
    error = fault_of(stale)
    assert error["code"] == "5010" and error["Message"] == "Stale Object Error"
    assert error["Detail"].startswith("Stale Object Error : You and ")
    cleared = await api.post(
        "Vendor", {"Id": created["Id"], "SyncToken": "2", "sparse": True, "CurrencyRef": None}
    )
    assert (
        "CurrencyRef" in v2 and "CurrencyRef" not in cleared.json["Vendor"]
    )  # an explicit null clears in a sparse update
    no_token = await api.post("Vendor", {"Id": created["Id"], "sparse": True, "AcctNum": "44"})
    assert no_token.status == 400 and fault_of(no_token)["code"] == "2020"


async def test_timestamps_follow_the_emulator_clock_and_dst(emu: Emulator, api: Api) -> None:
    emu.clock.freeze("2026-11-24T10:15:02Z")
    # (the token would still be valid; this just proves expiry is per token)
    emu.expire_access_tokens()
    api.token = emu.issue_tokens(api.realm)["access_token"]
    winter = (await api.post("Class", {"Name": "Winter"})).json
    assert winter["Class"]["MetaData"]["CreateTime"] == "2026-11-24T02:15:02-08:00"
    assert winter["time"] == "2026-11-24T02:15:02.000-08:00"
    emu.clock.set("2027-07-01T12:00:00-07:00")
    api.token = emu.issue_tokens(api.realm)["access_token"]
    summer = (
        await api.post(
            "Class",
            {"Id": winter["Class"]["Id"], "SyncToken": "0", "sparse": True, "Name": "Summer"},
        )
    ).json
    assert summer["Class"]["MetaData"]["LastUpdatedTime"] == "2027-07-01T12:00:00-07:00"
    assert summer["Class"]["MetaData"]["CreateTime"] == "2026-11-24T02:15:02-08:00"


async def test_hard_delete_of_a_transaction(emu: Emulator, api: Api) -> None:
    bill = present(emu.get(api.realm, "Bill", "2"))
    reply = await api.post("Bill", {"Id": "2", "SyncToken": bill["SyncToken"]}, operation="delete")
    assert reply.status == 200
    assert reply.json["Bill"] == {"domain": "QBO", "status": "Deleted", "Id": "2"}
    read = await api.get("/bill/2")
    assert read.status == 400 and fault_of(read)["code"] == "610"
    assert "deleted" in fault_of(read)["Detail"]
    ids = [b["Id"] for b in (await api.query("select * from Bill")).json["QueryResponse"]["Bill"]]
    assert "2" not in ids
    since = emu.clock.now().replace(microsecond=0).isoformat()
    groups = (await api.cdc("Bill", since)).json["CDCResponse"][0]["QueryResponse"]
    assert groups[0]["Bill"][-1]["status"] == "Deleted"
    stale = await api.post("Bill", {"Id": "3", "SyncToken": "99"}, operation="delete")
    assert fault_of(stale)["code"] == "5010"


async def test_name_lists_refuse_delete_and_deactivate_instead(emu: Emulator, api: Api) -> None:
    account = present(emu.get(api.realm, "Account", "1"))
    refused = await api.post(
        "Account", {"Id": "1", "SyncToken": account["SyncToken"]}, operation="delete"
    )
    assert refused.status == 400 and fault_of(refused)["Message"] == "Unsupported Operation"
    reply = await api.post(
        "Account", {"Id": "1", "SyncToken": account["SyncToken"], "sparse": True, "Active": False}
    )
    gone = reply.json["Account"]
    assert gone["Active"] is False and gone["Name"].endswith(" (deleted)")
    assert gone["FullyQualifiedName"].endswith(" (deleted)")
    assert (await api.get("/account/1")).json["Account"]["Active"] is False  # still readable
    back = emu.reactivate(api.realm, "Account", "1")
    assert back["Active"] is True and back["Name"] == account["Name"]


async def test_void_invoice_and_payment(emu: Emulator, api: Api) -> None:
    inv = (await api.post("Invoice", {"Line": [LINE], "CustomerRef": {"value": "1"}})).json[
        "Invoice"
    ]
    voided = (
        await api.post("Invoice", {"Id": inv["Id"], "SyncToken": "0"}, operation="void")
    ).json["Invoice"]
    assert voided["SyncToken"] == "1" and voided["PrivateNote"] == "Voided"
    assert (
        voided["TotalAmt"] == 0
        and voided["Balance"] == 0
        and all(ln["Amount"] == 0 for ln in voided["Line"])
    )
    assert len(voided["Line"]) == len(inv["Line"])  # lines kept
    payment = present(emu.get(api.realm, "Payment", "1"))
    # python-quickbooks voids a Payment with operation=update&include=void and a sparse body
    reply = await api.post(
        "Payment",
        {"Id": "1", "SyncToken": payment["SyncToken"], "sparse": True},
        operation="update",
        include="void",
    )
    assert reply.json["Payment"]["TotalAmt"] == 0
    refused = await api.post("Bill", {"Id": "1", "SyncToken": "0"}, operation="void")
    assert refused.status == 400


async def test_duplicate_names(emu: Emulator, api: Api) -> None:
    await api.post("Customer", {"DisplayName": "Same Name"})
    dup = await api.post(
        "Vendor", {"DisplayName": "same name"}
    )  # customers, vendors, employees share names
    assert dup.status == 400 and fault_of(dup)["code"] == "6240"
    assert (await api.post("Class", {"Name": "Same Name"})).status == 200


async def test_tax_entities_are_read_only_through_the_api(emu: Emulator, api: Api) -> None:
    assert (await api.post("TaxCode", {"Name": "New"})).status == 400
    assert (await api.get("/taxcode/1")).status == 200
    assert emu.create(api.realm, "TaxRate", {"Name": "Made by control"})["Id"]


async def test_bad_requests(api: Api) -> None:
    assert fault_of(await api.get("/customer/1.5"))["code"] == "2030"
    unknown = await api.get("/customer/1/5")
    assert unknown.status == 400 and fault_of(unknown)["code"] == "500"
    raw = await api.request(
        "POST", "/customer", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert raw.status == 400 and fault_of(raw)["code"] == "2010"
    other_realm = await api.request("GET", "/customer/1", realm="123")
    assert other_realm.status == 403 and other_realm.json["fault"]["error"][0]["code"] == "3100"


async def test_control_api_over_http(emu: Emulator, api: Api) -> None:
    base = f"{emu.base_url}/_emulator/realms/{api.realm}/entities"
    s = api.session
    async with s.post(f"{base}/Customer", json={"DisplayName": "Via Control"}) as r:
        created = await r.json()
    async with s.patch(f"{base}/Customer/{created['Id']}", json={"CompanyName": "Ctl"}) as r:
        assert (await r.json())["SyncToken"] == "1"
    async with s.post(f"{base}/Invoice/1/void") as r:
        assert (await r.json())["PrivateNote"] == "Voided"
    async with s.delete(f"{base}/Invoice/1") as r:
        assert (await r.json())["status"] == "Deleted"
    async with s.get(f"{base}/Invoice/1") as r:
        assert r.status == 404
    async with s.post(
        f"{emu.base_url}/_emulator/clock", json={"action": "advance", "days": 1}
    ) as r:
        assert (await r.json())["frozen"] is False
    async with s.post(
        f"{emu.base_url}/_emulator/realms", json={"realm_id": "77", "per_entity": 2}
    ) as r:
        assert (await r.json()) == {
            "realm_id": "77",
            "objects": 2 * 30 + 2,
        }  # issue 14: 30 lists and txns, 2 singletons
    async with s.get(f"{emu.base_url}/_emulator") as r:
        info = await r.json()
        assert info["token_url"] == emu.token_url and "77" in info["realms"]
