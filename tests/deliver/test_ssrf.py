"""The private-address guard: literals checked directly, names after resolution."""

from __future__ import annotations

import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from poller.deliver.ssrf import CallbackRefused, GuardedResolver, check_url, is_forbidden


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "::",
        "fe80::1",
        "fd12:3456::1",
        "::ffff:10.0.0.1",
        "::ffff:127.0.0.1",
        "224.0.0.1",
        "ff02::1",
        "192.0.2.1",
        "2001:db8::1",
        "not an address",
    ],
)
def test_forbidden(address: str) -> None:
    assert is_forbidden(address)


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "93.184.216.34"]
)
def test_allowed(address: str) -> None:
    assert not is_forbidden(address)


def test_literal_urls() -> None:
    for url in (
        "http://127.0.0.1:8080/x",
        "https://[::1]/x",
        "http://169.254.169.254/latest",
        "http://[::ffff:192.168.0.1]/",
    ):
        with pytest.raises(CallbackRefused):
            check_url(url)
    check_url("https://8.8.8.8/hook")
    check_url("https://example.com/hook")  # names are the resolver's job


class FakeResolver(AbstractResolver):
    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0)
            for a in self.addresses
        ]

    async def close(self) -> None:
        pass


async def test_resolver_drops_private_answers() -> None:
    mixed = GuardedResolver(FakeResolver(["10.0.0.5", "93.184.216.34"]))
    assert [r["host"] for r in await mixed.resolve("rebind.example", 443)] == ["93.184.216.34"]
    private = GuardedResolver(FakeResolver(["127.0.0.1", "::1"]))
    with pytest.raises(CallbackRefused, match="private or reserved"):
        await private.resolve("localhost", 80)
