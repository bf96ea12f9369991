"""The batch endpoint (reference §2.3, §2.3.1)."""

from __future__ import annotations

from qbo_emulator import Emulator

from .conftest import Api, fault_of, present


async def test_query_and_cdc_items(emu: Emulator, api: Api) -> None:
    since = emu.clock.now().isoformat()
    customer = emu.create(api.realm, "Customer", {"DisplayName": "Batch Person"})
    reply = await api.batch(
        [
            {"bId": "1", "Query": "select * from TaxCode"},
            {"bId": "2", "CDCQuery": {"Entities": "customer,Invoice", "ChangedSince": since}},
            {"bId": "3", "Query": "select count(*) from Customer"},
        ]
    )
    assert reply.status == 200
    body = reply.json
    assert list(body) == ["BatchItemResponse", "time"]
    first, second, third = body["BatchItemResponse"]
    assert list(first) == ["QueryResponse", "bId"] and first["bId"] == "1"  # bId after the payload
    assert len(first["QueryResponse"]["TaxCode"]) == 8
    assert list(second) == ["CDCResponse", "bId"]
    (cdc,) = second["CDCResponse"]
    (group,) = cdc["QueryResponse"]
    assert [c["Id"] for c in group["Customer"]] == [customer["Id"]]
    assert third["QueryResponse"] == {"totalCount": 9}
    counts = emu.counters(api.realm)
    assert counts["batch"] == 1 and counts["batch_query"] == 2 and counts["batch_cdc"] == 1
    assert counts["total"] == 1  # one metered call


async def test_realm_can_refuse_cdc_items(emu: Emulator, api: Api) -> None:
    emu.set_cdc_in_batch(api.realm, False)
    reply = await api.batch(
        [
            {"bId": "q", "Query": "select * from TaxRate"},
            {
                "bId": "c",
                "CDCQuery": {"Entities": "Customer", "ChangedSince": emu.clock.now().isoformat()},
            },
        ]
    )
    assert reply.status == 200
    query_item, cdc_item = reply.json["BatchItemResponse"]
    assert "QueryResponse" in query_item
    assert list(cdc_item) == ["Fault", "bId"] and cdc_item["Fault"]["type"] == "ValidationFault"
    assert cdc_item["Fault"]["Error"][0]["code"]
    # ... while /cdc still works, so a client can fall back.
    assert (await api.cdc("Customer", emu.clock.now().isoformat())).status == 200
    emu.set_cdc_in_batch(api.realm, True)
    again = await api.batch(
        [
            {
                "bId": "c",
                "CDCQuery": {"Entities": "Customer", "ChangedSince": emu.clock.now().isoformat()},
            }
        ]
    )
    assert "CDCResponse" in again.json["BatchItemResponse"][0]


async def test_object_shape_option_for_cdc_items(emu: Emulator, api: Api) -> None:
    emu.batch_cdc_shape = "object"
    reply = await api.batch(
        [
            {
                "bId": "c",
                "CDCQuery": {"Entities": "Customer", "ChangedSince": emu.clock.now().isoformat()},
            }
        ]
    )
    assert reply.json["BatchItemResponse"][0]["CDCResponse"] == {"QueryResponse": [{}]}


async def test_more_than_30_items_is_a_fault(api: Api) -> None:
    items = [{"bId": str(i), "Query": "select * from Term"} for i in range(31)]
    reply = await api.batch(items)
    assert reply.status == 400 and fault_of(reply)["code"]
    assert (await api.batch(items[:30])).status == 200


async def test_item_faults_and_writes(emu: Emulator, api: Api) -> None:
    invoice_id = emu.ids(api.realm, "Invoice")[0]
    invoice = present(emu.get(api.realm, "Invoice", invoice_id))
    receipt = present(emu.get(api.realm, "SalesReceipt", emu.ids(api.realm, "SalesReceipt")[0]))
    reply = await api.batch(
        [
            {
                "bId": "bid1",
                "operation": "create",
                "Vendor": {"DisplayName": "Boraski Family Store"},
            },
            {
                "bId": "bid2",
                "operation": "delete",
                "Invoice": {"Id": invoice_id, "SyncToken": invoice["SyncToken"]},
            },
            {
                "bId": "bid3",
                "operation": "update",
                "SalesReceipt": {
                    "Id": receipt["Id"],
                    "SyncToken": "999",
                    "sparse": True,
                    "PrivateNote": "x",
                },
            },
            {
                "bId": "bid4",
                "operation": "delete",
                "Invoice": {"Id": invoice_id, "SyncToken": invoice["SyncToken"]},
            },
            {"bId": "bid5", "Query": "select * from Nothing"},
        ]
    )
    assert reply.status == 200
    created, deleted, stale, gone, bad_query = reply.json["BatchItemResponse"]
    assert (
        created["Vendor"]["DisplayName"] == "Boraski Family Store"
        and created["Vendor"]["SyncToken"] == "0"
    )
    assert deleted["Invoice"] == {"domain": "QBO", "status": "Deleted", "Id": invoice_id}
    assert stale["Fault"]["Error"][0]["code"] == "5010"
    assert gone["Fault"]["Error"][0]["code"] == "610"
    assert bad_query["Fault"]["Error"][0]["code"] == "4001"
    assert [i["bId"] for i in reply.json["BatchItemResponse"]] == [
        "bid1",
        "bid2",
        "bid3",
        "bid4",
        "bid5",
    ]
