"""DESIGN §5, rule by rule, end to end: emulator → real client → feed → diff → outbox."""

from __future__ import annotations

import orjson

from poller import resources
from tests.detect.harness import Env, Ev, add_instance, cursor_row, events

INVOICE = {
    "CustomerRef": {"value": "1"},
    "Line": [
        {
            "Amount": 10,
            "DetailType": "SalesItemLineDetail",
            "SalesItemLineDetail": {"ItemRef": {"value": "1"}},
        }
    ],
}


def ev(res: str, oid: str, version: str, kind: str) -> Ev:
    return Ev(res, oid, version, kind)


async def test_now_mode_then_created_updated_deleted_without_duplicates(env: Env) -> None:
    emu = env.emu
    realm = emu.add_realm(seed=1, per_entity=3)
    iid = await add_instance(env.pool, emu, realm, resources=["customers", "invoices"])
    async with env.driver(iid) as d:
        await d.cycle()
        assert await events(env.pool) == []  # existing data: nothing
        baseline = (await cursor_row(env.pool, iid, "customers"))["baseline"]
        new = emu.create(realm, "Customer", {"DisplayName": "Brand New"})
        inv_ids = emu.ids(realm, "Invoice")
        upd = emu.update(realm, "Invoice", {"Id": inv_ids[0], "PrivateNote": "edited"})
        emu.delete(realm, "Invoice", inv_ids[1])
        await d.cycle()
        await d.cycle()  # overlap: re-read, no duplicates
    got = await events(env.pool)
    assert sorted(got, key=str) == sorted(
        [
            ev("customers", new["Id"], "0", "CREATED"),
            ev("invoices", inv_ids[0], upd["SyncToken"], "UPDATED"),
            ev("invoices", inv_ids[1], "deleted", "DELETED"),
        ],
        key=str,
    )
    raw = await env.pool.fetchval(
        "SELECT raw::text FROM events WHERE object_id = $1 AND resource = 'customers'", new["Id"]
    )
    assert orjson.loads(raw) == emu.get(realm, "Customer", new["Id"])
    assert (await cursor_row(env.pool, iid, "customers"))["baseline"] == baseline


async def test_tombstone_older_than_baseline_is_ignored_newer_never_seen_is_deleted(
    env: Env,
) -> None:
    emu = env.emu
    realm = emu.add_realm(seed=2, per_entity=2)
    emu.clock.freeze()
    doomed = emu.create(realm, "Invoice", INVOICE)
    emu.delete(realm, "Invoice", doomed["Id"])  # before we start watching
    emu.clock.advance(2)
    iid = await add_instance(env.pool, emu, realm, resources=["invoices"])
    async with env.driver(iid) as d:  # overlap 5 s covers the tombstone
        await d.cycle()
        emu.clock.advance(1)
        await d.cycle()
        assert await events(env.pool) == []
        old_unseen = emu.ids(realm, "Invoice")[0]  # exists, never seen by us
        emu.clock.advance(1)
        emu.delete(realm, "Invoice", old_unseen)
        emu.clock.advance(1)
        await d.cycle()
    assert await events(env.pool) == [ev("invoices", old_unseen, "deleted", "DELETED")]


async def test_unseen_existing_object_updated_after_baseline_is_updated(env: Env) -> None:
    emu = env.emu
    realm = emu.add_realm(seed=3, per_entity=2)
    iid = await add_instance(env.pool, emu, realm, resources=["vendors"])
    async with env.driver(iid) as d:
        await d.cycle()
        vid = emu.ids(realm, "Vendor")[0]
        upd = emu.update(realm, "Vendor", {"Id": vid, "CompanyName": "Renamed Ltd"})
        await d.cycle()
    assert await events(env.pool) == [ev("vendors", vid, upd["SyncToken"], "UPDATED")]


