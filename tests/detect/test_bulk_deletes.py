"""Issue 10, finding 2: a bulk hard delete beyond CDC's 1000-object cap, in `now` mode.

The emulator keeps QBO's cap (1000 objects per CDC answer, truncated silently), so a bulk
delete of 1,100 pre-existing invoices cannot be read from tombstones: only the set difference
of a full listing against a snapshot that knows every id of the baseline can find them all.
"""

from __future__ import annotations

from collections import Counter

from tests.detect.harness import Env, add_instance, cursor_row, events

BULK = 1100  # more than one CDC answer can hold


async def deleted_ids(env: Env, iid: int) -> list[str]:
    return [e.object_id for e in await events(env.pool, iid) if e.event_type == "DELETED"]


async def test_bulk_delete_of_1100_pre_baseline_invoices_emits_1100_deleted(env: Env) -> None:
    emu = env.emu
    # Seeded invoices are dated over the past 60 days: all created before the baseline.
    realm = emu.add_realm(seed=21, per_entity={"Invoice": BULK})
    iid = await add_instance(env.pool, emu, realm, resources=["invoices"])
    async with env.driver(iid) as d:
        emu.reset_counters()
        await d.cycle()  # first start: the baseline, and the ids that exist at it
        first_start_requests = env.qbo_requests(realm)
        assert await events(env.pool, iid) == []  # `now` mode: existing data is silent
        doomed = emu.ids(realm, "Invoice")
        assert len(doomed) == BULK
        for invoice_id in doomed:
            emu.delete(realm, "Invoice", invoice_id)
        emu.reset_counters()
        await d.cycle()  # CDC at the cap → listing → set difference
        cap_requests = env.qbo_requests(realm)
        await d.cycle()  # the overlap re-reads the window: nothing twice
        await d.cycle()
    gone = await deleted_ids(env, iid)
    assert len(gone) == BULK
    assert Counter(gone) == Counter(doomed)  # every one, none twice
    assert all(e.version == "deleted" for e in await events(env.pool, iid))
    # The cost: two listing pages at the first start; one CDC + two pages at the cap.
    assert first_start_requests <= 2
    assert cap_requests <= 3


async def test_bulk_delete_below_the_cap_comes_from_tombstones(env: Env) -> None:
    emu = env.emu
    realm = emu.add_realm(seed=22, per_entity={"Invoice": 900})
    iid = await add_instance(env.pool, emu, realm, resources=["invoices"])
    async with env.driver(iid) as d:
        await d.cycle()
        doomed = emu.ids(realm, "Invoice")
        for invoice_id in doomed:
            emu.delete(realm, "Invoice", invoice_id)
        emu.reset_counters()
        await d.cycle()
        assert emu.counters(realm).get("query", 0) == 0  # tombstones suffice: no listing
        await d.cycle()
    assert Counter(await deleted_ids(env, iid)) == Counter(doomed)


async def test_pair_started_before_the_fix_learns_its_ids_then_finds_a_bulk_delete(
    env: Env,
) -> None:
    """A `now` pair initialized by the old code knew only what changed after its baseline
    (no full listing ever, `last_reconciled_at` NULL): its next cycle lists once, merged with
    the CDC answer of that window, and from then on a bulk delete is found in full."""
    emu = env.emu
    realm = emu.add_realm(seed=23, per_entity={"Invoice": BULK})
    iid = await add_instance(env.pool, emu, realm, resources=["invoices"])
    async with env.driver(iid) as d:
        await d.cycle()
    # What the old first poll left: a baseline, no snapshot of the existing invoices.
    await env.pool.execute("DELETE FROM object_snapshots WHERE instance_id = $1", iid)
    await env.pool.execute(
        "UPDATE pair_cursors SET last_reconciled_at = NULL WHERE instance_id = $1", iid
    )
    existing = emu.ids(realm, "Invoice")
    early = existing[:3]  # deleted in the window of the learning cycle: CDC tombstones
    for invoice_id in early:
        emu.delete(realm, "Invoice", invoice_id)
    async with env.driver(iid) as d:
        emu.reset_counters()
        await d.cycle()  # CDC + one listing, merged
        counts = emu.counters(realm)
        assert counts.get("cdc", 0) == 1 and counts.get("query", 0) == 2
        assert (await cursor_row(env.pool, iid, "invoices"))["last_reconciled_at"] is not None
        emu.reset_counters()
        await d.cycle()  # learned: plain CDC again
        assert emu.counters(realm).get("query", 0) == 0
        rest = existing[3:]
        for invoice_id in rest:
            emu.delete(realm, "Invoice", invoice_id)
        await d.cycle()
        await d.cycle()
    assert Counter(await deleted_ids(env, iid)) == Counter(existing)
