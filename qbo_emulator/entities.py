"""The emulator's own facts about QBO entities, and a seeded data generator.

This table is deliberately independent of the daemon's resource table: if the
two disagree, a test fails, and one of them is wrong.

Facts (reference §1.2, §3, §4; DESIGN §3):
- *Name lists* (Customer, Vendor, Employee, Account, Class, Term, Item,
  PaymentMethod, CompanyCurrency, Department, TaxCode, TaxRate) are never
  hard-deleted: "delete" is ``Active=false`` and QBO appends " (deleted)" to the
  name.  Inactive rows are hidden from queries unless the WHERE mentions Active.
- *Transactions* are hard-deleted with ``?operation=delete`` and leave only a
  CDC tombstone.  Invoice, Payment, SalesReceipt and BillPayment can be voided.
- CDC covers every entity except JournalCode, TaxAgency, TimeActivity, TaxCode
  and TaxRate.
- TaxCode and TaxRate are created through TaxService, not ``POST /taxcode``;
  the emulator's control API can still create them.
- CompanyInfo and Preferences exist once per company (Id "1"): read
  (``companyinfo/{realm}``, ``preferences``), query and update, never created or
  deleted.  Budget, CustomerType and TaxAgency are name lists (TaxAgency has no CDC).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from .clock import PACIFIC
from .templates import DELETED_SUFFIX, TEMPLATES

DELETED_SUFFIX_TEXT = DELETED_SUFFIX

NAME_LIST = "name_list"
TRANSACTION = "transaction"
# One object per company (CompanyInfo, Preferences): Id "1", read and update only.
SINGLETON = "singleton"


@dataclass(frozen=True, slots=True)
class EntityFacts:
    name: str
    kind: str  # NAME_LIST or TRANSACTION
    cdc: bool = True
    voidable: bool = False
    # The unique name of a name-list row, and the namespace it is unique in
    # (Customer, Vendor and Employee share one: "Another customer, vendor or
    # employee is already using this name").
    name_field: str | None = None
    name_group: str | None = None
    # Created through TaxService, so POST /v3/company/{realm}/taxcode is refused.
    api_writable: bool = True
    # Server fills DocNumber (next in sequence) when the request has none.
    doc_number: bool = False
    # Sales forms get the trailing SubTotalLineDetail line and TotalAmt from lines.
    sales_form: bool = False
    # The party reference whose name QBO fills in (CustomerRef / VendorRef).
    party_ref: str | None = None
    # Flag set on a child row of a hierarchical name list (SubAccount, ...).
    sub_flag: str | None = None
    # First Id handed out (Class Ids are 19-digit strings in real companies).
    first_id: int = 1

    @property
    def is_name_list(self) -> bool:
        return self.kind == NAME_LIST

    @property
    def is_transaction(self) -> bool:
        return self.kind == TRANSACTION

    @property
    def is_singleton(self) -> bool:
        return self.kind == SINGLETON

    @property
    def template(self) -> dict[str, Any]:
        return TEMPLATES[self.name]


_F = EntityFacts
ENTITIES: dict[str, EntityFacts] = {
    f.name: f
    for f in [
        # name lists
        _F("Account", NAME_LIST, name_field="Name", sub_flag="SubAccount"),
        _F("Budget", NAME_LIST, name_field="Name"),
        _F(
            "Class", NAME_LIST, name_field="Name", sub_flag="SubClass", first_id=5000000000000000001
        ),
        _F("CompanyCurrency", NAME_LIST, name_field="Code"),
        _F("Customer", NAME_LIST, name_field="DisplayName", name_group="party", sub_flag="Job"),
        _F("CustomerType", NAME_LIST, name_field="Name"),
        _F("Department", NAME_LIST, name_field="Name", sub_flag="SubDepartment"),
        _F("Employee", NAME_LIST, name_field="DisplayName", name_group="party"),
        _F("Item", NAME_LIST, name_field="Name"),
        _F("PaymentMethod", NAME_LIST, name_field="Name"),
        _F("TaxAgency", NAME_LIST, cdc=False, name_field="DisplayName"),
        _F("TaxCode", NAME_LIST, cdc=False, name_field="Name", api_writable=False),
        _F("TaxRate", NAME_LIST, cdc=False, name_field="Name", api_writable=False),
        _F("Term", NAME_LIST, name_field="Name"),
        _F("Vendor", NAME_LIST, name_field="DisplayName", name_group="party"),
        # one per company
        _F("CompanyInfo", SINGLETON),
        _F("Preferences", SINGLETON),
        # transactions
        _F("Bill", TRANSACTION, party_ref="VendorRef"),
        _F("BillPayment", TRANSACTION, voidable=True, party_ref="VendorRef"),
        _F("CreditMemo", TRANSACTION, doc_number=True, sales_form=True, party_ref="CustomerRef"),
        _F("Deposit", TRANSACTION),
        _F("Estimate", TRANSACTION, doc_number=True, sales_form=True, party_ref="CustomerRef"),
        _F(
            "Invoice",
            TRANSACTION,
            voidable=True,
            doc_number=True,
            sales_form=True,
            party_ref="CustomerRef",
        ),
        _F("JournalEntry", TRANSACTION),
        _F("Payment", TRANSACTION, voidable=True, party_ref="CustomerRef"),
        _F("Purchase", TRANSACTION),
        _F("PurchaseOrder", TRANSACTION, doc_number=True, party_ref="VendorRef"),
        _F("RefundReceipt", TRANSACTION, doc_number=True, sales_form=True, party_ref="CustomerRef"),
        _F(
            "SalesReceipt",
            TRANSACTION,
            voidable=True,
            doc_number=True,
            sales_form=True,
            party_ref="CustomerRef",
        ),
        _F("TimeActivity", TRANSACTION, cdc=False),
        _F("Transfer", TRANSACTION),
        _F("VendorCredit", TRANSACTION, party_ref="VendorRef"),
    ]
}

# Lower-case name (as in URLs: /v3/company/1/billpayment) -> canonical name.
BY_LOWER: dict[str, str] = {name.lower(): name for name in ENTITIES}

# Entities QBO names but the emulator does not hold; CDC refuses these by name.
CDC_UNSUPPORTED = frozenset({"JournalCode", "TaxAgency", "TimeActivity", "TaxCode", "TaxRate"})

# Fields QBO sets and ignores when a client sends them.
READ_ONLY_FIELDS = frozenset({"Id", "SyncToken", "MetaData", "domain", "sparse", "status"})

# Money is written with scale 2 on the wire (337.50, 6.00) but zero is `0`
# (samples README, fact 3); account balances are not money in that sense.
MONEY_KEYS = frozenset(
    {
        "Amount",
        "TotalAmt",
        "Balance",
        "HomeTotalAmt",
        "HomeBalance",
        "TotalTax",
        "UnappliedAmt",
        "RemainingCredit",
        "BalanceWithJobs",
        "Deposit",
        "NetAmountTaxable",
        "OpenBalance",
    }
)


USD = {"value": "USD", "name": "United States Dollar"}
_CREW = [{"DefinitionId": "1", "Name": "Crew #", "Type": "StringType"}]
_SALES = {"CustomField": _CREW, "CurrencyRef": USD, "ApplyTaxAfterDiscount": False}
# Fields QBO fills on create when the request leaves them out (taken from the
# recorded create responses: Vendor in batch_response.json, Invoice.json).
CREATE_DEFAULTS: dict[str, dict[str, Any]] = {
    "Customer": {
        "Taxable": True,
        "Job": False,
        "BillWithParent": False,
        "Balance": 0,
        "BalanceWithJobs": 0,
        "CurrencyRef": USD,
        "PreferredDeliveryMethod": "Print",
    },
    "Vendor": {"Balance": 0, "Vendor1099": False, "CurrencyRef": USD},
    "Employee": {"BillableTime": False},
    "Account": {
        "SubAccount": False,
        "CurrentBalance": 0,
        "CurrentBalanceWithSubAccounts": 0,
        "CurrencyRef": USD,
    },
    "Class": {"SubClass": False},
    "Department": {"SubDepartment": False},
    "Invoice": {
        "AllowIPNPayment": False,
        "AllowOnlinePayment": False,
        "AllowOnlineCreditCardPayment": False,
        "AllowOnlineACHPayment": False,
        **_SALES,
    },
    "SalesReceipt": {**_SALES, "PrintStatus": "NotSet", "EmailStatus": "NotSet", "Balance": 0},
    "Estimate": {
        **_SALES,
        "TxnStatus": "Pending",
        "PrintStatus": "NotSet",
        "EmailStatus": "NotSet",
    },
    "CreditMemo": {**_SALES, "PrintStatus": "NotSet", "EmailStatus": "NotSet"},
    "RefundReceipt": {**_SALES, "PrintStatus": "NotSet", "Balance": 0},
}


def canonical_entity(name: str) -> str | None:
    return BY_LOWER.get(name.lower())


class Money(float):
    """A float that serialises with two decimals (``337.50``) like QBO money."""

    __slots__ = ()


def normalize_money(value: Any) -> Any:
    """Turn money-like numbers anywhere under money keys into QBO's wire form."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in MONEY_KEYS and isinstance(item, (int, float)) and not isinstance(item, bool):
                value[key] = money(item)
            elif isinstance(item, (dict, list)):
                normalize_money(item)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)):
                normalize_money(item)
    return value