async def test_deactivation_is_updated_by_default(env: Env) -> None:
    emu = env.emu
    realm = emu.add_realm(seed=4, per_entity=2)
    iid = await add_instance(env.pool, emu, realm, resources=["customers", "products"])
    async with env.driver(iid) as d:
        await d.cycle()
        cid = emu.ids(realm, "Customer", include_inactive=False)[0]
        off = emu.deactivate(realm, "Customer", cid)
        await d.cycle()
        on = emu.reactivate(realm, "Customer", cid)
        await d.cycle()
    assert await events(env.pool) == [
        ev("customers", cid, off["SyncToken"], "UPDATED"),
        ev("customers", cid, on["SyncToken"], "UPDATED"),
    ]


async def test_deactivation_is_deleted_when_the_instance_says_so(env: Env) -> None:
    emu = env.emu
    realm = emu.add_realm(seed=5, per_entity=2)
    iid = await add_instance(
        env.pool, emu, realm, resources=["customers"], deactivated_as_deleted=True
    )
    async with env.driver(iid) as d:
        await d.cycle()
        cid = emu.ids(realm, "Customer", include_inactive=False)[0]
        off = emu.delete(realm, "Customer", cid)  # a name list's delete: Active=false
        await d.cycle()
    assert await events(env.pool) == [ev("customers", cid, off["SyncToken"], "DELETED")]
    raw = orjson.loads(await env.pool.fetchval("SELECT raw::text FROM events"))
    assert raw["Active"] is False


async def test_void_is_an_update(env: Env) -> None:
    emu = env.emu
    realm = emu.add_realm(seed=6, per_entity=2)
    iid = await add_instance(env.pool, emu, realm, resources=["payments", "invoices"])
    async with env.driver(iid) as d:
        await d.cycle()
        pid = emu.ids(realm, "Payment")[0]
        voided = emu.void(realm, "Payment", pid)
        await d.cycle()
    assert await events(env.pool) == [ev("payments", pid, voided["SyncToken"], "UPDATED")]


async def test_restart_resumes_from_stored_watermark_never_a_new_baseline(env: Env) -> None:
    emu = env.emu
    realm = emu.add_realm(seed=7, per_entity=2)
    iid = await add_instance(env.pool, emu, realm, resources=["customers", "tax-rates"])
    async with env.driver(iid) as d:
        await d.cycle()
    before = await cursor_row(env.pool, iid, "customers")
    # Changes while the daemon is down.
    c = emu.create(realm, "Customer", {"DisplayName": "While Down"})
    r = emu.create(realm, "TaxRate", {"Name": "Down Rate", "RateValue": 7})
    async with env.driver(iid) as d:  # a new process, same database
        await d.cycle()
    after = await cursor_row(env.pool, iid, "customers")
    assert after["baseline"] == before["baseline"] and after["watermark"] > before["watermark"]
    assert sorted(await events(env.pool), key=str) == sorted(
        [ev("customers", c["Id"], "0", "CREATED"), ev("tax-rates", r["Id"], "0", "CREATED")],
        key=str,
    )


async def test_backfill_creates_every_existing_object(env: Env) -> None:
    emu = env.emu
    realm = emu.add_realm(seed=8, per_entity=4)
    iid = await add_instance(
        env.pool, emu, realm, resources=["customers", "invoices", "tax-codes"], initial="backfill"
    )
    async with env.driver(iid) as d:
        await d.cycle()
        await d.cycle()
    got = await events(env.pool)
    assert all(e.event_type == "CREATED" for e in got)
    for res, entity in (
        ("customers", "Customer"),
        ("invoices", "Invoice"),
        ("tax-codes", "TaxCode"),
    ):
        assert sorted(e.object_id for e in got if e.resource == res) == sorted(
            emu.ids(realm, entity)
        )


