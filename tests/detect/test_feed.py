"""The ChangeFeed's coalescing and fallbacks, against a scripted fake RealmApi."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from poller import resources
from poller.detect.feed import (
    BatchCdcMemory,
    ChangeFeed,
    Mode,
    PairAnswer,
    PairRequest,
    query_statement,
)
from poller.qbo import times
from poller.qbo.types import (
    BatchItem,
    BatchResult,
    CdcItem,
    CdcResult,
    Fault,
    QueryItem,
    QueryResult,
    ValidationError,
)

UTC = UTC
NOW = datetime.now(UTC).replace(microsecond=500000) - timedelta(hours=1)
WINDOW_FAULT = Fault(
    "ValidationFault",
    "500",
    "Unsupported Operation",
    "Operation cdc with changedSince date X which is older than fixed days is not supported.",
)


def obj(oid: str, at: datetime, token: str = "0") -> dict:
    return {
        "Id": oid,
        "SyncToken": token,
        "MetaData": {
            "CreateTime": times.format_qbo_time(at, times.PACIFIC),
            "LastUpdatedTime": times.format_qbo_time(at, times.PACIFIC),
        },
    }


class FakeRealm:
    """Answers from a per-entity list of objects; records every request."""

    realm_id = "123"

    def __init__(
        self,
        data: dict[str, list[dict]] | None = None,
        *,
        batch_cdc: bool = True,
        cap: int = 1000,
        now: datetime = NOW,
    ) -> None:
        self.data = data or {}
        self.batch_cdc = batch_cdc
        self.cap = cap
        self.now = now
        self.calls: list[tuple[str, Any]] = []
        self.cdc_fault: Fault | None = None

    def _cdc(self, entities: tuple[str, ...], since: datetime) -> CdcResult | Fault:
        if self.cdc_fault is not None:
            return self.cdc_fault
        objects: dict[str, list[dict]] = {}
        budget = self.cap
        for entity in entities:
            rows = [o for o in self.data.get(entity, []) if times.last_updated_time(o) >= since]
            rows = rows[:budget]
            budget -= len(rows)
            if rows:
                objects[entity] = rows
        return CdcResult(self.now, objects, sum(len(v) for v in objects.values()))

    def _query(self, statement: str) -> QueryResult:
        entity = statement.split(" from ")[1].split(" ")[0]
        since = times.parse_qbo_time(statement.split(">= '")[1].split("'")[0])
        start = (
            int(statement.split("STARTPOSITION ")[1].split(" ")[0])
            if "STARTPOSITION" in statement
            else 1
        )
        size = int(statement.split("MAXRESULTS ")[1])
        rows = sorted(
            (o for o in self.data.get(entity, []) if times.last_updated_time(o) >= since),
            key=lambda o: (times.last_updated_time(o), int(o["Id"])),
        )
        return QueryResult(self.now, entity, rows[start - 1 : start - 1 + size], start)

    async def cdc(self, entities: tuple[str, ...], changed_since: datetime) -> CdcResult:
        self.calls.append(("cdc", (entities, changed_since)))
        answer = self._cdc(entities, changed_since)
        if isinstance(answer, Fault):
            raise ValidationError(answer.detail, answer)
        return answer

    async def query(self, statement: str) -> QueryResult:
        self.calls.append(("query", statement))
        return self._query(statement)

    async def batch(self, items: list[BatchItem]) -> BatchResult:
        self.calls.append(("batch", items))
        answers: dict[str, Any] = {}
        for item in items:
            if isinstance(item, CdcItem):
                answers[item.bid] = (
                    self._cdc(item.entities, item.changed_since)
                    if self.batch_cdc
                    else Fault("ValidationFault", "4000", "Unsupported CDCQuery")
                )
            else:
                assert isinstance(item, QueryItem)
                answers[item.bid] = self._query(item.statement)
        return BatchResult(self.now, answers)

    def kinds(self) -> list[str]:
        return [c[0] for c in self.calls]


def req(
    name: str, watermark: datetime | None = NOW - timedelta(minutes=10), **kw: Any
) -> PairRequest:
    return PairRequest(resources.get(name), watermark, **kw)


async def serve(
    realm: FakeRealm, requests: list[PairRequest], **kw: Any
) -> list[PairAnswer | BaseException]:
    """One cycle of the feed for these pairs (the instance's cycle calls `answer` once)."""
    feed = ChangeFeed(realm, overlap_s=120, **kw)
    return await feed.answer(requests)


async def test_all_22_resources_in_one_batch_request() -> None:
    realm = FakeRealm()
    answers = await serve(realm, [req(n) for n in resources.DEFAULT_NAMES])
    assert realm.kinds() == ["batch"]
    items = realm.calls[0][1]
    cdc = [i for i in items if isinstance(i, CdcItem)]
    queries = [i for i in items if isinstance(i, QueryItem)]
    assert len(cdc) == 1 and len(cdc[0].entities) == 19
    assert sorted(q.statement.split(" from ")[1].split(" ")[0] for q in queries) == [
        "TaxCode",
        "TaxRate",
        "TimeActivity",
    ]
    assert all(isinstance(a, PairAnswer) and a.time == NOW for a in answers)


async def test_realm_refusing_batch_cdc_falls_back_and_remembers() -> None:
    realm = FakeRealm(batch_cdc=False)
    memory = BatchCdcMemory()
    requests = [req(n) for n in resources.DEFAULT_NAMES]
    answers = await serve(realm, requests, batch_cdc=memory)
    assert all(isinstance(a, PairAnswer) for a in answers)
    # The probe costs nothing extra: the batch's queries were answered, only the CDC moves.
    assert realm.kinds() == ["batch", "cdc"]
    realm.calls.clear()
    answers = await serve(realm, requests, batch_cdc=memory)  # next cycle: remembered
    assert sorted(realm.kinds()) == ["batch", "cdc"]
    batch_items = next(c[1] for c in realm.calls if c[0] == "batch")
    assert not any(isinstance(i, CdcItem) for i in batch_items)
    assert all(isinstance(a, PairAnswer) for a in answers)


async def test_lone_items_skip_the_batch() -> None:
    realm = FakeRealm()
    await serve(realm, [req("customers"), req("invoices")])
    assert realm.kinds() == ["cdc"]
    realm.calls.clear()
    await serve(realm, [req("tax-codes")])
    assert realm.kinds() == ["query"]


async def test_combined_cdc_asks_from_earliest_and_each_pair_keeps_its_window() -> None:
    old_wm, new_wm = NOW - timedelta(minutes=30), NOW - timedelta(minutes=5)
    realm = FakeRealm(
        {
            "Customer": [obj("1", NOW - timedelta(minutes=20))],
            "Vendor": [obj("2", NOW - timedelta(minutes=20)), obj("3", NOW - timedelta(minutes=1))],
        }
    )
    a_cust, a_vend = await serve(realm, [req("customers", old_wm), req("vendors", new_wm)])
    ((_, (_entities, since)),) = realm.calls
    # A fresh feed's first pass is long and, not knowing when the last process made its last
    # long pass, reaches back the overlap (120 s) plus the long-pass period (60 s).
    assert since == old_wm - timedelta(seconds=120 + 60)
    assert [o["Id"] for o in a_cust.objects] == ["1"]
    assert [o["Id"] for o in a_vend.objects] == ["3"]  # "2" is before its own window
    assert a_cust.time == a_vend.time == NOW  # QBO's clock, not ours


def test_query_statements() -> None:
    since = datetime(2026, 1, 15, 20, 0, 0, 999000, tzinfo=UTC)
    assert query_statement(resources.get("tax-codes"), since) == (
        "select * from TaxCode where Active IN (true,false) and MetaData.LastUpdatedTime >= "
        "'2026-01-15T12:00:00-08:00' ORDERBY MetaData.LastUpdatedTime MAXRESULTS 1000"
    )
    ta = query_statement(resources.get("time-activities"), since, start=11, page_size=10)
    assert "Active" not in ta
    assert ta.endswith("ORDERBY MetaData.LastUpdatedTime STARTPOSITION 11 MAXRESULTS 10")


async def test_query_paging_advances_from_and_steps_through_one_timestamp() -> None:
    t0 = NOW - timedelta(minutes=9)
    rows = [obj(str(i), t0 + timedelta(seconds=i // 4)) for i in range(1, 13)]  # 4 per second
    rows += [obj(str(i), t0 + timedelta(seconds=10)) for i in range(13, 20)]  # 7 in one second
    realm = FakeRealm({"TaxRate": rows})
    (answer,) = await serve(realm, [req("tax-rates")], page_size=3)
    assert sorted(int(o["Id"]) for o in answer.objects) == list(range(1, 20))
    statements = [c[1] for c in realm.calls]
    assert any("STARTPOSITION" in s for s in statements)  # only inside one timestamp
    assert all(" >= '" in s for s in statements)


async def test_cap_splits_by_entity_then_pages_a_name_list_and_lists_a_transaction() -> None:
    t = NOW - timedelta(minutes=3)
    data = {
        "Customer": [obj(str(i), t) for i in range(1, 8)],  # 7 ≥ cap 5
        "Invoice": [obj(str(i), t) for i in range(1, 7)],  # 6 ≥ cap 5
        "Vendor": [obj("1", t)],
    }
    realm = FakeRealm(data, cap=5)
    cust, inv, vend = await serve(
        realm, [req("customers"), req("invoices"), req("vendors")], cdc_cap=5, page_size=1000
    )
    assert [o["Id"] for o in vend.objects] == ["1"] and vend.mode == Mode.INCREMENTAL
    assert len(cust.objects) == 7 and cust.mode == Mode.INCREMENTAL and not cust.complete
    assert len(inv.objects) == 6 and inv.mode == Mode.LISTING and inv.complete
    kinds = realm.kinds()
    assert kinds[0] == "cdc"  # combined, truncated
    assert kinds[1] == "batch"  # one CDCQuery per entity, in one batch
    assert "query" in kinds or kinds.count("batch") >= 2


async def test_watermark_older_than_29_days_is_reconciled_by_listing() -> None:
    realm = FakeRealm(
        {
            "Customer": [obj("1", NOW - timedelta(days=40))],
            "Vendor": [obj("2", NOW - timedelta(minutes=1))],
        }
    )
    feed = ChangeFeed(realm, overlap_s=120)
    await feed.answer([req("vendors")])  # QBO's clock is now known
    realm.calls.clear()
    cust, vend = await feed.answer(
        [req("customers", NOW - timedelta(days=29, hours=1)), req("vendors")]
    )
    assert cust.mode == Mode.LISTING and cust.complete and [o["Id"] for o in cust.objects] == ["1"]
    assert vend.mode == Mode.INCREMENTAL
    assert realm.kinds() == ["batch"]  # the listing's page travels with the CDC


async def test_window_error_raises_the_clock_estimate_and_lists() -> None:
    realm = FakeRealm({"Customer": [obj("1", NOW - timedelta(days=2))]})
    realm.cdc_fault = WINDOW_FAULT
    # Before any answer the feed does not judge the window by the local clock: QBO's
    # refusal decides.
    (answer,) = await serve(realm, [req("customers", NOW - timedelta(days=10))])
    assert answer.mode == Mode.LISTING and [o["Id"] for o in answer.objects] == ["1"]


async def test_fault_of_one_query_item_fails_only_that_pair() -> None:
    realm = FakeRealm()
    original = realm._query

    def failing(statement: str) -> Any:
        if "TaxRate" in statement:
            return Fault("ValidationFault", "4000", "QueryParserError", "bad")
        return original(statement)

    realm._query = failing  # type: ignore[method-assign]
    answers = await serve(realm, [req("tax-codes"), req("tax-rates"), req("customers")])
    assert isinstance(answers[0], PairAnswer) and isinstance(answers[2], PairAnswer)
    assert isinstance(answers[1], ValidationError)


async def test_uninitialized_now_pair_only_needs_qbo_time() -> None:
    realm = FakeRealm({"Customer": [obj("1", NOW - timedelta(days=3))]})
    (answer,) = await serve(realm, [req("customers", None)])
    assert answer.mode == Mode.INITIAL and answer.time == NOW


async def test_backfill_and_time_activity_first_poll_are_listings() -> None:
    realm = FakeRealm(
        {
            "Invoice": [obj("1", NOW - timedelta(days=300))],
            "TimeActivity": [obj("5", NOW - timedelta(days=90))],
        }
    )
    inv, ta = await serve(
        realm, [req("invoices", None, initial_mode="backfill"), req("time-activities", None)]
    )
    assert inv.mode == Mode.LISTING and [o["Id"] for o in inv.objects] == ["1"]
    assert ta.mode == Mode.LISTING and ta.complete


async def test_a_cancelled_cycle_cancels_its_requests_and_leaves_nothing_unretrieved() -> None:
    cancelled = asyncio.Event()

    class Slow(FakeRealm):
        async def batch(self, items: list[BatchItem]) -> BatchResult:
            try:
                await asyncio.sleep(30)
            finally:
                cancelled.set()
            raise AssertionError

    feed = ChangeFeed(Slow(), overlap_s=120)
    task = asyncio.create_task(feed.answer([req("customers"), req("tax-codes")]))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    assert cancelled.is_set()


_ = Callable


# --- the overlap policy (issue 17) --------------------------------------------------------


def _cdc_since(realm: FakeRealm) -> datetime:
    kind, (_entities, since) = realm.calls[-1]
    assert kind == "cdc"
    return since


async def test_short_passes_and_a_long_one_every_half_overlap() -> None:
    realm = FakeRealm({"Customer": []})
    feed = ChangeFeed(realm, overlap_s=120)
    wm = NOW - timedelta(seconds=2)
    (first,) = await feed.answer([req("customers", wm)])
    assert isinstance(first, PairAnswer) and first.long_pass
    assert _cdc_since(realm) == wm - timedelta(seconds=180)  # fresh feed: 120 s + 60 s
    feed.committed("customers", first)
    (second,) = await feed.answer([req("customers", first.time)])
    assert isinstance(second, PairAnswer) and not second.long_pass
    assert _cdc_since(realm) == first.time - timedelta(seconds=5)
    feed.committed("customers", second)
    # QBO's clock moves on 61 s (with evidence: an object stamped then).
    later = NOW + timedelta(seconds=61)
    realm.now = later
    realm.data["Customer"].append(obj("9", later))
    (third,) = await feed.answer([req("customers", second.time)])
    assert isinstance(third, PairAnswer) and not third.long_pass  # planned before it knew
    feed.committed("customers", third)
    (fourth,) = await feed.answer([req("customers", third.time)])
    assert isinstance(fourth, PairAnswer) and fourth.long_pass
    # The whole overlap before the watermark the last long pass committed, not before today's.
    assert _cdc_since(realm) == first.time - timedelta(seconds=120)
    assert [o["Id"] for o in fourth.objects] == []  # "9" was committed: skipped when re-read


async def test_an_uncommitted_long_pass_stays_due() -> None:
    realm = FakeRealm({"Customer": []})
    feed = ChangeFeed(realm, overlap_s=120)
    (first,) = await feed.answer([req("customers", NOW)])
    assert isinstance(first, PairAnswer) and first.long_pass
    (again,) = await feed.answer([req("customers", NOW)])  # the commit failed: not committed
    assert isinstance(again, PairAnswer) and again.long_pass
    assert _cdc_since(realm) == NOW - timedelta(seconds=180)


async def test_an_overlap_shorter_than_the_short_one_is_used_whole() -> None:
    realm = FakeRealm({"Customer": []})
    feed = ChangeFeed(realm, overlap_s=3)
    (first,) = await feed.answer([req("customers", NOW)])
    assert isinstance(first, PairAnswer)
    feed.committed("customers", first)
    await feed.answer([req("customers", first.time)])
    assert _cdc_since(realm) == first.time - timedelta(seconds=3)


async def test_after_a_cut_answer_the_next_cycles_ask_per_entity_until_the_burst_is_past() -> None:
    at = NOW - timedelta(seconds=1)
    realm = FakeRealm(
        {"Customer": [obj("1", at), obj("2", at)], "Vendor": [obj("3", at), obj("4", at)]}, cap=3
    )
    feed = ChangeFeed(realm, overlap_s=120, cdc_cap=3)
    requests = [req("customers", NOW), req("vendors", NOW)]
    first = await feed.answer(requests)
    assert all(isinstance(a, PairAnswer) and len(a.objects) == 2 for a in first)
    assert realm.kinds() == ["cdc", "batch"]  # combined (cut), then one item per entity
    realm.calls.clear()
    await feed.answer(requests)
    assert realm.kinds() == ["batch"]  # per entity at once: no cut answer to throw away
    assert [len(i.entities) for i in realm.calls[0][1]] == [1, 1]
    realm.data = {"Customer": [], "Vendor": []}  # the burst is out of the window
    await feed.answer(requests)
    realm.calls.clear()
    await feed.answer(requests)
    assert realm.kinds() == ["cdc"]  # combined again
