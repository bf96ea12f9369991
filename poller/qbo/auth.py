"""OAuth 2.0 tokens for QuickBooks Online (reference §6, §8.1-8.2).

Rules this module exists to keep:
- An authorization code is exchanged **exactly once**: codes are single-use and a second
  exchange poisons the grant. The exchange happens under the refresh lease and the code is
  cleared by the statement that stores the tokens.
- **One refresh at a time per realm, across processes**, and **no database connection held
  while Intuit answers**. A refresh takes the instance's *refresh lease* (`claim_refresh`: one
  short transaction that locks the credentials row, re-reads it, and records "refreshing by
  <holder> until <T>"), then calls the token endpoint with no transaction open, then saves in
  a new short transaction that ends the lease. Another process finding the lease held waits
  and re-reads: it uses the token the holder obtained instead of refreshing again. The lease
  runs for the worst case of the token requests and the saves plus a margin, so it outlives
  its holder only when that holder is gone; then the next process takes it over.
- **The rotated refresh token is saved before it is used**: the save is retried on fresh
  connections (`SAVE_ATTEMPTS`, each bounded) before the access token is handed to anyone. If
  every attempt fails (PostgreSQL down) the new tokens are the only live copy of the grant:
  they are kept in memory, used, refreshed from, and saved by the next token request that
  finds the database back. They are never dropped, except for credentials stored since
  (a reconnect, or another process's tokens), which win: writes are fenced on the row version
  read when the lease was taken.
- `invalid_grant` → `ReconnectRequired`; the instance becomes `needs_reconnect` with a reason
  and one `instance_needs_reconnect` line is logged. Other instances are untouched.

What remains impossible to guard (README, Troubleshooting): a process that dies (`kill -9`,
power loss) after Intuit answered a refresh and before the save committed takes the rotated
refresh token with it; the stored one is spent, and the instance needs a reconnect. The same
holds for a process that cannot save for longer than its lease (PostgreSQL down for minutes)
when another process refreshes the instance first once the database is back.

PostgreSQL stays behind the `TokenStore` protocol (implemented in `poller.store.tokens`).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NoReturn, Protocol

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
# Saving new tokens: attempts on fresh connections, 0.1 s doubling up to 2 s between them
# (about 4 s in all: a PostgreSQL restart), each attempt bounded.
SAVE_ATTEMPTS = 6
SAVE_PAUSE_S = 0.1
SAVE_PAUSE_CAP_S = 2.0
SAVE_ATTEMPT_TIMEOUT_S = 5.0
UNSAVED_RETRY_S = 1.0  # tokens no attempt could save: tried again at most this often
LEASE_MARGIN_S = 30.0  # on top of the worst case of the token requests and the saves
# Waiting for another process's refresh: re-read after 0.05 s, doubling up to 1 s.
LEASE_WAIT_BACKOFF = Backoff(base_s=0.05, cap_s=1.0)
# Waiting that long, a token still valid (only inside the refresh margin) serves meanwhile.
LEASE_PATIENCE_S = 5.0
RENEW_ROUNDS = 3  # the credentials changed under the lease (a reconnect): read them again


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


@dataclass(frozen=True)
class RefreshClaim:
    """The credentials as read by `TokenStore.claim_refresh`, and whether the lease was won.

    `holder` is the caller's holder id when it holds the refresh lease now (it may spend the
    refresh token), None when another process holds it for `lease_left_s` more seconds.
    `version` is the store's opaque row version at the claim: writes made after the token
    request are fenced on it (a reconnect or newer tokens saved meanwhile win).
    """

    credentials: Credentials
    holder: str | None
    lease_left_s: float
    version: object


class TokenStore(Protocol):
    """Each method is one short transaction: no connection is held between calls."""

    async def load(self, instance_id: int) -> Credentials | None:
        """A plain read, no lock (the fast path; may be a little stale)."""

    async def claim_refresh(
        self, instance_id: int, holder: str, lease_s: float
    ) -> RefreshClaim | None:
        """Read the latest credentials and take the refresh lease for `lease_s` seconds when it
        is free, has run out, or is `holder`'s already. None: no credentials row."""

    async def release_refresh(self, claim: RefreshClaim) -> None:
        """End a held lease without writing tokens (a no-op for a claim that holds none)."""

    async def save_tokens(self, claim: RefreshClaim, tokens: TokenSet, refresh_count: int) -> bool:
        """Store new tokens, clear the (spent) code and end the lease. False, writing nothing,
        when the row changed since the claim."""

    async def give_up(self, claim: RefreshClaim, reason: str, *, clear_code: bool) -> GiveUp:
        """The grant is dead: end the lease, clear the code if asked, mark needs_reconnect."""

    async def clear_tokens(self, claim: RefreshClaim) -> None:
        """Forget every token and the code (after a revoke), ending the lease."""