async def test_tax_lists_by_query_including_inactive_rows(env: Env) -> None:
    emu = env.emu
    realm = emu.add_realm(seed=9, per_entity=2)
    iid = await add_instance(env.pool, emu, realm, resources=["tax-codes", "tax-rates"])
    async with env.driver(iid) as d:
        await d.cycle()
        rate = emu.create(realm, "TaxRate", {"Name": "City Tax", "RateValue": 2})
        code = emu.ids(realm, "TaxCode")[0]
        off = emu.deactivate(realm, "TaxCode", code)  # hidden unless Active IN (true,false)
        await d.cycle()
    assert sorted(await events(env.pool), key=str) == sorted(
        [
            ev("tax-rates", rate["Id"], "0", "CREATED"),
            ev("tax-codes", code, off["SyncToken"], "UPDATED"),
        ],
        key=str,
    )


async def test_time_activity_hard_delete_found_by_periodic_relisting(env: Env) -> None:
    emu = env.emu
    realm = emu.add_realm(seed=10, per_entity=3)
    iid = await add_instance(env.pool, emu, realm, resources=["time-activities"])
    settings = env.settings(reconcile_interval_s=0.3)
    async with env.driver(iid, settings) as d:
        await d.cycle()  # silent listing: ids now known
        gone = emu.ids(realm, "TimeActivity")[0]
        emu.delete(realm, "TimeActivity", gone)
        added = emu.create(
            realm,
            "TimeActivity",
            {"NameOf": "Employee", "EmployeeRef": {"value": "1"}, "Hours": 1, "Minutes": 30},
        )
        await d.cycle()  # incremental query: the new one
        assert await events(env.pool) == [ev("time-activities", added["Id"], "0", "CREATED")]
        import asyncio

        await asyncio.sleep(0.35)
        await d.cycle()  # re-listing: set difference
    got = await events(env.pool)
    assert got[-1] == ev("time-activities", gone, "deleted", "DELETED")
    raw = orjson.loads(
        await env.pool.fetchval("SELECT raw::text FROM events WHERE version = 'deleted'")
    )
    assert set(raw) == {"domain", "status", "Id", "MetaData"} and raw["status"] == "Deleted"


async def test_watermark_beyond_30_days_reconciles_by_query_then_back_to_cdc(env: Env) -> None:
    emu = env.emu
    realm = emu.add_realm(seed=11, per_entity=3)
    iid = await add_instance(env.pool, emu, realm, resources=["customers", "invoices"])
    async with env.driver(iid) as d:
        await d.cycle()
        seen_inv, _ = emu.ids(realm, "Invoice")[:2]
        touched = emu.update(realm, "Invoice", {"Id": seen_inv, "PrivateNote": "seen"})
        await d.cycle()  # the snapshot knows seen_inv now
        emu.clock.advance(days=31)
        new = emu.create(realm, "Customer", {"DisplayName": "After A Month"})
        emu.delete(realm, "Invoice", seen_inv)
        emu.clock.advance(days=2)  # the changes are 2 days old too
        emu.reset_counters()
        await d.cycle()
        assert emu.counters(realm).get("query", 0) + emu.counters(realm).get("batch_query", 0) >= 1
        emu.reset_counters()
        again = emu.create(realm, "Customer", {"DisplayName": "Back On CDC"})
        await d.cycle()
        c = emu.counters(realm)
        assert c.get("cdc", 0) + c.get("batch_cdc", 0) == 1 and c.get("query", 0) == 0
    # Watermarks are QBO's clock (33 days ahead of ours here), never the local one.
    wm = (await cursor_row(env.pool, iid, "customers"))["watermark"]
    assert abs((wm - emu.clock.now()).total_seconds()) < 5
    got = await events(env.pool)
    assert got[0] == ev("invoices", seen_inv, touched["SyncToken"], "UPDATED")
    assert set(got[1:3]) == {
        ev("customers", new["Id"], "0", "CREATED"),  # found by listing
        ev("invoices", seen_inv, "deleted", "DELETED"),
    }  # missing → deleted
    assert got[3:] == [ev("customers", again["Id"], "0", "CREATED")]


