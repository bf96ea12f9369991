"""OAuth 2.0 tokens for QuickBooks Online (reference §6, §8.1-8.2).

Rules this module exists to keep:
- An authorization code is exchanged **exactly once**: codes are single-use and a second
  exchange poisons the grant. The exchange happens under the credentials row lock and the code
  is cleared in the transaction that stores the tokens.
- **One refresh at a time per realm, across processes**: the store's `lock()` is
  `SELECT … FOR UPDATE` on the credentials row; after acquiring it the row is re-read, and a
  token another process just obtained is used instead of refreshing again.
- **The rotated refresh token is committed before it is used**: new tokens are written and
  committed in the transaction that held the lock, before any API call sees the access token.
- `invalid_grant` → `ReconnectRequired`; the instance becomes `needs_reconnect` with a reason
  and one `instance_needs_reconnect` line is logged. Other instances are untouched.

PostgreSQL stays behind the `TokenStore` protocol (implemented in `poller.store.tokens`).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import aiohttp
import orjson

from poller import metrics
from poller.backoff import Backoff
from poller.config import Settings
from poller.logs import get_logger, register_secret
from poller.qbo.types import (
    AuthenticationError,
    Fault,
    MalformedResponse,
    QboError,
    ReconnectRequired,
    ServerError,
    TransportError,
)

log = get_logger("poller.qbo.auth")

UTC = UTC
DEFAULT_REFRESH_MARGIN_S = 300.0  # refresh when less than 5 minutes are left
DEFAULT_ACCESS_LIFETIME_S = 3600  # Intuit's `expires_in` when a body leaves it out
TOKEN_ATTEMPTS = 3  # for failures where the request surely did no harm
# 0.2 s, then 0.4 s: the token endpoint is retried briefly, the caller waits for it.
TOKEN_BACKOFF = Backoff(base_s=0.2, cap_s=1.0)


# --- values ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """One instance's OAuth state as stored (secrets decrypted), plus its app keys."""

    instance_id: int
    instance_name: str
    realm_id: str
    status: str
    client_id: str
    client_secret: str = field(repr=False)
    redirect_uri: str | None = None
    auth_code: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)
    access_expires_at: datetime | None = None
    refresh_token: str | None = field(default=None, repr=False)
    refresh_expires_at: datetime | None = None
    refresh_hard_expires_at: datetime | None = None
    refresh_count: int = 0


@dataclass(frozen=True)
class TokenSet:
    """What the token endpoint returned, with its lifetimes turned into instants."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    access_expires_at: datetime
    refresh_expires_at: datetime | None
    refresh_hard_expires_at: datetime | None
    obtained_at: datetime


class InvalidGrant(ReconnectRequired):
    """The token endpoint answered `invalid_grant` (dead code or refresh token)."""


class ClientRejected(AuthenticationError):
    """The token endpoint answered `invalid_client`: the app's id/secret are wrong."""


# --- the persistence protocol (PostgreSQL lives in poller.store.tokens) ------------------------


class LockedCredentials(Protocol):
    """The credentials row, locked for this transaction; writes commit when the lock ends."""

    credentials: Credentials

    async def save_tokens(self, tokens: TokenSet) -> None:
        """Store new tokens and clear the authorization code (it is spent)."""

    async def clear_code(self) -> None: ...

    async def clear_tokens(self) -> None: ...

    async def mark_needs_reconnect(self, reason: str) -> bool:
        """Set the instance's status to needs_reconnect; True when it was not already."""


class TokenStore(Protocol):
    async def load(self, instance_id: int) -> Credentials | None:
        """A plain read, no lock (the fast path; may be a little stale)."""

    def lock(self, instance_id: int) -> AbstractAsyncContextManager[LockedCredentials | None]:
        """A transaction holding the row lock; None when the instance has no credentials row."""


