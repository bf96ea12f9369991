"""Fixtures for the emulator tests: a served emulator, a seeded realm and a
small aiohttp client that talks to it like a QBO client would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import orjson
import pytest

from qbo_emulator import Emulator, run_emulator

REALM = "9130350000000001"
NO_LIMITS: dict[str, Any] = {"per_minute": None, "per_second": None, "in_flight": None}

T = TypeVar("T")


def present(value: T | None) -> T:
    """``value``, which the test knows is there (a served URL, a stored object)."""
    assert value is not None
    return value


@dataclass
class Reply:
    status: int
    headers: Any
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


class Api:
    """Just enough of a QBO client: bearer auth, JSON, raw replies."""

    def __init__(
        self, session: aiohttp.ClientSession, emu: Emulator, realm: str, token: str | None
    ) -> None:
        self.session = session
        self.emu = emu
        self.realm = realm
        self.token = token

    @property
    def headers(self) -> dict[str, str]:
        h = {"Accept": "application/json"}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        return h

    def url(self, path: str, realm: str | None = None) -> str:
        return f"{self.emu.base_url}/v3/company/{realm or self.realm}{path}"

    async def request(
        self, method: str, path: str, *, realm: str | None = None, **kw: Any
    ) -> Reply:
        headers = {**self.headers, **kw.pop("headers", {})}
        async with self.session.request(method, self.url(path, realm), headers=headers, **kw) as r:
            return Reply(r.status, r.headers, await r.read())

    async def get(self, path: str, **params: Any) -> Reply:
        return await self.request("GET", path, params=params)

    async def query(self, statement: str) -> Reply:
        return await self.get("/query", query=statement, minorversion="75")

    async def query_post(self, statement: str) -> Reply:
        return await self.request(
            "POST", "/query", data=statement.encode(), headers={"Content-Type": "application/text"}
        )

    async def cdc(self, entities: str, changed_since: str) -> Reply:
        return await self.get("/cdc", entities=entities, changedSince=changed_since)

    async def post(self, entity: str, body: Any, **params: str) -> Reply:
        return await self.request("POST", f"/{entity.lower()}", json=body, params=params)

    async def batch(self, items: list[dict[str, Any]]) -> Reply:
        return await self.request("POST", "/batch", json={"BatchItemRequest": items})


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    """An emulator without rate limits (limit tests set their own)."""
    async with run_emulator(**NO_LIMITS) as served:
        yield served


@pytest.fixture
def realm(emu: Emulator) -> str:
    return emu.add_realm(REALM, seed=7, per_entity=8)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def api(emu: Emulator, realm: str, session: aiohttp.ClientSession) -> Api:
    return Api(session, emu, realm, emu.issue_tokens(realm)["access_token"])


def fault_of(reply: Reply) -> dict[str, Any]:
    """The single Error of a QBO JSON fault body (and check the envelope)."""
    body = reply.json
    assert set(body) <= {"Fault", "time"}, body
    assert body["Fault"]["type"] == "ValidationFault"
    (error,) = body["Fault"]["Error"]
    assert isinstance(error, dict)
    return error


BLANK_REALM = "9130350000000099"


@pytest.fixture
def blank(emu: Emulator, session: aiohttp.ClientSession) -> Api:
    """A client for an empty realm (tests that need exact contents)."""
    emu.add_realm(BLANK_REALM)
    return Api(session, emu, BLANK_REALM, emu.issue_tokens(BLANK_REALM)["access_token"])
