"""The batch endpoint (reference §2.3, §2.3.1).

``POST /v3/company/{realm}/batch`` with ``{"BatchItemRequest": [...]}``, at
most 30 items.  Each item has a ``bId`` and one of:

- ``"Query": "select ..."`` → ``{"QueryResponse": {...}, "bId": ..}``;
- ``"CDCQuery": {"Entities": "Customer,Invoice", "ChangedSince": "..."}`` →
  ``{"CDCResponse": [{"QueryResponse": [...]}], "bId": ..}`` (the shape Intuit's
  Java SDK reads; whether the live service sends an array or a single object is
  UNCONFIRMED, so ``batch_cdc_shape="object"`` switches to the object form).
  A realm switched with ``set_cdc_in_batch(realm, False)`` answers these items
  with a Fault instead, so a client's fallback to ``/cdc`` can be tested;
- ``"operation": "create"|"update"|"delete"`` plus an entity key
  (``"Customer": {...}``) → ``{"Customer": {...}, "bId": ..}``.

Item failures are ``{"Fault": {...}, "bId": ..}`` inside an HTTP 200 answer;
the payload key comes before ``bId``, as recorded.  More than 30 items fail the
whole request with a 400 fault (the code is our choice: 4002).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import faults
from .entities import canonical_entity

if TYPE_CHECKING:
    from .core import Emulator

BATCH_MAX_ITEMS = 30


def too_many(count: int, limit: int) -> faults.QBOFault:
    return faults.QBOFault(
        "4002",
        "Batch Request Item limit exceeded",
        f"The number of BatchItemRequest items ({count}) exceeds the maximum allowed ({limit}).",
    )


def cdc_refused() -> faults.QBOFault:
    return faults.unsupported_operation(
        "Operation CDCQuery is not supported in a batch request for this company."
    )


def run(emu: Emulator, realm_id: str, body: Any) -> tuple[dict[str, Any], list[str]]:
    """Answer a batch: (response body, the kinds of item processed)."""
    items = body.get("BatchItemRequest") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise faults.required_param("BatchItemRequest")
    if len(items) > emu.batch_max_items:
        raise too_many(len(items), emu.batch_max_items)
    out: list[dict[str, Any]] = []
    kinds: list[str] = []
    for item in items:
        if not isinstance(item, dict):
            item = {}
        bid = item.get("bId")
        kind = _kind(item)
        kinds.append(kind)
        try:
            if bid in (None, ""):
                raise faults.required_param("bId")
            payload = _answer(emu, realm_id, item, kind)
        except faults.QBOFault as fault:
            payload = {"Fault": fault.fault()}
        out.append({**payload, "bId": bid})
    return {"BatchItemResponse": out, "time": emu.now_time()}, kinds


def _kind(item: dict[str, Any]) -> str:
    if "Query" in item:
        return "query"
    if "CDCQuery" in item:
        return "cdc"
    op = str(item.get("operation") or "").lower()
    return op if op in ("create", "update", "delete") else "other"


def _answer(emu: Emulator, realm_id: str, item: dict[str, Any], kind: str) -> dict[str, Any]:
    if kind == "query":
        statement = item.get("Query")
        if not isinstance(statement, str):
            raise faults.required_param("Query")
        return {"QueryResponse": emu.api_query(realm_id, statement)["QueryResponse"]}
    if kind == "cdc":
        if not emu.realm(realm_id).cdc_in_batch:
            raise cdc_refused()
        spec = item.get("CDCQuery") or {}
        if not isinstance(spec, dict):
            raise faults.required_param("CDCQuery")
        body = emu.cdc_body(realm_id, _field(spec, "Entities"), _field(spec, "ChangedSince"))
        return {"CDCResponse": [body] if emu.batch_cdc_shape == "array" else body}
    if kind in ("create", "update", "delete"):
        entity_key = next((k for k in item if canonical_entity(k) is not None), None)
        if entity_key is None:
            raise faults.required_param("entity")
        _, response = emu.api_write(realm_id, entity_key, item[entity_key], kind)
        response.pop("time", None)
        return response
    raise faults.unsupported_operation(
        "Operation Could not find a supported operation in BatchItemRequest is not supported."
    )


def _field(spec: dict[str, Any], name: str) -> Any:
    """CDCQuery fields, tolerant of case (the Java SDK writes Entities/ChangedSince)."""
    if name in spec:
        return spec[name]
    low = name.lower()
    return next((v for k, v in spec.items() if k.lower() == low), None)
