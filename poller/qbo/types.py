"""What the QBO client returns and raises: the contract between `qbo` and `detect`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

QboObject = dict[str, Any]


@dataclass(frozen=True)
class Fault:
    """One QBO fault (JSON `Fault`/`fault` or XML `<Fault>`), with the request's intuit_tid."""

    type: str
    code: str
    message: str
    detail: str = ""
    status: int | None = None
    intuit_tid: str | None = None


@dataclass(frozen=True)
class CdcResult:
    """A CDC answer. `time` is QBO's own clock (the next watermark comes from it)."""

    time: datetime
    objects: dict[str, list[QboObject]]  # entity name as QBO spells it → objects, in order
    count: int  # objects across all entities (1000 = maybe truncated)


@dataclass(frozen=True)
class QueryResult:
    time: datetime
    entity: str
    rows: list[QboObject]
    start_position: int = 1
    total_count: int | None = None  # COUNT(*) answers only


@dataclass(frozen=True)
class QueryItem:
    bid: str
    statement: str


@dataclass(frozen=True)
class CdcItem:
    bid: str
    entities: tuple[str, ...]
    changed_since: datetime


BatchItem = QueryItem | CdcItem
BatchAnswer = QueryResult | CdcResult | Fault


@dataclass(frozen=True)
class BatchResult:
    time: datetime
    answers: dict[str, BatchAnswer] = field(default_factory=dict)  # bId → answer


class QboError(Exception):
    """Base of every error the QBO client raises; `fault` holds QBO's own words when it sent any."""

    def __init__(self, message: str, fault: Fault | None = None) -> None:
        super().__init__(message)
        self.fault = fault


class AuthenticationError(QboError):
    """401 even with a freshly refreshed access token."""


class AuthorizationError(QboError):
    """403: the app may not access this company (e.g. sandbox keys against production)."""


class ReconnectRequired(QboError):
    """`invalid_grant`: the refresh token (or code) is dead; the company must be reconnected."""


class ThrottledError(QboError):
    """429 that outlived the client's own waiting (only surfaces on shutdown or give-up)."""


class ValidationError(QboError):
    """400 ValidationFault, query parse errors, CDC window errors."""


class NotFoundError(QboError):
    """610 Object Not Found, or 404."""


class ServerError(QboError):
    """5xx or SystemFault after the client's retries."""


class TransportError(QboError):
    """Connection reset, timeout or DNS failure after the client's retries."""


class MalformedResponse(QboError):
    """A body that is not the JSON (or XML fault) QBO sends."""


class RealmApi(Protocol):
    """One company, as seen through the client (limits, tokens and retries handled inside)."""

    realm_id: str

    async def cdc(self, entities: tuple[str, ...], changed_since: datetime) -> CdcResult: ...

    async def query(self, statement: str) -> QueryResult: ...

    async def batch(self, items: list[BatchItem]) -> BatchResult: ...