class AccessTokens(Protocol):
    """What the HTTP client needs from token management."""

    async def access_token(self, instance_id: int, realm_id: str) -> str: ...

    async def refresh_rejected(self, instance_id: int, realm_id: str, rejected: str) -> str: ...


# --- the token endpoint ----------------------------------------------------------------------


def _basic(client_id: str, client_secret: str) -> str:
    # Intuit's own client sends `id:secret` unescaped; its ids and secrets are alphanumeric.
    return "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()


def _token_set(body: Any, now: datetime, previous_refresh: str | None) -> TokenSet:
    if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
        raise MalformedResponse("token endpoint answered without an access_token")
    refresh = body.get("refresh_token") or previous_refresh
    if not isinstance(refresh, str):
        raise MalformedResponse("token endpoint answered without a refresh_token")

    def after(key: str, default: int | None = None) -> datetime | None:
        value = body.get(key, default)
        try:
            return now + timedelta(seconds=int(value)) if value is not None else None
        except (TypeError, ValueError):
            return None

    access_expires = after("expires_in", DEFAULT_ACCESS_LIFETIME_S)
    assert access_expires is not None
    return TokenSet(
        body["access_token"],
        refresh,
        access_expires,
        after("x_refresh_token_expires_in"),
        after("x_refresh_token_hard_expires_in"),
        now,
    )


