"""Throttling, injected faults, headers and counters (reference §5, §4)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from qbo_emulator import Emulator

from .conftest import Api, Reply, present

# A copy of Intuit's body (reference/samples), kept with the tests so they run from the repo alone.
THROTTLE_SAMPLE = Path(__file__).parent / "samples" / "throttle_exceeded_429.xml"


def _same_as_sample(body: bytes) -> None:
    """The 429 body equals Intuit's, apart from the time attribute."""
    import re

    def without_time(xml: bytes) -> bytes:
        return re.sub(rb'time="[^"]+"', b'time=""', xml).strip()

    assert without_time(body) == without_time(THROTTLE_SAMPLE.read_bytes())
    assert b"message=ThrottleExceeded; errorCode=003001; statusCode=429" in body
    assert b"The request limit was reached.  Try again later" in body


async def test_ten_per_second(emu: Emulator, api: Api) -> None:
    emu.set_limits(api.realm, per_second=10, per_minute=None, in_flight=None)
    replies = [await api.query("select * from Term") for _ in range(11)]
    assert [r.status for r in replies[:10]] == [200] * 10
    throttled = replies[10]
    assert throttled.status == 429 and throttled.headers["Content-Type"] == "application/xml"
    assert throttled.headers["intuit_tid"]
    _same_as_sample(throttled.body)
    assert emu.counters(api.realm)["throttled"] == 1
    other = emu.add_realm("555")
    other_api = Api(api.session, emu, other, emu.issue_tokens(other)["access_token"])
    assert (await other_api.query("select * from Term")).status == 200  # limits are per realm


async def test_ten_in_flight(emu: Emulator, api: Api) -> None:
    emu.set_limits(api.realm, per_second=None, per_minute=None, in_flight=10)
    emu.inject_fault("latency", endpoint="query", seconds=0.3, count=10)
    results = await asyncio.gather(
        *(api.query("select * from Term") for _ in range(10)), _late(api)
    )
    statuses = sorted(r.status for r in results)
    assert statuses == [200] * 10 + [429]


async def _late(api: Api) -> Reply:
    await asyncio.sleep(0.1)  # the first ten are in flight by now
    return await api.query("select * from Term")


async def test_five_hundred_per_minute(emu: Emulator, api: Api) -> None:
    emu.set_limits(api.realm, per_second=None, per_minute=500, in_flight=None)
    sem = asyncio.Semaphore(8)

    async def one() -> int:
        async with sem:
            return (await api.get("/term/1")).status

    statuses = await asyncio.gather(*(one() for _ in range(505)))
    assert statuses.count(200) == 500 and statuses.count(429) == 5


async def test_small_configurable_limits(emu: Emulator, api: Api) -> None:
    emu.set_limits(api.realm, per_minute=3, per_second=None, in_flight=None)
    assert [(await api.query("select * from Term")).status for _ in range(4)] == [
        200,
        200,
        200,
        429,
    ]
    emu.set_limits(api.realm, per_minute=None)
    assert (await api.query("select * from Term")).status == 200


async def test_held_throttle(emu: Emulator, api: Api) -> None:
    emu.throttle(api.realm, 0.4)
    assert (await api.query("select * from Term")).status == 429
    assert (await api.cdc("Customer", emu.clock.now().isoformat())).status == 429
    await asyncio.sleep(0.45)
    assert (await api.query("select * from Term")).status == 200
    emu.throttle(api.realm, 60)
    assert (await api.batch([{"bId": "1", "Query": "select * from Term"}])).status == 429
    emu.unthrottle(api.realm)
    assert (await api.query("select * from Term")).status == 200


async def test_tid_and_version_headers_everywhere(emu: Emulator, api: Api) -> None:
    ok = await api.query("select * from Term")
    bad = await api.query("select nonsense")
    api.token = None
    unauth = await api.query("select * from Term")
    tids = {r.headers["intuit_tid"] for r in (ok, bad, unauth)}
    assert len(tids) == 3 and all(t.startswith("1-") for t in tids)
    assert ok.headers["QBO-Version"] and ok.headers["Intuit-Tid"] == ok.headers["intuit_tid"]
    async with api.session.post(
        present(emu.token_url), data={"grant_type": "refresh_token", "refresh_token": "x"}
    ) as r:
        assert r.status == 401 and r.headers["intuit_tid"]


