"""Realm data: objects per entity, writes with QBO's rules, and the change log.

Each realm keeps, per entity, a dict of live objects keyed by Id (insertion
order is Id order, because Ids only grow), a dict of tombstones for hard-
deleted transactions, and an append-mostly change log of ``(LastUpdatedTime,
seq, Id)`` kept sorted, so CDC finds "changed since T" by bisection instead of
scanning the realm.  Superseded log entries are skipped by comparing ``seq``
with the record's current one, and compacted away once they dominate the log.

Every write bumps ``SyncToken`` and sets ``MetaData.LastUpdatedTime`` from the
emulator clock, at second precision, in US Pacific time.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

from . import faults
from .clock import Clock, format_epoch_meta, pacific_date
from .entities import (
    CREATE_DEFAULTS,
    DELETED_SUFFIX_TEXT,
    ENTITIES,
    GENERATION_ORDER,
    MONEY_KEYS,
    READ_ONLY_FIELDS,
    EntityFacts,
    Generator,
    canonical_entity,
    json_default,
    money,
    normalize_money,
)
from .templates import TEMPLATES

_SEQ = itertools.count(1)
# Transactions whose TotalAmt QBO computes from the lines (sales forms too).
_TOTAL_FROM_LINES = frozenset(
    {"Bill", "Purchase", "PurchaseOrder", "VendorCredit", "Deposit"}
)  # global change sequence: a total order of writes


@dataclass(slots=True)
class Record:
    """One object (``obj``) or, once hard-deleted, its tombstone (``obj is None``)."""

    entity: str
    id: str
    obj: dict[str, Any] | None
    created: int  # Unix seconds (MetaData.CreateTime)
    updated: int  # Unix seconds (MetaData.LastUpdatedTime, or deletion time)
    seq: int
    _json: bytes | None = None

    @property
    def deleted(self) -> bool:
        return self.obj is None

    def json(self) -> bytes:
        """The wire form, cached until the next write (CDC and queries reuse it)."""
        if self._json is None:
            self._json = orjson.dumps(self.payload(), default=json_default)
        return self._json

    def payload(self) -> dict[str, Any]:
        if self.obj is None:
            return {
                "domain": "QBO",
                "status": "Deleted",
                "Id": self.id,
                "MetaData": {"LastUpdatedTime": format_epoch_meta(self.updated)},
            }
        return self.obj

    @property
    def live_obj(self) -> dict[str, Any]:
        """The object of a live record (a tombstone has none: asking is a bug)."""
        if self.obj is None:
            raise KeyError(f"{self.entity} {self.id} is deleted")
        return self.obj

    def copy(self) -> dict[str, Any]:
        """A plain-JSON deep copy for Python callers (no shared state)."""
        copied: dict[str, Any] = orjson.loads(self.json())
        return copied

    @property
    def active(self) -> bool:
        return self.obj is not None and self.obj.get("Active", True) is not False


@dataclass
class Table:
    """All rows of one entity in one realm."""

    facts: EntityFacts
    live: dict[str, Record] = field(default_factory=dict)
    tombstones: dict[str, Record] = field(default_factory=dict)
    log: list[tuple[int, int, str]] = field(default_factory=list)
    next_id: int = 0
    next_doc: int = 1001
    # lower-case property name -> canonical spelling, for case-insensitive queries
    keys: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.next_id = self.facts.first_id
        self.learn(TEMPLATES[self.facts.name])
        for common in ("Id", "SyncToken", "MetaData", "Active", "domain", "sparse"):
            self.keys.setdefault(common.lower(), common)

    def learn(self, obj: dict[str, Any]) -> None:
        for key in obj:
            if key.lower() not in self.keys:
                self.keys[key.lower()] = key

    def allocate_id(self) -> str:
        value = self.next_id
        self.next_id += 1
        return str(value)

    def log_change(self, record: Record) -> None:
        entry = (record.updated, record.seq, record.id)
        if not self.log or self.log[-1] <= entry:
            self.log.append(entry)
        else:  # the clock was moved back: keep the log sorted anyway
            bisect.insort(self.log, entry)
        if len(self.log) > 2 * (len(self.live) + len(self.tombstones)) + 1024:
            self._compact()

    def _compact(self) -> None:
        """Drop superseded entries (O(n), amortised over the writes that made them)."""
        self.log = sorted(
            (r.updated, r.seq, r.id)
            for r in itertools.chain(self.live.values(), self.tombstones.values())
        )

    def changed_since(self, since: int) -> tuple[list[Record], list[Record]]:
        """(live, deleted) records whose LastUpdatedTime >= ``since``, each
        sorted by (LastUpdatedTime, Id)."""
        start = bisect.bisect_left(self.log, (since, -1, ""))
        live: list[Record] = []
        dead: list[Record] = []
        for _, seq, rid in itertools.islice(self.log, start, None):
            rec = self.live.get(rid) or self.tombstones.get(rid)
            if rec is None or rec.seq != seq:
                continue  # superseded by a later change
            (dead if rec.deleted else live).append(rec)
        live.sort(key=_change_order)
        dead.sort(key=_change_order)
        return live, dead


def _id_key(value: str) -> tuple[int, Any]:
    return (0, int(value)) if value.isdigit() else (1, value)


class Realm:
    """One QuickBooks company."""

    def __init__(self, realm_id: str, clock: Clock) -> None:
        self.id = realm_id
        self.clock = clock
        self.tables: dict[str, Table] = {name: Table(facts) for name, facts in ENTITIES.items()}
        # (name group, lower-case name) -> (entity, Id) for active rows' uniqueness
        self.names: dict[tuple[str, str], tuple[str, str]] = {}
        self.cdc_in_batch = True
        # Told of every write (entity, Id, operation, epoch seconds): the webhook sender.
        self.on_change: Callable[[str, str, str, int], None] | None = None
        for facts in ENTITIES.values():
            if facts.is_singleton:
                self._add_singleton(self.tables[facts.name])

    def _changed(self, rec: Record, operation: str) -> None:
        if self.on_change is not None:
            self.on_change(rec.entity, rec.id, operation, rec.updated)

    def _add_singleton(self, table: Table) -> None:
        """A company's one CompanyInfo / Preferences object (Id "1"), made with the realm."""
        obj: dict[str, Any] = orjson.loads(orjson.dumps(TEMPLATES[table.facts.name]))
        now = self._now()
        obj["Id"], obj["SyncToken"] = table.allocate_id(), "0"
        obj["MetaData"] = {
            "CreateTime": format_epoch_meta(now),
            "LastUpdatedTime": format_epoch_meta(now),
        }
        if table.facts.name == "CompanyInfo":
            obj["CompanyName"] = obj["LegalName"] = f"Emulated Company {self.id}"
            obj["CompanyStartDate"] = pacific_date(_utc(now)).isoformat()
        normalize_money(obj)
        rec = Record(table.facts.name, obj["Id"], obj, now, now, next(_SEQ))
        table.live[rec.id] = rec
        table.log_change(rec)

    # -- reading ---------------------------------------------------------
    def table(self, entity: str) -> Table:
        name = canonical_entity(entity)
        if name is None:
            raise KeyError(entity)
        return self.tables[name]

    def get(self, entity: str, obj_id: str) -> Record | None:
        return self.table(entity).live.get(str(obj_id))

    def count(self, entity: str | None = None) -> int:
        tables = [self.table(entity)] if entity else self.tables.values()
        return sum(len(t.live) for t in tables)

    # -- seeding ---------------------------------------------------------
    def seed(self, seed: int, per_entity: int | dict[str, int], history_days: float = 60.0) -> int:
        """Generate objects (deterministic for a seed and clock reading)."""
        taken = {name for _, name in self.names}
        gen = Generator(seed, self.clock.now(), history_days, taken=taken)
        total = 0
        for entity in GENERATION_ORDER:
            count = per_entity.get(entity, 0) if isinstance(per_entity, dict) else per_entity
            if count <= 0 or ENTITIES[entity].is_singleton:
                continue
            table = self.tables[entity]
            for item in gen.generate(entity, count, table.allocate_id):
                obj = item.obj
                obj["MetaData"] = {
                    "CreateTime": format_epoch_meta(item.created),
                    "LastUpdatedTime": format_epoch_meta(item.updated),
                }
                obj["domain"], obj["sparse"] = "QBO", False
                rec = Record(entity, obj["Id"], obj, item.created, item.updated, next(_SEQ))
                table.live[rec.id] = rec
                table.learn(obj)
                self._claim_name(table.facts, obj, rec.id)
                total += 1
                table.log.append((rec.updated, rec.seq, rec.id))
            table.log.sort()
            if table.facts.doc_number:
                table.next_doc = max(table.next_doc, 1001 + table.next_id)
        return total

    # -- writes ------------------------------------------------------------
    def create(self, entity: str, body: dict[str, Any]) -> Record:
        table = self.table(entity)
        facts = table.facts
        obj = _clean(body)
        for key in READ_ONLY_FIELDS:
            obj.pop(key, None)
        now = self._now()
        self._apply_defaults(table, obj, now, creating=True)
        self._check_name(facts, obj, None)
        obj_id = table.allocate_id()
        obj.update(
            Id=obj_id,
            SyncToken="0",
            MetaData={
                "CreateTime": format_epoch_meta(now),
                "LastUpdatedTime": format_epoch_meta(now),
            },
            domain="QBO",
            sparse=False,
        )
        obj = _order_like(obj, TEMPLATES[facts.name])
        normalize_money(obj)
        table.learn(obj)
        rec = Record(facts.name, obj_id, obj, now, now, next(_SEQ))
        table.live[obj_id] = rec
        self._claim_name(facts, obj, obj_id)
        table.log_change(rec)
        self._changed(rec, "Create")
        return rec

    def update(
        self, entity: str, body: dict[str, Any], *, sparse: bool, check_token: bool = True
    ) -> Record:
        """Full or sparse update.  ``check_token`` enforces the SyncToken rule
        (5010 Stale Object); the control API may skip it."""
        table = self.table(entity)
        facts = table.facts
        obj_id = body.get("Id")
        if obj_id in (None, ""):
            raise faults.required_param("Id")
        rec = self._require_live(table, str(obj_id))
        token = body.get("SyncToken")
        if check_token:
            if token in (None, ""):
                raise faults.required_param("SyncToken")
            if str(token) != rec.live_obj["SyncToken"]:
                raise faults.stale_object()
        elif token not in (None, "") and str(token) != rec.live_obj["SyncToken"]:
            raise faults.stale_object()
        changes = _clean(body)
        for key in READ_ONLY_FIELDS:
            changes.pop(key, None)
        current = rec.live_obj
        if sparse:
            new = dict(current)
            new.update(changes)
            for key, value in body.items():  # an explicit null or "" clears the field
                if (value is None or value == "") and key not in READ_ONLY_FIELDS:
                    new.pop(key, None)
        else:
            # A full update replaces every writable field: omitted ones are cleared.
            new = {key: value for key, value in current.items() if key in READ_ONLY_FIELDS}
            new.update(changes)
        now = self._now()
        self._apply_defaults(table, new, now, creating=False, old=current, replacing=not sparse)
        self._apply_active(facts, current, new)
        self._check_name(facts, new, rec.id)
        self._commit(table, rec, new, now)
        self._changed(rec, "Update")
        return rec

    def delete(self, entity: str, obj_id: str, sync_token: str | None = None) -> Record:
        """Hard delete of a transaction; leaves a tombstone for CDC."""
        table = self.table(entity)
        facts = table.facts
        if not facts.is_transaction:
            raise faults.unsupported_operation(
                f"Operation Delete is not supported for {facts.name}. "
                "Make the list entity inactive instead (Active=false)."
            )
        rec = self._require_live(table, str(obj_id))
        if sync_token is not None and str(sync_token) != rec.live_obj["SyncToken"]:
            raise faults.stale_object()
        now = self._now()
        del table.live[rec.id]
        tomb = Record(facts.name, rec.id, None, rec.created, now, next(_SEQ))
        table.tombstones[rec.id] = tomb
        table.log_change(tomb)
        self._changed(tomb, "Delete")
        return tomb

    def deactivate(self, entity: str, obj_id: str, sync_token: str | None = None) -> Record:
        """A name list's "delete": ``Active=false`` (a normal update in CDC)."""
        table = self.table(entity)
        if not table.facts.is_name_list:
            raise faults.unsupported_operation(
                f"Operation Deactivate is not supported for {table.facts.name}."
            )
        rec = self._require_live(table, str(obj_id))
        body = {"Id": rec.id, "Active": False}
        if sync_token is not None:
            body["SyncToken"] = sync_token
        return self.update(entity, body, sparse=True, check_token=False)

    def void(self, entity: str, obj_id: str, sync_token: str | None = None) -> Record:
        """Void: keep the lines, zero every amount, note "Voided", bump SyncToken
        (samples/responses/void_invoice_response.json)."""
        table = self.table(entity)
        facts = table.facts
        if not facts.voidable:
            raise faults.unsupported_operation(f"Operation Void is not supported for {facts.name}.")
        rec = self._require_live(table, str(obj_id))
        if sync_token is not None and str(sync_token) != rec.live_obj["SyncToken"]:
            raise faults.stale_object()
        new = orjson.loads(rec.json())
        _zero_amounts(new)
        note = new.get("PrivateNote")
        new["PrivateNote"] = (
            "Voided" if not note or note.startswith("Voided") else f"Voided - {note}"
        )
        self._commit(table, rec, new, self._now())
        self._changed(rec, "Void")
        return rec

    # -- internals -----------------------------------------------------------
    def _now(self) -> int:
        return int(self.clock.timestamp())

    def _require_live(self, table: Table, obj_id: str) -> Record:
        rec = table.live.get(obj_id)
        if rec is None:
            raise faults.object_not_found(deleted=obj_id in table.tombstones)
        return rec

    def _commit(self, table: Table, rec: Record, new: dict[str, Any], now: int) -> None:
        old = rec.live_obj
        self._release_name(table.facts, old)
        new["Id"] = rec.id
        new["SyncToken"] = str(int(old["SyncToken"]) + 1)
        new["MetaData"] = {
            "CreateTime": old["MetaData"]["CreateTime"],
            "LastUpdatedTime": format_epoch_meta(now),
        }
        new["domain"], new["sparse"] = "QBO", False
        new = _order_like(new, old)
        normalize_money(new)
        table.learn(new)
        rec.obj = new
        rec.updated = now
        rec.seq = next(_SEQ)
        rec._json = None
        self._claim_name(table.facts, new, rec.id)
        table.log_change(rec)

    def _apply_defaults(
        self,
        table: Table,
        obj: dict[str, Any],
        now: int,
        *,
        creating: bool,
        old: dict[str, Any] | None = None,
        replacing: bool = False,
    ) -> None:
        """What QBO fills in server-side (samples README, fact 9).  A full
        update (``replacing``) gets the same defaults as a create for the
        fields it leaves out."""
        facts = table.facts
        if creating or replacing:
            _fill_create_defaults(facts.name, obj)
        if facts.is_name_list:
            self._name_defaults(facts, obj, creating)
            return
        today = pacific_date(_utc(now))
        if creating:
            _new_transaction_defaults(table, obj, today)
        if facts.party_ref:
            self._fill_party(facts, facts.party_ref, obj, creating)
        if creating:
            _require_create_fields(facts.name, obj)
        self._fill_lines_and_totals(facts, obj, creating, today)
        if facts.name in ("Invoice", "Bill") and "TotalAmt" in obj:
            obj["Balance"] = _balance(obj, old)

    def _fill_party(
        self, facts: EntityFacts, party_ref: str, obj: dict[str, Any], creating: bool
    ) -> None:
        """Name the customer or vendor reference; a new sales form takes its addresses."""
        party_entity = "Customer" if party_ref == "CustomerRef" else "Vendor"
        party = self._fill_ref_name(obj, party_ref, party_entity)
        if creating and facts.sales_form and party is not None:
            # QBO copies the customer's addresses onto a new sales form.
            for addr in ("BillAddr", "ShipAddr"):
                if addr not in obj and isinstance(party.get(addr), dict):
                    obj[addr] = dict(party[addr])

    def _fill_lines_and_totals(
        self, facts: EntityFacts, obj: dict[str, Any], creating: bool, today: date
    ) -> None:
        """Line item names and the totals QBO computes from the lines."""
        if not isinstance(obj.get("Line"), list):
            return
        if facts.sales_form:
            self._fill_item_refs(obj["Line"])
            _sales_totals(obj, facts.name)
            if creating and facts.name == "Invoice":
                _new_invoice_defaults(obj, today)
        elif facts.name in _TOTAL_FROM_LINES:
            obj["TotalAmt"] = _total_from_lines(facts.name, obj)

    def _name_defaults(self, facts: EntityFacts, obj: dict[str, Any], creating: bool) -> None:
        if facts.name_group == "party" and not obj.get("DisplayName"):
            parts = [
                obj.get(k) for k in ("Title", "GivenName", "MiddleName", "FamilyName", "Suffix")
            ]
            derived = " ".join(p for p in parts if p) or obj.get("CompanyName") or ""
            if derived:
                obj["DisplayName"] = derived
        if facts.name_field and not obj.get(facts.name_field):
            raise faults.required_param(facts.name_field)
        if facts.name_group == "party":
            obj.setdefault("PrintOnCheckName", obj["DisplayName"])
        if creating:
            obj.setdefault("Active", True)
        # FullyQualifiedName is computed: Parent:Child for sub-rows.
        if "FullyQualifiedName" in TEMPLATES[facts.name] or "FullyQualifiedName" in obj:
            obj["FullyQualifiedName"] = self._fqn(facts, obj)

    def _fqn(self, facts: EntityFacts, obj: dict[str, Any]) -> str:
        own = str(obj.get(facts.name_field or "Name", ""))
        parent_ref = obj.get("ParentRef")
        if isinstance(parent_ref, dict) and parent_ref.get("value"):
            parent = self.tables[facts.name].live.get(str(parent_ref["value"]))
            if parent is not None:
                if facts.sub_flag:
                    obj[facts.sub_flag] = True
                parent_obj = parent.live_obj
                if facts.name == "Customer":
                    obj["Level"] = int(parent_obj.get("Level", 0)) + 1
                    obj.setdefault("BillWithParent", False)
                own_name = parent_obj.get(facts.name_field) if facts.name_field else None
                parent_name = parent_obj.get("FullyQualifiedName", own_name)
                return f"{parent_name}:{own}"
        if facts.sub_flag and facts.sub_flag in TEMPLATES[facts.name]:
            obj[facts.sub_flag] = False
        return own

    def _apply_active(self, facts: EntityFacts, old: dict[str, Any], new: dict[str, Any]) -> None:
        """Deactivation appends " (deleted)" to the name; reactivation strips it."""
        if not facts.is_name_list or facts.name in ("CompanyCurrency", "TaxCode", "TaxRate"):
            return
        was, now_active = old.get("Active", True), new.get("Active", True)
        fields = [
            f for f in (facts.name_field, "FullyQualifiedName") if f and isinstance(new.get(f), str)
        ]
        if was is not False and now_active is False:
            for f in fields:
                if not new[f].endswith(DELETED_SUFFIX_TEXT):
                    new[f] += DELETED_SUFFIX_TEXT
        elif now_active is not False:
            for f in fields:
                if new[f].endswith(DELETED_SUFFIX_TEXT):
                    new[f] = new[f][: -len(DELETED_SUFFIX_TEXT)]

    def _fill_ref_name(self, obj: dict[str, Any], key: str, entity: str) -> dict[str, Any] | None:
        """Complete ``{"value": id}`` with the party's name; return the party."""
        ref = obj.get(key)
        if not isinstance(ref, dict) or ref.get("value") is None:
            return None
        ref["value"] = str(ref["value"])
        target = self.tables[entity].live.get(ref["value"])
        if target is None:
            return None
        if "name" not in ref:
            ref["name"] = target.live_obj.get("DisplayName")
        return target.live_obj

    def _fill_item_refs(self, lines: list[Any]) -> None:
        """Name each line's ItemRef and default its TaxCodeRef, as QBO does."""
        items = self.tables["Item"].live
        for line in lines:
            detail = line.get("SalesItemLineDetail") if isinstance(line, dict) else None
            if not isinstance(detail, dict):
                continue
            ref = detail.get("ItemRef")
            if isinstance(ref, dict) and ref.get("value") is not None:
                ref["value"] = str(ref["value"])
                item = items.get(ref["value"])
                if item is not None and "name" not in ref:
                    ref["name"] = item.live_obj.get("Name")
            detail.setdefault("TaxCodeRef", {"value": "NON"})

    # Name uniqueness among *active* rows (Customer/Vendor/Employee share one space).
    def _name_key(self, facts: EntityFacts, obj: dict[str, Any]) -> tuple[str, str] | None:
        if (
            not facts.name_field
            or facts.name in ("TaxCode", "TaxRate")
            or obj.get("Active") is False
        ):
            return None
        value = obj.get("FullyQualifiedName") or obj.get(facts.name_field)
        if not isinstance(value, str) or not value:
            return None
        return (facts.name_group or facts.name, value.lower())

    def _check_name(self, facts: EntityFacts, obj: dict[str, Any], own_id: str | None) -> None:
        key = self._name_key(facts, obj)
        if key is None:
            return
        holder = self.names.get(key)
        if holder is not None and holder != (facts.name, own_id):
            what = (
                "customer, vendor or employee"
                if facts.name_group == "party"
                else facts.name.lower()
            )
            raise faults.duplicate_name(what)

    def _claim_name(self, facts: EntityFacts, obj: dict[str, Any], obj_id: str) -> None:
        key = self._name_key(facts, obj)
        if key is not None:
            self.names[key] = (facts.name, obj_id)

    def _release_name(self, facts: EntityFacts, obj: dict[str, Any]) -> None:
        key = self._name_key(facts, obj)
        if key is not None and self.names.get(key, (None, None))[1] == obj.get("Id"):
            del self.names[key]


