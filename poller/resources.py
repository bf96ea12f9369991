"""The resource ↔ QuickBooks entity table (DESIGN §3): data, in one place.

`DEFAULT_RESOURCES` are the 22 resources Open Connectors polled; `EXTRA_RESOURCES` are other QBO
entities a user may add ("you can also copy the events configuration to poll other resources").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    TRANSACTION = "transaction"
    NAME_LIST = "name list"
    TAX_LIST = "tax list"


class DeleteMode(StrEnum):
    HARD = "hard"  # `?operation=delete`; CDC reports a tombstone
    DEACTIVATE = "deactivate"  # name lists: `Active=false`, never hard-deleted
    NONE = "none"  # read-only tax lists


@dataclass(frozen=True)
class Resource:
    name: str  # the Open Connectors resource name, e.g. "bill-payments"
    entity: str  # the QBO entity, e.g. "BillPayment"
    kind: Kind
    cdc: bool  # covered by /cdc (TaxCode, TaxRate, TimeActivity are not)
    delete: DeleteMode
    voidable: bool = False

    @property
    def is_list(self) -> bool:
        """List entities hide inactive rows from queries unless `Active IN (true,false)`."""
        return self.kind in (Kind.NAME_LIST, Kind.TAX_LIST)


T, N, X = Kind.TRANSACTION, Kind.NAME_LIST, Kind.TAX_LIST
HARD, DEACT, NONE = DeleteMode.HARD, DeleteMode.DEACTIVATE, DeleteMode.NONE

DEFAULT_RESOURCES: tuple[Resource, ...] = (
    Resource("bill-payments", "BillPayment", T, True, HARD, voidable=True),
    Resource("bills", "Bill", T, True, HARD),
    Resource("classes", "Class", N, True, DEACT),
    Resource("credit-memos", "CreditMemo", T, True, HARD),
    Resource("credit-terms", "Term", N, True, DEACT),
    Resource("currencies", "CompanyCurrency", N, True, DEACT),
    Resource("customers", "Customer", N, True, DEACT),
    Resource("employees", "Employee", N, True, DEACT),
    Resource("invoices", "Invoice", T, True, HARD, voidable=True),
    Resource("journal-entries", "JournalEntry", T, True, HARD),
    Resource("ledger-accounts", "Account", N, True, DEACT),
    Resource("payment-methods", "PaymentMethod", N, True, DEACT),
    Resource("payments", "Payment", T, True, HARD, voidable=True),
    Resource("products", "Item", N, True, DEACT),
    Resource("purchase-orders", "PurchaseOrder", T, True, HARD),
    Resource("refund-receipts", "RefundReceipt", T, True, HARD),
    Resource("sales-receipts", "SalesReceipt", T, True, HARD, voidable=True),
    Resource("tax-codes", "TaxCode", X, False, NONE),
    Resource("tax-rates", "TaxRate", X, False, NONE),
    Resource("time-activities", "TimeActivity", T, False, HARD),
    Resource("vendor-credits", "VendorCredit", T, True, HARD),
    Resource("vendors", "Vendor", N, True, DEACT),
)

EXTRA_RESOURCES: tuple[Resource, ...] = (
    Resource("estimates", "Estimate", T, True, HARD),
    Resource("deposits", "Deposit", T, True, HARD),
    Resource("purchases", "Purchase", T, True, HARD),
    Resource("transfers", "Transfer", T, True, HARD),
    Resource("departments", "Department", N, True, DEACT),
)

ALL_RESOURCES: dict[str, Resource] = {r.name: r for r in DEFAULT_RESOURCES + EXTRA_RESOURCES}
BY_ENTITY: dict[str, Resource] = {r.entity.lower(): r for r in ALL_RESOURCES.values()}
DEFAULT_NAMES: tuple[str, ...] = tuple(r.name for r in DEFAULT_RESOURCES)


def get(name: str) -> Resource:
    return ALL_RESOURCES[name]


def by_entity(entity: str) -> Resource | None:
    return BY_ENTITY.get(entity.lower())
