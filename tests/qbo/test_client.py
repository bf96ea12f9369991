"""QboClient against the emulator on loopback (and, for what the emulator cannot say, small
aiohttp servers): reads, retries, 401 → refresh, throttling, faults."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from poller import metrics
from poller.config import Settings
from poller.http_headers import retry_after_seconds
from poller.qbo import faults, parse
from poller.qbo.client import QboClient
from poller.qbo.limiter import LimiterConfig
from poller.qbo.types import (
    AuthenticationError,
    CdcItem,
    CdcResult,
    Fault,
    MalformedResponse,
    QueryItem,
    QueryResult,
    RealmApi,
    ServerError,
    ThrottledError,
    TransportError,
    ValidationError,
)
from qbo_emulator import run_emulator
from qbo_emulator.core import Emulator
from tests.qbo.conftest import FAST_RETRY, TEST_LIMITS, MemoryTokens, memory_client

REALM = "9130350000000001"
OTHER = "9130350000000002"


@pytest.fixture
async def seeded(emu: Emulator) -> Emulator:
    emu.add_realm(REALM, seed=1, per_entity=5, history_days=10)
    emu.add_realm(OTHER, seed=2, per_entity=5, history_days=10)
    return emu


def requests(name: str, status: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "qbo_poller_qbo_requests_total", {"endpoint": name, "status": status}
    )
    return value or 0.0


# --- reads ------------------------------------------------------------------------------------


async def test_query_cdc_and_batch(seeded: Emulator, session: aiohttp.ClientSession) -> None:
    client = memory_client(seeded, session)
    api: RealmApi = client.realm(1, REALM)
    before = requests("query", "200")

    customers = await api.query("select * from Customer")
    assert customers.entity == "Customer" and len(customers.rows) == 5
    assert customers.time.tzinfo is not None
    assert requests("query", "200") == before + 1

    since = seeded.clock.now() - timedelta(days=29)
    cdc = await api.cdc(("Customer", "Invoice"), since)
    assert set(cdc.objects) == {"Customer", "Invoice"} and cdc.count == 10

    batch = await api.batch(
        [
            CdcItem("cdc", ("Customer", "Invoice"), since),
            QueryItem("tax", "select * from TaxCode"),
            QueryItem("bad", "select * from Custmoer"),
        ]
    )
    assert isinstance(batch.answers["cdc"], CdcResult) and batch.answers["cdc"].count == 10
    assert (
        isinstance(batch.answers["tax"], QueryResult) and batch.answers["tax"].entity == "TaxCode"
    )
    assert isinstance(batch.answers["bad"], Fault) and batch.answers["bad"].code == "4001"
    assert client.requests_sent(REALM) == 3
    assert client.requests_sent(REALM, "batch") == 1
    assert seeded.counters(REALM)["batch"] == 1


async def test_batch_cdc_answer_as_an_object_and_refused(session: aiohttp.ClientSession) -> None:
    async with run_emulator(port=0, batch_cdc_shape="object") as emu:
        emu.add_realm(REALM, seed=1, per_entity=3, history_days=0.5)
        api = memory_client(emu, session).realm(1, REALM)
        since = emu.clock.now() - timedelta(days=1)
        result = await api.batch([CdcItem("1", ("Customer",), since)])
        assert isinstance(result.answers["1"], CdcResult)
        emu.set_cdc_in_batch(REALM, False)
        refused = await api.batch(
            [CdcItem("1", ("Customer",), since), QueryItem("2", "select * from TaxRate")]
        )
        assert isinstance(refused.answers["1"], Fault)
        assert isinstance(refused.answers["2"], QueryResult)


async def test_long_statements_are_posted(seeded: Emulator, session: aiohttp.ClientSession) -> None:
    api = memory_client(seeded, session).realm(1, REALM)
    ids = ",".join(f"'{i}'" for i in range(1, 400))
    result = await api.query(f"select * from Customer where Id in ({ids})")
    assert len(result.rows) == 5


async def test_naive_timestamps_are_refused_before_sending(
    seeded: Emulator, session: aiohttp.ClientSession
) -> None:
    client = memory_client(seeded, session)
    with pytest.raises(ValueError):
        await client.realm(1, REALM).cdc(("Customer",), datetime(2026, 1, 1))
    with pytest.raises(ValueError):
        await client.realm(1, REALM).batch(
            [QueryItem(str(i), "select * from Class") for i in range(31)]
        )
    assert client.requests_sent(REALM) == 0


async def test_validation_faults_are_not_retried(
    seeded: Emulator, session: aiohttp.ClientSession
) -> None:
    client = memory_client(seeded, session)
    with capture_logs() as logs, pytest.raises(ValidationError) as info:
        await client.realm(1, REALM).query("select * from Custmoer")
    assert info.value.fault is not None and info.value.fault.code == "4001"
    assert info.value.fault.intuit_tid
    assert client.requests_sent(REALM) == 1
    failed = [e for e in logs if e["event"] == "qbo_request_failed"]
    assert failed and failed[0]["intuit_tid"] == info.value.fault.intuit_tid


# --- retries ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["error", "reset", "malformed"])
async def test_transient_failures_are_retried(
    seeded: Emulator, session: aiohttp.ClientSession, kind: str
) -> None:
    client = memory_client(seeded, session)
    seeded.inject_fault(kind, endpoint="query", realm=REALM, count=2)
    result = await client.realm(1, REALM).query("select * from Customer")
    assert len(result.rows) == 5
    assert seeded.counters(REALM)["query"] == 3
    # aiohttp itself re-sends an idempotent GET once when a reused keep-alive connection is
    # dropped, so after a reset the client may have sent one request fewer than QBO saw.
    assert client.requests_sent(REALM) == 3 or (
        kind == "reset" and client.requests_sent(REALM) == 2
    )


@pytest.mark.parametrize(
    ("kind", "error"),
    [("error", ServerError), ("reset", TransportError), ("malformed", MalformedResponse)],
)
async def test_retries_are_bounded(
    seeded: Emulator, session: aiohttp.ClientSession, kind: str, error: type[Exception]
) -> None:
    client = memory_client(seeded, session)
    seeded.inject_fault(kind, endpoint="cdc", realm=REALM)
    with capture_logs() as logs, pytest.raises(error):
        await client.realm(1, REALM).cdc(("Customer",), seeded.clock.now() - timedelta(hours=1))
    assert client.requests_sent(REALM) == FAST_RETRY.max_attempts
    assert [e["event"] for e in logs].count("qbo_request_retry") == FAST_RETRY.max_attempts - 1


async def test_server_error_keeps_qbo_words_and_tid(
    seeded: Emulator, session: aiohttp.ClientSession
) -> None:
    seeded.inject_fault("error", endpoint="query", realm=REALM, status=503)
    with pytest.raises(ServerError) as info:
        await memory_client(seeded, session).realm(1, REALM).query("select * from Customer")
    fault = info.value.fault
    assert fault is not None and (fault.type, fault.code, fault.status) == (
        "SystemFault",
        "10000",
        503,
    )
    assert fault.intuit_tid


async def test_unreachable_server_is_a_transport_error(session: aiohttp.ClientSession) -> None:
    settings = Settings(qbo_api_base_url="http://127.0.0.1:9", qbo_request_timeout_s=1.0)
    client = QboClient(session, settings, _StaticTokens(), retry=FAST_RETRY)
    with pytest.raises(TransportError):
        await client.realm(1, REALM).query("select * from Customer")
    assert client.requests_sent(REALM) == FAST_RETRY.max_attempts


# --- 401 → refresh → retry --------------------------------------------------------------------


async def test_expired_token_is_refreshed_once_and_the_request_retried(
    seeded: Emulator, session: aiohttp.ClientSession
) -> None:
    tokens = MemoryTokens(seeded)
    client = QboClient(
        session,
        Settings(qbo_api_base_url=seeded.base_url or ""),
        tokens,
        limits=TEST_LIMITS,
        retry=FAST_RETRY,
    )
    api = client.realm(1, REALM)
    await api.query("select * from Customer")
    seeded.expire_access_tokens(REALM)
    result = await api.query("select * from Customer")
    assert len(result.rows) == 5 and tokens.refreshes == 1
    assert client.requests_sent(REALM) == 3


async def test_a_token_refused_twice_is_an_authentication_error(
    seeded: Emulator, session: aiohttp.ClientSession
) -> None:
    client = QboClient(
        session, Settings(qbo_api_base_url=seeded.base_url or ""), _StaticTokens(), retry=FAST_RETRY
    )
    with pytest.raises(AuthenticationError) as info:
        await client.realm(1, REALM).query("select * from Customer")
    assert info.value.fault is not None and info.value.fault.code == "3200"
    assert client.requests_sent(REALM) == 2


class _StaticTokens:
    """Always the same (unknown) token: refreshing cannot help."""

    async def access_token(self, instance_id: int, realm_id: str) -> str:
        return "not-a-real-token-but-long-enough-0123456789"

    async def refresh_rejected(self, instance_id: int, realm_id: str, rejected: str) -> str:
        return rejected


# --- throttling -------------------------------------------------------------------------------


async def test_429_pauses_only_that_realm(seeded: Emulator, session: aiohttp.ClientSession) -> None:
    client = memory_client(seeded, session, limits=LimiterConfig(throttle_pause_s=0.5))
    throttles_before = metrics.REGISTRY.get_sample_value("qbo_poller_qbo_throttles_total") or 0.0
    seeded.throttle(REALM, 0.1)
    finished: list[str] = []

    async def read(realm: str, tag: str) -> None:
        await client.realm(1, realm).query("select * from Customer")
        finished.append(tag)

    slow = asyncio.create_task(read(REALM, "throttled"))
    await asyncio.sleep(0.05)  # the first answer (429) has paused REALM
    assert client.limiter.paused_for(REALM) > 0
    await asyncio.gather(*(read(OTHER, f"other{i}") for i in range(5)))
    await slow
    # The other realm's five reads all finished while the throttled one was still waiting.
    assert finished[-1] == "throttled" and len(finished) == 6
    # One 429, then one successful retry after the pause: QBO was not hammered.
    assert seeded.counters(REALM).get("throttled") == 1
    assert client.requests_sent(REALM) == 2 and client.requests_sent(OTHER) == 5
    assert (
        metrics.REGISTRY.get_sample_value("qbo_poller_qbo_throttles_total") or 0
    ) == throttles_before + 1


async def test_throttling_that_outlasts_the_waits_surfaces(
    seeded: Emulator, session: aiohttp.ClientSession
) -> None:
    client = memory_client(seeded, session, limits=LimiterConfig(throttle_pause_s=0.01))
    seeded.throttle(REALM, 30)
    with pytest.raises(ThrottledError) as info:
        await client.realm(1, REALM).query("select * from Customer")
    assert info.value.fault is not None and info.value.fault.code == "3001"
    assert client.requests_sent(REALM) == FAST_RETRY.max_throttle_waits + 1


# --- what only a hand-written server can show -------------------------------------------------


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def fake_qbo() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


THROTTLE_XML = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<IntuitResponse '
    b'time="2016-12-07T15:27:09.527-08:00" xmlns="http://schema.intuit.com/finance/v3">'
    b'<Fault type="SERVICE"><Error code="3001"><Message>message=ThrottleExceeded; '
    b"errorCode=003001; statusCode=429</Message><Detail>The request limit was reached."
    b"  Try again later</Detail></Error></Fault></IntuitResponse>"
)
CDC_OK = b'{"CDCResponse":[{"QueryResponse":[{}]}],"time":"2026-11-24T02:15:02.123-08:00"}'


async def test_request_shape_and_retry_after(
    fake_qbo: Callable[[Handler], Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    seen: list[web.Request] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        if len(seen) == 1:  # XML although JSON was asked for; Retry-After in seconds
            return web.Response(
                status=429,
                body=THROTTLE_XML,
                content_type="application/xml",
                headers={"Retry-After": "0.05", "intuit_tid": "tid-429"},
            )
        return web.Response(body=CDC_OK, content_type="application/json")

    base = await fake_qbo(handler)
    client = QboClient(
        session,
        Settings(qbo_api_base_url=base, qbo_minor_version=75),
        _StaticTokens(),
        limits=LimiterConfig(throttle_pause_s=60),
        retry=FAST_RETRY,
    )
    since = datetime(2026, 11, 24, 2, 0, tzinfo=timezone(timedelta(hours=-8)))
    with capture_logs() as logs:
        result = await asyncio.wait_for(
            client.realm(7, REALM).cdc(("Customer", "Invoice"), since), 5
        )
    assert result.count == 0 and result.time == datetime(
        2026, 11, 24, 10, 15, 2, 123000, tzinfo=UTC
    )
    request = seen[-1]
    assert request.path == f"/v3/company/{REALM}/cdc"
    assert request.query["changedSince"] == "2026-11-24T10:00:00+00:00"  # offset survives
    assert "%2B00:00" in request.query_string  # '+' is not a space
    assert request.query["entities"] == "Customer,Invoice"
    assert request.query["minorversion"] == "75"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["Authorization"].startswith("Bearer ")
    throttled = [e for e in logs if e["event"] == "qbo_throttled"]
    assert throttled[0]["intuit_tid"] == "tid-429" and throttled[0]["pause_s"] == 0.05


async def test_legacy_403_throttle_and_200_fault(
    fake_qbo: Callable[[Handler], Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    answers = [
        web.Response(status=403, body=THROTTLE_XML.replace(b"statusCode=429", b"statusCode=403")),
        web.Response(
            status=200,
            content_type="application/json",
            body=b'{"Fault":{"Error":[{'
            b'"Message":"Invalid query","Detail":"x","code":"4001"}],'
            b'"type":"ValidationFault"},"time":"2020-09-29T06:52:56.527-07:00"}',
        ),
    ]

    async def handler(request: web.Request) -> web.StreamResponse:
        return answers.pop(0)

    base = await fake_qbo(handler)
    client = QboClient(
        session,
        Settings(qbo_api_base_url=base),
        _StaticTokens(),
        limits=LimiterConfig(throttle_pause_s=0.01),
        retry=FAST_RETRY,
    )
    with pytest.raises(ValidationError):
        await client.realm(1, REALM).query("select * from Customer")
    assert client.requests_sent(REALM) == 2


async def test_missing_time_is_malformed(
    fake_qbo: Callable[[Handler], Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response({"QueryResponse": {}})

    base = await fake_qbo(handler)
    client = QboClient(session, Settings(qbo_api_base_url=base), _StaticTokens(), retry=FAST_RETRY)
    with pytest.raises(MalformedResponse):
        await client.realm(1, REALM).query("select * from Customer")
    assert client.requests_sent(REALM) == FAST_RETRY.max_attempts


def test_retry_after_forms() -> None:
    assert retry_after_seconds("60") == 60
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_seconds("Thu, 01 Jan 2026 00:00:30 GMT", now) == 30


# --- one decode per answer (issue 17) ----------------------------------------------------------


class _CountingDecoder:
    def __init__(self, real: Any) -> None:
        self.real, self.calls = real, 0

    def decode(self, body: bytes) -> Any:
        self.calls += 1
        return self.real.decode(body)


async def test_each_answer_is_decoded_once_and_keeps_qbos_literals(
    seeded: Emulator, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Fault check and the parse share one decode (no orjson/json pass besides it), and
    the objects re-serialize to the very bytes QuickBooks wrote (12.50 stays 12.50)."""
    line = {"Amount": 12.5, "DetailType": "SalesItemLineDetail"}
    line["SalesItemLineDetail"] = {"ItemRef": {"value": "1"}}
    since = seeded.clock.now()
    seeded.clock.advance(1)
    priced = seeded.create(REALM, "Invoice", {"CustomerRef": {"value": "1"}, "Line": [line]})
    wire = seeded.realm(REALM).get("Invoice", priced["Id"]).json()
    assert b'"Amount":12.50,' in wire

    counting = _CountingDecoder(parse._DECODER)
    monkeypatch.setattr(parse, "_DECODER", counting)

    def forbidden(*_: object, **__: object) -> None:
        raise AssertionError("a second decoder ran")

    monkeypatch.setattr(faults, "_DECODER", _CountingDecoder(None))  # must stay unused
    monkeypatch.setattr(json, "loads", forbidden)
    api = memory_client(seeded, session).realm(1, REALM)
    cdc = await api.cdc(("Invoice",), since)
    assert counting.calls == 1
    assert [orjson.dumps(obj) for obj in cdc.objects["Invoice"]] == [wire]
    batch = await api.batch(
        [CdcItem("c", ("Invoice",), since), QueryItem("q", "select * from Item")]
    )
    assert counting.calls == 2
    batch_cdc = batch.answers["c"]
    assert isinstance(batch_cdc, CdcResult)
    assert orjson.dumps(batch_cdc.objects["Invoice"][0]) == wire
    assert faults._DECODER.calls == 0


async def test_a_fault_in_a_200_is_found_in_the_single_decode(
    fake_qbo: Callable[[Handler], Awaitable[str]],
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(
            status=200,
            content_type="application/json",
            body=b'{"Fault":{"Error":[{"Message":"Invalid query","Detail":"x","code":"4001"}],'
            b'"type":"ValidationFault"},"time":"2020-09-29T06:52:56.527-07:00"}',
        )

    counting = _CountingDecoder(parse._DECODER)
    monkeypatch.setattr(parse, "_DECODER", counting)
    base = await fake_qbo(handler)
    client = QboClient(session, Settings(qbo_api_base_url=base), _StaticTokens(), retry=FAST_RETRY)
    with pytest.raises(ValidationError) as raised:
        await client.realm(1, REALM).query("select * from Customer")
    assert raised.value.fault is not None and raised.value.fault.code == "4001"
    assert counting.calls == 1