async def test_injected_latency(emu: Emulator, api: Api) -> None:
    emu.inject_fault("latency", endpoint="cdc", seconds=0.25, count=1)
    start = time.monotonic()
    assert (await api.query("select * from Term")).status == 200
    assert time.monotonic() - start < 0.2  # other endpoints are not slowed
    start = time.monotonic()
    assert (await api.cdc("Customer", emu.clock.now().isoformat())).status == 200
    assert time.monotonic() - start >= 0.25


async def test_injected_5xx_is_qbo_system_fault_xml(emu: Emulator, api: Api) -> None:
    emu.inject_fault("error", endpoint="query", count=2, status=503)
    first, second, third = [await api.query("select * from Term") for _ in range(3)]
    assert first.status == second.status == 503 and third.status == 200
    assert b'<Fault type="SystemFault">' in first.body and b'<Error code="10000">' in first.body
    assert first.headers["Content-Type"] == "application/xml"


async def test_injected_reset(emu: Emulator, api: Api) -> None:
    emu.inject_fault("reset", endpoint="entity", count=1)
    with pytest.raises(aiohttp.ClientError):  # ServerDisconnectedError: not a byte came back
        await api.post("Customer", {"DisplayName": "Never Answered"})
    assert (await api.post("Customer", {"DisplayName": "Answered"})).status == 200
    assert emu.counters(api.realm)["create"] == 2  # the reset request reached the server


async def test_injected_malformed_body(emu: Emulator, api: Api) -> None:
    emu.inject_fault("malformed", endpoint="query", realm=api.realm, count=1)
    broken = await api.query("select * from Customer")
    assert broken.status == 200
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(broken.body)
    assert orjson.loads((await api.query("select * from Customer")).body)


async def test_fault_probability_and_realm_filter(emu: Emulator, api: Api) -> None:
    rule = emu.inject_fault("error", probability=1.0, realm="somewhere-else")
    assert (await api.query("select * from Term")).status == 200  # other realm only
    emu.remove_fault(rule)
    emu.inject_fault("error", probability=0.0)
    assert (await api.query("select * from Term")).status == 200
    emu.clear_faults()
    emu.inject_fault("error", endpoint="token", count=1)
    async with api.session.post(present(emu.token_url), data={"grant_type": "refresh_token"}) as r:
        assert r.status == 500


async def test_fault_control_over_http(emu: Emulator, api: Api) -> None:
    async with api.session.post(
        f"{emu.base_url}/_emulator/faults",
        json={"kind": "error", "endpoint": "query", "count": 1, "status": 502},
    ) as r:
        assert (await r.json())["id"]
    assert (await api.query("select * from Term")).status == 502
    async with api.session.post(f"{emu.base_url}/_emulator/faults", json={"kind": "bogus"}) as r:
        assert r.status == 400
    async with api.session.post(
        f"{emu.base_url}/_emulator/realms/{api.realm}/throttle", json={"seconds": 30}
    ) as r:
        assert r.status == 200
    assert (await api.query("select * from Term")).status == 429


async def test_counters(emu: Emulator, api: Api) -> None:
    await api.query("select * from Term")
    await api.query_post("select * from Term")
    await api.cdc("Customer", emu.clock.now().isoformat())
    await api.get("/customer/1")
    await api.post("Customer", {"DisplayName": "Counted"})
    await api.post(
        "Customer", {"Id": "1", "SyncToken": "0", "sparse": True, "Notes": "x"}
    )  # maybe stale: still counted
    assert emu.counters(api.realm) == {
        "query": 2,
        "cdc": 1,
        "read": 1,
        "create": 1,
        "update": 1,
        "total": 6,
    }
    async with api.session.get(
        f"{emu.base_url}/_emulator/counters", params={"realm": api.realm}
    ) as r:
        assert (await r.json())["total"] == 6
    assert api.realm in emu.counters()
    emu.reset_counters()
    assert emu.counters(api.realm) == {"total": 0}
