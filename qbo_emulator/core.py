"""The emulator's state and its Python control surface (no HTTP needed).

See the package docstring for the public interface.  Everything here runs on
the event loop's thread; the methods are synchronous because the state is
in-process.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from . import batch as batch_mod
from . import cdc as cdc_mod
from . import faults
from . import query as query_mod
from . import reports as reports_mod
from . import state as state_mod
from .clock import Clock, format_time
from .entities import ENTITIES, canonical_entity, json_default
from .limits import UNSET, FaultInjector, LimitConfig, Limiter
from .oauth import (
    ACCOUNTING_SCOPE,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REDIRECT_URI,
    ROTATIONS,
    OAuthConfig,
    OAuthServer,
)
from .store import Realm, Record
from .webhooks import DEFAULT_DELAY_S, Target, WebhookSender

QBO_VERSION = "1944.190"  # the Qbo-Version header recorded from a live sandbox


class Emulator:
    """In-memory QuickBooks Online: realms, OAuth, limits, faults, counters."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        clients: dict[str, str] | None = None,
        access_token_lifetime: float = 3600.0,
        refresh_token_lifetime: float = 8726400.0,
        refresh_rotation: str = "always",
        refresh_rotation_interval: float = 86400.0,
        refresh_grace_seconds: float = 0.0,
        code_lifetime: float = 600.0,
        require_auth: bool = True,
        expired_token_fault: str = "json",
        per_minute: int | None = 500,
        per_second: int | None = 10,
        in_flight: int | None = 10,
        batch_per_minute: int | None = None,
        cdc_max_objects: int = cdc_mod.CDC_MAX_OBJECTS,
        cdc_window_days: float = cdc_mod.CDC_WINDOW_DAYS,
        batch_max_items: int = batch_mod.BATCH_MAX_ITEMS,
        batch_cdc_shape: str = "array",
        fault_seed: int | None = None,
        realms: Iterable[str] = (),
        seed: int = 0,
        per_entity: int | dict[str, int] = 0,
        history_days: float = 60.0,
    ) -> None:
        if refresh_rotation not in ROTATIONS:
            raise ValueError(f"refresh_rotation must be one of {ROTATIONS}")
        if batch_cdc_shape not in ("array", "object"):
            raise ValueError("batch_cdc_shape must be 'array' or 'object'")
        if expired_token_fault not in ("json", "xml"):
            raise ValueError("expired_token_fault must be 'json' or 'xml'")
        self.clock = clock or Clock()
        self.default_client_id = client_id
        self.oauth = OAuthServer(
            self.clock,
            OAuthConfig(
                access_token_lifetime=access_token_lifetime,
                refresh_token_lifetime=refresh_token_lifetime,
                refresh_rotation=refresh_rotation,
                refresh_rotation_interval=refresh_rotation_interval,
                refresh_grace_seconds=refresh_grace_seconds,
                code_lifetime=code_lifetime,
            ),
            {client_id: client_secret, **(clients or {})},
        )
        self.require_auth = require_auth
        self.expired_token_fault = expired_token_fault
        self.limiter = Limiter(LimitConfig(per_minute, per_second, in_flight, batch_per_minute))
        self.faults = FaultInjector(fault_seed)
        self.cdc_max_objects = cdc_max_objects
        self.cdc_window_days = cdc_window_days
        self.batch_max_items = batch_max_items
        self.batch_cdc_shape = batch_cdc_shape
        self.realms: dict[str, Realm] = {}
        self._counters: dict[str, Counter[str]] = {}
        # Intuit webhooks of every realm; sent by the app's background task (app.create_app).
        self.webhooks = WebhookSender(seed=fault_seed)
        self.base_url: str | None = None  # set while served by run_emulator
        for realm_id in realms:
            self.add_realm(realm_id, seed=seed, per_entity=per_entity, history_days=history_days)

    # ------------------------------------------------------------------ URLs
    @property
    def token_url(self) -> str | None:
        return f"{self.base_url}/oauth2/v1/tokens/bearer" if self.base_url else None

    @property
    def revoke_url(self) -> str | None:
        return f"{self.base_url}/oauth2/v1/tokens/revoke" if self.base_url else None

    @property
    def discovery_url(self) -> str | None:
        return f"{self.base_url}/.well-known/openid_configuration" if self.base_url else None

    def api_url(self, realm_id: str) -> str:
        return f"{self.base_url}/v3/company/{realm_id}"

    @property
    def client_id(self) -> str:
        return self.default_client_id

    @property
    def client_secret(self) -> str:
        return self.oauth.clients[self.default_client_id]

    # ---------------------------------------------------------------- realms
    def add_realm(
        self,
        realm_id: str | int | None = None,
        *,
        seed: int = 0,
        per_entity: int | dict[str, int] = 0,
        history_days: float = 60.0,
    ) -> str:
        """Create a company (idempotent) and optionally fill it; returns its id."""
        rid = (
            str(realm_id)
            if realm_id is not None
            else str(9130350000000000 + secrets.randbelow(10**9))
        )
        if rid not in self.realms:
            self.realms[rid] = Realm(rid, self.clock)
            self.realms[rid].on_change = self.webhooks.recorder(rid)
        if per_entity:
            self.realms[rid].seed(seed, per_entity, history_days)
        return rid

    def fill(
        self,
        realm_id: str,
        *,
        seed: int = 0,
        per_entity: int | dict[str, int] = 10,
        history_days: float = 60.0,
    ) -> int:
        """Generate more objects in an existing realm; returns how many."""
        return self.realm(realm_id).seed(seed, per_entity, history_days)

    def realm(self, realm_id: str) -> Realm:
        try:
            return self.realms[str(realm_id)]
        except KeyError:
            raise KeyError(f"unknown realm {realm_id!r}") from None

    def remove_realm(self, realm_id: str) -> None:
        self.realms.pop(str(realm_id), None)

    def count(self, realm_id: str, entity: str | None = None) -> int:
        return self.realm(realm_id).count(entity)

    # ---------------------------------------------------- objects (control)
    def create(self, realm_id: str, entity: str, obj: dict[str, Any]) -> dict[str, Any]:
        return self.realm(realm_id).create(_entity(entity), obj).copy()

    def update(
        self, realm_id: str, entity: str, obj: dict[str, Any], *, sparse: bool = True
    ) -> dict[str, Any]:
        """Update by ``obj["Id"]``; the SyncToken is checked only if ``obj`` has one."""
        return (
            self.realm(realm_id)
            .update(_entity(entity), obj, sparse=sparse, check_token=False)
            .copy()
        )

    def delete(self, realm_id: str, entity: str, obj_id: str | int) -> dict[str, Any]:
        """Delete as QBO would for that entity: a hard delete (returns the
        tombstone) for a transaction, ``Active=false`` (returns the object) for
        a name list."""
        name = _entity(entity)
        if ENTITIES[name].is_name_list:
            return self.deactivate(realm_id, name, obj_id)
        rec = self.realm(realm_id).delete(name, str(obj_id))
        return rec.copy()

    def deactivate(self, realm_id: str, entity: str, obj_id: str | int) -> dict[str, Any]:
        return self.realm(realm_id).deactivate(_entity(entity), str(obj_id)).copy()

    def reactivate(self, realm_id: str, entity: str, obj_id: str | int) -> dict[str, Any]:
        body = {"Id": str(obj_id), "Active": True}
        return (
            self.realm(realm_id)
            .update(_entity(entity), body, sparse=True, check_token=False)
            .copy()
        )

    def void(self, realm_id: str, entity: str, obj_id: str | int) -> dict[str, Any]:
        return self.realm(realm_id).void(_entity(entity), str(obj_id)).copy()

    def get(self, realm_id: str, entity: str, obj_id: str | int) -> dict[str, Any] | None:
        rec = self.realm(realm_id).get(_entity(entity), str(obj_id))
        return rec.copy() if rec else None

    def ids(self, realm_id: str, entity: str, *, include_inactive: bool = True) -> list[str]:
        table = self.realm(realm_id).table(_entity(entity))
        return [r.id for r in table.live.values() if include_inactive or r.active]

    def query(self, realm_id: str, statement: str) -> dict[str, Any]:
        """Run a query as the API would; returns the response body (or raises QBOFault)."""
        body: dict[str, Any] = orjson.loads(self.dumps(self.api_query(realm_id, statement)))
        return body

    def cdc(
        self, realm_id: str, entities: str | Iterable[str], changed_since: str | datetime
    ) -> dict[str, Any]:
        """Run a CDC request as the API would; returns the response body."""
        if not isinstance(entities, str):
            entities = ",".join(entities)
        if isinstance(changed_since, datetime):
            changed_since = changed_since.isoformat()
        body: dict[str, Any] = orjson.loads(
            self.dumps(self.api_cdc(realm_id, entities, changed_since))
        )
        return body

    # ------------------------------------------------------------------ state
    def save_state(self, path: str | Path) -> None:
        """Write realms, id sequences, tokens, the clock and the signing key to ``path``."""
        state_mod.save(self, path)

    def load_state(self, path: str | Path) -> bool:
        """Replace realms and tokens with ``path``'s (False when there is no such file)."""
        return state_mod.load(self, path)

    # ------------------------------------------------------------------ OAuth
    def register_client(self, client_id: str, client_secret: str) -> None:
        self.oauth.clients[client_id] = client_secret

    def issue_auth_code(
        self,
        realm_id: str,
        client_id: str | None = None,
        redirect_uri: str = DEFAULT_REDIRECT_URI,
        *,
        scope: str = ACCOUNTING_SCOPE,
    ) -> str:
        """A single-use authorization code for ``realm_id`` (created if new)."""
        self.add_realm(realm_id)
        return self.oauth.issue_code(
            str(realm_id), client_id or self.default_client_id, redirect_uri, scope
        )

    def issue_tokens(self, realm_id: str, client_id: str | None = None) -> dict[str, Any]:
        """A connected company's token response (refresh + access token), no code dance."""
        self.add_realm(realm_id)
        body = self.oauth.issue_tokens(str(realm_id), client_id or self.default_client_id)
        return {**body, "realm_id": str(realm_id)}

    def configure_oauth(
        self,
        *,
        access_token_lifetime: float = UNSET,
        refresh_token_lifetime: float = UNSET,
        refresh_rotation: str = UNSET,
        refresh_rotation_interval: float = UNSET,
        refresh_grace_seconds: float = UNSET,
        code_lifetime: float = UNSET,
    ) -> None:
        """Change token behaviour; applies to tokens issued afterwards
        (rotation and grace apply at once)."""
        cfg = self.oauth.config
        if refresh_rotation is not UNSET and refresh_rotation not in ROTATIONS:
            raise ValueError(f"refresh_rotation must be one of {ROTATIONS}")
        for name, value in (
            ("access_token_lifetime", access_token_lifetime),
            ("refresh_token_lifetime", refresh_token_lifetime),
            ("refresh_rotation", refresh_rotation),
            ("refresh_rotation_interval", refresh_rotation_interval),
            ("refresh_grace_seconds", refresh_grace_seconds),
            ("code_lifetime", code_lifetime),
        ):
            if value is not UNSET:
                setattr(cfg, name, value)

    def expire_access_tokens(self, realm_id: str | None = None) -> int:
        """Make current access tokens expired now (of one realm, or all)."""
        now = self.clock.timestamp()
        expired = 0
        for token in self.oauth.access_tokens.values():
            if realm_id is None or token.chain.realm == str(realm_id):
                token.expires = min(token.expires, now)
                expired += 1
        return expired

    # ------------------------------------------------------- limits & faults
    def set_limits(
        self,
        realm_id: str | None = None,
        *,
        per_minute: int | None = UNSET,
        per_second: int | None = UNSET,
        in_flight: int | None = UNSET,
        batch_per_minute: int | None = UNSET,
    ) -> dict[str, Any]:
        """Change limits globally (``realm_id=None``) or for one realm; ``None`` disables."""
        cfg = self.limiter.configure(
            None if realm_id is None else str(realm_id),
            per_minute=per_minute,
            per_second=per_second,
            in_flight=in_flight,
            batch_per_minute=batch_per_minute,
        )
        return dict(cfg.__dict__)

    def throttle(self, realm_id: str, seconds: float) -> None:
        """Answer 429 to every API request of the realm for ``seconds`` (real time)."""
        self.limiter.hold(str(realm_id), seconds)

    def unthrottle(self, realm_id: str) -> None:
        self.limiter.release_hold(str(realm_id))

    def inject_fault(
        self,
        kind: str,
        *,
        endpoint: str | None = None,
        realm: str | None = None,
        count: int | None = None,
        probability: float | None = None,
        seconds: float = 0.0,
        status: int = 500,
    ) -> int:
        """Add a fault rule; returns its id (see limits.py for the kinds)."""
        return self.faults.add(
            kind,
            endpoint=endpoint,
            realm=None if realm is None else str(realm),
            count=count,
            probability=probability,
            seconds=seconds,
            status=status,
        )

    def remove_fault(self, rule_id: int) -> bool:
        return self.faults.remove(rule_id)

    def clear_faults(self) -> None:
        self.faults.clear()

    def set_cdc_in_batch(self, realm_id: str, allowed: bool) -> None:
        """Whether the realm's batch endpoint answers ``CDCQuery`` items."""
        self.realm(realm_id).cdc_in_batch = bool(allowed)

    # --------------------------------------------------------------- webhooks
    def configure_webhooks(
        self,
        realm_id: str | None,
        url: str,
        verifier: str,
        *,
        format: str = "legacy",
        delay_s: float = DEFAULT_DELAY_S,
    ) -> dict[str, Any]:
        """Send the realm's changes (``realm_id=None``: every realm without its own target) to
        ``url`` as Intuit webhooks signed with ``verifier``, after ``delay_s`` of batching."""
        if realm_id is None:
            self.webhooks.default_target = Target(url, verifier, format, float(delay_s))
            return self.webhooks.default_target.public()
        return self.webhooks.configure(
            str(realm_id), url, verifier, format=format, delay_s=delay_s
        ).public()

    def remove_webhooks(self, realm_id: str | None) -> None:
        if realm_id is None:
            self.webhooks.default_target = None
        else:
            self.webhooks.remove(str(realm_id))

    def webhook_switches(self, **switches: Any) -> dict[str, Any]:
        """drop_fraction, drop_next, duplicates, retry_scale, max_attempts (see webhooks.py)."""
        return self.webhooks.set_switches(**switches)

    # --------------------------------------------------------------- counters
    def count_request(self, realm_id: str | None, endpoint: str) -> None:
        self._counters.setdefault(realm_id or "", Counter())[endpoint] += 1

    def counters(self, realm_id: str | None = None) -> dict[str, Any]:
        """Requests per endpoint of one realm (``{"query": 3, ...}``), or of
        every realm (``{realm: {...}}``; token calls that name no realm are
        under ``""``).  Keys: query, cdc, batch, batch_query, batch_cdc,
        batch_create, batch_update, batch_delete, read, create, update,
        delete, void, token, revoke, other, throttled (429s), total."""
        hooks = self.webhooks.counters
        if realm_id is not None:
            counts = self._counters.get(str(realm_id), Counter())
            return {**counts, **hooks.get(str(realm_id), {}), "total": _total(counts)}
        return {
            rid: {**c, **hooks.get(rid, {}), "total": _total(c)}
            for rid, c in self._counters.items()
        }

    def reset_counters(self) -> None:
        self._counters.clear()
        self.webhooks.counters.clear()

    def reset(self) -> None:
        """Back to a blank emulator: no realms, tokens, faults, throttles or counts; real time."""
        self.realms.clear()
        self.oauth.reset()
        self.faults.clear()
        self.limiter.reset()
        self._counters.clear()
        self.webhooks.reset()
        self.clock.reset()

    # ---------------------------------------------- the API's answers (bodies)
    def now_time(self) -> str:
        return format_time(self.clock.now())

    def dumps(self, body: Any) -> bytes:
        return orjson.dumps(body, default=json_default)

    def api_query(self, realm_id: str, statement: str) -> dict[str, Any]:
        realm = self.realm(realm_id)
        result = query_mod.run(statement, lambda name: realm.tables.get(name) if name else None)
        return {"QueryResponse": query_body(result), "time": self.now_time()}

    def api_cdc(
        self, realm_id: str, entities: str | None, changed_since: str | None
    ) -> dict[str, Any]:
        return {
            "CDCResponse": [self.cdc_body(realm_id, entities, changed_since)],
            "time": self.now_time(),
        }

    def cdc_body(
        self, realm_id: str, entities: str | None, changed_since: str | None
    ) -> dict[str, Any]:
        realm = self.realm(realm_id)
        names = cdc_mod.parse_entities(entities)
        since = cdc_mod.parse_changed_since(changed_since, self.clock.now(), self.cdc_window_days)
        groups = cdc_mod.collect(realm, names, since, self.cdc_max_objects)
        return {"QueryResponse": cdc_mod.query_responses(groups)}

    def api_read(self, realm_id: str, entity: str, obj_id: str) -> dict[str, Any]:
        name = _api_entity(entity)
        if ENTITIES[name].is_singleton and obj_id == realm_id:
            obj_id = "1"  # GET companyinfo/{realmId}: the company's one object
        if not obj_id.isdigit():
            raise faults.invalid_id(obj_id)
        realm = self.realm(realm_id)
        table = realm.tables[name]
        rec = table.live.get(obj_id)
        if rec is None:
            raise faults.object_not_found(deleted=obj_id in table.tombstones)
        return {name: orjson.Fragment(rec.json()), "time": self.now_time()}

    def api_write(
        self,
        realm_id: str,
        entity: str,
        body: Any,
        operation: str | None = None,
        include: str | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """POST /v3/company/{realm}/{entity}: (counter name, response body)."""
        name = _api_entity(entity)
        if not isinstance(body, dict):
            raise faults.invalid_request_body("Request body must be a JSON object")
        realm = self.realm(realm_id)
        facts = ENTITIES[name]
        op = (operation or "").lower()
        if op == "delete":
            self._need(body, "Id", "SyncToken")
            tomb = realm.delete(name, str(body["Id"]), str(body["SyncToken"]))
            out = {"domain": "QBO", "status": "Deleted", "Id": tomb.id}
            return "delete", {name: out, "time": self.now_time()}
        if op == "void" or (include or "").lower() == "void":
            self._need(body, "Id", "SyncToken")
            rec = realm.void(name, str(body["Id"]), str(body["SyncToken"]))
            return "void", self._entity_body(rec)
        if op not in ("", "create", "update"):
            raise faults.unsupported_operation(f"Operation {operation} is not supported.")
        creating = op == "create" or (op == "" and body.get("Id") in (None, ""))
        if facts.is_singleton and creating:
            raise faults.unsupported_operation(f"Operation Create is not supported for {name}.")
        if not facts.api_writable:
            verb = "Update" if body.get("Id") else "Create"
            detail = f"Operation {verb} is not supported for {name}; use TaxService."
            raise faults.unsupported_operation(detail)
        if op == "update" or (op == "" and body.get("Id") not in (None, "")):
            rec = realm.update(name, body, sparse=body.get("sparse") is True, check_token=True)
            return "update", self._entity_body(rec)
        rec = realm.create(name, body)  # Id is read-only: ignored on create
        return "create", self._entity_body(rec)

    def api_report(self, realm_id: str, name: str, params: dict[str, str]) -> dict[str, Any]:
        """GET reports/{name}: ProfitAndLoss or BalanceSheet computed from the realm's data."""
        return reports_mod.run(self.realm(realm_id), name, params, self.now_time())

    def api_batch(self, realm_id: str, body: Any) -> tuple[dict[str, Any], list[str]]:
        return batch_mod.run(self, realm_id, body)

    def _entity_body(self, rec: Record) -> dict[str, Any]:
        return {rec.entity: orjson.Fragment(rec.json()), "time": self.now_time()}

    @staticmethod
    def _need(body: dict[str, Any], *keys: str) -> None:
        for key in keys:
            if body.get(key) in (None, ""):
                raise faults.required_param(key)


def query_body(result: query_mod.Result) -> dict[str, Any]:
    """QueryResponse contents: rows + startPosition + maxResults (= rows
    returned, no totalCount, as recorded); ``{}`` when no rows; COUNT gives
    only ``totalCount``."""
    if result.count_only:
        return {"totalCount": result.total}
    if not result.rows:
        return {}
    return {
        result.entity: [orjson.Fragment(r.json()) for r in result.rows],
        "startPosition": result.start,
        "maxResults": len(result.rows),
    }


def _entity(name: str) -> str:
    canonical = canonical_entity(name)
    if canonical is None:
        raise KeyError(f"unknown entity {name!r}")
    return canonical


def _api_entity(name: str) -> str:
    canonical = canonical_entity(name)
    if canonical is None:
        raise faults.unsupported_operation(
            f"Operation Could not find resource for relative : /{name} is not supported."
        )
    return canonical


def _total(counts: Counter[str]) -> int:
    return sum(v for k, v in counts.items() if not k.startswith("batch_") and k != "throttled")