class OAuthClient:
    """Intuit's token and revoke endpoints: Basic client auth, form body, JSON answers."""

    def __init__(self, session: aiohttp.ClientSession, settings: Settings) -> None:
        self.session = session
        self.token_url = settings.qbo_oauth_token_url
        self.revoke_url = settings.qbo_oauth_revoke_url
        self.timeout = aiohttp.ClientTimeout(total=settings.qbo_request_timeout_s)

    async def exchange_code(
        self, client_id: str, client_secret: str, code: str, redirect_uri: str | None, now: datetime
    ) -> TokenSet:
        """One attempt only: a code must never be sent twice (see `TokenManager`)."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri or "",
        }
        body = await self._post_token(client_id, client_secret, form, retry=False)
        return _token_set(body, now, None)

    async def refresh(
        self, client_id: str, client_secret: str, refresh_token: str, now: datetime
    ) -> TokenSet:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        body = await self._post_token(client_id, client_secret, form, retry=True)
        return _token_set(body, now, refresh_token)

    async def revoke(self, client_id: str, client_secret: str, token: str) -> None:
        """Revoke an access or refresh token (Intuit then disconnects the whole grant)."""
        headers = {
            "Authorization": _basic(client_id, client_secret),
            "Accept": "application/json",
            "Content-Type": "application/json",
        }
        try:
            async with self.session.post(
                self.revoke_url,
                data=orjson.dumps({"token": token}),
                headers=headers,
                timeout=self.timeout,
            ) as resp:
                await resp.read()
                metrics.QBO_REQUESTS.labels("revoke", str(resp.status)).inc()
                if resp.status >= 400:
                    raise _token_error(resp.status, await resp.read(), resp.headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            metrics.QBO_REQUESTS.labels("revoke", "error").inc()
            raise TransportError(f"revoke failed: {type(exc).__name__}") from None

    async def _post_token(
        self, client_id: str, client_secret: str, form: dict[str, str], retry: bool
    ) -> Any:
        headers = {
            "Authorization": _basic(client_id, client_secret),
            "Accept": "application/json",
            "Content-Type": "application/x-www-form-urlencoded",
            "x-include-refresh-token-hard-expires-in": "true",
        }
        attempts = TOKEN_ATTEMPTS if retry else 1
        for attempt in range(1, attempts + 1):
            try:
                return await self._post_once(headers, form)
            except _Retryable as exc:
                if attempt == attempts:
                    raise exc.error from None
                await asyncio.sleep(TOKEN_BACKOFF.delay(attempt))
        raise AssertionError("unreachable")

    async def _post_once(self, headers: dict[str, str], form: dict[str, str]) -> Any:
        try:
            async with self.session.post(
                self.token_url, data=form, headers=headers, timeout=self.timeout
            ) as resp:
                raw = await resp.read()
                status = resp.status
                resp_headers = resp.headers
        except aiohttp.ClientConnectorError as exc:
            # The connection never opened, so the grant was not sent: safe to try again.
            metrics.QBO_REQUESTS.labels("token", "error").inc()
            raise _Retryable(
                TransportError(f"token endpoint unreachable: {type(exc).__name__}", None)
            ) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Sent, maybe processed: a refresh may have rotated, a code may be spent.
            metrics.QBO_REQUESTS.labels("token", "error").inc()
            raise AmbiguousTokenFailure(f"token request failed: {type(exc).__name__}") from None
        metrics.QBO_REQUESTS.labels("token", str(status)).inc()
        if status >= 500:
            raise _Retryable(ServerError(f"token endpoint answered HTTP {status}"))
        if status >= 400:
            raise _token_error(status, raw, resp_headers)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise MalformedResponse(
                f"token endpoint answered HTTP {status} with a non-JSON body"
            ) from None


class _Retryable(Exception):
    def __init__(self, error: QboError) -> None:
        super().__init__(str(error))
        self.error = error


class AmbiguousTokenFailure(TransportError):
    """The token request was sent but no answer came back: it may have taken effect."""


def _token_error(status: int, raw: bytes, headers: Any) -> QboError:
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        body = {}
    error = body.get("error", "") if isinstance(body, dict) else ""
    description = body.get("error_description", "") if isinstance(body, dict) else ""
    tid = headers.get("intuit_tid") or headers.get("intuit-tid")
    fault = Fault(
        type="OAuth", code=str(error), message=str(description), status=status, intuit_tid=tid
    )
    text = f"token endpoint answered HTTP {status} {error}".strip()
    if description:
        text += f" ({description})"
    if error == "invalid_grant":
        return InvalidGrant(description or "invalid_grant", fault)
    log.warning("oauth_request_failed", status=status, error=error or None, intuit_tid=tid)
    if error == "invalid_client" or status == 401:
        return ClientRejected(text, fault)
    return AuthenticationError(text, fault)


# --- token management ------------------------------------------------------------------------


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _Reconnect:
    """An instance found to need a reconnect under the row lock, reported once committed."""

    credentials: Credentials
    reason: str
    status_changed: bool  # False when it was already marked needs_reconnect
    outcome: str  # the TOKEN_REFRESHES label
    intuit_tid: str | None = None


@dataclass
class _Cached:
    token: str = field(repr=False)
    expires_at: datetime


class TokenManager:
    """Access tokens for the HTTP client: cached, renewed ahead of expiry and after a 401.

    One per process. `clock` is the notion of "now" used for expiry (tests bind it to the
    emulator's clock so that simulated days pass).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: Settings,
        store: TokenStore,
        *,
        oauth: OAuthClient | None = None,
        clock: Callable[[], datetime] = _utcnow,
        refresh_margin_s: float = DEFAULT_REFRESH_MARGIN_S,
    ) -> None:
        self.store = store
        self.oauth = oauth or OAuthClient(session, settings)
        self.clock = clock
        self.margin = timedelta(seconds=refresh_margin_s)
        self._cache: dict[int, _Cached] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self.renewals = 0  # token endpoint calls made by this manager (tests, benchmarks)

    def _lock(self, instance_id: int) -> asyncio.Lock:
        lock = self._locks.get(instance_id)
        if lock is None:
            lock = self._locks[instance_id] = asyncio.Lock()
        return lock

    def _fresh(self, expires_at: datetime | None, margin: timedelta) -> bool:
        return expires_at is not None and expires_at - margin > self.clock()

    def _cached(self, instance_id: int, not_this: str | None = None) -> str | None:
        cached = self._cache.get(instance_id)
        if cached and cached.token != not_this and self._fresh(cached.expires_at, self.margin):
            return cached.token
        return None

    def forget(self, instance_id: int) -> None:
        """Drop the cached token (an instance was removed or reconnected)."""
        self._cache.pop(instance_id, None)

    async def access_token(self, instance_id: int, realm_id: str = "") -> str:
        """A usable access token, exchanging the pending code or refreshing when needed."""
        token = self._cached(instance_id)
        if token:
            return token
        async with self._lock(instance_id):
            token = self._cached(instance_id)
            if token:
                return token
            creds = await self.store.load(instance_id)
            if creds is None:
                raise ReconnectRequired(f"instance {instance_id} has no OAuth credentials")
            _refuse_if_disconnected(creds)
            if (
                creds.auth_code is None
                and creds.access_token
                and self._fresh(creds.access_expires_at, self.margin)
            ):
                return self._remember(
                    creds.instance_id, creds.access_token, creds.access_expires_at
                )
            return await self._renew_shielded(instance_id, rejected=None)

    async def refresh_rejected(self, instance_id: int, realm_id: str, rejected: str) -> str:
        """QBO answered 401 to `rejected`: get a different token (refreshing at most once)."""
        async with self._lock(instance_id):
            token = self._cached(instance_id, not_this=rejected)
            if token:
                return token  # another coroutine of this process already refreshed
            self.forget(instance_id)
            return await self._renew_shielded(instance_id, rejected=rejected)

    async def connect(self, instance_id: int) -> None:
        """Exchange a pending code now (e.g. right after registration) instead of lazily."""
        await self.access_token(instance_id)

    async def _renew_shielded(self, instance_id: int, rejected: str | None) -> str:
        """A caller cancelled mid-refresh (shutdown, a timeout) must not abort the renewal:
        Intuit may already have rotated the refresh token, and only finishing the transaction
        keeps the new one. The renewal runs on; the caller just stops waiting for it."""
        return await asyncio.shield(self._renew(instance_id, rejected))

    async def _renew(self, instance_id: int, rejected: str | None) -> str:
        """Under the row lock: reuse what another process got, or exchange, or refresh."""
        failure: QboError | None = None
        tokens: TokenSet | None = None
        reconnect: _Reconnect | None = None
        async with self.store.lock(instance_id) as locked:
            if locked is None:
                raise ReconnectRequired(f"instance {instance_id} has no OAuth credentials")
            creds = locked.credentials
            _refuse_if_disconnected(creds)
            reusable = (
                creds.auth_code is None
                and creds.access_token
                and creds.access_token != rejected
                and self._fresh(
                    creds.access_expires_at, self.margin if rejected is None else timedelta(0)
                )
            )
            if reusable:
                metrics.TOKEN_REFRESHES.labels("reused").inc()
                log.debug("oauth_token_reused", instance_id=instance_id, realm_id=creds.realm_id)
                assert creds.access_token is not None
                return self._remember(instance_id, creds.access_token, creds.access_expires_at)
            try:
                tokens = await self._obtain(creds)
                await locked.save_tokens(tokens)
            except InvalidGrant as exc:
                reason = _reconnect_reason(creds, str(exc))
                tid = exc.fault.intuit_tid if exc.fault else None
                reconnect = _Reconnect(
                    credentials=creds,
                    reason=reason,
                    status_changed=await locked.mark_needs_reconnect(reason),
                    outcome="invalid_grant",
                    intuit_tid=tid,
                )
                if creds.auth_code:
                    await locked.clear_code()
                failure = InvalidGrant(reason, exc.fault)
            except AmbiguousTokenFailure:
                if not creds.auth_code:
                    raise  # a refresh: keep the stored token, the next attempt will tell
                # The code may have been spent by the request that got no answer; sending it
                # again could poison the grant. Give it up and ask for a reconnect instead.
                reason = (
                    "the authorization code exchange got no answer and the code may be "
                    "spent (codes are single-use); reconnect the company"
                )
                await locked.clear_code()
                reconnect = _Reconnect(
                    credentials=creds,
                    reason=reason,
                    status_changed=await locked.mark_needs_reconnect(reason),
                    outcome="code_lost",
                )
                failure = ReconnectRequired(reason)
        # Committed: the new refresh token is durable before anything uses the access token.
        if reconnect is not None:
            self.forget(instance_id)
            metrics.TOKEN_REFRESHES.labels(reconnect.outcome).inc()
            if reconnect.status_changed:
                log.warning(
                    "instance_needs_reconnect",
                    instance_id=reconnect.credentials.instance_id,
                    instance=reconnect.credentials.instance_name,
                    realm_id=reconnect.credentials.realm_id,
                    reason=reconnect.reason,
                    intuit_tid=reconnect.intuit_tid,
                )
        if failure is not None:
            raise failure
        assert tokens is not None
        return self._after_save(creds, tokens)

    async def _obtain(self, creds: Credentials) -> TokenSet:
        register_secret(creds.client_secret)
        if not creds.auth_code and not creds.refresh_token:
            raise InvalidGrant("no authorization code or refresh token is stored")
        now = self.clock()
        self.renewals += 1
        try:
            if creds.auth_code:
                return await self.oauth.exchange_code(
                    creds.client_id, creds.client_secret, creds.auth_code, creds.redirect_uri, now
                )
            assert creds.refresh_token is not None
            return await self.oauth.refresh(
                creds.client_id, creds.client_secret, creds.refresh_token, now
            )
        except InvalidGrant:
            raise
        except QboError:
            metrics.TOKEN_REFRESHES.labels("error").inc()
            raise

    def _after_save(self, creds: Credentials, tokens: TokenSet) -> str:
        outcome = "exchanged" if creds.auth_code else "refreshed"
        metrics.TOKEN_REFRESHES.labels(outcome).inc()
        register_secret(tokens.refresh_token, slot=f"refresh:{creds.instance_id}")
        log.info(
            "oauth_tokens_" + outcome,
            instance_id=creds.instance_id,
            realm_id=creds.realm_id,
            token_expires_at=tokens.access_expires_at.isoformat(),
            refresh_rotated=tokens.refresh_token != creds.refresh_token,
        )
        return self._remember(creds.instance_id, tokens.access_token, tokens.access_expires_at)

    def _remember(self, instance_id: int, token: str, expires_at: datetime | None) -> str:
        register_secret(token, slot=f"access:{instance_id}")
        if expires_at is not None:
            self._cache[instance_id] = _Cached(token, expires_at)
        return token

    async def revoke(self, instance_id: int) -> bool:
        """Revoke the instance's grant at Intuit and forget its tokens. False if none stored."""
        async with self._lock(instance_id):
            async with self.store.lock(instance_id) as locked:
                if locked is None:
                    return False
                creds = locked.credentials
                token = creds.refresh_token or creds.access_token
                if not token:
                    return False
                await self.oauth.revoke(creds.client_id, creds.client_secret, token)
                await locked.clear_tokens()
            self.forget(instance_id)
            log.info("oauth_grant_revoked", instance_id=instance_id, realm_id=creds.realm_id)
            return True


def _refuse_if_disconnected(creds: Credentials) -> None:
    """An instance already marked needs_reconnect is not sent to Intuit again with dead tokens."""
    if creds.status == "needs_reconnect":
        raise ReconnectRequired(f"instance {creds.instance_name!r} needs to be reconnected")


def _reconnect_reason(creds: Credentials, detail: str) -> str:
    if not creds.auth_code and not creds.refresh_token:
        return "no OAuth grant is stored (no code, no refresh token); reconnect the company"
    what = "authorization code" if creds.auth_code else "refresh token"
    return f"invalid_grant: Intuit refused the {what} ({detail}); reconnect the company"
