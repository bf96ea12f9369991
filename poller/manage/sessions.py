"""The console's sign-in sessions (DESIGN §10), on top of the API's users.

A session id is 32 random bytes (urlsafe base64) sent only as an HttpOnly cookie; PostgreSQL
keeps its SHA-256, so sessions survive a restart and a database copy opens none. A session
ends after IDLE_S without a request, at sign-out, and when its user's secret is rotated or
the user removed. The CSRF token of a session is an HMAC of its id: nothing to store, and
unknown to anyone who does not hold the cookie.

"Connect to QuickBooks" is bound to the session: the `state` sent to Intuit is random, its
hash is stored on the session, and only that session may bring the code back.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from poller import logs
from poller.manage.users import Caller, hash_secret, new_secret
from poller.store import console as console_rows
from poller.store import db
from poller.store.crypto import SecretBox

IDLE_S = 12 * 3600.0
PURPOSE_NEW = "new"
_RECONNECT = "reconnect:"


@dataclass(frozen=True)
class Session:
    session_id: str
    caller: Caller
    oauth_purpose: str | None
    oauth_pending: bool
    pending_realm_id: str | None

    @property
    def csrf_token(self) -> str:
        return csrf_token(self.session_id)


@dataclass(frozen=True)
class Consent:
    """What came back from Intuit's consent page for this session."""

    purpose: str
    code: str | None
    realm_id: str | None

    @property
    def reconnect_id(self) -> int | None:
        if not self.purpose.startswith(_RECONNECT):
            return None
        return int(self.purpose.removeprefix(_RECONNECT))


def reconnect_purpose(instance_id: int) -> str:
    return f"{_RECONNECT}{instance_id}"


def csrf_token(session_id: str) -> str:
    return hmac.new(session_id.encode(), b"qbo-poller console csrf", hashlib.sha256).hexdigest()


def csrf_ok(session_id: str, offered: str | None) -> bool:
    return offered is not None and hmac.compare_digest(
        csrf_token(session_id).encode(), offered.encode()
    )


class SessionManager:
    def __init__(self, pool: db.Pool, box: SecretBox, idle_s: float = IDLE_S) -> None:
        self.pool = pool
        self.box = box
        self.idle_s = idle_s

    async def start(self, caller: Caller) -> str:
        """A new session for an authenticated caller; returns its id (for the cookie)."""
        session_id = new_secret()
        logs.register_secrets([session_id])
        async with db.acquire(self.pool) as conn:
            await console_rows.create_session(
                conn, hash_secret(session_id), caller.user_id, self.idle_s
            )
        return session_id

    async def find(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        async with db.acquire(self.pool) as conn:
            row = await console_rows.touch_session(conn, hash_secret(session_id), self.idle_s)
        if row is None:
            return None
        return Session(
            session_id,
            Caller(row.user_id, row.user_name, row.admin),
            row.oauth_purpose,
            row.pending_code_enc is not None,
            row.pending_realm_id,
        )

    async def end(self, session_id: str) -> None:
        async with db.acquire(self.pool) as conn:
            await console_rows.end_session(conn, hash_secret(session_id))

    async def begin_consent(self, session: Session, purpose: str) -> str:
        """A fresh `state` for Intuit's consent page, bound to this session."""
        state = secrets.token_urlsafe(24)
        async with db.acquire(self.pool) as conn:
            await console_rows.start_oauth(
                conn, hash_secret(session.session_id), hash_secret(state), purpose
            )
        return state

    async def finish_consent(
        self, session: Session, state: str, code: str | None, realm_id: str | None
    ) -> str | None:
        """The flow's purpose when this session started it with this `state`; else None."""
        if code is not None:
            logs.register_secrets([code])
        async with db.acquire(self.pool) as conn:
            return await console_rows.finish_oauth(
                conn,
                hash_secret(session.session_id),
                hash_secret(state),
                self.box.seal(code),
                realm_id,
            )

    async def consent(self, session: Session) -> Consent | None:
        """The code and realm waiting for the instance form, if any."""
        async with db.acquire(self.pool) as conn:
            row = await console_rows.touch_session(
                conn, hash_secret(session.session_id), self.idle_s
            )
        if row is None or row.oauth_purpose is None or row.pending_code_enc is None:
            return None
        return Consent(row.oauth_purpose, self.box.open(row.pending_code_enc), row.pending_realm_id)

    async def clear_consent(self, session: Session) -> None:
        async with db.acquire(self.pool) as conn:
            await console_rows.clear_oauth(conn, hash_secret(session.session_id))