async def test_cdc_cap_is_never_trusted(env: Env) -> None:
    async with __import__("qbo_emulator", fromlist=["run_emulator"]).run_emulator(
        cdc_max_objects=10
    ) as emu:
        env = Env(emu, env.pool, env.dsn)
        realm = emu.add_realm(seed=12, per_entity=2)
        iid = await add_instance(
            env.pool, emu, realm, resources=["customers", "vendors", "invoices"]
        )
        async with env.driver(iid, cdc_cap=10) as d:
            await d.cycle()
            old_inv = emu.ids(realm, "Invoice")[0]
            touched = emu.update(realm, "Invoice", {"Id": old_inv, "PrivateNote": "seen"})
            await d.cycle()  # old_inv is in the snapshot now
            made = [emu.create(realm, "Customer", {"DisplayName": f"Bulk {i}"}) for i in range(12)]
            vend = [emu.create(realm, "Vendor", {"DisplayName": f"Vend {i}"}) for i in range(3)]
            invs = [emu.create(realm, "Invoice", INVOICE) for i in range(11)]
            emu.delete(realm, "Invoice", old_inv)
            await d.cycle()
            # A truncated window hides tombstones; the invoices fall back to a full listing,
            # whose set difference finds the delete of an object we had seen.
        got = await events(env.pool)
        expected = (
            [ev("invoices", old_inv, touched["SyncToken"], "UPDATED")]
            + [ev("customers", m["Id"], "0", "CREATED") for m in made]
            + [ev("vendors", v["Id"], "0", "CREATED") for v in vend]
            + [ev("invoices", i["Id"], "0", "CREATED") for i in invs]
            + [ev("invoices", old_inv, "deleted", "DELETED")]
        )
        assert sorted(got, key=str) == sorted(expected, key=str)


async def test_requests_per_cycle_with_all_22_resources(env: Env) -> None:
    emu = env.emu
    realm = emu.add_realm(seed=13, per_entity=1)
    iid = await add_instance(env.pool, emu, realm)  # all 22 by default
    assert len(resources.DEFAULT_NAMES) == 22
    async with env.driver(iid) as d:
        await d.cycle()  # first start (listing of TimeActivity)
        for _ in range(3):
            before = env.qbo_requests(realm)
            await d.cycle()
            assert env.qbo_requests(realm) - before == 1  # one /batch with CDCQuery + queries
        assert emu.counters(realm)["batch_cdc"] >= 3
        emu.set_cdc_in_batch(realm, False)
        before = env.qbo_requests(realm)
        await d.cycle()  # refused → /cdc in the same cycle
        assert env.qbo_requests(realm) - before == 2
        for _ in range(3):
            before = env.qbo_requests(realm)
            await d.cycle()
            assert env.qbo_requests(realm) - before == 2  # remembered: /cdc + /batch


async def test_query_paging_against_qbo_with_many_rows_in_one_second(env: Env) -> None:
    emu = env.emu
    realm = emu.add_realm(seed=14, per_entity=1)
    iid = await add_instance(env.pool, emu, realm, resources=["tax-rates"])
    emu.clock.freeze()
    async with env.driver(iid, page_size=3) as d:
        await d.cycle()
        emu.clock.advance(1)
        made = [
            emu.create(realm, "TaxRate", {"Name": f"Paged {i}", "RateValue": i})["Id"]
            for i in range(8)
        ]  # 8 rows, one timestamp
        emu.clock.advance(1)
        made += [
            emu.create(realm, "TaxRate", {"Name": f"Later {i}", "RateValue": i})["Id"]
            for i in range(4)
        ]
        emu.reset_counters()
        await d.cycle()
        assert emu.counters(realm)["query"] >= 5  # 12 rows, 3 per page
    got = await events(env.pool)
    assert sorted(e.object_id for e in got) == sorted(made)
    assert all(e.event_type == "CREATED" for e in got)
