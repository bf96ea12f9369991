"""OAuth 2.0 as Intuit runs it (reference §6), on the emulator clock.

- Token endpoint ``POST /oauth2/v1/tokens/bearer``, form-encoded, client
  authentication by ``Authorization: Basic`` (client_secret_basic) or by
  ``client_id``/``client_secret`` form fields (client_secret_post).
- ``authorization_code``: codes are bound to a realm, client and redirect_uri,
  and are single-use; a second exchange answers ``invalid_grant`` and, as
  RFC 6749 §4.1.2 recommends and Intuit's "poisoned token" reports describe,
  revokes the tokens the first exchange issued.
- ``refresh_token``: rotation is configurable: ``"always"`` (a new refresh token
  on every refresh, the default), ``"daily"`` (a new value once the current one
  is ``refresh_rotation_interval`` seconds old, as Intuit does), or ``"never"``.
  A superseded refresh token answers ``invalid_grant`` once
  ``refresh_grace_seconds`` (default 0) have passed since it was superseded;
  within the grace it returns the chain's current refresh token.
  Each use extends the refresh token's rolling lifetime
  (``x_refresh_token_expires_in`` = 8726400 s).  The 5-year hard cap is
  reported as ``x_refresh_token_hard_expires_in`` when the request carries
  ``x-include-refresh-token-hard-expires-in: true``.
- Access tokens live ``access_token_lifetime`` seconds (3600) and are valid for
  their realm only.
- Revocation (``{"token": ...}``) of an access or refresh token disconnects the
  whole chain (every token of that connection).
- OpenID Connect: with the ``openid`` scope the token response carries an
  ``id_token``, an RS256 JWT signed with the emulator's key (``openid.py``),
  whose JWKS is served at the discovery document's ``jwks_uri``; ``userinfo``
  answers for a valid access token.
"""

from __future__ import annotations

import base64
import secrets
import string
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from .clock import Clock
from .openid import Signer

DEFAULT_CLIENT_ID = "ABqboEmulatorClientId0000000000000000000000000000"
DEFAULT_CLIENT_SECRET = "qboEmulatorClientSecret000000000000000000"
DEFAULT_REDIRECT_URI = "http://localhost/callback"
ACCOUNTING_SCOPE = "com.intuit.quickbooks.accounting"
HARD_CAP_SECONDS = 5 * 365 * 86400
ROTATIONS = ("always", "daily", "never")

_ALNUM = string.ascii_letters + string.digits


def _rand(length: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(length))


def _b64url(byte_count: int) -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(byte_count)).rstrip(b"=").decode()


@dataclass
class Chain:
    """One connection of an app to a company: all tokens descend from it."""

    id: str
    realm: str
    client_id: str
    created: float
    scope: str
    current_refresh: str = ""
    revoked: bool = False


@dataclass
class RefreshToken:
    value: str
    chain: Chain
    issued: float
    expires: float
    superseded: float | None = None


@dataclass
class AccessToken:
    value: str
    tid: str  # short id, quoted in "Token expired: ..." details
    chain: Chain
    expires: float


@dataclass
class AuthCode:
    realm: str
    client_id: str
    redirect_uri: str
    scope: str
    expires: float
    used: bool = False
    chain: Chain | None = None


@dataclass
class OAuthConfig:
    access_token_lifetime: float = 3600.0
    refresh_token_lifetime: float = 8726400.0
    refresh_rotation: str = "always"
    refresh_rotation_interval: float = 86400.0
    refresh_grace_seconds: float = 0.0
    code_lifetime: float = 600.0


class TokenError(Exception):
    """An OAuth error answer: HTTP status and the JSON body."""

    def __init__(self, status: int, body: dict[str, str]) -> None:
        super().__init__(body.get("error", "error"))
        self.status = status
        self.body = body


def _invalid_grant(description: str | None = None) -> TokenError:
    body = {"error": "invalid_grant"}
    if description:  # Intuit puts error_description first
        body = {"error_description": description, "error": "invalid_grant"}
    return TokenError(400, body)


@dataclass
class Check:
    """Result of checking a bearer token against a realm."""

    ok: bool
    reason: str = ""  # missing | malformed | unknown | expired | revoked | wrong_realm
    tid: str = ""