# What `give_up` did: marked the instance, found it marked already, or wrote nothing because
# the row changed since the claim (a reconnect stored a new grant: it is not dead).
GiveUp = Literal["marked", "already", "superseded"]


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


def _default_holder() -> str:
    """This process's refresh-lease holder id: unique per start (pids repeat in containers)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _lease_seconds(settings: Settings, save_attempts: int, save_backoff: Backoff) -> float:
    """Long enough for every token request attempt and every save attempt: a lease that ran out
    while its holder still worked would let a second process spend the same refresh token."""
    posts_s = TOKEN_ATTEMPTS * settings.qbo_request_timeout_s
    posts_s += sum(TOKEN_BACKOFF.step(attempt) for attempt in range(1, TOKEN_ATTEMPTS))
    saves_s = save_attempts * SAVE_ATTEMPT_TIMEOUT_S
    saves_s += sum(save_backoff.step(attempt) for attempt in range(1, save_attempts))
    return posts_s + saves_s + LEASE_MARGIN_S


@dataclass(frozen=True)
class _Unsaved:
    """Tokens Intuit issued that the store has not taken yet: the only live copy of the grant.

    Kept, used and saved again until the store takes them; `claim` is the lease they were
    obtained under (its version fences the write)."""

    claim: RefreshClaim
    tokens: TokenSet = field(repr=False)
    refresh_count: int
    retry_at: float  # monotonic: the next save attempt from the fast path


@dataclass
class _Cached:
    token: str = field(repr=False)
    expires_at: datetime


class _Superseded(Exception):
    """The credentials row changed while this process held the lease: read it again."""


class TokenManager:
    """Access tokens for the HTTP client: cached, renewed ahead of expiry and after a 401.

    One per process. `clock` is the notion of "now" used for expiry (tests bind it to the
    emulator's clock so that simulated days pass). `holder` names this process in the refresh
    lease. `save_attempts` and `save_pause_s` bound the saving of new tokens; `unsaved_retry_s`
    paces the retries of tokens that could not be saved at all; `lease_patience_s` is how long
    a still-valid token waits for another process's refresh before it serves anyway.
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
        holder: str | None = None,
        save_attempts: int = SAVE_ATTEMPTS,
        save_pause_s: float = SAVE_PAUSE_S,
        unsaved_retry_s: float = UNSAVED_RETRY_S,
        lease_patience_s: float = LEASE_PATIENCE_S,
    ) -> None:
        self.store = store
        self.oauth = oauth or OAuthClient(session, settings)
        self.clock = clock
        self.margin = timedelta(seconds=refresh_margin_s)
        self.holder = holder or _default_holder()
        self.save_attempts = save_attempts
        self.save_backoff = Backoff(base_s=save_pause_s, cap_s=SAVE_PAUSE_CAP_S)
        self.unsaved_retry_s = unsaved_retry_s
        self.lease_patience_s = lease_patience_s
        self.lease_s = _lease_seconds(settings, save_attempts, self.save_backoff)
        self._cache: dict[int, _Cached] = {}
        self._unsaved: dict[int, _Unsaved] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._renewing: dict[int, asyncio.Task[str]] = {}
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
        if token and not self._unsaved_due(instance_id):
            return token
        async with self._lock(instance_id):
            if self._unsaved_due(instance_id):
                await self._save_unsaved(instance_id)
            token = self._cached(instance_id)
            if token:
                return token
            creds = await self.store.load(instance_id)
            if creds is None:
                raise ReconnectRequired(f"instance {instance_id} has no OAuth credentials")
            _refuse_if_disconnected(creds)
            if (
                instance_id not in self._unsaved
                and creds.auth_code is None
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
        Intuit may already have rotated the refresh token, and only saving it keeps the new
        one. The renewal runs on; the caller just stops waiting for it. A caller arriving
        meanwhile waits for that same renewal: this process's lease must not be used twice."""
        renewal = self._renewing.get(instance_id)
        if renewal is None:
            renewal = asyncio.create_task(self._renew(instance_id, rejected))
            self._renewing[instance_id] = renewal
            renewal.add_done_callback(lambda done: self._renewal_done(instance_id, done))
        return await asyncio.shield(renewal)

    def _renewal_done(self, instance_id: int, renewal: asyncio.Task[str]) -> None:
        if self._renewing.get(instance_id) is renewal:
            del self._renewing[instance_id]
        if not renewal.cancelled():
            renewal.exception()  # retrieved: a renewal nobody waits for any more may fail

    async def _renew(self, instance_id: int, rejected: str | None) -> str:
        """Reuse what another process got, or exchange the code, or refresh: under the lease,
        which is all that is held while Intuit answers."""
        for _ in range(RENEW_ROUNDS):
            claim = await self._claim(instance_id, rejected)
            if isinstance(claim, str):
                return claim
            try:
                return await self._renew_under(claim)
            except _Superseded:
                self.forget(instance_id)  # a reconnect or another process's tokens: reread
        raise AuthenticationError(
            f"instance {instance_id}: its credentials changed during {RENEW_ROUNDS} renewals"
        )

    async def _claim(self, instance_id: int, rejected: str | None) -> RefreshClaim | str:
        """The lease, or a token that makes a renewal needless (another process renewed).

        While another process holds the lease this waits, re-reading, until that process is
        done or its lease runs out; after `lease_patience_s` a token that is still valid (only
        inside the refresh margin) serves instead: a dead holder's lease can take minutes."""
        margin = self.margin if rejected is None else timedelta(0)
        patience_ends = time.monotonic() + self.lease_patience_s
        for waits in itertools.count(1):
            claim = await self.store.claim_refresh(instance_id, self.holder, self.lease_s)
            if claim is None:
                raise ReconnectRequired(f"instance {instance_id} has no OAuth credentials")
            creds = self._current(claim)
            _refuse_if_disconnected(creds)
            token = self._reusable(creds, rejected, margin)
            if token is None and claim.holder is None and time.monotonic() >= patience_ends:
                token = self._reusable(creds, rejected, timedelta(0))
            if token is not None:
                await self._release(claim)
                metrics.TOKEN_REFRESHES.labels("reused").inc()
                log.debug("oauth_token_reused", instance_id=instance_id, realm_id=creds.realm_id)
                return self._remember(instance_id, token, creds.access_expires_at)
            if claim.holder is not None:
                return claim
            pause = LEASE_WAIT_BACKOFF.delay(waits)
            await asyncio.sleep(min(pause, max(claim.lease_left_s, LEASE_WAIT_BACKOFF.base_s)))
        raise AssertionError("unreachable")

    def _reusable(self, creds: Credentials, rejected: str | None, margin: timedelta) -> str | None:
        if creds.auth_code is not None or not creds.access_token:
            return None
        if creds.access_token == rejected or not self._fresh(creds.access_expires_at, margin):
            return None
        return creds.access_token

    def _current(self, claim: RefreshClaim) -> Credentials:
        """The claim's credentials, with this process's unsaved tokens in place of the stored
        ones (they are newer), unless the row changed since they were obtained."""
        creds = claim.credentials
        unsaved = self._unsaved.get(creds.instance_id)
        if unsaved is None:
            return creds
        if unsaved.claim.version != claim.version:
            self._drop_unsaved(creds.instance_id, "the stored credentials changed meanwhile")
            return creds
        tokens = unsaved.tokens
        return replace(
            creds,
            auth_code=None,
            access_token=tokens.access_token,
            access_expires_at=tokens.access_expires_at,
            refresh_token=tokens.refresh_token,
            refresh_expires_at=tokens.refresh_expires_at,
            refresh_count=unsaved.refresh_count,
        )

    async def _renew_under(self, claim: RefreshClaim) -> str:
        """Holding the lease, no connection: ask Intuit, then save before anything uses it."""
        creds = self._current(claim)
        try:
            tokens = await self._obtain(creds)
        except InvalidGrant as exc:
            await self._give_up(claim, creds, str(exc), exc.fault, "invalid_grant")
        except AmbiguousTokenFailure:
            if not creds.auth_code:
                await self._release(claim)
                raise  # a refresh: keep the stored token, the next attempt will tell
            # The code may have been spent by the request that got no answer; sending it
            # again could poison the grant. Give it up and ask for a reconnect instead.
            reason = (
                "the authorization code exchange got no answer and the code may be "
                "spent (codes are single-use); reconnect the company"
            )
            await self._give_up(claim, creds, reason, None, "code_lost")
        except Exception:
            await self._release(claim)
            raise
        await self._save(claim, creds, tokens)
        return self._after_save(creds, tokens)

    async def _save(self, claim: RefreshClaim, creds: Credentials, tokens: TokenSet) -> None:
        """Save the new tokens, retrying on fresh connections. When every attempt fails they
        are kept in memory and used (Intuit may have retired the stored refresh token), and
        saved again later: never dropped."""
        instance_id = creds.instance_id
        refresh_count = creds.refresh_count + 1
        for attempt in range(1, self.save_attempts + 1):
            try:
                async with asyncio.timeout(SAVE_ATTEMPT_TIMEOUT_S):
                    saved = await self.store.save_tokens(claim, tokens, refresh_count)
            except Exception as exc:  # whatever the store raised, these tokens must survive
                log.warning(
                    "oauth_tokens_save_failed",
                    instance_id=instance_id,
                    realm_id=creds.realm_id,
                    attempt=attempt,
                    error=type(exc).__name__,
                )
                if attempt < self.save_attempts:
                    await asyncio.sleep(self.save_backoff.delay(attempt))
                continue
            self._unsaved.pop(instance_id, None)
            if not saved:
                raise _Superseded()
            return
        self._unsaved[instance_id] = _Unsaved(
            claim, tokens, refresh_count, time.monotonic() + self.unsaved_retry_s
        )
        log.error(
            "oauth_tokens_unsaved",
            instance_id=instance_id,
            realm_id=creds.realm_id,
            attempts=self.save_attempts,
            detail="new tokens kept in memory and used; saved again on the next token request",
        )

    def _unsaved_due(self, instance_id: int) -> bool:
        unsaved = self._unsaved.get(instance_id)
        return unsaved is not None and time.monotonic() >= unsaved.retry_at

    async def _save_unsaved(self, instance_id: int) -> None:
        """One more attempt at saving tokens that could not be saved (paced, never raises)."""
        unsaved = self._unsaved.get(instance_id)
        if unsaved is None:
            return
        realm_id = unsaved.claim.credentials.realm_id
        try:
            async with asyncio.timeout(SAVE_ATTEMPT_TIMEOUT_S):
                saved = await self.store.save_tokens(
                    unsaved.claim, unsaved.tokens, unsaved.refresh_count
                )
        except Exception as exc:  # still failing: keep them, try again later
            retry_at = time.monotonic() + self.unsaved_retry_s
            self._unsaved[instance_id] = replace(unsaved, retry_at=retry_at)
            log.warning(
                "oauth_tokens_unsaved",
                instance_id=instance_id,
                realm_id=realm_id,
                error=type(exc).__name__,
            )
            return
        if saved:
            del self._unsaved[instance_id]
            log.info("oauth_tokens_saved_late", instance_id=instance_id, realm_id=realm_id)
        else:
            self._drop_unsaved(instance_id, "the stored credentials changed meanwhile")

    def _drop_unsaved(self, instance_id: int, why: str) -> None:
        """Stored credentials newer than the unsaved tokens (a reconnect, another process's
        save) take precedence: the unsaved ones and the access token cached from them go."""
        if self._unsaved.pop(instance_id, None) is not None:
            self.forget(instance_id)
            log.warning("oauth_tokens_superseded", instance_id=instance_id, reason=why)

    async def _give_up(
        self,
        claim: RefreshClaim,
        creds: Credentials,
        detail: str,
        fault: Fault | None,
        outcome: str,
    ) -> NoReturn:
        """The grant is dead: mark the instance (once) and raise `ReconnectRequired`."""
        reason = _reconnect_reason(creds, detail) if outcome == "invalid_grant" else detail
        done = await self.store.give_up(claim, reason, clear_code=bool(creds.auth_code))
        if done == "superseded":
            raise _Superseded()
        self._unsaved.pop(creds.instance_id, None)
        self.forget(creds.instance_id)
        metrics.TOKEN_REFRESHES.labels(outcome).inc()
        tid = fault.intuit_tid if fault else None
        if done == "marked":
            log.warning(
                "instance_needs_reconnect",
                instance_id=creds.instance_id,
                instance=creds.instance_name,
                realm_id=creds.realm_id,
                reason=reason,
                intuit_tid=tid,
            )
        if outcome == "invalid_grant":
            raise InvalidGrant(reason, fault)
        raise ReconnectRequired(reason)

    async def _release(self, claim: RefreshClaim) -> None:
        """End the lease early; if the store fails, it runs out on its own."""
        try:
            await self.store.release_refresh(claim)
        except Exception as exc:  # the lease has an end: failing to shorten it is harmless
            log.warning(
                "oauth_lease_release_failed",
                instance_id=claim.credentials.instance_id,
                error=type(exc).__name__,
            )

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
            saved=creds.instance_id not in self._unsaved,
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
            claim = await self._take_lease(instance_id)
            if claim is None:
                return False
            creds = self._current(claim)
            token = creds.refresh_token or creds.access_token
            if not token:
                await self._release(claim)
                return False
            try:
                await self.oauth.revoke(creds.client_id, creds.client_secret, token)
            except Exception:
                await self._release(claim)
                raise
            await self.store.clear_tokens(claim)
            self._unsaved.pop(instance_id, None)
            self.forget(instance_id)
            log.info("oauth_grant_revoked", instance_id=instance_id, realm_id=creds.realm_id)
            return True

    async def _take_lease(self, instance_id: int) -> RefreshClaim | None:
        """The lease, waiting while another process holds it; None: no credentials row."""
        for waits in itertools.count(1):
            claim = await self.store.claim_refresh(instance_id, self.holder, self.lease_s)
            if claim is None or claim.holder is not None:
                return claim
            pause = LEASE_WAIT_BACKOFF.delay(waits)
            await asyncio.sleep(min(pause, max(claim.lease_left_s, LEASE_WAIT_BACKOFF.base_s)))
        raise AssertionError("unreachable")


def _refuse_if_disconnected(creds: Credentials) -> None:
    """An instance already marked needs_reconnect is not sent to Intuit again with dead tokens."""
    if creds.status == "needs_reconnect":
        raise ReconnectRequired(f"instance {creds.instance_name!r} needs to be reconnected")


def _reconnect_reason(creds: Credentials, detail: str) -> str:
    if not creds.auth_code and not creds.refresh_token:
        return "no OAuth grant is stored (no code, no refresh token); reconnect the company"
    what = "authorization code" if creds.auth_code else "refresh token"
    return f"invalid_grant: Intuit refused the {what} ({detail}); reconnect the company"
