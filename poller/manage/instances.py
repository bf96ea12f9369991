"""Instances through the API and the console (DESIGN §9): create, read, edit, pause, delete.

Visibility: a user sees and changes only the instances it created; an admin sees all, those
loaded from POLLER_INSTANCES_FILE or `instances add` included; anything else is `NotFound`.
The §3 rules stay in `poller.instances` (shared with the file loader); edits rebuild the
whole body from what is stored, apply the change and validate it again. Every change bumps
`config_version`, which running pollers pick up within their rescan (2 s).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, replace
from typing import Any, Protocol

import asyncpg
import orjson

from poller import logs, metrics, resources
from poller.config import Settings
from poller.errors import ConfigError
from poller.instances import ClientDefaults, Instance, ProviderData, parse_instance
from poller.manage.errors import InvalidRequest, NameTaken, NotFound, UpstreamUnavailable
from poller.manage.users import Caller, hash_secret, new_secret
from poller.manage.views import MASK, SECRET_KEYS, VERIFIER_KEY, instance_object
from poller.qbo.auth import InvalidGrant, TokenSet
from poller.qbo.types import AuthenticationError, QboError
from poller.store import api_instances, db, instance_rows, polls
from poller.store.crypto import SecretBox

log = logs.get_logger(__name__)

DEFAULT_PAGE_SIZE = 200
MAX_PAGE_SIZE = 500
# Stands in for the stored credentials while an edit that keeps them is validated.
_KEEP_CREDENTIALS = "stored-credentials-kept"


class CodeExchanger(Protocol):
    """Exchanges an authorization code once (poller.qbo.auth.OAuthClient, bound in the
    supervisor)."""

    async def __call__(
        self, client_id: str, client_secret: str, code: str, redirect_uri: str
    ) -> TokenSet: ...


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_page: str | None


@dataclass(frozen=True)
class Deleted:
    instance_id: int
    name: str
    cancelled_notifications: int


def page_cursor(after_id: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"after": after_id})).decode().rstrip("=")


def parse_cursor(token: str | None) -> int:
    if not token:
        return 0
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        after = decoded["after"] if isinstance(decoded, dict) else None
    except (ValueError, binascii.Error, orjson.JSONDecodeError, KeyError):
        after = None
    if not isinstance(after, int) or isinstance(after, bool) or after < 0:
        raise InvalidRequest("nextPage: not a cursor this server issued")
    return after


def parse_page_size(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_PAGE_SIZE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise InvalidRequest(f"pageSize={raw[:20]!r}: expected a whole number from 1 to 500")
    return int(raw)


class InstanceManager:
    """The operations on instances; the API handlers and the console call these."""

    def __init__(
        self, pool: db.Pool, box: SecretBox, settings: Settings, exchange: CodeExchanger
    ) -> None:
        self.pool = pool
        self.box = box
        self.defaults = ClientDefaults(settings.qbo_client_id, settings.qbo_client_secret)
        self.exchange = exchange

    # --- reading ------------------------------------------------------------------------

    async def list(self, caller: Caller, page_size: int, next_page: str | None) -> Page:
        after = parse_cursor(next_page)
        async with db.acquire(self.pool) as conn:
            rows = await api_instances.page(conn, caller.owner_filter, after, page_size + 1)
        more = len(rows) > page_size
        rows = rows[:page_size]
        items = [instance_object(row, self.box, caller) for row in rows]
        return Page(items, page_cursor(rows[-1]["id"]) if more else None)

    async def get(self, caller: Caller, instance_id: int) -> dict[str, Any]:
        async with db.acquire(self.pool) as conn:
            return await self._view(conn, caller, instance_id)

    async def by_token(self, caller: Caller, token: str) -> int | None:
        """The instance of an Element token, if the caller may act on it."""
        async with db.acquire(self.pool) as conn:
            return await api_instances.by_token_hash(conn, hash_secret(token), caller.owner_filter)

    async def _view(self, conn: db.Conn, caller: Caller, instance_id: int) -> dict[str, Any]:
        row = await api_instances.one(conn, instance_id, caller.owner_filter)
        if row is None:
            raise NotFound(f"no instance with id {instance_id}")
        return instance_object(row, self.box, caller)

    # --- creating -----------------------------------------------------------------------

    async def create(self, caller: Caller, body: Any) -> dict[str, Any]:
        """Validate, exchange the code (once, before anything is stored), then store the
        instance with its tokens, its owner and a new Element token in one transaction."""
        inst = self._parse(body)
        async with db.acquire(self.pool) as conn:
            if await api_instances.name_taken(conn, inst.name):
                raise NameTaken(f"an instance named {inst.name!r} already exists")
        inst, tokens = await self._connect(inst)
        token = new_secret()
        logs.register_secrets([token])
        async with db.acquire(self.pool) as conn, conn.transaction():
            result = await instance_rows.upsert(conn, inst, self.box)
            if result.action != "created":
                raise NameTaken(f"an instance named {inst.name!r} already exists")
            await api_instances.set_owner_token(
                conn, result.instance_id, caller.user_id, self.box.seal(token), hash_secret(token)
            )
            if tokens is not None:
                await api_instances.save_exchanged_tokens(
                    conn, result.instance_id, tokens, self.box
                )
            view = await self._view(conn, caller, result.instance_id)
        log.info(
            "instance_created", instance=inst.name, instance_id=result.instance_id, user=caller.name
        )
        return view

    # --- editing ------------------------------------------------------------------------

    async def update(self, caller: Caller, instance_id: int, patch: Any) -> dict[str, Any]:
        """PATCH: `name`, `tags` (the list is replaced), `configuration` keys (null removes a
        key), `providerData` (a new code re-authenticates)."""
        if not isinstance(patch, dict):
            raise InvalidRequest("expected a JSON object")
        stored = await self._editable(caller, instance_id)
        body = self._stored_body(stored)
        for key in ("name", "tags", "element"):
            if key in patch:
                body[key] = patch[key]
        changes = patch.get("configuration")
        if changes is not None:
            if not isinstance(changes, dict):
                raise InvalidRequest("configuration: expected a JSON object")
            config = body["configuration"]
            for key, value in changes.items():
                if value is None:
                    config.pop(key, None)
                elif not _masked(key, value):
                    config[key] = value
        reauthenticate = patch.get("providerData") is not None
        if reauthenticate:
            body["providerData"] = patch["providerData"]
        return await self._apply(caller, stored, body, reauthenticate)

    async def replace(
        self, caller: Caller, instance_id: int, body: Any, reauthenticate: bool = True
    ) -> dict[str, Any]:
        """PUT: the whole body again; `reauthenticate=False` keeps the stored tokens."""
        if not isinstance(body, dict):
            raise InvalidRequest("expected a JSON object")
        stored = await self._editable(caller, instance_id)
        kept = self._stored_body(stored)["configuration"]
        config = body.get("configuration")
        if isinstance(config, dict):
            body = {
                **body,
                "configuration": {
                    key: (kept.get(key) if _masked(key, value) else value)
                    for key, value in config.items()
                },
            }
        if not reauthenticate:
            body = {key: value for key, value in body.items() if key != "providerData"}
        return await self._apply(caller, stored, body, reauthenticate)

    async def set_enabled(self, caller: Caller, instance_id: int, enabled: bool) -> dict[str, Any]:
        """Resume / pause. A paused instance keeps its watermarks and sends QBO nothing."""
        async with db.acquire(self.pool) as conn, conn.transaction():
            await self._view(conn, caller, instance_id)
            changed = await api_instances.set_paused(conn, instance_id, paused=not enabled)
            view = await self._view(conn, caller, instance_id)
        if changed:
            log.info(
                "instance_resumed" if enabled else "instance_paused",
                instance_id=instance_id,
                user=caller.name,
            )
        return view

    async def delete(self, caller: Caller, instance_id: int) -> Deleted:
        """Stops polling (config_version goes with the row) and removes the instance; its
        undelivered notifications are cancelled with it."""
        async with db.acquire(self.pool) as conn, conn.transaction():
            await self._view(conn, caller, instance_id)
            cancelled = await api_instances.undelivered(conn, instance_id)
            deleted = await api_instances.delete(conn, instance_id)
        if deleted is None:
            raise NotFound(f"no instance with id {instance_id}")
        name, resource_names = deleted
        metrics.forget_instance(name, list(resource_names))
        log.info(
            "instance_deleted",
            instance=name,
            instance_id=instance_id,
            cancelled_notifications=cancelled,
            user=caller.name,
        )
        return Deleted(instance_id, name, cancelled)

    # --- helpers ------------------------------------------------------------------------

    def _parse(self, body: Any) -> Instance:
        try:
            inst = parse_instance(body, self.defaults)
        except ConfigError as exc:
            raise InvalidRequest(str(exc)) from None
        logs.register_secrets(
            [
                inst.client_secret,
                inst.signature_key,
                inst.provider.code,
                inst.provider.refresh_token,
            ]
        )
        return inst

    async def _editable(self, caller: Caller, instance_id: int) -> asyncpg.Record:
        async with db.acquire(self.pool) as conn:
            stored = await api_instances.editable(conn, instance_id, caller.owner_filter)
        if stored is None:
            raise NotFound(f"no instance with id {instance_id}")
        return stored

    def _stored_body(self, stored: asyncpg.Record) -> dict[str, Any]:
        config: dict[str, Any] = dict(stored["configuration"] or {})
        config.setdefault("oauth.api.key", stored["client_id"])
        config["oauth.api.secret"] = self.box.open(stored["client_secret_enc"])
        signature_key = self.box.open(stored["signature_key_enc"])
        if signature_key:
            config["event.notification.signature.key"] = signature_key
        return {
            "name": stored["name"],
            "tags": list(stored["tags"] or []),
            "configuration": config,
        }

    async def _apply(
        self, caller: Caller, stored: asyncpg.Record, body: dict[str, Any], reauthenticate: bool
    ) -> dict[str, Any]:
        if not reauthenticate:
            body = {
                **body,
                "providerData": {"refreshToken": _KEEP_CREDENTIALS, "realmId": stored["realm_id"]},
            }
        inst = self._parse(body)
        tokens = None
        if reauthenticate:
            inst, tokens = await self._connect(inst)
        instance_id = int(stored["id"])
        added = [name for name in inst.resources if name not in stored["resources"]]
        async with db.acquire(self.pool) as conn, conn.transaction():
            if inst.name != stored["name"] and not await instance_rows.rename(
                conn, instance_id, inst.name
            ):
                raise NameTaken(f"an instance named {inst.name!r} already exists")
            result = await instance_rows.update_by_id(
                conn, instance_id, inst, self.box, replace_credentials=reauthenticate
            )
            if result is None:
                raise NotFound(f"no instance with id {instance_id}")
            if tokens is not None:
                await api_instances.save_exchanged_tokens(conn, instance_id, tokens, self.box)
            if added:
                # New pairs are due now; the NOTIFY at commit wakes whichever replica polls.
                entities = [resources.get(name).entity for name in added]
                await polls.request_poll(conn, instance_id=instance_id, entities=entities)
            view = await self._view(conn, caller, instance_id)
        log.info(
            "instance_updated",
            instance=inst.name,
            instance_id=instance_id,
            reauthenticated=reauthenticate,
            user=caller.name,
        )
        return view

    async def _connect(self, inst: Instance) -> tuple[Instance, TokenSet | None]:
        """Exchange the body's code, exactly once, with redirect_uri = oauth.callback.url; the
        instance then carries the refresh token it got. A refresh-token body needs nothing."""
        code = inst.provider.code
        if code is None:
            return inst, None
        try:
            tokens = await self.exchange(
                inst.client_id, inst.client_secret, code, inst.redirect_uri or ""
            )
        except InvalidGrant as exc:
            raise InvalidRequest(
                "providerData.code: QuickBooks refused the authorization code: "
                f"invalid_grant ({_description(exc)})"
            ) from None
        except AuthenticationError as exc:
            error = exc.fault.code if exc.fault is not None and exc.fault.code else "refused"
            raise InvalidRequest(
                f"QuickBooks refused the code exchange: {error} ({_description(exc)})"
            ) from None
        except QboError as exc:
            raise UpstreamUnavailable(
                f"the code exchange with QuickBooks failed: {type(exc).__name__}"
            ) from None
        logs.register_secrets([tokens.access_token, tokens.refresh_token])
        provider = ProviderData(inst.realm_id, refresh_token=tokens.refresh_token)
        return replace(inst, provider=provider), tokens


def _masked(key: str, value: Any) -> bool:
    """A secret echoed back as the mask means "keep the stored one"."""
    return value == MASK and (key in SECRET_KEYS or key == VERIFIER_KEY)


def _description(exc: QboError) -> str:
    if exc.fault is not None and exc.fault.message:
        return exc.fault.message[:200]
    return "no description"
