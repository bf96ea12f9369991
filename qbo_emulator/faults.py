"""QBO fault bodies, as QBO writes them (samples/responses/fault_*).

Three layers answer with three different shapes, and a client must cope with
all of them:
- the accounting API: ``{"Fault":{"Error":[{"Message","Detail","code","element"}],
  "type":"ValidationFault"},"time":"..."}`` with HTTP 400 (HTTP 200 inside
  batch items);
- the gateway (auth): lower-case ``{"fault":{"error":[...]},"time":<epoch ms>,
  ...null siblings}`` with 401/403, or the XML ``AuthenticationFault`` code 100;
- throttling and system failures: XML even when JSON was asked for.
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape

_NOT_FOUND_INACTIVE = (
    "Object Not Found : Something you're trying to use has been made inactive. "
    "Check the fields with accounts, customers, items, vendors or employees."
)
_NOT_FOUND_DELETED = "Object Not Found : Another user has deleted this transaction."
EMULATOR_USER = "QBO Emulator"


class QBOFault(Exception):
    """A business or validation fault, rendered as QBO's JSON ``Fault``."""

    def __init__(
        self,
        code: str,
        message: str,
        detail: str,
        *,
        element: str | None = "",
        status: int = 400,
        fault_type: str = "ValidationFault",
        with_time: bool = True,
    ) -> None:
        super().__init__(f"{code} {message}: {detail}")
        self.code = code
        self.message = message
        self.detail = detail
        self.element = element
        self.status = status
        self.fault_type = fault_type
        self.with_time = with_time

    def fault(self) -> dict[str, Any]:
        """The ``Fault`` object (used alone inside batch items)."""
        error: dict[str, Any] = {"Message": self.message, "Detail": self.detail, "code": self.code}
        if self.element is not None:
            error["element"] = self.element
        return {"Error": [error], "type": self.fault_type}

    def body(self, time: str) -> dict[str, Any]:
        out: dict[str, Any] = {"Fault": self.fault()}
        if self.with_time:
            out["time"] = time
        return out


# -- the accounting API's validation faults ----------------------------------
def stale_object() -> QBOFault:
    return QBOFault(
        "5010",
        "Stale Object Error",
        f"Stale Object Error : You and {EMULATOR_USER} were working on this at the same time. "
        f"{EMULATOR_USER} finished before you did, so your work was not saved.",
    )


def object_not_found(deleted: bool = False) -> QBOFault:
    return QBOFault(
        "610", "Object Not Found", _NOT_FOUND_DELETED if deleted else _NOT_FOUND_INACTIVE
    )


def required_param(name: str) -> QBOFault:
    return QBOFault(
        "2020",
        "Required param missing, need to supply the required value for the API",
        f"Required parameter {name} is missing in the request",
        element=name,
    )


def duplicate_name(what: str) -> QBOFault:
    return QBOFault(
        "6240",
        "Duplicate Name Exists Error",
        f"The name supplied already exists. : Another {what} is already using this name. "
        "Please use a different name.",
    )


def invalid_id(value: str) -> QBOFault:
    # The recorded body has no "time" key.
    return QBOFault(
        "2030",
        "Invalid ID",
        f"Id should be a valid number. Supplied value:{value}",
        element="Id",
        with_time=False,
    )


def unsupported_operation(detail: str) -> QBOFault:
    return QBOFault("500", "Unsupported Operation", detail, element=None)


def unknown_resource(path: str, full_url: str) -> QBOFault:
    return unsupported_operation(
        f"Operation Could not find resource for relative : {path} "
        f"of full path: {full_url} is not supported."
    )


def query_parse_error(detail: str) -> QBOFault:
    return QBOFault("4000", "Error parsing query", f"QueryParserError: {detail}", element=None)


def invalid_query(detail: str) -> QBOFault:
    return QBOFault("4001", "Invalid query", f"QueryValidationError: {detail}", element=None)


def invalid_request_body(detail: str) -> QBOFault:
    return QBOFault("2010", "Request has invalid or unsupported property", detail, element=None)


def business_validation(detail: str) -> QBOFault:
    return QBOFault(
        "6000", "A business validation error has occurred while processing your request", detail
    )


# -- gateway (auth) faults ----------------------------------------------------
def gateway_fault(
    code: str, message: str, detail: str | None, fault_type: str, epoch_ms: int
) -> dict[str, Any]:
    """The lower-case gateway body (fault_authentication_401_lowercase.json)."""
    return {
        "warnings": None,
        "intuitObject": None,
        "fault": {
            "error": [{"message": message, "detail": detail, "code": code, "element": None}],
            "type": fault_type,
        },
        "report": None,
        "queryResponse": None,
        "batchItemResponse": [],
        "attachableResponse": [],
        "syncErrorResponse": None,
        "requestId": None,
        "time": epoch_ms,
        "status": None,
        "cdcresponse": [],
    }


def auth_failed_json(detail: str, epoch_ms: int) -> dict[str, Any]:
    return gateway_fault(
        "3200",
        "message=AuthenticationFailed; errorCode=003200; statusCode=401",
        detail,
        "AUTHENTICATION",
        epoch_ms,
    )


def authorization_failed_json(epoch_ms: int) -> dict[str, Any]:
    return gateway_fault(
        "3100",
        "message=AuthorizationFailed; errorCode=003100; statusCode=403",
        None,
        "SERVICE",
        epoch_ms,
    )


# -- XML bodies ---------------------------------------------------------------
_XML_DECL = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
_NS = "http://schema.intuit.com/finance/v3"


def _xml_fault(
    time: str, fault_type: str, code: str, message: str, detail: str, *, decl: bool
) -> bytes:
    body = (
        f'<IntuitResponse time="{time}" xmlns="{_NS}">\n'
        f'  <Fault type="{fault_type}">\n'
        f'    <Error code="{code}">\n'
        f"      <Message>{escape(message)}</Message>\n"
        f"      <Detail>{escape(detail)}</Detail>\n"
        f"    </Error>\n"
        f"  </Fault>\n"
        f"</IntuitResponse>\n"
    )
    return ((_XML_DECL + "\n" if decl else "") + body).encode()


def throttle_xml(time: str) -> bytes:
    """samples/responses/throttle_exceeded_429.xml (two spaces before "Try")."""
    return _xml_fault(
        time,
        "SERVICE",
        "3001",
        "message=ThrottleExceeded; errorCode=003001; statusCode=429",
        "The request limit was reached.  Try again later",
        decl=True,
    )


def system_fault_xml(
    time: str, detail: str = "System Failure Error: An unexpected error occurred"
) -> bytes:
    """samples/responses/fault_system_10000.xml."""
    return _xml_fault(
        time,
        "SystemFault",
        "10000",
        "An application error has occurred while processing your request",
        detail,
        decl=False,
    )


def auth_fault_xml(time: str) -> bytes:
    """samples/responses/fault_authentication_401.xml (one line, as recorded)."""
    return (
        f'{_XML_DECL}<IntuitResponse xmlns="{_NS}" time="{time}"><Fault type="AuthenticationFault">'
        '<Error code="100"><Message>General Authentication Error</Message><Detail>'
        "AuthenticationErrorGeneral: SRV-110-Authentication Failure , statusCode: 401"
        "</Detail></Error></Fault></IntuitResponse>"
    ).encode()
