"""The two reports published clients call most: ProfitAndLoss and BalanceSheet.

``GET /v3/company/{realm}/reports/{name}?start_date=&end_date=&summarize_column_by=``
answers Intuit's report shape (``Header``, ``Columns.Column[]`` with ``MetaData``,
``Rows.Row[]`` of sections with ``Header``/``Rows``/``Summary`` and ``ColData``
cells of string values), as Intuit's report reference documents it and as
``tap-quickbooks`` reads it (``streams.py``: per-day ``StartDate`` column metadata,
the first ``ColData`` cell the row's name, the rest one value per column).

The totals are computed from the realm's transactions, accrual basis, by
``TxnDate``: income is invoices and sales receipts less credit memos and refund
receipts; expenses are bills and purchases less vendor credits; there is no
cost of goods sold.  The balance sheet lists the Asset and Liability accounts'
``CurrentBalance`` and balances with equity (retained earnings plus the year's
net income), so ``TOTAL ASSETS`` equals ``TOTAL LIABILITIES AND EQUITY``.
Summaries are by ``Total`` (default), ``Days`` or ``Month``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from . import faults
from .clock import pacific_date
from .store import Realm

REPORTS = ("ProfitAndLoss", "BalanceSheet")
# Sign of each transaction's TotalAmt in the P&L, by entity.
INCOME_SIGN = {"Invoice": 1, "SalesReceipt": 1, "CreditMemo": -1, "RefundReceipt": -1}
EXPENSE_SIGN = {"Bill": 1, "Purchase": 1, "VendorCredit": -1}
SUMMARIES = ("Total", "Days", "Month")


@dataclass(frozen=True, slots=True)
class Period:
    """One report column: a date range (inclusive) and its title."""

    title: str
    start: date
    end: date


def run(realm: Realm, name: str, params: dict[str, str], now_time: str) -> dict[str, Any]:
    """The report ``name`` (case-insensitive) for ``params``; raises QBOFault."""
    canonical = next((known for known in REPORTS if known.lower() == name.lower()), None)
    if canonical is None:
        raise faults.unsupported_operation(f"Operation Report {name} is not supported.")
    today = pacific_date(realm.clock.now())
    start, end = _date_range(params, today)
    summary = params.get("summarize_column_by") or "Total"
    if summary not in SUMMARIES:
        summary = "Total"
    periods = _periods(start, end, summary)
    header = _header(canonical, start, end, summary, now_time)
    if canonical == "ProfitAndLoss":
        rows = _profit_and_loss_rows(realm, periods, start, end)
    else:
        rows = _balance_sheet_rows(realm, periods, end)
    return {"Header": header, "Columns": _columns(periods, summary), "Rows": {"Row": rows}}


def _date_range(params: dict[str, str], today: date) -> tuple[date, date]:
    try:
        start = date.fromisoformat(params["start_date"]) if params.get("start_date") else None
        end = date.fromisoformat(params["end_date"]) if params.get("end_date") else None
    except ValueError:
        raise faults.invalid_request_body("Invalid date: start_date or end_date") from None
    end = end or today
    start = start or date(end.year, 1, 1)  # QBO's default: this year to date
    if start > end:
        start, end = end, start
    return start, end


def _periods(start: date, end: date, summary: str) -> list[Period]:
    if summary == "Days":
        days = (end - start).days + 1
        return [
            Period(
                (start + timedelta(days=n)).strftime("%b %-d, %Y"), *([start + timedelta(n)] * 2)
            )
            for n in range(days)
        ]
    if summary == "Month":
        periods: list[Period] = []
        cursor = start
        while cursor <= end:
            next_month = date(cursor.year + cursor.month // 12, cursor.month % 12 + 1, 1)
            last = min(next_month - timedelta(days=1), end)
            periods.append(Period(cursor.strftime("%b %Y"), cursor, last))
            cursor = next_month
        return periods
    return []


def _header(name: str, start: date, end: date, summary: str, now_time: str) -> dict[str, Any]:
    return {
        "Time": now_time,
        "ReportName": name,
        "ReportBasis": "Accrual",
        "StartPeriod": start.isoformat(),
        "EndPeriod": end.isoformat(),
        "SummarizeColumnsBy": summary,
        "Currency": "USD",
        "Option": [
            {"Name": "AccountingStandard", "Value": "GAAP"},
            {"Name": "NoReportData", "Value": "false"},
        ],
    }


def _columns(periods: list[Period], summary: str) -> dict[str, Any]:
    columns: list[dict[str, Any]] = [
        {"ColTitle": "", "ColType": "Account", "MetaData": [{"Name": "ColKey", "Value": "account"}]}
    ]
    for period in periods:
        columns.append(
            {
                "ColTitle": period.title,
                "ColType": "Money",
                "MetaData": [
                    {"Name": "StartDate", "Value": period.start.isoformat()},
                    {"Name": "EndDate", "Value": period.end.isoformat()},
                    {"Name": "ColKey", "Value": period.start.isoformat()},
                ],
            }
        )
    columns.append(
        {
            "ColTitle": "Total",
            "ColType": "Money",
            "MetaData": [{"Name": "ColKey", "Value": "total"}],
        }
    )
    return {"Column": columns}


def _txn_amounts(realm: Realm, signs: dict[str, int]) -> Iterable[tuple[date, float]]:
    """(TxnDate, signed TotalAmt) of every live transaction of the given entities."""
    for entity, sign in signs.items():
        for record in realm.tables[entity].live.values():
            obj = record.live_obj
            try:
                when = date.fromisoformat(str(obj.get("TxnDate")))
            except ValueError:
                continue
            yield when, sign * float(obj.get("TotalAmt") or 0)


def _sums(
    realm: Realm, signs: dict[str, int], periods: list[Period], start: date, end: date
) -> list[float]:
    """One sum per period, then the total over [start, end]."""
    per_period = [0.0] * len(periods)
    total = 0.0
    for when, amount in _txn_amounts(realm, signs):
        if not start <= when <= end:
            continue
        total += amount
        for index, period in enumerate(periods):
            if period.start <= when <= period.end:
                per_period[index] += amount
                break
    return [*per_period, total]


def _cells(label: str, values: list[float]) -> list[dict[str, str]]:
    return [{"value": label}, *({"value": f"{value:.2f}"} for value in values)]


def _summary_section(group: str, label: str, values: list[float]) -> dict[str, Any]:
    return {"Summary": {"ColData": _cells(label, values)}, "type": "Section", "group": group}


def _section(
    group: str, title: str, data: list[dict[str, Any]], label: str, values: list[float]
) -> dict[str, Any]:
    blank = [{"value": ""} for _ in values]
    return {
        "Header": {"ColData": [{"value": title}, *blank]},
        "Rows": {"Row": data},
        "Summary": {"ColData": _cells(label, values)},
        "type": "Section",
        "group": group,
    }


def _data_row(label: str, values: list[float], account_id: str | None = None) -> dict[str, Any]:
    cells = _cells(label, values)
    if account_id is not None:
        cells[0]["id"] = account_id
    return {"ColData": cells, "type": "Data"}


def _profit_and_loss_rows(
    realm: Realm, periods: list[Period], start: date, end: date
) -> list[dict[str, Any]]:
    income = _sums(realm, INCOME_SIGN, periods, start, end)
    expenses = _sums(realm, EXPENSE_SIGN, periods, start, end)
    zero = [0.0] * len(income)
    net = [i - e for i, e in zip(income, expenses, strict=True)]
    return [
        _section("Income", "Income", [_data_row("Sales", income)], "Total Income", income),
        _summary_section("COGS", "Total Cost of Goods Sold", zero),
        _summary_section("GrossProfit", "Gross Profit", income),
        _section(
            "Expenses", "Expenses", [_data_row("Expenses", expenses)], "Total Expenses", expenses
        ),
        _summary_section("NetOperatingIncome", "Net Operating Income", net),
        _summary_section("NetIncome", "Net Income", net),
    ]


def profit_and_loss_total(realm: Realm, start: date, end: date) -> tuple[float, float]:
    """(income, expenses) over [start, end]: what the P&L's Total column shows."""
    income = _sums(realm, INCOME_SIGN, [], start, end)[-1]
    expenses = _sums(realm, EXPENSE_SIGN, [], start, end)[-1]
    return income, expenses


