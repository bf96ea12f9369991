"""The published singer ``tap-quickbooks`` 2.5.0 against the emulator (issue 14, DESIGN §13).

Published-client tier: the tap is installed from PyPI into a venv of its own (it pins
requests==2.33.0 and singer-python==6.1.1, which must not meet the project's), built once per
session under ``.pytest-venvs/`` (git-ignored) and reused while it is complete.  A failed
install fails these tests with pip's message; they never skip.

The tap hard-codes Intuit's URLs, so it runs through a wrapper that points
``tap_quickbooks.client.PROD_ENDPOINT_BASE`` and ``TOKEN_REFRESH_URL`` at the emulator and
then calls the tap's own ``main``: nothing else of the tap is changed.  Its record schemas are
applied by singer's ``Transformer``, which fails the run on any value of the wrong type, so a
clean exit also says the emulator's objects fit the tap's idea of QBO's.

The emulator keeps its default limits (500/min, 10/s, 10 in flight): the tap makes a handful
of calls per run (one batch per page for 29 streams, one report call per 29 days, one CDC), and
it waits 60 s before retrying a 429, so each test also checks that nothing was throttled.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from qbo_emulator import Emulator, run_emulator

# the first test also builds the venv: two pip steps of up to INSTALL_TIMEOUT_S each
pytestmark = [pytest.mark.published_client, pytest.mark.timeout(600)]

TAP_REQUIREMENT = "tap-quickbooks==2.5.0"
VENV_ROOT = Path(__file__).resolve().parents[2] / ".pytest-venvs"
INSTALL_TIMEOUT_S = 240
RUN_TIMEOUT_S = 120
REALM = "9130350000000301"
PER_ENTITY = 5
# QBO's answer takes time ("Service-Time: total=32" ms recorded, plus the network's round
# trip): 100 ms per call stands in for both where a test makes many calls in a row.
QBO_SERVICE_SECONDS = 0.1
PAGE = 3  # the tap's `max_results`: 5 objects per entity take two pages of batch queries

# Every stream of tap-quickbooks 2.5.0 (streams.py): 29 read by batched queries, the
# ProfitAndLoss report, and deleted_objects from CDC.
QUERY_STREAMS = {
    "accounts": "Account",
    "bill_payments": "BillPayment",
    "bills": "Bill",
    "budgets": "Budget",
    "classes": "Class",
    "credit_memos": "CreditMemo",
    "customers": "Customer",
    "customer_types": "CustomerType",
    "departments": "Department",
    "deposits": "Deposit",
    "employees": "Employee",
    "estimates": "Estimate",
    "invoices": "Invoice",
    "items": "Item",
    "journal_entries": "JournalEntry",
    "payment_methods": "PaymentMethod",
    "payments": "Payment",
    "purchase_orders": "PurchaseOrder",
    "purchases": "Purchase",
    "refund_receipts": "RefundReceipt",
    "sales_receipts": "SalesReceipt",
    "tax_agencies": "TaxAgency",
    "tax_codes": "TaxCode",
    "tax_rates": "TaxRate",
    "terms": "Term",
    "time_activities": "TimeActivity",
    "transfers": "Transfer",
    "vendor_credits": "VendorCredit",
    "vendors": "Vendor",
}
ALL_STREAMS = {*QUERY_STREAMS, "profit_loss_report", "deleted_objects"}

# Runs the tap's own entry point with its two hard-coded Intuit URLs pointed at the emulator.
WRAPPER = """\
import os
import sys

import tap_quickbooks.client as client

for name in ("PROD_ENDPOINT_BASE", "TOKEN_REFRESH_URL"):
    if not hasattr(client, name):
        sys.exit(f"tap_quickbooks.client has no {name}: this tap version moved its URLs")
client.PROD_ENDPOINT_BASE = os.environ["TAP_QBO_API_BASE"]
client.TOKEN_REFRESH_URL = os.environ["TAP_QBO_TOKEN_URL"]

from tap_quickbooks import main

main()
"""


@dataclass(frozen=True)
class Tap:
    python: Path
    wrapper: Path


def _install(venv: Path) -> None:
    """A fresh venv with the tap, or pytest.fail with pip's own words."""
    steps = (
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", TAP_REQUIREMENT],
    )
    for command in steps:
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"installing {TAP_REQUIREMENT}: {command[2:4]} took over {INSTALL_TIMEOUT_S} s",
                pytrace=False,
            )
        if done.returncode != 0:
            pytest.fail(
                f"cannot install {TAP_REQUIREMENT} into {venv} (needs PyPI): "
                f"{' '.join(command[2:])} exited {done.returncode}:\n{done.stderr[-2000:]}",
                pytrace=False,
            )


