"""QBO fault bodies → `types.Fault` → the typed errors of `types.py`.

QuickBooks answers errors in three shapes (reference §5.2, samples/responses/fault_*):
- the accounting API: JSON `{"Fault":{"Error":[{"Message","Detail","code","element"}],"type"}}`;
- the gateway (auth): lower-case JSON `{"fault":{"error":[{"message","detail","code"}],"type"}}`
  whose `time` is epoch milliseconds;
- throttling and system failures: XML `<IntuitResponse><Fault type><Error code>...`, even when
  JSON was asked for. A 200 can carry a Fault too, so bodies are always inspected.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import msgspec

from poller.qbo.types import (
    AuthenticationError,
    AuthorizationError,
    Fault,
    NotFoundError,
    QboError,
    ServerError,
    ThrottledError,
    ValidationError,
)

THROTTLE_CODES = frozenset({"3001"})
AUTHENTICATION_CODES = frozenset({"100", "3200"})
AUTHORIZATION_CODES = frozenset({"3100", "120"})
NOT_FOUND_CODES = frozenset({"610"})
SYSTEM_CODES = frozenset({"10000"})


def _text(value: Any) -> str:
    """Fault fields are sometimes null (`"detail": null`); the dataclass wants strings."""
    return "" if value is None else str(value)


def _ci_get(obj: dict[str, Any], key: str) -> Any:
    """`Fault`/`fault`, `Error`/`error`, `Message`/`message`: the gateway lower-cases keys."""
    if key in obj:
        return obj[key]
    lowered = key.lower()
    for k, v in obj.items():
        if isinstance(k, str) and k.lower() == lowered:
            return v
    return None


def fault_from_object(
    fault: Any, status: int | None = None, intuit_tid: str | None = None
) -> Fault | None:
    """A JSON `Fault` object (the value under the `Fault` key, as in batch items) → Fault.

    Only the first Error is kept: QBO puts the one that matters first, and several errors
    never change how the client reacts.
    """
    if not isinstance(fault, dict):
        return None
    errors = _ci_get(fault, "Error")
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    return Fault(
        type=_text(_ci_get(fault, "type")),
        code=_text(_ci_get(first, "code")),
        message=_text(_ci_get(first, "Message")),
        detail=_text(_ci_get(first, "Detail")),
        status=status,
        intuit_tid=intuit_tid,
    )


def fault_from_json(
    doc: Any, status: int | None = None, intuit_tid: str | None = None
) -> Fault | None:
    """A whole decoded JSON body → its Fault, or None when it carries none."""
    if not isinstance(doc, dict):
        return None
    return fault_from_object(_ci_get(doc, "Fault"), status, intuit_tid)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]  # drop the `{http://schema.intuit.com/finance/v3}` namespace


def fault_from_xml(
    body: bytes, status: int | None = None, intuit_tid: str | None = None
) -> Fault | None:
    """`<IntuitResponse><Fault type><Error code><Message/><Detail/>` → Fault (None if absent)."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    fault = (
        root
        if _local(root.tag) == "Fault"
        else next((el for el in root.iter() if _local(el.tag) == "Fault"), None)
    )
    if fault is None:
        return None
    error = next((el for el in fault if _local(el.tag) == "Error"), None)
    message = detail = ""
    code = ""
    if error is not None:
        code = error.get("code", "")
        for child in error:
            if _local(child.tag) == "Message":
                message = (child.text or "").strip()
            elif _local(child.tag) == "Detail":
                detail = (child.text or "").strip()
    return Fault(
        type=fault.get("type", ""),
        code=code,
        message=message,
        detail=detail,
        status=status,
        intuit_tid=intuit_tid,
    )


def looks_like_xml(body: bytes) -> bool:
    return body.lstrip()[:1] == b"<"


_NOT_JSON = object()
_DECODER = msgspec.json.Decoder()  # faults hold no amounts: plain floats are fine here


def read_body(
    body: bytes,
    status: int | None = None,
    intuit_tid: str | None = None,
    decode: Callable[[bytes], Any] | None = None,
) -> tuple[Any, Fault | None]:
    """Any QBO body → (its JSON document, or `NOT_JSON`; its Fault, or None), decoding it once.

    Decides by the body, not by Content-Type: throttle answers are XML whatever was asked for
    and their Content-Type is not always right. `decode` is the JSON decoder to use (the
    client passes `parse.decode`, which keeps QBO's literals, so the same document serves both
    the Fault check and the answer).
    """
    if not body:
        return _NOT_JSON, None
    if looks_like_xml(body):
        return _NOT_JSON, fault_from_xml(body, status, intuit_tid)
    try:
        doc = (decode or _DECODER.decode)(body)
    except msgspec.DecodeError:
        return _NOT_JSON, None
    return doc, fault_from_json(doc, status, intuit_tid)


NOT_JSON = _NOT_JSON


def parse_fault(
    body: bytes, status: int | None = None, intuit_tid: str | None = None
) -> Fault | None:
    """Any QBO body (JSON upper/lower case, or XML) → its Fault, or None."""
    return read_body(body, status, intuit_tid)[1]


def is_throttle(status: int | None, fault: Fault | None) -> bool:
    """429, or the legacy 403 whose fault code is 3001 (ThrottleExceeded, 2016 and before)."""
    return status == 429 or (fault is not None and fault.code in THROTTLE_CODES)


def error_class(status: int | None, fault: Fault | None) -> type[QboError]:
    """Which typed error a status and fault mean (the status wins where it is decisive)."""
    code = fault.code if fault else ""
    ftype = fault.type.lower() if fault else ""
    if is_throttle(status, fault):
        return ThrottledError
    if status == 401 or code in AUTHENTICATION_CODES or ftype.startswith("authentication"):
        return AuthenticationError
    if status == 403 or code in AUTHORIZATION_CODES or ftype.startswith("authorization"):
        return AuthorizationError
    if status == 404 or code in NOT_FOUND_CODES:
        return NotFoundError
    if (status is not None and status >= 500) or code in SYSTEM_CODES or ftype == "systemfault":
        return ServerError
    # 400 and everything else QBO reports as a fault: ValidationFault, query errors (4000,
    # 4001), the CDC window error, "Unsupported Operation" (code 500 with HTTP 400!).
    return ValidationError


def describe(status: int | None, fault: Fault | None) -> str:
    """One line for an exception message; holds no secret (fault text never echoes tokens)."""
    if fault is None:
        return f"HTTP {status}" if status is not None else "QBO error"
    parts = [
        f"HTTP {status}" if status is not None else "fault",
        f"{fault.type} {fault.code}".strip(),
    ]
    if fault.message:
        parts.append(fault.message)
    if fault.detail and fault.detail != fault.message:
        parts.append(fault.detail[:300])
    return ": ".join(p for p in parts if p)


def error_for(status: int | None, fault: Fault | None) -> QboError:
    """The typed error for a failed answer, carrying the Fault."""
    return error_class(status, fault)(describe(status, fault), fault)
