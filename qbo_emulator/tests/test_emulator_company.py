"""CompanyInfo, Preferences, the lists tap-quickbooks reads, CDC coverage and reports (issue 14)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from qbo_emulator import Emulator
from qbo_emulator.entities import ENTITIES

from .conftest import Api, fault_of, present

# tap-quickbooks 2.5.0 streams.py, DeletedObjects.deleted_entities: sent in one CDC request.
TAP_CDC_ENTITIES = (
    "Account,BillPayment,Bill,Budget,Class,CreditMemo,Customer,Department,Deposit,Employee,"
    "Estimate,Invoice,Item,JournalEntry,PaymentMethod,Payment,PurchaseOrder,Purchase,"
    "RefundReceipt,SalesReceipt,Term,Transfer,VendorCredit,Vendor"
)


def _since(emu: Emulator, days: float = 29) -> str:
    return (emu.clock.now() - timedelta(days=days)).isoformat()


async def test_companyinfo_read_by_realm_id_and_query(api: Api) -> None:
    reply = await api.get(f"/companyinfo/{api.realm}", minorversion="75")
    assert reply.status == 200, reply.text
    info = reply.json["CompanyInfo"]
    assert info["Id"] == "1" and info["SyncToken"] == "0" and api.realm in info["CompanyName"]
    assert (await api.get("/companyinfo/1")).json["CompanyInfo"]["Id"] == "1"
    queried = (await api.query("select * from CompanyInfo")).json["QueryResponse"]
    assert [row["Id"] for row in queried["CompanyInfo"]] == ["1"]


async def test_preferences_read_update_and_no_create(api: Api) -> None:
    prefs = (await api.get("/preferences")).json["Preferences"]
    assert prefs["CurrencyPrefs"]["HomeCurrency"] == {"value": "USD"}
    changed = await api.post(
        "Preferences",
        {"Id": "1", "SyncToken": prefs["SyncToken"], "sparse": True, "OtherPrefs": {}},
    )
    assert changed.status == 200 and changed.json["Preferences"]["SyncToken"] == "1"
    refused = await api.post("CompanyInfo", {"CompanyName": "second company"})
    assert refused.status == 400 and fault_of(refused)["code"] == "500"


async def test_singletons_exist_in_an_empty_realm(blank: Api) -> None:
    assert (await blank.get(f"/companyinfo/{blank.realm}")).status == 200
    assert (await blank.get("/preferences")).status == 200


async def test_new_lists_are_seeded_and_queryable(api: Api) -> None:
    for entity, where in (
        ("Budget", " where Active in (true, false)"),
        ("CustomerType", ""),
        ("TaxAgency", ""),  # no Active flag (tap-quickbooks asks without one)
    ):
        reply = await api.query(f"select * from {entity}{where}")
        assert reply.status == 200, reply.text
        rows = reply.json["QueryResponse"][entity]
        assert len(rows) == 8, entity
    budget = (await api.query("select * from Budget")).json["QueryResponse"]["Budget"][0]
    assert len(budget["BudgetDetail"]) == 12 and budget["BudgetType"] == "ProfitAndLoss"


async def test_cdc_accepts_every_entity_it_supports(emu: Emulator, api: Api) -> None:
    reply = await api.cdc(TAP_CDC_ENTITIES, _since(emu))
    assert reply.status == 200, reply.text
    groups = reply.json["CDCResponse"][0]["QueryResponse"]
    assert "Budget" in {name for group in groups for name in group if name[0].isupper()}
    supported = [name for name, facts in ENTITIES.items() if facts.cdc]
    assert {"Budget", "CustomerType", "CompanyInfo", "Preferences"} <= set(supported)
    every = await api.cdc(",".join(supported), _since(emu))
    assert every.status == 200, every.text
    refused = await api.cdc("TaxAgency", _since(emu))
    assert refused.status == 400 and "TaxAgency" in fault_of(refused)["Message"] + str(
        fault_of(refused)["Detail"]
    )


def _summary(rows: list[dict[str, Any]], group: str) -> list[str]:
    row = next(row for row in rows if row.get("group") == group)
    return [cell["value"] for cell in row["Summary"]["ColData"][1:]]


def _expected_net(emu: Emulator, realm: str) -> float:
    income = expenses = 0.0
    for entity, sign, into_income in (
        ("Invoice", 1, True),
        ("SalesReceipt", 1, True),
        ("CreditMemo", -1, True),
        ("RefundReceipt", -1, True),
        ("Bill", 1, False),
        ("Purchase", 1, False),
        ("VendorCredit", -1, False),
    ):
        for obj_id in emu.ids(realm, entity):
            amount = sign * float(present(emu.get(realm, entity, obj_id))["TotalAmt"])
            if into_income:
                income += amount
            else:
                expenses += amount
    return income - expenses


async def test_profit_and_loss_totals_come_from_the_data(emu: Emulator, api: Api) -> None:
    reply = await api.get("/reports/ProfitAndLoss", start_date="2000-01-01")
    assert reply.status == 200, reply.text
    report = reply.json
    assert report["Header"]["ReportName"] == "ProfitAndLoss"
    assert [c["ColTitle"] for c in report["Columns"]["Column"]] == ["", "Total"]
    net = float(_summary(report["Rows"]["Row"], "NetIncome")[0])
    assert abs(net - _expected_net(emu, api.realm)) < 0.01 and net != 0


async def test_profit_and_loss_by_day_as_tap_quickbooks_reads_it(emu: Emulator, api: Api) -> None:
    today = emu.clock.now().date()
    start = today - timedelta(days=6)
    params = {"start_date": start.isoformat(), "end_date": today.isoformat()}
    report = (await api.get("/reports/ProfitAndLoss", summarize_column_by="Days", **params)).json
    columns = report["Columns"]["Column"]
    dates = [m["Value"] for c in columns for m in c["MetaData"] if m["Name"] == "StartDate"]
    assert len(dates) == 7 and len(columns) == 9  # account + 7 days + total
    per_day = _summary(report["Rows"]["Row"], "NetIncome")
    assert len(per_day) == 8
    assert abs(sum(map(float, per_day[:-1])) - float(per_day[-1])) < 0.05


async def test_balance_sheet_balances(api: Api) -> None:
    reply = await api.get("/reports/BalanceSheet")
    assert reply.status == 200, reply.text
    rows = reply.json["Rows"]["Row"]
    assets = float(_summary(rows, "TotalAssets")[0])
    both = float(_summary(rows, "TotalLiabilitiesAndEquity")[0])
    assert abs(assets - both) < 0.01
    unknown = await api.get("/reports/NoSuchReport")
    assert unknown.status == 400