# -- helpers ---------------------------------------------------------------
def _utc(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _parse_date(value: Any) -> date | None:
    try:
        return date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _fill_create_defaults(entity: str, obj: dict[str, Any]) -> None:
    """The fields QBO sets on create when the body leaves them out (a fresh copy each)."""
    for key, value in CREATE_DEFAULTS.get(entity, {}).items():
        if key not in obj:
            obj[key] = orjson.loads(orjson.dumps(value))


def _new_transaction_defaults(table: Table, obj: dict[str, Any], today: date) -> None:
    """A new transaction's date, currency and (for numbered forms) the next DocNumber."""
    facts = table.facts
    obj.setdefault("TxnDate", today.isoformat())
    if "CurrencyRef" in TEMPLATES[facts.name]:
        obj.setdefault("CurrencyRef", {"value": "USD", "name": "United States Dollar"})
    if facts.doc_number and not obj.get("DocNumber"):
        obj["DocNumber"] = str(table.next_doc)
        table.next_doc += 1


def _require_create_fields(entity: str, obj: dict[str, Any]) -> None:
    """What QBO refuses to create without (2020 Required param missing)."""
    if entity == "Invoice":
        if not obj.get("CustomerRef"):
            raise faults.required_param("CustomerRef")
        if not obj.get("Line"):
            raise faults.required_param("Line")
    if entity == "Bill" and not obj.get("VendorRef"):
        raise faults.required_param("VendorRef")


def _new_invoice_defaults(obj: dict[str, Any], today: date) -> None:
    """A new invoice: no links yet, due in 30 days, not printed or emailed."""
    obj.setdefault("LinkedTxn", [])
    txn_date = _parse_date(obj.get("TxnDate")) or today
    obj.setdefault("DueDate", (txn_date + timedelta(days=30)).isoformat())
    obj.setdefault("PrintStatus", "NeedToPrint")
    obj.setdefault("EmailStatus", "NotSet")


def _total_from_lines(entity: str, obj: dict[str, Any]) -> Any:
    """TotalAmt as the sum of the lines (a deposit's cash back taken off)."""
    total = float(_line_sum(obj["Line"]))
    cash_back = obj.get("CashBack")
    if entity == "Deposit" and isinstance(cash_back, dict):
        total -= float(cash_back.get("Amount") or 0)
    return money(total)


def _balance(obj: dict[str, Any], old: dict[str, Any] | None) -> Any:
    """Balance is read-only: what is still owed (the total less what was paid)."""
    paid = 0.0
    if old is not None:
        paid = float(old.get("TotalAmt") or 0) - float(old.get("Balance") or 0)
    return money(max(float(obj["TotalAmt"]) - paid, 0.0))


def _change_order(rec: Record) -> tuple[int, tuple[int, Any]]:
    """CDC order within a table: by change time, then by id as QBO sorts ids."""
    return (rec.updated, _id_key(rec.id))


def _clean(value: Any) -> Any:
    """Drop nulls and empty strings: QBO returns only properties that have
    values (reference §2.2), and clients such as python-quickbooks send
    every attribute, most of them empty."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if v is not None and v != ""}
    if isinstance(value, list):
        return [_clean(v) for v in value if v is not None]
    return value


def _order_like(obj: dict[str, Any], model: dict[str, Any]) -> dict[str, Any]:
    """Key order of a real object: the model's keys first, in its order."""
    out = {key: obj[key] for key in model if key in obj}
    for key, value in obj.items():
        if key not in out:
            out[key] = value
    return out


def _line_sum(lines: list[Any]) -> Any:
    total = 0.0
    for line in lines:
        if isinstance(line, dict) and line.get("DetailType") != "SubTotalLineDetail":
            amount = line.get("Amount")
            if isinstance(amount, (int, float)) and not isinstance(amount, bool):
                total += amount
    return money(total)


def _sales_totals(obj: dict[str, Any], entity: str) -> None:
    """Number the item lines, keep one trailing subtotal line, total the form."""
    lines = [ln for ln in obj["Line"] if isinstance(ln, dict)]
    items = [ln for ln in lines if ln.get("DetailType") != "SubTotalLineDetail"]
    used = {str(ln["Id"]) for ln in items if ln.get("Id") not in (None, "")}
    next_line = 1
    for num, line in enumerate(items, start=1):
        if line.get("Id") in (None, ""):
            while str(next_line) in used:
                next_line += 1
            line["Id"] = str(next_line)
            used.add(line["Id"])
        else:
            line["Id"] = str(line["Id"])
        if line.get("DetailType") in ("SalesItemLineDetail", "GroupLineDetail"):
            line["LineNum"] = num
    # Id and LineNum lead each line, as QBO writes them.
    items = [_order_like(ln, {"Id": 0, "LineNum": 0}) for ln in items]
    subtotal = _line_sum(items)
    subtotal_line = {
        "Amount": subtotal,
        "DetailType": "SubTotalLineDetail",
        "SubTotalLineDetail": {},
    }
    obj["Line"] = [*items, subtotal_line]
    tax = obj.setdefault("TxnTaxDetail", {"TotalTax": 0})
    total_tax = tax.get("TotalTax", 0) if isinstance(tax, dict) else 0
    obj["TotalAmt"] = money(float(subtotal) + float(total_tax or 0))


def _zero_amounts(value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in MONEY_KEYS and isinstance(item, (int, float)) and not isinstance(item, bool):
                value[key] = 0
            elif isinstance(item, (dict, list)):
                _zero_amounts(item)
    elif isinstance(value, list):
        for item in value:
            _zero_amounts(item)
