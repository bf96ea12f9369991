"""Pure pieces: clock formats, the query parser, the generator, scale."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import orjson
import pytest

from qbo_emulator import Clock, Emulator, QBOFault
from qbo_emulator.clock import format_meta, format_time, parse_timestamp
from qbo_emulator.entities import ENTITIES, GENERATION_ORDER
from qbo_emulator.query import parse

UTC = UTC


def test_pacific_formats_are_dst_correct() -> None:
    winter = datetime(2026, 11, 24, 10, 15, 2, 123456, tzinfo=UTC)
    summer = datetime(2026, 7, 1, 19, 0, 0, tzinfo=UTC)
    assert format_meta(winter) == "2026-11-24T02:15:02-08:00"
    assert format_time(winter) == "2026-11-24T02:15:02.123-08:00"
    assert format_meta(summer) == "2026-07-01T12:00:00-07:00"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2026-11-24T02:15:02-08:00", "2026-11-24T10:15:02+00:00"),
        ("2026-11-24T02:15:02", "2026-11-24T10:15:02+00:00"),  # bare = Pacific (PST)
        ("2026-07-04T10:00:00", "2026-07-04T17:00:00+00:00"),  # bare = Pacific (PDT)
        ("2026-07-04", "2026-07-04T07:00:00+00:00"),  # bare date = midnight Pacific
        ("2026-11-24T10:15:02Z", "2026-11-24T10:15:02+00:00"),
        ("2015-10-05T14:42:19-0700", "2015-10-05T21:42:19+00:00"),  # offset without colon
        ("2026-11-24T02:15:02.123-08:00", "2026-11-24T10:15:02.123000+00:00"),
    ],
)
def test_parse_timestamp(text: str, expected: str) -> None:
    assert parse_timestamp(text).isoformat() == expected


def test_clock_controls() -> None:
    clock = Clock()
    assert abs(clock.timestamp() - time.time()) < 1
    frozen = clock.freeze("2026-01-01T00:00:00Z")
    assert clock.now() == frozen
    clock.advance(days=31, seconds=5)
    assert clock.now().isoformat() == "2026-02-01T00:00:05+00:00"
    clock.unfreeze()
    assert abs((clock.now() - frozen).total_seconds() - (31 * 86400 + 5)) < 1
    clock.set("2030-05-05T05:05:05-07:00")
    assert abs(clock.timestamp() - parse_timestamp("2030-05-05T12:05:05Z").timestamp()) < 1
    clock.reset()
    assert abs(clock.timestamp() - time.time()) < 1


def test_parser_structure() -> None:
    q = parse(
        "select * from Invoice where TotalAmt >= 10 and DocNumber in ('1','2') and "
        "MetaData.LastUpdatedTime > '2026-01-01' order by TxnDate desc, Id "
        "STARTPOSITION 11 MAXRESULTS 10"
    )
    assert q.entity == "Invoice" and not q.count and (q.start, q.max_results) == (11, 10)
    assert [(c.path, c.op) for c in q.where] == [
        ("TotalAmt", ">="),
        ("DocNumber", "in"),
        ("MetaData.LastUpdatedTime", ">"),
    ]
    assert q.where[1].values == ["1", "2"] and q.order == [("TxnDate", True), ("Id", False)]
    assert parse("SELECT COUNT(*) FROM Customer").count
    assert parse(r"select * from Customer where DisplayName = 'O\'Brien'").where[0].values == [
        "O'Brien"
    ]
    with pytest.raises(QBOFault) as err:
        parse("select * from Customer where DisplayName = 'unterminated")
    assert err.value.code == "4000"


def test_entity_facts() -> None:
    names = {n for n, f in ENTITIES.items() if f.is_name_list}
    assert names == {
        "Customer",
        "Vendor",
        "Account",
        "Class",
        "Term",
        "Item",
        "Employee",
        "PaymentMethod",
        "CompanyCurrency",
        "Department",
        "TaxCode",
        "TaxRate",
        # issue 14: the lists tap-quickbooks reads
        "Budget",
        "CustomerType",
        "TaxAgency",
    }
    assert {n for n, f in ENTITIES.items() if not f.cdc} == {
        "TimeActivity",
        "TaxCode",
        "TaxRate",
        "TaxAgency",
    }
    assert {n for n, f in ENTITIES.items() if f.voidable} == {
        "Invoice",
        "Payment",
        "SalesReceipt",
        "BillPayment",
    }
    assert len(ENTITIES) == 27 + 5  # + Budget, CustomerType, TaxAgency, CompanyInfo, Preferences


def test_generator_is_deterministic_for_a_seed() -> None:
    clock = Clock(frozen=True)
    a, b, c = Emulator(clock=clock), Emulator(clock=clock), Emulator(clock=clock)
    for emu, seed in ((a, 5), (b, 5), (c, 6)):
        emu.add_realm("1", seed=seed, per_entity=6)

    def everything(emu: Emulator) -> bytes:
        statements = [
            f"select * from {n} where Active in (true,false)"
            if ENTITIES[n].is_name_list
            else f"select * from {n}"
            for n in GENERATION_ORDER
        ]
        return orjson.dumps([emu.query("1", q) for q in statements])

    assert everything(a) == everything(b) != everything(c)
    assert a.count("1") == 6 * (27 + 3) + 2  # issue 14: three new lists, two singletons


def test_realm_with_tens_of_thousands_of_objects() -> None:
    emu = Emulator(clock=Clock(frozen=True))
    start = time.perf_counter()
    emu.add_realm("big", seed=1, per_entity=1000)  # 27,000 objects
    built = time.perf_counter() - start
    emu.clock.advance(1)
    for i in range(1, 501):
        emu.update("big", "Customer", {"Id": str(i), "Notes": "touched"})
    start = time.perf_counter()
    answer = emu.cdc("big", "Customer,Invoice", emu.clock.now())
    cdc_time = time.perf_counter() - start
    (group,) = answer["CDCResponse"][0]["QueryResponse"]
    assert len(group["Customer"]) == 500
    start = time.perf_counter()
    emu.query(
        "big",
        "select * from Invoice where TotalAmt > 100 "
        "orderby MetaData.LastUpdatedTime maxresults 1000",
    )
    query_time = time.perf_counter() - start
    assert emu.count("big") == 30 * 1000 + 2  # issue 14: 30 lists and transactions, 2 singletons
    assert built < 15 and cdc_time < 1 and query_time < 1, (built, cdc_time, query_time)
