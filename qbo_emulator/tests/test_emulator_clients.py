"""Published clients against the emulator with its default limits (issue 14):
python-quickbooks through 50 calls, the one-second buckets of the 10/s limit,
and intuitlib's OpenID Connect (id_token validation, userinfo)."""

from __future__ import annotations

import asyncio
from typing import Any

import jwt
import pytest
from intuitlib.client import AuthClient
from intuitlib.enums import Scopes
from intuitlib.utils import validate_id_token
from quickbooks import QuickBooks
from quickbooks.exceptions import QuickbooksException
from quickbooks.objects.customer import Customer
from quickbooks.objects.term import Term

from qbo_emulator import run_emulator
from qbo_emulator.limits import LimitConfig, Limiter

REDIRECT = "https://app.example/callback"
# QBO's answer takes time: the recorded sandbox read says "Service-Time: total=32"
# (ms) before the network's round trip.  100 ms per API call stands in for both, so a
# sequential client meets the emulator at the pace it meets QBO.
QBO_SERVICE_SECONDS = 0.1


def _fifty_calls(
    base_url: str, discovery_url: str, client: tuple[str, str], realm: str, code: str
) -> list[str]:
    auth = AuthClient(client[0], client[1], REDIRECT, discovery_url)
    auth.get_bearer_token(code, realm_id=realm)
    qb = QuickBooks(
        auth_client=auth, refresh_token=auth.refresh_token, company_id=realm, minorversion=75
    )
    qb.api_url_v3 = qb.sandbox_api_url_v3 = f"{base_url}/v3"
    outcomes: list[str] = []
    for index in range(50):
        try:
            if index % 5 == 0:
                Customer.all(qb=qb, max_results=10)
            elif index % 5 == 1:
                Customer.count(qb=qb)
            elif index % 5 == 2:
                Term.all(qb=qb)
            elif index % 5 == 3:
                Customer.get("1", qb=qb)
            else:
                customer = Customer.get("2", qb=qb)
                customer.Notes = f"call {index}"
                customer.save(qb=qb)
            outcomes.append("ok")
        except QuickbooksException as err:
            outcomes.append(f"{err.error_code}: {err.message[:80]}")
    return outcomes


@pytest.mark.published_client
async def test_python_quickbooks_fifty_calls_under_default_limits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    async with run_emulator() as emu:  # default limits: 500/min, 10/s, 10 in flight
        realm = emu.add_realm("9130350000000141", seed=3, per_entity=5)
        emu.inject_fault("latency", endpoint="api", seconds=QBO_SERVICE_SECONDS)
        code = emu.issue_auth_code(realm, redirect_uri=REDIRECT)
        outcomes = await asyncio.to_thread(
            _fifty_calls,
            str(emu.base_url),
            str(emu.discovery_url),
            (emu.client_id, emu.client_secret),
            realm,
            code,
        )
        assert outcomes == ["ok"] * 50
        counts = emu.counters(realm)
        # 50 operations: 60 API requests (every fifth reads then saves) and one token call
        assert counts.get("throttled", 0) == 0 and counts["total"] == 60 + 1


def test_per_second_limit_counts_one_second_buckets(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr("qbo_emulator.limits.monotonic", lambda: now[0])
    limiter = Limiter(LimitConfig(per_minute=None, per_second=10, in_flight=None))

    def call_at(moment: float) -> bool:
        now[0] = moment
        admitted = limiter.admit("r")
        limiter.release("r")
        return admitted

    # Ten calls open a bucket at 100.0; the next two straddle its end: eleven (and
    # twelve) calls inside one second, all served; a sliding window refuses 100.95.
    first = [call_at(100.0 + 0.05 * n) for n in range(10)]
    assert first == [True] * 10
    assert call_at(100.99) is False  # the eleventh inside the bucket
    assert call_at(101.0) is True  # a new bucket opens
    assert [call_at(101.0 + 0.01 * n) for n in range(1, 10)] == [True] * 9
    assert call_at(101.5) is False


def _openid_flow(
    discovery_url: str, client: tuple[str, str], realm: str, code: str
) -> dict[str, Any]:
    auth = AuthClient(client[0], client[1], REDIRECT, discovery_url)
    auth.get_bearer_token(code, realm_id=realm)
    out: dict[str, Any] = {"id_token": auth.id_token}
    out["valid"] = validate_id_token(auth.id_token, client[0], auth.issuer_uri, auth.jwks_uri)
    out["user"] = auth.get_user_info().json()
    auth.refresh()
    out["valid_after_refresh"] = validate_id_token(
        auth.id_token, client[0], auth.issuer_uri, auth.jwks_uri
    )
    return out


@pytest.mark.published_client
async def test_intuitlib_openid_validates_id_token_and_reads_userinfo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    async with run_emulator() as emu:
        realm = emu.add_realm("9130350000000142")
        scope = " ".join(
            s.value for s in (Scopes.ACCOUNTING, Scopes.OPENID, Scopes.EMAIL, Scopes.PROFILE)
        )
        code = emu.issue_auth_code(realm, redirect_uri=REDIRECT, scope=scope)
        out = await asyncio.to_thread(
            _openid_flow, str(emu.discovery_url), (emu.client_id, emu.client_secret), realm, code
        )
    # intuitlib sets id_token only when validate_id_token accepted it.
    assert out["id_token"] and out["valid"] is True and out["valid_after_refresh"] is True
    claims = jwt.decode(out["id_token"], options={"verify_signature": False})
    assert claims["realmid"] == realm and claims["aud"] == [emu.client_id]
    assert out["user"]["sub"] == claims["sub"] and out["user"]["emailVerified"] is True
    assert set(out["user"]) >= {"email", "givenName", "familyName"}