def _imports_the_tap(venv: Path) -> bool:
    """A venv left from an earlier session still works (its interpreter may have gone)."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import tap_quickbooks.client"]
    return (
        python.exists() and subprocess.run(check, capture_output=True, check=False).returncode == 0
    )


@pytest.fixture(scope="session")
def tap() -> Tap:
    """The published tap in its own venv, built once and reused while complete."""
    VENV_ROOT.mkdir(exist_ok=True)
    venv = VENV_ROOT / TAP_REQUIREMENT.replace("==", "-")
    done_marker = venv / "installed.txt"
    with open(VENV_ROOT / ".lock", "w") as lock:  # two sessions never build one venv at once
        fcntl.flock(lock, fcntl.LOCK_EX)
        complete = done_marker.exists() and done_marker.read_text() == TAP_REQUIREMENT
        if not (complete and _imports_the_tap(venv)):
            _install(venv)
            done_marker.write_text(TAP_REQUIREMENT)
    wrapper = venv / "run_tap.py"
    wrapper.write_text(WRAPPER)
    return Tap(venv / "bin" / "python", wrapper)


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def records(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        for message in self.messages():
            if message["type"] == "RECORD":
                out[message["stream"]].append(message["record"])
        return dict(out)

    def last_state(self) -> dict[str, Any]:
        states = [m["value"] for m in self.messages() if m["type"] == "STATE"]
        assert states, self.stderr[-3000:]
        state: dict[str, Any] = states[-1]
        return state


class Session:
    """One emulator realm, the tap's config file, and a way to run the tap on them."""

    def __init__(self, tap: Tap, emu: Emulator, folder: Path, start_date: str) -> None:
        self.tap, self.emu, self.folder = tap, emu, folder
        self.config = folder / "config.json"
        config = {
            "start_date": start_date,
            "user_agent": "qbo-emulator tests (tap-quickbooks 2.5.0)",
            "realm_id": REALM,
            "client_id": emu.client_id,
            "client_secret": emu.client_secret,
            "refresh_token": emu.issue_tokens(REALM)["refresh_token"],
            "max_results": str(PAGE),
        }
        self.config.write_text(json.dumps(config))

    async def run(self, *args: str) -> Run:
        env = {
            **os.environ,
            "TAP_QBO_API_BASE": str(self.emu.base_url),
            "TAP_QBO_TOKEN_URL": str(self.emu.token_url),
            # requests-oauthlib refuses a plain-http token URL without it (loopback only)
            "OAUTHLIB_INSECURE_TRANSPORT": "1",
        }
        proc = await asyncio.create_subprocess_exec(
            str(self.tap.python),
            str(self.tap.wrapper),
            "--config",
            str(self.config),
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT_S)
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        return Run(proc.returncode or 0, out.decode(), err.decode())

    def write(self, name: str, value: Any) -> Path:
        path = self.folder / name
        path.write_text(json.dumps(value))
        return path


def _selected(catalog: dict[str, Any]) -> dict[str, Any]:
    """The discovered catalog with every stream selected (what a user does with it)."""
    for stream in catalog["streams"]:
        for entry in stream["metadata"]:
            if entry["breadcrumb"] == []:
                entry["metadata"]["selected"] = True
    return catalog