def _balance_sheet_rows(realm: Realm, periods: list[Period], end: date) -> list[dict[str, Any]]:
    """As of the end date (every column shows the same balances: the emulator
    keeps no balance history)."""
    width = len(periods) + 1
    assets: list[dict[str, Any]] = []
    liabilities: list[dict[str, Any]] = []
    asset_total = liability_total = 0.0
    for record in realm.tables["Account"].live.values():
        account = record.live_obj
        if account.get("Active") is False:
            continue
        balance = float(account.get("CurrentBalance") or 0)
        row = _data_row(str(account.get("Name")), [balance] * width, record.id)
        if account.get("Classification") == "Asset":
            assets.append(row)
            asset_total += balance
        elif account.get("Classification") == "Liability":
            liabilities.append(row)
            liability_total += balance
    income, expenses = profit_and_loss_total(realm, date(end.year, 1, 1), end)
    net_income = income - expenses
    retained = asset_total - liability_total - net_income  # what makes the sheet balance
    equity_total = retained + net_income
    equity = [
        _data_row("Retained Earnings", [retained] * width),
        _data_row("Net Income", [net_income] * width),
    ]

    def spread(value: float) -> list[float]:
        return [value] * width

    return [
        _section("TotalAssets", "ASSETS", assets, "TOTAL ASSETS", spread(asset_total)),
        {
            "Header": {
                "ColData": [{"value": "LIABILITIES AND EQUITY"}, *([{"value": ""}] * width)]
            },
            "Rows": {
                "Row": [
                    _section(
                        "Liabilities",
                        "Liabilities",
                        liabilities,
                        "Total Liabilities",
                        spread(liability_total),
                    ),
                    _section("Equity", "Equity", equity, "Total Equity", spread(equity_total)),
                ]
            },
            "Summary": {
                "ColData": _cells(
                    "TOTAL LIABILITIES AND EQUITY", spread(liability_total + equity_total)
                )
            },
            "type": "Section",
            "group": "TotalLiabilitiesAndEquity",
        },
    ]


__all__ = ["REPORTS", "profit_and_loss_total", "run"]
