"""The QuickBooks Online HTTP client: one per process, one shared aiohttp session.

`QboClient.realm(instance_id, realm_id)` gives a `RealmApi` (types.py) for one company. Every
request goes through the per-realm limiter, carries `Accept: application/json`, a Bearer token
and `minorversion`, and is counted in metrics. Failures are handled here so callers only see
typed errors:
- 5xx / SystemFault, timeouts, connection resets, malformed bodies: retried with exponential
  backoff and jitter, a bounded number of times;
- 401: the token is refreshed once (through the token manager) and the request retried;
- 429 (and the legacy 403 ThrottleExceeded): the realm pauses for `Retry-After` or 60 s, only
  that realm; the request is retried after the pause, a bounded number of times;
- other 4xx and faults inside a 200: raised at once as the matching typed error.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import aiohttp
import orjson

from poller import metrics
from poller.backoff import EQUAL_JITTER, Backoff
from poller.config import Settings
from poller.http_headers import retry_after_seconds
from poller.logs import get_logger
from poller.qbo import parse
from poller.qbo.auth import AccessTokens, TokenManager, TokenStore
from poller.qbo.faults import NOT_JSON, error_class, error_for, is_throttle, read_body
from poller.qbo.limiter import LimiterConfig, RealmLimiter
from poller.qbo.times import format_qbo_time
from poller.qbo.types import (
    AuthenticationError,
    BatchItem,
    BatchResult,
    CdcResult,
    Fault,
    MalformedResponse,
    QboError,
    QueryResult,
    ServerError,
    ThrottledError,
    TransportError,
)

log = get_logger("poller.qbo.client")

T = TypeVar("T")

MAX_BATCH_ITEMS = 30  # Intuit's batch limit (reference §2.3.1)
POST_QUERY_ABOVE = 1500  # statements longer than this go in a POST body, not the URL


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4  # tries for 5xx, transport failures and malformed bodies
    base_delay_s: float = 0.5  # first backoff; doubles per attempt, with jitter
    max_delay_s: float = 15.0
    max_throttle_waits: int = 3  # 429s waited out before ThrottledError surfaces

    def delay(self, failures: int) -> float:
        """Exponential backoff with "equal jitter": half fixed, half random, never zero."""
        backoff = Backoff(self.base_delay_s, self.max_delay_s, jitter=EQUAL_JITTER)
        return backoff.delay(failures)


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    headers: Mapping[str, str]
    intuit_tid: str | None


def _intuit_tid(headers: Mapping[str, str]) -> str | None:
    return headers.get("intuit_tid") or headers.get("intuit-tid")


class _Retry(Exception):
    """Internal: this attempt failed in a way worth another try."""

    def __init__(self, error: QboError) -> None:
        super().__init__(str(error))
        self.error = error


class QboClient:
    """One per process. `token_store` is the PostgreSQL `TokenStore` (the client then manages
    OAuth itself through a `TokenManager`), or anything implementing `AccessTokens`."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: Settings,
        token_store: TokenStore | AccessTokens,
        *,
        limits: LimiterConfig | None = None,
        retry: RetryPolicy | None = None,
        token_clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.session = session
        self.settings = settings
        self.base_url = settings.qbo_api_base_url.rstrip("/")
        self.minor_version = str(settings.qbo_minor_version)
        self.timeout = aiohttp.ClientTimeout(total=settings.qbo_request_timeout_s)
        self.limiter = RealmLimiter(limits, budget_share=settings.qbo_budget_share)
        self.retry = retry or RetryPolicy()
        if hasattr(token_store, "access_token"):
            self.tokens: AccessTokens = token_store  # type: ignore[assignment]
        else:
            kwargs = {"clock": token_clock} if token_clock else {}
            self.tokens = TokenManager(session, settings, token_store, **kwargs)  # type: ignore[arg-type]
        self._sent: Counter[tuple[str, str]] = Counter()

    def realm(self, instance_id: int, realm_id: str) -> RealmClient:
        """The `RealmApi` of one company (cheap: create one per call site if convenient)."""
        return RealmClient(self, instance_id, realm_id)

    def requests_sent(self, realm_id: str, endpoint: str | None = None) -> int:
        """HTTP requests sent to QBO for a realm (retries included), optionally per endpoint
        (`cdc`, `query`, `batch`). Token requests are not counted here."""
        if endpoint is not None:
            return self._sent[(realm_id, endpoint)]
        return sum(n for (realm, _), n in self._sent.items() if realm == realm_id)

    # --- the request loop ---------------------------------------------------------------------

    async def call(
        self,
        instance_id: int,
        realm_id: str,
        endpoint: str,
        method: str,
        path: str,
        parse_body: Callable[[Any, str | None], T],
        *,
        params: dict[str, str] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> T:
        """Send one logical request (with its retries) and parse the answer."""
        url = f"{self.base_url}/v3/company/{realm_id}/{path}"
        query = {**(params or {}), "minorversion": self.minor_version}
        token = await self.tokens.access_token(instance_id, realm_id)
        failures = throttles = 0
        refreshed = False
        while True:
            try:
                answer = await self._send(
                    realm_id, endpoint, method, url, query, body, content_type, token
                )
                return self._interpret(answer, parse_body, realm_id, endpoint)
            except _Unauthorized as exc:
                if refreshed:
                    self._log_failure(realm_id, endpoint, exc.answer, exc.fault, failures + 1)
                    raise AuthenticationError(
                        "QBO refused a freshly refreshed access token", exc.fault
                    ) from None
                refreshed = True
                log.info(
                    "qbo_token_rejected",
                    realm_id=realm_id,
                    endpoint=endpoint,
                    intuit_tid=exc.answer.intuit_tid,
                )
                token = await self.tokens.refresh_rejected(instance_id, realm_id, token)
            except _Throttled as exc:
                throttles += 1
                metrics.QBO_THROTTLES.inc()
                pause = self.limiter.pause(realm_id, exc.retry_after)
                log.warning(
                    "qbo_throttled",
                    realm_id=realm_id,
                    endpoint=endpoint,
                    pause_s=pause,
                    intuit_tid=exc.answer.intuit_tid,
                    attempt=throttles,
                )
                if throttles > self.retry.max_throttle_waits:
                    raise ThrottledError(
                        f"throttled {throttles} times in a row", exc.fault
                    ) from None
                # No sleep here: the limiter holds the next attempt until the pause ends.
            except _Retry as exc:
                failures += 1
                if failures >= self.retry.max_attempts:
                    log.warning(
                        "qbo_request_failed",
                        realm_id=realm_id,
                        endpoint=endpoint,
                        error=str(exc.error),
                        attempts=failures,
                        intuit_tid=exc.error.fault.intuit_tid if exc.error.fault else None,
                    )
                    raise exc.error from None
                delay = self.retry.delay(failures)
                log.info(
                    "qbo_request_retry",
                    realm_id=realm_id,
                    endpoint=endpoint,
                    error=str(exc.error),
                    attempt=failures,
                    delay_s=round(delay, 3),
                    intuit_tid=exc.error.fault.intuit_tid if exc.error.fault else None,
                )
                await asyncio.sleep(delay)

    async def _send(
        self,
        realm_id: str,
        endpoint: str,
        method: str,
        url: str,
        query: dict[str, str],
        body: bytes | None,
        content_type: str | None,
        token: str,
    ) -> _Answer:
        headers = {"Accept": "application/json", "Authorization": f"Bearer {token}"}
        if content_type:
            headers["Content-Type"] = content_type
        async with self.limiter.slot(realm_id):
            self._sent[(realm_id, endpoint)] += 1
            try:
                async with self.session.request(
                    method,
                    url,
                    params=query,
                    data=body,
                    headers=headers,
                    timeout=self.timeout,
                    allow_redirects=False,
                ) as resp:
                    raw = await resp.read()
                    answer = _Answer(resp.status, raw, resp.headers, _intuit_tid(resp.headers))
            except (aiohttp.ClientError, TimeoutError) as exc:
                metrics.qbo_requests(endpoint, "error").inc()
                raise _Retry(
                    TransportError(f"{endpoint} request failed: {type(exc).__name__}")
                ) from None
        metrics.qbo_requests(endpoint, str(answer.status)).inc()
        return answer

    def _interpret(
        self,
        answer: _Answer,
        parse_body: Callable[[Any, str | None], T],
        realm_id: str,
        endpoint: str,
    ) -> T:
        """Classify one HTTP answer: return the parsed result or raise a control exception."""
        status = answer.status
        # ONE decode per answer: the document the Fault is looked for in is the one parsed.
        doc, fault = read_body(answer.body, status, answer.intuit_tid, parse.decode)
        if is_throttle(status, fault):
            raise _Throttled(answer, fault)
        if status == 401 or (fault is not None and error_class(None, fault) is AuthenticationError):
            raise _Unauthorized(answer, fault)
        if status >= 500 or (fault is not None and error_class(None, fault) is ServerError):
            raise _Retry(
                error_for(status, fault)
                if fault
                else ServerError(f"HTTP {status}", _bare_fault(answer))
            )
        if status >= 400 or fault is not None:
            error = error_for(status, fault) if fault else error_for(status, _bare_fault(answer))
            self._log_failure(realm_id, endpoint, answer, fault, 1)
            raise error
        if status != 200:
            raise _Retry(MalformedResponse(f"unexpected HTTP {status}", _bare_fault(answer)))
        try:
            if doc is NOT_JSON:
                raise ValueError("not JSON")
            return parse_body(doc, answer.intuit_tid)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise _Retry(
                MalformedResponse(
                    f"unreadable QBO answer: {type(exc).__name__}", _bare_fault(answer)
                )
            ) from None

    def _log_failure(
        self, realm_id: str, endpoint: str, answer: _Answer, fault: Fault | None, attempts: int
    ) -> None:
        log.warning(
            "qbo_request_failed",
            realm_id=realm_id,
            endpoint=endpoint,
            status=answer.status,
            fault_type=fault.type if fault else None,
            fault_code=fault.code if fault else None,
            fault_message=fault.message if fault else None,
            attempts=attempts,
            intuit_tid=answer.intuit_tid,
        )


def _bare_fault(answer: _Answer) -> Fault:
    """A Fault for an answer that carried none, so `intuit_tid` still reaches the caller."""
    return Fault(
        type="",
        code="",
        message=f"HTTP {answer.status}",
        status=answer.status,
        intuit_tid=answer.intuit_tid,
    )


class _Unauthorized(Exception):
    def __init__(self, answer: _Answer, fault: Fault | None) -> None:
        super().__init__("401")
        self.answer = answer
        self.fault = fault


class _Throttled(Exception):
    def __init__(self, answer: _Answer, fault: Fault | None) -> None:
        super().__init__("429")
        self.answer = answer
        self.fault = fault
        self.retry_after = retry_after_seconds(answer.headers.get("Retry-After"))


class RealmClient:
    """`RealmApi` for one company."""

    def __init__(self, client: QboClient, instance_id: int, realm_id: str) -> None:
        self.client = client
        self.instance_id = instance_id
        self.realm_id = realm_id

    async def cdc(self, entities: tuple[str, ...], changed_since: datetime) -> CdcResult:
        """`GET /cdc?entities=A,B&changedSince=<ts with offset>`."""
        params = {"entities": ",".join(entities), "changedSince": format_qbo_time(changed_since)}
        return await self.client.call(
            self.instance_id,
            self.realm_id,
            "cdc",
            "GET",
            "cdc",
            lambda doc, _tid: parse.parse_cdc(doc),
            params=params,
        )

    async def query(self, statement: str) -> QueryResult:
        """`GET /query?query=…`; a long statement goes as a POST `application/text` body."""

        def parse_body(doc: Any, _tid: str | None) -> QueryResult:
            return parse.parse_query(doc, statement)

        if len(statement) > POST_QUERY_ABOVE:
            return await self.client.call(
                self.instance_id,
                self.realm_id,
                "query",
                "POST",
                "query",
                parse_body,
                body=statement.encode(),
                content_type="application/text",
            )
        return await self.client.call(
            self.instance_id,
            self.realm_id,
            "query",
            "GET",
            "query",
            parse_body,
            params={"query": statement},
        )

    async def batch(self, items: list[BatchItem]) -> BatchResult:
        """`POST /batch` with up to 30 `Query`/`CDCQuery` items; answers keyed by bId."""
        if not items or len(items) > MAX_BATCH_ITEMS:
            raise ValueError(f"a batch holds 1 to {MAX_BATCH_ITEMS} items, not {len(items)}")
        if len({item.bid for item in items}) != len(items):
            raise ValueError("batch item bIds must be unique")
        body = orjson.dumps(parse.batch_request(items))
        return await self.client.call(
            self.instance_id,
            self.realm_id,
            "batch",
            "POST",
            "batch",
            lambda doc, tid: parse.parse_batch(doc, items, tid),
            body=body,
            content_type="application/json",
        )
