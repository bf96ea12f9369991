"""Field-level changes (DESIGN §12) end to end: emulator → real client → feed → diff →
comparison → outbox. Each edit a QuickBooks user makes gives exactly the expected `changes`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from poller.qbo.parse import loads_verbatim
from poller.records import Event, EventType, SnapshotRow
from poller.store import outbox
from tests.detect.harness import Env, add_instance

LINE = "SalesItemLineDetail"


def item_line(amount: float, item: str = "1", line_id: str | None = None) -> dict[str, Any]:
    line: dict[str, Any] = {
        "Amount": amount,
        "DetailType": LINE,
        LINE: {"ItemRef": {"value": item}},
    }
    if line_id is not None:
        line["Id"] = line_id
    return line


async def changes_of(env: Env, resource: str, object_id: str, version: str) -> str | None:
    """events.changes as stored (text; None: SQL NULL, the event has no `changes` key)."""
    return await env.pool.fetchval(
        "SELECT changes::text FROM events WHERE resource = $1 AND object_id = $2 AND version = $3",
        resource,
        object_id,
        version,
    )


async def changes_list(env: Env, resource: str, object_id: str, version: str) -> Any:
    text = await changes_of(env, resource, object_id, version)
    assert text is not None, "the UPDATED event has no changes"
    return orjson.loads(text)


def touch(env: Env, realm: str, entity: str, object_id: str) -> None:
    """An edit that lets the poller see the object in full (in `now` mode the first poll lists
    nothing, so existing objects are known in full only from their next change on)."""
    field = "PrivateNote" if entity == "Invoice" else "Notes"
    env.emu.update(realm, entity, {"Id": object_id, field: "seen"})


async def test_address_change(env: Env) -> None:
    emu = env.emu
    realm = emu.add_realm(seed=21, per_entity=2)
    iid = await add_instance(env.pool, emu, realm, resources=["customers"], changes=True)
    cid = emu.ids(realm, "Customer", include_inactive=False)[0]
    before = emu.get(realm, "Customer", cid)
    async with env.driver(iid) as d:
        await d.cycle()  # the baseline
        touch(env, realm, "Customer", cid)
        await d.cycle()
        address = dict(before["BillAddr"], City="Half Moon Bay")
        upd = emu.update(realm, "Customer", {"Id": cid, "BillAddr": address})
        await d.cycle()
    assert await changes_list(env, "customers", cid, upd["SyncToken"]) == [
        {"path": "/BillAddr/City", "old": before["BillAddr"]["City"], "new": "Half Moon Bay"}
    ]


async def test_line_amount_change_keeps_quickbooks_literals(env: Env) -> None:
    emu = env.emu
    realm = emu.add_realm(seed=22, per_entity=1)
    iid = await add_instance(env.pool, emu, realm, resources=["invoices"], changes=True)
    async with env.driver(iid) as d:
        await d.cycle()
        inv = emu.create(
            realm,
            "Invoice",
            {"CustomerRef": {"value": "1"}, "Line": [item_line(10), item_line(20, "2")]},
        )
        await d.cycle()
        lines = [dict(line) for line in emu.get(realm, "Invoice", inv["Id"])["Line"]]
        lines[1]["Amount"] = 12.5
        upd = emu.update(realm, "Invoice", {"Id": inv["Id"], "Line": lines})
        await d.cycle()
    assert await changes_of(env, "invoices", inv["Id"], "0") is None  # CREATED: no key
    got = await changes_list(env, "invoices", inv["Id"], upd["SyncToken"])
    assert got == [
        {"path": "/Line/1/Amount", "old": 20, "new": 12.5},
        {"path": "/Line/2/Amount", "old": 30, "new": 22.5},  # the subtotal line
        {"path": "/TotalAmt", "old": 30, "new": 22.5},
        {"path": "/Balance", "old": 30, "new": 22.5},
    ]
    text = await changes_of(env, "invoices", inv["Id"], upd["SyncToken"])
    assert text is not None
    # QuickBooks writes money with two decimals; the changes carry those literals as written.
    assert '"new":12.50' in text and '"old":20.00' in text, text


async def test_line_inserted_then_line_removed(env: Env) -> None:
    emu = env.emu
    realm = emu.add_realm(seed=23, per_entity=1)
    iid = await add_instance(env.pool, emu, realm, resources=["invoices"], changes=True)
    lines_in = [item_line(10), item_line(20, "2"), item_line(30, "3")]
    inv = emu.create(realm, "Invoice", {"CustomerRef": {"value": "1"}, "Line": lines_in})
    async with env.driver(iid) as d:
        await d.cycle()
        touch(env, realm, "Invoice", inv["Id"])
        await d.cycle()
        lines = [dict(line) for line in emu.get(realm, "Invoice", inv["Id"])["Line"]]
        inserted = emu.update(
            realm,
            "Invoice",
            {"Id": inv["Id"], "Line": [lines[0], item_line(5, "2"), *lines[1:]]},
        )
        await d.cycle()
        after_insert = emu.get(realm, "Invoice", inv["Id"])
        kept = [line for line in after_insert["Line"] if line.get("Id") != "2"]
        removed = emu.update(realm, "Invoice", {"Id": inv["Id"], "Line": kept})
        await d.cycle()
    new_line = after_insert["Line"][1]
    assert new_line["Id"] == "4" and new_line["LineNum"] == 2  # QBO numbers lines 1..n
    assert await changes_list(env, "invoices", inv["Id"], inserted["SyncToken"]) == [
        {"path": "/Line/1", "new": orjson.loads(orjson.dumps(new_line))},  # one added line
        {"path": "/Line/2/LineNum", "old": 2, "new": 3},  # QBO renumbers the lines below it
        {"path": "/Line/3/LineNum", "old": 3, "new": 4},
        {"path": "/Line/4/Amount", "old": 60, "new": 65},  # the subtotal line
        {"path": "/TotalAmt", "old": 60, "new": 65},
        {"path": "/Balance", "old": 60, "new": 65},
    ]
    gone = after_insert["Line"][2]
    assert gone["Id"] == "2"
    assert await changes_list(env, "invoices", inv["Id"], removed["SyncToken"]) == [
        {"path": "/Line/2", "old": orjson.loads(orjson.dumps(gone))},  # its place in the old
        {"path": "/Line/2/LineNum", "old": 4, "new": 3},  # line 3, now at index 2
        {"path": "/Line/3/Amount", "old": 65, "new": 45},
        {"path": "/TotalAmt", "old": 65, "new": 45},
        {"path": "/Balance", "old": 65, "new": 45},
    ]


async def test_custom_field_change(env: Env) -> None:
    emu = env.emu
    realm = emu.add_realm(seed=24, per_entity=2)
    iid = await add_instance(env.pool, emu, realm, resources=["invoices"], changes=True)
    inv_id = emu.ids(realm, "Invoice")[0]
    async with env.driver(iid) as d:
        await d.cycle()
        touch(env, realm, "Invoice", inv_id)
        await d.cycle()
        crew = [{"DefinitionId": "1", "Name": "Crew #", "Type": "StringType", "StringValue": "7"}]
        first = emu.update(realm, "Invoice", {"Id": inv_id, "CustomField": crew})
        await d.cycle()
        crew[0]["StringValue"] = "12"
        second = emu.update(realm, "Invoice", {"Id": inv_id, "CustomField": crew})
        await d.cycle()
    assert await changes_list(env, "invoices", inv_id, first["SyncToken"]) == [
        {"path": "/CustomField/0/StringValue", "new": "7"}  # an added key: no `old`
    ]
    assert await changes_list(env, "invoices", inv_id, second["SyncToken"]) == [
        {"path": "/CustomField/0/StringValue", "old": "7", "new": "12"}
    ]


async def test_deactivation(env: Env) -> None:
    emu = env.emu
    realm = emu.add_realm(seed=25, per_entity=2)
    iid = await add_instance(env.pool, emu, realm, resources=["customers"], changes=True)
    cid = emu.ids(realm, "Customer", include_inactive=False)[0]
    name = emu.get(realm, "Customer", cid)["DisplayName"]
    async with env.driver(iid) as d:
        await d.cycle()
        touch(env, realm, "Customer", cid)
        await d.cycle()
        off = emu.deactivate(realm, "Customer", cid)
        await d.cycle()
    # QuickBooks marks a deactivated name "(deleted)": part of the change, so reported.
    got = await changes_list(env, "customers", cid, off["SyncToken"])
    assert sorted(got, key=lambda c: c["path"]) == [
        {"path": "/Active", "old": True, "new": False},
        {"path": "/DisplayName", "old": name, "new": f"{name} (deleted)"},
        {"path": "/FullyQualifiedName", "old": name, "new": f"{name} (deleted)"},
    ]
    assert len(got) == 3


async def test_without_the_option_no_objects_are_kept_and_events_have_no_changes(
    env: Env,
) -> None:
    emu = env.emu
    realm = emu.add_realm(seed=26, per_entity=3)
    plain = await add_instance(env.pool, emu, realm, name="plain", resources=["customers"])
    cid = emu.ids(realm, "Customer", include_inactive=False)[0]
    async with env.driver(plain) as d:
        await d.cycle()
        emu.update(realm, "Customer", {"Id": cid, "CompanyName": "Renamed"})
        emu.create(realm, "Customer", {"DisplayName": "Someone New"})
        await d.cycle()
    counts = await env.pool.fetchrow(
        "SELECT count(*) AS rows, count(object) AS objects FROM object_snapshots "
        "WHERE instance_id = $1",
        plain,
    )
    assert counts["rows"] == 2 and counts["objects"] == 0
    rows = await env.pool.fetch(
        "SELECT event_type, changes FROM events WHERE instance_id = $1", plain
    )
    assert sorted(r["event_type"] for r in rows) == ["CREATED", "UPDATED"]
    assert all(r["changes"] is None for r in rows)


async def test_first_update_after_enabling_is_null_and_turning_off_frees_the_objects(
    env: Env,
) -> None:
    emu = env.emu
    realm = emu.add_realm(seed=27, per_entity=2)
    iid = await add_instance(env.pool, emu, realm, name="toggled", resources=["customers"])
    cid = emu.ids(realm, "Customer", include_inactive=False)[0]

    async def set_changes(on: bool) -> None:  # the same instance, reloaded with the option
        await add_instance(
            env.pool, emu, realm, name="toggled", resources=["customers"], changes=on
        )

    async def objects() -> int:
        return int(
            await env.pool.fetchval(
                "SELECT count(object) FROM object_snapshots WHERE instance_id = $1", iid
            )
        )

    async with env.driver(iid) as d:
        await d.cycle()
        plain = emu.update(realm, "Customer", {"Id": cid, "CompanyName": "One"})
        await d.cycle()
    assert await objects() == 0
    await set_changes(True)
    async with env.driver(iid) as d:
        first = emu.update(realm, "Customer", {"Id": cid, "CompanyName": "Two"})
        await d.cycle()
        second = emu.update(realm, "Customer", {"Id": cid, "CompanyName": "Three"})
        await d.cycle()
    assert await changes_of(env, "customers", cid, plain["SyncToken"]) is None  # no key
    assert await changes_of(env, "customers", cid, first["SyncToken"]) == "null"  # not known
    assert await changes_list(env, "customers", cid, second["SyncToken"]) == [
        {"path": "/CompanyName", "old": "Two", "new": "Three"}
    ]
    assert await objects() == 1
    await set_changes(False)
    assert await objects() == 0  # turning the option off frees what it kept


async def test_created_and_deleted_events_have_no_changes_key(env: Env) -> None:
    emu = env.emu
    realm = emu.add_realm(seed=28, per_entity=2)
    iid = await add_instance(env.pool, emu, realm, resources=["invoices"], changes=True)
    async with env.driver(iid) as d:
        await d.cycle()
        inv = emu.create(realm, "Invoice", {"CustomerRef": {"value": "1"}, "Line": [item_line(7)]})
        await d.cycle()
        emu.delete(realm, "Invoice", inv["Id"])
        await d.cycle()
    rows = await env.pool.fetch(
        "SELECT event_type, changes FROM events WHERE object_id = $1 ORDER BY id", inv["Id"]
    )
    assert [(r["event_type"], r["changes"]) for r in rows] == [
        ("CREATED", None),
        ("DELETED", None),
    ]
    kept = await env.pool.fetchval(
        "SELECT object FROM object_snapshots WHERE instance_id = $1 AND object_id = $2",
        iid,
        inv["Id"],
    )
    assert kept is None  # a deleted object keeps nothing


async def test_objects_are_kept_only_while_the_instance_asks_for_them(env: Env) -> None:
    """The write keeps objects and changes only while the instance row, as committed, has the
    option: a cycle that began before it was turned off neither stores objects again after they
    were freed nor gives its events `changes`. What is kept comes back as the same JSON text
    (literals as written)."""
    emu = env.emu
    realm = emu.add_realm(seed=29)
    iid = await add_instance(env.pool, emu, realm, resources=["customers"], changes=False)
    obj = loads_verbatim(b'{"Id":"5","SyncToken":"3","Balance":12.50,"Name":"Caf\\u00e9"}')
    at = datetime(2026, 11, 24, tzinfo=UTC)
    row = SnapshotRow("5", "3", at)
    change = [{"path": "/Balance", "old": 0, "new": obj["Balance"]}]

    def write(version: str) -> outbox.PairWrite:  # as a cycle with the option on writes
        event = Event("5", version, EventType.UPDATED, at, obj, change)
        return outbox.PairWrite("customers", [row], [event], {"5": obj})

    stored = "SELECT changes::text FROM events WHERE version = $1"
    async with env.pool.acquire() as conn:
        await outbox.write(conn, iid, [write("3")], 10)
        assert await outbox.load_objects(conn, iid, {"customers": ["5"]}) == {"customers": {}}
        assert await conn.fetchval(stored, "3") is None  # the option is off: no `changes`
        await conn.execute("UPDATE instances SET changes = true WHERE id = $1", iid)
        await outbox.write(conn, iid, [write("4")], 10)
        assert await conn.fetchval(stored, "4") == '[{"path":"/Balance","old":0,"new":12.50}]'
        kept = await outbox.load_objects(conn, iid, {"customers": ["5"]})
    assert kept == {"customers": {"5": '{"Id":"5","SyncToken":"3","Balance":12.50,"Name":"Café"}'}}
    async with env.pool.acquire() as conn:  # a damaged copy reads as none kept
        await conn.execute("UPDATE object_snapshots SET object = '\\x0102'::bytea")
        assert await outbox.load_objects(conn, iid, {"customers": ["5"]}) == {"customers": {}}
