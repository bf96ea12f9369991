"""Issue 17: the overlap policy, the seen-versions cache and the paged cap path, against the
emulator (real client, real PostgreSQL).

- Most cycles reach back only the short overlap; every POLLER_OVERLAP_SECONDS / 2 a long pass
  reaches back the whole overlap before the watermark the previous long pass committed, so a
  change QBO exposes late (stamped before the watermark, visible only later) is still found.
- Versions already committed cost no snapshot read when re-read.
- 1000+ changed invoices in a big company are paged by LastUpdatedTime (a few requests), with
  a count that proves no delete was missed; a delete the cut CDC answer lacked is still found.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from tests.detect.harness import Env, add_instance, events

OVERLAP = 120  # the default POLLER_OVERLAP_SECONDS


async def test_a_change_exposed_late_within_the_overlap_is_found_by_the_long_pass(
    env: Env,
) -> None:
    emu = env.emu
    realm = emu.add_realm(seed=31, per_entity={"Customer": 3})
    iid = await add_instance(env.pool, emu, realm, resources=["customers"])
    settings = env.settings(overlap_seconds=OVERLAP)
    async with env.driver(iid, settings) as d:
        await d.cycle()  # baseline
        # QBO's clock moves on (evidence: a change stamped then, so the feed believes it).
        emu.clock.advance(90)
        emu.create(realm, "Customer", {"DisplayName": "Evidence 1"})
        await d.cycle()  # the first incremental pass of this feed: long
        t0 = emu.clock.now()
        # QBO commits a change stamped 30 s before the watermark (after the baseline), visible
        # only now: eventual consistency near the watermark.
        emu.clock.set(t0 - timedelta(seconds=30))
        late = emu.update(realm, "Customer", {"Id": emu.ids(realm, "Customer")[0], "Notes": "x"})
        emu.clock.set(t0 + timedelta(seconds=1))
        emu.reset_counters()
        await d.cycle()  # a short pass: reaches back 5 s, not 30
        assert [e.object_id for e in await events(env.pool, iid)] == [
            emu.ids(realm, "Customer")[-1]
        ]
        # QBO's clock moves on by the long-pass period.
        emu.clock.advance(OVERLAP // 2)
        emu.create(realm, "Customer", {"DisplayName": "Evidence 2"})
        await d.cycle()  # still short: the feed learns QBO's clock from this answer
        await d.cycle()  # long: reaches back the overlap before the last long pass
        await d.cycle()
        found = [e for e in await events(env.pool, iid) if e.object_id == late["Id"]]
        assert [(e.version, e.event_type) for e in found] == [(late["SyncToken"], "UPDATED")]
        assert emu.counters(realm).get("cdc", 0) == 4  # one request per cycle throughout


async def test_re_read_versions_cost_no_snapshot_read(env: Env) -> None:
    emu = env.emu
    realm = emu.add_realm(seed=32, per_entity={"Customer": 2})
    iid = await add_instance(env.pool, emu, realm, resources=["customers"])
    async with env.driver(iid, env.settings(overlap_seconds=OVERLAP)) as d:
        await d.cycle()
        emu.clock.advance(1)
        for n in range(50):
            emu.create(realm, "Customer", {"DisplayName": f"Burst {n}"})
        await d.cycle()  # 50 CREATED
        assert len(await events(env.pool, iid)) == 50
        skipped = d.feed.seen.skipped
        await d.cycle()  # re-reads the 50 (they are inside the overlap): all skipped
        await d.cycle()
        assert d.feed.seen.skipped - skipped == 100
        assert len(await events(env.pool, iid)) == 50
        emu.update(realm, "Customer", {"Id": emu.ids(realm, "Customer")[-1], "Notes": "again"})
        await d.cycle()  # a new version of one of them is not skipped
    kinds = Counter(e.event_type for e in await events(env.pool, iid))
    assert kinds == {"CREATED": 50, "UPDATED": 1}


async def big_company(env: Env, seed: int, invoices: int) -> tuple[str, int]:
    realm = env.emu.add_realm(seed=seed, per_entity={"Invoice": invoices})
    iid = await add_instance(env.pool, env.emu, realm, resources=["invoices"])
    return realm, iid


async def test_cap_path_pages_changed_invoices_instead_of_listing_the_company(env: Env) -> None:
    emu = env.emu
    realm, iid = await big_company(env, 33, 5000)
    async with env.driver(iid, env.settings(overlap_seconds=OVERLAP)) as d:
        await d.cycle()  # baseline: lists the 5,000 once (the snapshot learns every id)
        await d.cycle()
        emu.clock.advance(1)
        changed = emu.ids(realm, "Invoice")[:1200]
        for invoice_id in changed:
            emu.update(realm, "Invoice", {"Id": invoice_id, "PrivateNote": "bulk"})
        emu.reset_counters()
        await d.cycle()
        counts = emu.counters(realm)
        # The cut CDC, then two pages (1000 + 200) with the count beside the first: not the
        # five listing pages of the whole company.
        assert counts.get("cdc", 0) == 1
        assert counts.get("batch", 0) + counts.get("query", 0) <= 3
        assert counts.get("batch", 0) >= 1  # the count went with a page
    updated = [e.object_id for e in await events(env.pool, iid) if e.event_type == "UPDATED"]
    assert Counter(updated) == Counter(changed)


async def test_cap_path_finds_a_delete_the_cut_answer_lacked(env: Env) -> None:
    """1,100 invoices changed, then 5 deleted: the cut CDC answer holds the oldest 1000 live
    ones and no tombstone. The count disagrees with the snapshot, so the feed lists (and
    finds the 5 by set difference) instead of trusting the paging."""
    emu = env.emu
    realm, iid = await big_company(env, 34, 3000)
    async with env.driver(iid, env.settings(overlap_seconds=OVERLAP)) as d:
        await d.cycle()
        await d.cycle()
        emu.clock.advance(1)
        ids = emu.ids(realm, "Invoice")
        for invoice_id in ids[:1100]:
            emu.update(realm, "Invoice", {"Id": invoice_id, "PrivateNote": "bulk"})
        doomed = ids[2000:2005]
        for invoice_id in doomed:
            emu.delete(realm, "Invoice", invoice_id)
        emu.reset_counters()
        await d.cycle()
        assert emu.counters(realm).get("query", 0) + emu.counters(realm).get("batch", 0) >= 4
        await d.cycle()
    evs = await events(env.pool, iid)
    assert Counter(e.object_id for e in evs if e.event_type == "DELETED") == Counter(doomed)
    assert Counter(e.object_id for e in evs if e.event_type == "UPDATED") == Counter(ids[:1100])
