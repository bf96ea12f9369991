"""Optional SSRF guard (POLLER_CALLBACK_DENY_PRIVATE=true).

Refuses callbacks to addresses that are not globally routable: loopback, private, link-local
(cloud metadata at 169.254.169.254), unique-local, CGNAT, documentation, multicast, unspecified,
and IPv4-mapped IPv6 forms of those. Two checks, because aiohttp skips the resolver for IP
literals: the URL's host when it is a literal, and every address a hostname resolves to (a
filtering resolver on the connector, so the address checked is the address connected to — no
DNS-rebinding window between check and connect).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver


class CallbackRefused(OSError):
    """The callback's address is not allowed. An OSError so aiohttp passes it through its
    connection-error path; the dispatcher records it as a failed attempt."""


def is_forbidden(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return True
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    return not ip.is_global or ip.is_multicast


def check_url(url: str) -> None:
    """Raise CallbackRefused when the URL's host is a forbidden IP literal."""
    host = urlsplit(url).hostname or ""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return  # a name: the resolver checks what it resolves to
    if is_forbidden(host):
        raise CallbackRefused(
            f"callback address {host} is private or reserved (POLLER_CALLBACK_DENY_PRIVATE=true)"
        )


class GuardedResolver(AbstractResolver):
    """Resolves with aiohttp's default resolver and drops forbidden addresses."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if not is_forbidden(str(r["host"]))]
        if not allowed:
            shown = ", ".join(sorted({str(r["host"]) for r in results}))
            raise CallbackRefused(
                f"callback host {host} resolves only to private or reserved "
                f"addresses ({shown}; POLLER_CALLBACK_DENY_PRIVATE=true)"
            )
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def refused_in(exc: BaseException) -> CallbackRefused | None:
    """The CallbackRefused inside an aiohttp connection error, if that is what it was."""
    seen: set[int] = set()
    current: Any = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, CallbackRefused):
            return current
        seen.add(id(current))
        current = getattr(current, "os_error", None) or current.__cause__ or current.__context__
    return None
