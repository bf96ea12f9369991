"""`Authorization: User <secret>, Organization <secret>[, Element <token>]` (DESIGN §9).

Parts come in any order, names case-insensitive, whitespace tolerant. Secrets are compared in
constant time. Ten failures from one address within a minute block it (429) for a minute;
both outcomes are counted in /metrics.
"""

from __future__ import annotations

import hmac
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from poller import metrics
from poller.manage import users
from poller.manage.instances import InstanceManager
from poller.manage.users import Caller
from poller.store import db
from poller.web.api.conventions import ApiError

INVALID = "Invalid Organization or User secret, or invalid Element token provided."
FAILURES_ALLOWED = 10
WINDOW_S = 60.0
BLOCK_S = 60.0
MAX_TRACKED_ADDRESSES = 10_000
_PART = re.compile(r"^\s*(user|organization|element)\s+(\S+)\s*$", re.IGNORECASE)

CALLER_KEY = web.RequestKey("caller", Caller)
ELEMENT_KEY = web.RequestKey("element_instance_id", int)


def parse_authorization(header: str | None) -> dict[str, str] | None:
    """`{"user": …, "organization": …, "element": …}`; None when the header is malformed."""
    if not header:
        return None
    found: dict[str, str] = {}
    for part in header.split(","):
        if not part.strip():
            continue
        match = _PART.match(part)
        if match is None:
            return None
        name = match.group(1).lower()
        if name in found:
            return None
        found[name] = match.group(2)
    return found


class Throttle:
    """Failed authentications per client address, in memory (one process's view)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.failures: OrderedDict[str, deque[float]] = OrderedDict()
        self.blocked_until: dict[str, float] = {}

    def blocked(self, address: str) -> float | None:
        """Seconds left of the address's block, or None."""
        until = self.blocked_until.get(address)
        if until is None:
            return None
        left = until - self.clock()
        if left <= 0:
            del self.blocked_until[address]
            return None
        return left

    def failed(self, address: str) -> None:
        now = self.clock()
        recent = self.failures.pop(address, deque())
        while recent and recent[0] <= now - WINDOW_S:
            recent.popleft()
        recent.append(now)
        if len(recent) >= FAILURES_ALLOWED:
            self.blocked_until[address] = now + BLOCK_S
            recent.clear()
        self.failures[address] = recent
        while len(self.failures) > MAX_TRACKED_ADDRESSES:
            self.failures.popitem(last=False)


@dataclass
class Authenticator:
    pool: db.Pool
    organization_secret: str
    manager: InstanceManager
    throttle: Throttle

    async def authenticate(self, request: web.Request) -> None:
        """Sets CALLER_KEY (and ELEMENT_KEY with an Element part) or raises 401 / 429."""
        address = request.remote or "unknown"
        left = self.throttle.blocked(address)
        if left is not None:
            metrics.API_AUTH_FAILURES.labels("throttled").inc()
            raise ApiError(
                429,
                "too many failed authentications from this address; try again later",
                {"Retry-After": str(int(left) + 1)},
            )
        caller, element = await self._check(request.headers.get("Authorization"))
        if caller is None:
            self.throttle.failed(address)
            metrics.API_AUTH_FAILURES.labels("invalid").inc()
            raise ApiError(401, INVALID)
        request[CALLER_KEY] = caller
        if element is not None:
            request[ELEMENT_KEY] = element

    async def check_secrets(self, user_secret: str, organization_secret: str) -> Caller | None:
        """The user of `user_secret` when both secrets are right (the console's sign-in uses
        this too); both are checked in constant time, and both always."""
        organization_ok = hmac.compare_digest(
            organization_secret.encode(), self.organization_secret.encode()
        )
        async with db.acquire(self.pool) as conn:
            caller = await users.authenticate(conn, user_secret)
        return caller if organization_ok else None

    async def _check(self, header: str | None) -> tuple[Caller | None, int | None]:
        parts = parse_authorization(header)
        if parts is None or "user" not in parts or "organization" not in parts:
            return None, None
        caller = await self.check_secrets(parts["user"], parts["organization"])
        if caller is None:
            return None, None
        token = parts.get("element")
        if token is None:
            return caller, None
        element = await self.manager.by_token(caller, token)
        return (caller, element) if element is not None else (None, None)