def _ids(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(row["Id"] for row in rows)


def _deleted_keys(rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(row["Type"], row["Id"]) for row in rows}


def _instant(text: str) -> datetime:
    """A bookmark is QBO's text (-08:00); a record's time went through singer's Transformer (Z)."""
    return datetime.fromisoformat(text)


def _updated(record: dict[str, Any]) -> datetime:
    return _instant(record["MetaData"]["LastUpdatedTime"])


def _report_days(start: date, end: date) -> list[str]:
    return [(start + timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]


@contextlib.contextmanager
def _explained(run: Run) -> Iterator[None]:
    """An assertion about a run shows the tap's log when it fails."""
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- tap stderr ---\n{run.stderr[-4000:]}") from None


def _clean(run: Run) -> bool:
    """No warning either (the tap warns of a batch answer it cannot match to a stream)."""
    return not any(word in run.stderr for word in ("WARNING", "CRITICAL", "Traceback"))


def _throttled(emu: Emulator) -> int:
    return int(emu.counters(REALM).get("throttled", 0))


def _start_date() -> tuple[str, date]:
    """29 days back: inside CDC's 30-day window (deleted_objects sends it as changedSince)."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=29)
    return start.strftime("%Y-%m-%dT%H:%M:%SZ"), start.date()


async def test_discover_lists_every_stream(tap: Tap, tmp_path: Path) -> None:
    start, _ = _start_date()
    async with run_emulator() as emu:  # default limits
        emu.add_realm(REALM, seed=11, per_entity=1)
        session = Session(tap, emu, tmp_path, start)
        run = await session.run("--discover")
        with _explained(run):
            assert run.code == 0
            streams = {s["tap_stream_id"] for s in json.loads(run.stdout)["streams"]}
            assert streams == ALL_STREAMS
            # its authorization check: GET companyinfo/{realm} with the refreshed token
            counts = emu.counters(REALM)
            assert counts["read"] == 1 and counts["token"] == 1 and _throttled(emu) == 0
            assert "Credentials Refreshed" in run.stderr
        rotated = json.loads(session.config.read_text())["refresh_token"]
        assert emu.oauth.refresh_tokens[rotated].superseded is None  # the tap kept the new one


def _phase_one(emu: Emulator) -> dict[str, set[str]]:
    """Before the full sync: deletes (for deleted_objects) and an inactive customer."""
    removed = {
        "Invoice": set(emu.ids(REALM, "Invoice")[:2]),
        "Bill": set(emu.ids(REALM, "Bill")[:1]),
    }
    for entity, ids in removed.items():
        for obj_id in ids:
            emu.delete(REALM, entity, obj_id)
    emu.deactivate(REALM, "Customer", emu.ids(REALM, "Customer")[0])
    return removed


def _phase_two(emu: Emulator) -> tuple[dict[str, set[str]], set[tuple[str, str]]]:
    """After the full sync, an hour later: every kind of write the tap should pick up."""
    emu.clock.advance(hours=1)
    changed: dict[str, set[str]] = collections.defaultdict(set)
    customers = emu.ids(REALM, "Customer")
    for obj_id in customers[1:3]:
        emu.update(REALM, "Customer", {"Id": obj_id, "Notes": "edited after the full sync"})
        changed["Customer"].add(obj_id)
    made = emu.create(REALM, "Customer", {"DisplayName": "Made After The Full Sync"})
    changed["Customer"].add(made["Id"])
    invoices = emu.ids(REALM, "Invoice")
    emu.void(REALM, "Invoice", invoices[0])
    changed["Invoice"].add(invoices[0])
    line = {"Amount": 42.5, "DetailType": "SalesItemLineDetail"}
    line["SalesItemLineDetail"] = {"ItemRef": {"value": emu.ids(REALM, "Item")[0]}}
    invoice = emu.create(REALM, "Invoice", {"CustomerRef": {"value": customers[1]}, "Line": [line]})
    changed["Invoice"].add(invoice["Id"])
    vendor = emu.ids(REALM, "Vendor")[1]
    emu.deactivate(REALM, "Vendor", vendor)  # inactive: still read (Active IN (true, false))
    changed["Vendor"].add(vendor)
    budget = emu.ids(REALM, "Budget")[0]
    emu.update(REALM, "Budget", {"Id": budget, "Name": "Budget edited after the full sync"})
    changed["Budget"].add(budget)
    agency = emu.create(REALM, "TaxAgency", {"DisplayName": "Agency After The Full Sync"})
    changed["TaxAgency"].add(agency["Id"])
    deleted = {("Invoice", invoices[1]), ("Payment", emu.ids(REALM, "Payment")[0])}
    for entity, obj_id in deleted:
        emu.delete(REALM, entity, obj_id)
    return changed, deleted


async def test_full_then_incremental_sync_of_every_stream(tap: Tap, tmp_path: Path) -> None:
    start, start_day = _start_date()
    async with run_emulator() as emu:  # default limits
        # 20 days of history: every object is newer than start_date
        emu.add_realm(REALM, seed=11, per_entity=PER_ENTITY, history_days=20)
        # At QBO's pace: on an idle machine the tap's calls in a row (report days, pages) came
        # faster than 10/s against an answer-at-once emulator, and one got a 429.
        emu.inject_fault("latency", endpoint="api", seconds=QBO_SERVICE_SECONDS)
        session = Session(tap, emu, tmp_path, start)
        removed = _phase_one(emu)
        discovered = await session.run("--discover")
        assert discovered.code == 0, discovered.stderr[-3000:]
        catalog = session.write("catalog.json", _selected(json.loads(discovered.stdout)))

        full = await session.run("--catalog", str(catalog))
        today = datetime.now(UTC).date()
        with _explained(full):
            assert full.code == 0
            got = full.records()
            assert set(got) == ALL_STREAMS  # every stream has records
            for stream, entity in QUERY_STREAMS.items():
                # every object, inactive ones included, once: two pages of batch queries
                assert _ids(got[stream]) == sorted(emu.ids(REALM, entity)), stream
            assert _deleted_keys(got["deleted_objects"]) == {
                (entity, obj_id) for entity, ids in removed.items() for obj_id in ids
            }
            assert [r["ReportDate"] for r in got["profit_loss_report"]] == [
                f"{day}T00:00:00.000000Z" for day in _report_days(start_day, today)
            ]
            assert _throttled(emu) == 0 and _clean(full)
        state = full.last_state()
        full_counts = {stream: len(rows) for stream, rows in got.items()}

        changed, deleted = _phase_two(emu)
        state_file = session.write("state.json", state)
        incremental = await session.run("--catalog", str(catalog), "--state", str(state_file))
        today = datetime.now(UTC).date()
        with _explained(incremental):
            assert incremental.code == 0
            again = incremental.records()
            marks = state["bookmarks"]
            for stream, entity in QUERY_STREAMS.items():
                # `>=` the bookmark: the objects written in its second come again, then the
                # objects changed since (minus the ones deleted since)
                mark = _instant(marks[stream]["LastUpdatedTime"])
                at_mark = {r["Id"] for r in got[stream] if _updated(r) == mark}
                gone = {obj_id for kind, obj_id in deleted if kind == entity}
                expected = (at_mark - gone) | changed.get(entity, set())
                assert _ids(again.get(stream, [])) == sorted(expected), stream
            mark = _instant(marks["deleted_objects"]["LastUpdatedTime"])
            again_deleted = again["deleted_objects"]
            before = {(r["Type"], r["Id"]) for r in got["deleted_objects"] if _updated(r) == mark}
            assert _deleted_keys(again_deleted) == before | deleted
            assert len(again_deleted) == len(before | deleted)
            # the report goes back one 29-day window from its bookmark
            assert [r["ReportDate"] for r in again["profit_loss_report"]] == [
                f"{day}T00:00:00.000000Z" for day in _report_days(today - timedelta(days=29), today)
            ]
            assert _throttled(emu) == 0 and _clean(incremental)
    counts = {stream: len(rows) for stream, rows in again.items()}
    print("full sync records per stream:", json.dumps(full_counts, sort_keys=True))
    print("incremental records per stream:", json.dumps(counts, sort_keys=True))


async def test_deleted_objects_past_the_cdc_cap_asks_entity_by_entity(
    tap: Tap, tmp_path: Path
) -> None:
    """1000 changed objects in CDC's answer (its cap) make the tap ask again per entity: 24
    calls in a row, at QBO's pace (100 ms a call) under the 10/s limit, none throttled."""
    start, _ = _start_date()
    async with run_emulator() as emu:  # default limits
        # 42 of each of the 24 entities the tap asks CDC for: 1008 changes, over the cap
        emu.add_realm(REALM, seed=12, per_entity=42, history_days=20)
        emu.inject_fault("latency", endpoint="api", seconds=QBO_SERVICE_SECONDS)
        deleted = {("Invoice", obj_id) for obj_id in emu.ids(REALM, "Invoice")[:3]}
        for entity, obj_id in deleted:
            emu.delete(REALM, entity, obj_id)
        session = Session(tap, emu, tmp_path, start)
        discovered = await session.run("--discover")
        assert discovered.code == 0, discovered.stderr[-3000:]
        only = _selected(json.loads(discovered.stdout))
        only["streams"] = [s for s in only["streams"] if s["tap_stream_id"] == "deleted_objects"]
        run = await session.run("--catalog", str(session.write("catalog.json", only)))
        with _explained(run):
            assert run.code == 0 and _clean(run)
            assert _deleted_keys(run.records()["deleted_objects"]) == deleted
            assert emu.counters(REALM)["cdc"] == 1 + 24
            assert _throttled(emu) == 0