def money(amount: float) -> Any:
    rounded = round(float(amount), 2)
    return 0 if rounded == 0 else Money(rounded)


def json_default(obj: Any) -> Any:
    if isinstance(obj, Money):
        return orjson.Fragment(b"%.2f" % obj)
    if isinstance(obj, float):  # other float subclasses
        return float(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# ---------------------------------------------------------------------------
# Seeded generator
# ---------------------------------------------------------------------------

# Name lists first so that transactions can reference generated rows.
GENERATION_ORDER = [
    "CompanyInfo",
    "Preferences",
    "Account",
    "Budget",
    "Term",
    "PaymentMethod",
    "Class",
    "Department",
    "CompanyCurrency",
    "TaxAgency",
    "TaxRate",
    "TaxCode",
    "CustomerType",
    "Customer",
    "Vendor",
    "Employee",
    "Item",
    "Invoice",
    "Payment",
    "SalesReceipt",
    "Estimate",
    "CreditMemo",
    "RefundReceipt",
    "Bill",
    "BillPayment",
    "PurchaseOrder",
    "VendorCredit",
    "Purchase",
    "Deposit",
    "Transfer",
    "JournalEntry",
    "TimeActivity",
]
assert sorted(GENERATION_ORDER) == sorted(ENTITIES)

_GIVEN = [
    "Amy",
    "Bill",
    "Carla",
    "Dylan",
    "Emily",
    "Frank",
    "Grace",
    "Hiro",
    "Ines",
    "John",
    "Kathy",
    "Leo",
    "Maya",
    "Nina",
    "Omar",
    "Peter",
    "Quinn",
    "Russ",
    "Sara",
    "Travis",
    "Uma",
    "Victor",
    "Wendy",
    "Xavier",
    "Yuki",
    "Zoe",
    "Geoff",
    "Karen",
    "Diego",
    "Priya",
]
_FAMILY = [
    "Lauterbach",
    "Dukes",
    "Paulsen",
    "Sonnenschein",
    "Pye",
    "Waldron",
    "Hicks",
    "Platt",
    "Johnson",
    "Pariente",
    "Ortega",
    "Kumar",
    "Nguyen",
    "Schmidt",
    "Rossi",
    "Okafor",
    "Larsen",
    "Moreau",
    "Silva",
    "Tanaka",
    "Cohen",
    "Novak",
    "Walsh",
    "Fischer",
    "Reyes",
]
_TRADE = [
    "Bird Sanctuary",
    "Basketball Camp",
    "Medical Supplies",
    "Family Store",
    "Cakes",
    "Hardware",
    "Lumber",
    "Fruit and Vegi",
    "Burger Joint",
    "Cool Cars",
    "Diner",
    "Landscaping",
    "Plumbing",
    "Bakery",
    "Pet Care",
    "Books",
    "Garden Supply",
    "Studio",
]
_CITIES = [
    ("Bayshore", "CA", "94326"),
    ("Tucson", "AZ", "85719"),
    ("Middlefield", "CA", "94303"),
    ("South Orange", "NJ", "07079"),
    ("Half Moon Bay", "CA", "94213"),
    ("Sunnyvale", "CA", "94086"),
    ("Portland", "OR", "97201"),
    ("Austin", "TX", "78701"),
]
_STREETS = [
    "Finch St.",
    "Court St.",
    "Main St.",
    "Cypress Hill Ave.",
    "Ocean Dr.",
    "Mountain View Dr.",
    "Boise Ave",
    "Oak Rd.",
    "Elm St.",
    "Harbor Blvd.",
]
_ITEMS = [
    "Design",
    "Installation",
    "Pump",
    "Rock Fountain",
    "Lighting",
    "Pest Control",
    "Gardening",
    "Hours",
    "Sprinkler Heads",
    "Concrete",
    "Trimming",
    "Soil",
    "Services",
]
_ACCOUNTS = [
    ("Checking", "Asset", "Bank", "Checking"),
    ("Savings", "Asset", "Bank", "Savings"),
    ("Accounts Receivable", "Asset", "Accounts Receivable", "AccountsReceivable"),
    ("Undeposited Funds", "Asset", "Other Current Asset", "UndepositedFunds"),
    ("Accounts Payable (A/P)", "Liability", "Accounts Payable", "AccountsPayable"),
    ("Sales of Product Income", "Revenue", "Income", "SalesOfProductIncome"),
    ("Services", "Revenue", "Income", "ServiceFeeIncome"),
    ("Cost of Goods Sold", "Expense", "Cost of Goods Sold", "SuppliesMaterialsCogs"),
    ("Job Materials", "Expense", "Expense", "SuppliesMaterials"),
    ("Advertising", "Expense", "Expense", "AdvertisingPromotional"),
]
_CURRENCIES = [
    ("EUR", "Euro"),
    ("GBP", "British Pound Sterling"),
    ("CAD", "Canadian Dollar"),
    ("AUD", "Australian Dollar"),
    ("JPY", "Japanese Yen"),
    ("INR", "Indian Rupee"),
    ("MXN", "Mexican Peso"),
    ("CHF", "Swiss Franc"),
    ("SEK", "Swedish Krona"),
    ("NZD", "New Zealand Dollar"),
    ("SGD", "Singapore Dollar"),
    ("HKD", "Hong Kong Dollar"),
]
_CUSTOMER_TYPES = ["Retail", "Wholesale", "Commercial", "Residential", "Non-profit", "Government"]
_METHODS = [
    ("Cash", "NON_CREDIT_CARD"),
    ("Check", "NON_CREDIT_CARD"),
    ("Visa", "CREDIT_CARD"),
    ("MasterCard", "CREDIT_CARD"),
    ("American Express", "CREDIT_CARD"),
    ("Diners Club", "CREDIT_CARD"),
    ("Discover", "CREDIT_CARD"),
]


@dataclass(slots=True)
class Generated:
    entity: str
    obj: dict[str, Any]
    created: int  # Unix seconds
    updated: int


class Generator:
    """Fills a realm with ``per_entity`` objects per entity, deterministic for
    a seed and a clock reading.

    Timestamps are spread over the ``history_days`` before ``now`` so that part
    of the data falls inside the 30-day CDC window and part before it.
    """

    def __init__(
        self, seed: int, now: datetime, history_days: float = 60.0, *, taken: set[str] | None = None
    ) -> None:
        self.rng = random.Random(seed)
        self.now = int(now.timestamp())
        self.history = max(int(history_days * 86400), 120)
        self.refs: dict[str, list[tuple[str, str]]] = {}
        self._names: set[str] = set(taken or ())  # lower-case names already in use

    # The store hands out Ids; the generator only fills bodies.
    def generate(self, entity: str, count: int, next_id: Any) -> Iterator[Generated]:
        fill = getattr(self, "_fill_" + entity, None)
        template = TEMPLATES[entity]
        raw = orjson.dumps(template)
        for index in range(count):
            obj = orjson.loads(raw)
            obj["Id"] = next_id()
            created, updated, sync = self._times()
            obj["SyncToken"] = str(sync)
            if fill is not None:
                fill(obj, index, created)
            elif "TxnDate" in obj:
                self._txn_common(obj, created)
            normalize_money(obj)
            facts = ENTITIES[entity]
            if facts.name_field and facts.name_field in obj:
                self.refs.setdefault(entity, []).append((obj["Id"], str(obj[facts.name_field])))
            yield Generated(entity, obj, created, updated)

    # -- shared helpers --------------------------------------------------
    def _times(self) -> tuple[int, int, int]:
        created = self.now - self.rng.randint(60, self.history)
        if self.rng.random() < 0.35:
            updated = self.rng.randint(created, self.now - 1)
            sync = self.rng.randint(1, 4)
        else:
            updated, sync = created, 0
        return created, updated, sync

    def _unique(self, name: str) -> str:
        candidate, suffix = name, 1
        while candidate.lower() in self._names:
            suffix += 1
            candidate = f"{name} {suffix}"
        self._names.add(candidate.lower())
        return candidate

    def _ref(self, entity: str) -> dict[str, str] | None:
        rows = self.refs.get(entity)
        if not rows:
            return None
        value, name = self.rng.choice(rows)
        return {"value": value, "name": name}

    def _set_ref(self, obj: dict[str, Any], key: str, entity: str) -> None:
        ref = self._ref(entity)
        if ref is not None:
            obj[key] = ref

    def _address(self, addr_id: str) -> dict[str, str]:
        city, state, postal = self.rng.choice(_CITIES)
        return {
            "Id": addr_id,
            "Line1": f"{self.rng.randint(1, 9999)} {self.rng.choice(_STREETS)}",
            "City": city,
            "CountrySubDivisionCode": state,
            "PostalCode": postal,
        }

    def _person(self) -> tuple[str, str]:
        return self.rng.choice(_GIVEN), self.rng.choice(_FAMILY)

    def _txn_date(self, created: int) -> str:
        return datetime.fromtimestamp(created, UTC).astimezone(PACIFIC).date().isoformat()

    def _amount(self) -> float:
        return round(self.rng.uniform(5, 2500), 2)

    def _txn_common(self, obj: dict[str, Any], created: int) -> None:
        obj["TxnDate"] = self._txn_date(created)
        if "DocNumber" in obj:
            obj["DocNumber"] = str(1000 + int(obj["Id"]))
        if "PrivateNote" in obj:
            obj.pop("PrivateNote")

    def _split_lines(self, obj: dict[str, Any], total: float) -> None:
        """Spread ``total`` over the item lines; subtotal lines show the sum."""
        lines = obj.get("Line") or []
        items = [ln for ln in lines if ln.get("DetailType") != "SubTotalLineDetail"]
        remaining = total
        for i, line in enumerate(items):
            share = remaining if i == len(items) - 1 else round(total / len(items), 2)
            remaining = round(remaining - share, 2)
            line["Amount"] = share
            for detail_key in ("SalesItemLineDetail", "ItemBasedExpenseLineDetail"):
                detail = line.get(detail_key)
                if isinstance(detail, dict) and "Qty" in detail:
                    detail["Qty"] = 1
                    detail["UnitPrice"] = share
        for line in lines:
            if line.get("DetailType") == "SubTotalLineDetail":
                line["Amount"] = total
        if "TotalAmt" in obj:
            obj["TotalAmt"] = total
        detail = obj.get("TxnTaxDetail")
        if isinstance(detail, dict) and "TaxLine" in detail:
            detail.pop("TaxLine")
            detail["TotalTax"] = 0

    # -- name lists --------------------------------------------------------
    def _fill_Customer(self, obj: dict[str, Any], index: int, created: int) -> None:
        given, family = self._person()
        company = self._unique(f"{family} {self.rng.choice(_TRADE)}")
        obj.update(
            GivenName=given,
            FamilyName=family,
            CompanyName=company,
            DisplayName=company,
            FullyQualifiedName=company,
            PrintOnCheckName=company,
        )
        obj["BillAddr"] = self._address(obj["Id"])
        obj["ShipAddr"] = dict(obj["BillAddr"])
        obj["PrimaryPhone"] = {
            "FreeFormNumber": f"({self.rng.randint(200, 989)}) 555-{self.rng.randint(1000, 9999)}"
        }
        obj["PrimaryEmailAddr"] = {"Address": f"{given.lower()}.{family.lower()}@example.com"}
        balance = self._amount() if self.rng.random() < 0.3 else 0
        obj["Balance"] = obj["BalanceWithJobs"] = balance

    def _fill_Vendor(self, obj: dict[str, Any], index: int, created: int) -> None:
        given, family = self._person()
        name = self._unique(f"{family} {self.rng.choice(_TRADE)}")
        obj.update(DisplayName=name, PrintOnCheckName=name, GivenName=given, FamilyName=family)
        obj["BillAddr"] = self._address(obj["Id"])
        obj["AcctNum"] = str(self.rng.randint(1000000, 9999999))
        obj["TaxIdentifier"] = f"XXXXXX{self.rng.randint(1000, 9999)}"
        obj["Balance"] = self._amount() if self.rng.random() < 0.3 else 0

    def _fill_Employee(self, obj: dict[str, Any], index: int, created: int) -> None:
        given, family = self._person()
        name = self._unique(f"{given} {family}")
        obj.update(GivenName=given, FamilyName=family, DisplayName=name, PrintOnCheckName=name)
        obj["HiredDate"] = self._txn_date(created)

    def _fill_Account(self, obj: dict[str, Any], index: int, created: int) -> None:
        base, classification, acct_type, sub = _ACCOUNTS[index % len(_ACCOUNTS)]
        name = self._unique(base)
        obj.update(
            Name=name,
            FullyQualifiedName=name,
            Classification=classification,
            AccountType=acct_type,
            AccountSubType=sub,
            CurrentBalance=round(self.rng.uniform(-5000, 5000), 2),
        )
        obj["CurrentBalanceWithSubAccounts"] = obj["CurrentBalance"]
        obj.pop("Description", None)

    def _simple_name(self, obj: dict[str, Any], base: str) -> None:
        name = self._unique(base)
        obj["Name"] = name
        if "FullyQualifiedName" in obj:
            obj["FullyQualifiedName"] = name

    def _fill_Class(self, obj: dict[str, Any], index: int, created: int) -> None:
        self._simple_name(obj, f"{self.rng.choice(_TRADE)} Class")

    def _fill_Department(self, obj: dict[str, Any], index: int, created: int) -> None:
        self._simple_name(obj, f"{self.rng.choice(_CITIES)[0]} Office")

    def _fill_Term(self, obj: dict[str, Any], index: int, created: int) -> None:
        days = [10, 15, 30, 45, 60, 90][index % 6]
        self._simple_name(obj, f"Net {days}")
        obj["DueDays"] = days

    def _fill_PaymentMethod(self, obj: dict[str, Any], index: int, created: int) -> None:
        name, kind = _METHODS[index % len(_METHODS)]
        self._simple_name(obj, name)
        obj["Type"] = kind

    def _fill_CompanyCurrency(self, obj: dict[str, Any], index: int, created: int) -> None:
        if index < len(_CURRENCIES):
            code, name = _CURRENCIES[index]
        else:  # beyond the real ISO codes: synthetic but unique
            code, name = f"X{index:02d}", f"Currency {index}"
        obj["Code"], obj["Name"] = code, name

    def _fill_Budget(self, obj: dict[str, Any], index: int, created: int) -> None:
        year = datetime.fromtimestamp(created, PACIFIC).year
        self._simple_name(obj, f"Budget {year}")
        obj["StartDate"], obj["EndDate"] = f"{year}-01-01", f"{year}-12-31"
        account = self._ref("Account")
        obj["BudgetDetail"] = [
            {
                "BudgetDate": f"{year}-{month:02d}-01",
                "Amount": self._amount(),
                **({"AccountRef": account} if account is not None else {}),
            }
            for month in range(1, 13)
        ]

    def _fill_CustomerType(self, obj: dict[str, Any], index: int, created: int) -> None:
        self._simple_name(obj, self.rng.choice(_CUSTOMER_TYPES))

    def _fill_TaxAgency(self, obj: dict[str, Any], index: int, created: int) -> None:
        city, state, _ = self.rng.choice(_CITIES)
        obj["DisplayName"] = self._unique(f"{city} {state} Tax Agency")

    def _fill_TaxRate(self, obj: dict[str, Any], index: int, created: int) -> None:
        self._simple_name(obj, f"{self.rng.choice(_CITIES)[0]} Tax")
        obj["RateValue"] = round(self.rng.uniform(0.5, 9.5), 2)

    def _fill_TaxCode(self, obj: dict[str, Any], index: int, created: int) -> None:
        city = self.rng.choice(_CITIES)[0]
        self._simple_name(obj, city)
        obj["Description"] = obj["Name"]
        ref = self._ref("TaxRate")
        if ref is not None:
            obj["SalesTaxRateList"]["TaxRateDetail"][0]["TaxRateRef"] = ref

    def _fill_Item(self, obj: dict[str, Any], index: int, created: int) -> None:
        self._simple_name(obj, self.rng.choice(_ITEMS))
        obj["Description"] = obj["PurchaseDesc"] = obj["Name"]
        obj["UnitPrice"] = self.rng.randint(5, 300)
        obj["PurchaseCost"] = max(1, obj["UnitPrice"] // 2)
        obj["QtyOnHand"] = self.rng.randint(0, 500)
        obj["InvStartDate"] = self._txn_date(created)

    # -- transactions ------------------------------------------------------
    def _fill_sales(self, obj: dict[str, Any], created: int) -> None:
        self._txn_common(obj, created)
        customer = self._ref("Customer")
        if customer is not None:
            obj["CustomerRef"] = customer
        for line in obj.get("Line", []):
            detail = line.get("SalesItemLineDetail")
            if isinstance(detail, dict):
                self._set_ref(detail, "ItemRef", "Item")
        obj.pop("ProjectRef", None)
        if obj.get("LinkedTxn"):
            obj["LinkedTxn"] = []
        self._split_lines(obj, self._amount())

    def _fill_Invoice(self, obj: dict[str, Any], index: int, created: int) -> None:
        self._fill_sales(obj, created)
        obj["LinkedTxn"] = []
        due = datetime.fromisoformat(obj["TxnDate"]) + timedelta(days=30)
        obj["DueDate"] = due.date().isoformat()
        obj["Balance"] = obj["TotalAmt"] if self.rng.random() < 0.6 else 0

    def _fill_SalesReceipt(self, obj: dict[str, Any], index: int, created: int) -> None:
        self._fill_sales(obj, created)

    def _fill_Estimate(self, obj: dict[str, Any], index: int, created: int) -> None:
        self._fill_sales(obj, created)
        obj["TxnStatus"] = self.rng.choice(["Pending", "Accepted", "Closed"])

    def _fill_CreditMemo(self, obj: dict[str, Any], index: int, created: int) -> None:
        self._fill_sales(obj, created)

    def _fill_RefundReceipt(self, obj: dict[str, Any], index: int, created: int) -> None:
        self._fill_sales(obj, created)

    def _fill_Payment(self, obj: dict[str, Any], index: int, created: int) -> None:
        self._txn_common(obj, created)
        self._set_ref(obj, "CustomerRef", "Customer")
        obj.pop("ProjectRef", None)
        total = self._amount()
        obj["TotalAmt"] = total
        obj["UnappliedAmt"] = 0
        for line in obj.get("Line", []):
            line["Amount"] = total
            for ex in (line.get("LineEx") or {}).get("any", []):
                if ex.get("value", {}).get("Name") == "txnOpenBalance":
                    ex["value"]["Value"] = f"{total:.2f}"

    def _fill_vendor_txn(self, obj: dict[str, Any], created: int) -> None:
        self._txn_common(obj, created)
        self._set_ref(obj, "VendorRef", "Vendor")
        for line in obj.get("Line", []):
            line.pop("ProjectRef", None)
        self._split_lines(obj, self._amount())

    def _fill_Bill(self, obj: dict[str, Any], index: int, created: int) -> None:
        self._fill_vendor_txn(obj, created)
        obj["DueDate"] = (
            (datetime.fromisoformat(obj["TxnDate"]) + timedelta(days=30)).date().isoformat()
        )
        obj["Balance"] = obj["TotalAmt"] if self.rng.random() < 0.5 else 0
        obj.pop("LinkedTxn", None)

    def _fill_BillPayment(self, obj: dict[str, Any], index: int, created: int) -> None:
        self._fill_vendor_txn(obj, created)

    def _fill_PurchaseOrder(self, obj: dict[str, Any], index: int, created: int) -> None:
        self._fill_vendor_txn(obj, created)

    def _fill_VendorCredit(self, obj: dict[str, Any], index: int, created: int) -> None:
        self._fill_vendor_txn(obj, created)

    def _fill_Purchase(self, obj: dict[str, Any], index: int, created: int) -> None:
        self._txn_common(obj, created)
        self._split_lines(obj, self._amount())

    def _fill_Deposit(self, obj: dict[str, Any], index: int, created: int) -> None:
        self._txn_common(obj, created)
        total = self._amount()
        for line in obj.get("Line", []):
            line["Amount"] = total
        cash_back = obj.get("CashBack")
        if isinstance(cash_back, dict):
            cash_back["Amount"] = 0
        obj["TotalAmt"] = obj["HomeTotalAmt"] = total

    def _fill_Transfer(self, obj: dict[str, Any], index: int, created: int) -> None:
        self._txn_common(obj, created)
        obj["Amount"] = self._amount()

    def _fill_JournalEntry(self, obj: dict[str, Any], index: int, created: int) -> None:
        self._txn_common(obj, created)
        obj["DocNumber"] = str(300 + int(obj["Id"]))
        total = self._amount()
        by_side: dict[str, list[dict[str, Any]]] = {}
        for line in obj.get("Line", []):
            side = line.get("JournalEntryLineDetail", {}).get("PostingType", "Debit")
            by_side.setdefault(side, []).append(line)
        for lines in by_side.values():  # each side sums to the same total
            remaining = total
            for i, line in enumerate(lines):
                share = remaining if i == len(lines) - 1 else round(total / len(lines), 2)
                remaining = round(remaining - share, 2)
                line["Amount"] = share

    def _fill_TimeActivity(self, obj: dict[str, Any], index: int, created: int) -> None:
        self._txn_common(obj, created)
        self._set_ref(obj, "EmployeeRef", "Employee")
        self._set_ref(obj, "CustomerRef", "Customer")
        obj.pop("ProjectRef", None)
        obj["Hours"] = self.rng.randint(1, 8)
        obj["Minutes"] = self.rng.choice([0, 15, 30, 45])