class OAuthServer:
    def __init__(self, clock: Clock, config: OAuthConfig, clients: dict[str, str]) -> None:
        self.clock = clock
        self.config = config
        self.clients: dict[str, str] = dict(clients)
        self.codes: dict[str, AuthCode] = {}
        self.refresh_tokens: dict[str, RefreshToken] = {}
        self.access_tokens: dict[str, AccessToken] = {}
        self.chains: dict[str, Chain] = {}
        self.signer = Signer()
        # The id_token's "iss"; the HTTP token endpoint sets it from the request's
        # origin so that it equals the discovery document's issuer.
        self.issuer = "https://oauth.platform.intuit.com/op/v1"

    def reset(self) -> None:
        self.codes.clear()
        self.refresh_tokens.clear()
        self.access_tokens.clear()
        self.chains.clear()

    # -- issuing outside the HTTP flow ---------------------------------------
    def issue_code(
        self, realm: str, client_id: str, redirect_uri: str, scope: str = ACCOUNTING_SCOPE
    ) -> str:
        self._known_client(client_id)
        code = "AB11" + _rand(46)
        self.codes[code] = AuthCode(
            realm, client_id, redirect_uri, scope, self._now() + self.config.code_lifetime
        )
        return code

    def issue_tokens(
        self, realm: str, client_id: str, scope: str = ACCOUNTING_SCOPE
    ) -> dict[str, Any]:
        """A connected company: a fresh chain, as if the code dance had happened."""
        self._known_client(client_id)
        chain = self._new_chain(realm, client_id, scope)
        return self._token_body(chain, self._new_refresh(chain), include_hard=False)

    def _known_client(self, client_id: str) -> None:
        if client_id not in self.clients:
            raise KeyError(f"unknown OAuth client {client_id!r}")

    # -- the token endpoint ----------------------------------------------------
    def token_request(
        self, form: dict[str, str], authorization: str | None, *, include_hard: bool = False
    ) -> tuple[dict[str, Any], str]:
        """Answer a token request: (body, realm) or raise TokenError."""
        client_id = self._authenticate_client(form, authorization)
        grant = form.get("grant_type")
        if grant == "authorization_code":
            return self._exchange_code(form, client_id, include_hard)
        if grant == "refresh_token":
            return self._refresh(form, client_id, include_hard)
        if not grant:
            raise TokenError(400, {"error": "invalid_request"})
        raise TokenError(400, {"error": "unsupported_grant_type"})

    def _authenticate_client(self, form: dict[str, str], authorization: str | None) -> str:
        client_id = secret = None
        if authorization and authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[6:].strip()).decode()
                raw_id, _, raw_secret = decoded.partition(":")
                client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)
            except (ValueError, UnicodeDecodeError):
                raise TokenError(401, {"error": "invalid_client"}) from None
        elif "client_id" in form:  # client_secret_post
            client_id, secret = form.get("client_id"), form.get("client_secret")
        if client_id is None or self.clients.get(client_id) != secret or secret is None:
            raise TokenError(401, {"error": "invalid_client"})
        return client_id

    def _exchange_code(
        self, form: dict[str, str], client_id: str, include_hard: bool
    ) -> tuple[dict[str, Any], str]:
        code = self.codes.get(form.get("code") or "")
        if code is None or code.client_id != client_id:
            raise _invalid_grant()
        if code.used:
            # Single use: the replay fails and poisons what the first use issued.
            if code.chain is not None:
                self._revoke_chain(code.chain)
            raise _invalid_grant()
        if self._now() > code.expires or form.get("redirect_uri") != code.redirect_uri:
            raise _invalid_grant()
        code.used = True
        chain = self._new_chain(code.realm, client_id, code.scope)
        code.chain = chain
        return self._token_body(chain, self._new_refresh(chain), include_hard), chain.realm

    def _refresh(
        self, form: dict[str, str], client_id: str, include_hard: bool
    ) -> tuple[dict[str, Any], str]:
        value = form.get("refresh_token")
        if not value:
            raise TokenError(400, {"error": "invalid_request"})
        token = self.refresh_tokens.get(value)
        now = self._now()
        if token is None or token.chain.client_id != client_id or token.chain.revoked:
            raise _invalid_grant("Incorrect or invalid refresh token")
        chain = token.chain
        if now > token.expires or now > chain.created + HARD_CAP_SECONDS:
            raise _invalid_grant("Incorrect or invalid refresh token")
        if token.superseded is not None:
            grace = self.config.refresh_grace_seconds
            if grace <= 0 or now - token.superseded > grace:
                raise _invalid_grant("Incorrect or invalid refresh token")
            current = self.refresh_tokens[chain.current_refresh]
            return self._token_body(chain, current, include_hard), chain.realm
        if self._should_rotate(token, now):
            token.superseded = now
            current = self._new_refresh(chain)
        else:
            token.expires = now + self.config.refresh_token_lifetime  # rolling lifetime
            current = token
        return self._token_body(chain, current, include_hard), chain.realm

    def _should_rotate(self, token: RefreshToken, now: float) -> bool:
        mode = self.config.refresh_rotation
        if mode == "always":
            return True
        if mode == "daily":
            return now - token.issued >= self.config.refresh_rotation_interval
        return False

    # -- revocation ------------------------------------------------------------
    def revoke(
        self, token_value: str | None, authorization: str | None, form: dict[str, str] | None = None
    ) -> str | None:
        """Revoke the chain the token belongs to; returns its realm (or None)."""
        self._authenticate_client(form or {}, authorization)
        if not token_value:
            raise TokenError(400, {"error": "invalid_request"})
        chain = None
        if token_value in self.refresh_tokens:
            chain = self.refresh_tokens[token_value].chain
        elif token_value in self.access_tokens:
            chain = self.access_tokens[token_value].chain
        if chain is None:
            return None
        self._revoke_chain(chain)
        return chain.realm

    def _revoke_chain(self, chain: Chain) -> None:
        chain.revoked = True

    # -- checking API calls --------------------------------------------------
    def check(self, authorization: str | None, realm: str) -> Check:
        if not authorization or not authorization.lower().startswith("bearer "):
            return Check(False, "missing")
        value = authorization[7:].strip()
        token = self.access_tokens.get(value)
        if token is None:
            malformed = len(value) < 20 or len(value) > 8192
            return Check(False, "malformed" if malformed else "unknown")
        if token.chain.revoked:
            return Check(False, "revoked", token.tid)
        if self._now() >= token.expires:
            return Check(False, "expired", token.tid)
        if token.chain.realm != realm:
            return Check(False, "wrong_realm", token.tid)
        return Check(True, tid=token.tid)

    # -- internals -------------------------------------------------------------
    def _now(self) -> float:
        return self.clock.timestamp()

    def _new_chain(self, realm: str, client_id: str, scope: str) -> Chain:
        chain = Chain(_rand(16), realm, client_id, self._now(), scope)
        self.chains[chain.id] = chain
        return chain

    def _new_refresh(self, chain: Chain) -> RefreshToken:
        now = self._now()
        expires = now + self.config.refresh_token_lifetime
        value = f"AB11{int(expires)}{_rand(36)}"
        token = RefreshToken(value, chain, now, expires)
        self.refresh_tokens[value] = token
        chain.current_refresh = value
        return token

    def _new_access(self, chain: Chain) -> AccessToken:
        # Shaped like Intuit's JWE access tokens (header "dir"/A128CBC-HS256).
        value = "eyJlbmMiOiJBMTI4Q0JDLUhTMjU2IiwiYWxnIjoiZGlyIn0.." + ".".join(
            (_b64url(16), _b64url(480), _b64url(16))
        )
        tid = f"AB0{int(self._now())}{_rand(33)}"[:50]
        token = AccessToken(value, tid, chain, self._now() + self.config.access_token_lifetime)
        self.access_tokens[value] = token
        return token

    def _token_body(
        self, chain: Chain, refresh: RefreshToken, include_hard: bool
    ) -> dict[str, Any]:
        access = self._new_access(chain)
        now = self._now()
        body: dict[str, Any] = {
            "token_type": "bearer",
            "expires_in": int(self.config.access_token_lifetime),
            "refresh_token": refresh.value,
            "x_refresh_token_expires_in": max(round(refresh.expires - now), 0),
            "access_token": access.value,
        }
        if include_hard:
            body["x_refresh_token_hard_expires_in"] = max(
                round(chain.created + HARD_CAP_SECONDS - now), 0
            )
        if "openid" in chain.scope.split():
            body["id_token"] = self.signer.id_token(
                issuer=self.issuer,
                audience=chain.client_id,
                subject=subject_of(chain),
                realm=chain.realm,
                now=now,
            )
        return body

    def user_of(self, authorization: str | None) -> Chain | None:
        """The connection a bearer token belongs to, if the token is valid now."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        token = self.access_tokens.get(authorization[7:].strip())
        if token is None or token.chain.revoked or self._now() >= token.expires:
            return None
        return token.chain


def subject_of(chain: Chain) -> str:
    """The user's stable ``sub``: one user per company and app in the emulator."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"qbo-emulator:{chain.realm}:{chain.client_id}"))
