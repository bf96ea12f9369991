"""Open Connectors `POST /instances` bodies → validated `Instance` values (DESIGN §3).

Every rule of DESIGN §3 lives here; invalid bodies raise `ConfigError` with one line naming the
instance, the key and (unless it is a secret) the value.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from poller import resources
from poller.errors import ConfigError

OAUTH1_RETIRED = "2019-12-17"
DEFAULT_REFRESH_MINUTES = 15.0
MIN_REFRESH_MINUTES = 0.01  # 0.6 s
MAX_REFRESH_MINUTES = 1440.0  # one day
# A webhook instance's polls are the backstop of Intuit's notifications (DESIGN §11).
DEFAULT_WEBHOOK_REFRESH_MINUTES = 60.0


class InitialMode(StrEnum):
    """`event.poller.initial`: what a pair's first poll does with existing data."""

    NOW = "now"  # record a baseline, emit nothing for what exists
    BACKFILL = "backfill"  # a CREATED for every existing object


class VendorType(StrEnum):
    """`event.vendor.type`: who tells us of changes first (polling is always the backstop)."""

    POLLING = "polling"
    WEBHOOK = "webhook"


class InstanceStatus(StrEnum):
    """`instances.status`, as stored."""

    ACTIVE = "active"
    PAUSED = "paused"
    NEEDS_RECONNECT = "needs_reconnect"  # the OAuth grant was lost: waits for new providerData
    DISABLED = "disabled"  # event.notification.enabled is false


VENDOR_TYPES = {
    "polling": VendorType.POLLING,
    "webhook": VendorType.WEBHOOK,
    "webhooks": VendorType.WEBHOOK,
}
INITIAL_MODES = tuple(InitialMode)
WEBHOOK_VERIFIER_KEY = "event.webhook.verifier.token"
SECRET_CONFIG_KEYS = frozenset(
    {"oauth.api.secret", "event.notification.signature.key", WEBHOOK_VERIFIER_KEY}
)
_OAUTH1_PROVIDER_KEYS = ("oauth_token", "oauth_verifier", "oauth_token_secret", "secret")
_SPLIT = re.compile(r"[|,\s]+")


@dataclass(frozen=True)
class ProviderData:
    """How to obtain tokens: a single-use authorization code, or a refresh token."""

    realm_id: str
    code: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)

    def fingerprint(self) -> str:
        """Stable hash: tells whether a reloaded body carries new credentials."""
        canonical = orjson.dumps(
            {"realmId": self.realm_id, "code": self.code, "refreshToken": self.refresh_token},
            option=orjson.OPT_SORT_KEYS,
        )
        return hashlib.sha256(canonical).hexdigest()


@dataclass(frozen=True)
class Instance:
    name: str
    realm_id: str
    provider: ProviderData
    client_id: str
    client_secret: str = field(repr=False)
    redirect_uri: str | None
    events_enabled: bool
    vendor_type: VendorType
    callback_url: str | None
    signature_key: str | None = field(repr=False)
    refresh_interval_s: float
    resources: tuple[str, ...]
    timezone: str = "UTC"
    initial: InitialMode = InitialMode.NOW
    deactivated_as_deleted: bool = False
    # `event.poller.changes`: UPDATED events carry field-level changes (DESIGN §12).
    changes: bool = False
    tags: tuple[str, ...] = ()
    element_key: str = "quickbooks"
    # The configuration as given, minus secrets (those live in their own encrypted columns).
    configuration: Mapping[str, Any] = field(default_factory=dict)
    # `event.webhook.verifier.token`: this instance's Intuit app signs webhooks with it.
    webhook_verifier_token: str | None = field(default=None, repr=False)

    def public_configuration(self) -> dict[str, Any]:
        return {k: v for k, v in self.configuration.items() if k not in SECRET_CONFIG_KEYS}


@dataclass(frozen=True)
class ClientDefaults:
    """`QBO_CLIENT_ID` / `QBO_CLIENT_SECRET`, used when a body leaves the app keys out."""

    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)


class _Fail:
    """Builds the one-line errors for one instance."""

    def __init__(self, name: str | None) -> None:
        self.prefix = f"instance {name!r}: " if name else "instance: "

    def __call__(self, key: str, value: Any, reason: str) -> ConfigError:
        shown = "<hidden>" if key in SECRET_CONFIG_KEYS else _short(value)
        return ConfigError(f"{self.prefix}{key}={shown}: {reason}")


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


# --- value parsers ------------------------------------------------------------------------


def parse_bool_value(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError("expected true or false")


def parse_interval_minutes(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number of minutes")
    try:
        minutes = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ValueError("expected a number of minutes") from None
    if not math.isfinite(minutes) or minutes <= 0:
        raise ValueError("must be a positive number of minutes")
    # Below the floor a few instances spend a realm's whole Intuit budget (500 requests a
    # minute); above the ceiling the next due time overflows a timestamp.
    if not MIN_REFRESH_MINUTES <= minutes <= MAX_REFRESH_MINUTES:
        raise ValueError(
            f"must be between {MIN_REFRESH_MINUTES:g} and {MAX_REFRESH_MINUTES:g} minutes"
        )
    return minutes


def split_resources(value: Any) -> tuple[str, ...]:
    """Every accepted form of `event.poller.urls` → resource names (order kept, no repeats)."""
    if isinstance(value, list):
        parts = [str(v).strip() for v in value]
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return split_resources(json.loads(text))
            except json.JSONDecodeError:
                raise ValueError("looks like a JSON array but is not valid JSON") from None
        parts = [p for p in _SPLIT.split(text) if p]
    else:
        raise ValueError("expected resource names separated by |")
    names: list[str] = []
    for part in parts:
        for name in _segment(part.lower()):
            if name not in names:
                names.append(name)
    if not names:
        raise ValueError("no resources given")
    return tuple(names)


def _segment(part: str) -> list[str]:
    """One name, or the run-together form of the published docs split against known names."""
    if part in resources.ALL_RESOURCES:
        return [part]
    found = _segment_run_together(part, {})
    if found is None:
        unknown = part
        valid = ", ".join(sorted(resources.ALL_RESOURCES))
        raise ValueError(f"unknown resource {unknown!r}; valid resources: {valid}")
    return found


def _segment_run_together(text: str, memo: dict[str, list[str] | None]) -> list[str] | None:
    if text == "":
        return []
    if text in memo:
        return memo[text]
    memo[text] = None
    # Longest names first, so "bill-payments" wins over "bills" where both could start.
    for name in sorted(resources.ALL_RESOURCES, key=len, reverse=True):
        if text.startswith(name):
            rest = _segment_run_together(text[len(name) :], memo)
            if rest is not None:
                memo[text] = [name, *rest]
                break
    return memo[text]


def parse_callback_url(value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"^https?://[^/\s?#]+", value.strip(), re.I):
        raise ValueError("must be an http:// or https:// URL")
    return value.strip()


def parse_timezone(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected an IANA time zone name such as Europe/Berlin")
    try:
        ZoneInfo(value.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            "unknown time zone (expected an IANA name such as Europe/Berlin)"
        ) from None
    return value.strip()


# --- the body -------------------------------------------------------------------------------


def parse_instance(body: Any, defaults: ClientDefaults | None = None) -> Instance:
    """Validate one Open Connectors instance body."""
    defaults = defaults or ClientDefaults()
    if not isinstance(body, dict):
        raise ConfigError(f"instance: expected a JSON object, got {type(body).__name__}")
    name = body.get("name")
    fail = _Fail(name if isinstance(name, str) else None)
    if not isinstance(name, str) or not name.strip():
        raise fail("name", name, "every instance needs a non-empty name")
    element_key = _element_key(body, fail)
    config = body.get("configuration") or {}
    if not isinstance(config, dict):
        raise fail("configuration", config, "expected a JSON object")
    provider = _provider(body.get("providerData"), config, fail)
    client_id, client_secret = _client(config, defaults, fail)
    redirect_uri = config.get("oauth.callback.url")
    if redirect_uri is not None and redirect_uri != "":
        try:
            redirect_uri = parse_callback_url(redirect_uri)
        except ValueError as exc:
            raise fail("oauth.callback.url", redirect_uri, str(exc)) from None
    if provider.code is not None and not redirect_uri:
        raise fail(
            "oauth.callback.url",
            redirect_uri,
            "required with providerData.code (it is the redirect_uri of the code exchange)",
        )
    events_enabled = _get(config, "event.notification.enabled", parse_bool_value, False, fail)
    callback_url = _callback(config, events_enabled, fail)
    vendor_type = _get(config, "event.vendor.type", _vendor_type, VendorType.POLLING, fail)
    default_minutes = (
        DEFAULT_WEBHOOK_REFRESH_MINUTES
        if vendor_type is VendorType.WEBHOOK
        else DEFAULT_REFRESH_MINUTES
    )
    return Instance(
        name=name.strip(),
        realm_id=provider.realm_id,
        provider=provider,
        client_id=client_id,
        client_secret=client_secret,
        redirect_uri=str(redirect_uri) if redirect_uri else None,
        events_enabled=events_enabled,
        vendor_type=vendor_type,
        callback_url=callback_url,
        signature_key=_signature_key(config, fail),
        refresh_interval_s=60.0
        * _get(
            config,
            "event.poller.refresh_interval",
            parse_interval_minutes,
            default_minutes,
            fail,
        ),
        resources=_get(config, "event.poller.urls", split_resources, resources.DEFAULT_NAMES, fail),
        timezone=_get(config, "event.poller.timezone", parse_timezone, "UTC", fail),
        initial=_get(config, "event.poller.initial", _initial_mode, InitialMode.NOW, fail),
        deactivated_as_deleted=_get(
            config, "event.poller.deactivated_as_deleted", parse_bool_value, False, fail
        ),
        changes=_get(config, "event.poller.changes", parse_bool_value, False, fail),
        tags=_tags(body.get("tags"), fail),
        element_key=element_key,
        configuration={k: v for k, v in config.items() if k not in SECRET_CONFIG_KEYS},
        webhook_verifier_token=_secret_text(config, WEBHOOK_VERIFIER_KEY, fail),
    )


def _get(config: Mapping[str, Any], key: str, parse: Any, default: Any, fail: _Fail) -> Any:
    value = config.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    try:
        return parse(value)
    except ValueError as exc:
        raise fail(key, value, str(exc)) from None


def _element_key(body: Mapping[str, Any], fail: _Fail) -> str:
    element = body.get("element")
    key = element.get("key") if isinstance(element, dict) else element
    if key is None:
        return "quickbooks"
    if key != "quickbooks":
        raise fail("element.key", key, "only the quickbooks element is supported")
    return "quickbooks"


def _provider(data: Any, config: Mapping[str, Any], fail: _Fail) -> ProviderData:
    auth_type = str(config.get("authentication.type", "oauth2")).strip().lower()
    oauth1_keys = [k for k in _OAUTH1_PROVIDER_KEYS if isinstance(data, dict) and k in data]
    if auth_type in ("oauth1", "oauth1.0", "oauth") or oauth1_keys:
        key = f"providerData.{oauth1_keys[0]}" if oauth1_keys else "authentication.type"
        shown = "<hidden>" if oauth1_keys else auth_type
        raise ConfigError(
            f"{fail.prefix}{key}={shown}: OAuth 1.0 is not supported: Intuit retired "
            f"OAuth 1.0 on {OAUTH1_RETIRED}; connect the company with OAuth 2.0 "
            "(providerData.code or providerData.refreshToken)"
        )
    if auth_type != "oauth2":
        raise fail("authentication.type", auth_type, "expected oauth2")
    if not isinstance(data, dict):
        raise fail(
            "providerData", data, "expected an object with code (or refreshToken) and realmId"
        )
    realm = data.get("realmId")
    if not isinstance(realm, (str, int)) or not str(realm).strip().isdigit():
        raise fail("providerData.realmId", realm, "expected the company's numeric realm id")
    code, refresh = data.get("code"), data.get("refreshToken")
    if not code and not refresh:
        raise ConfigError(
            f"{fail.prefix}providerData: needs code (an authorization grant code) "
            "or refreshToken, with realmId"
        )
    return ProviderData(
        realm_id=str(realm).strip(),
        code=str(code) if code else None,
        refresh_token=None if code else str(refresh),
    )


def _client(config: Mapping[str, Any], defaults: ClientDefaults, fail: _Fail) -> tuple[str, str]:
    client_id = config.get("oauth.api.key") or defaults.client_id
    client_secret = config.get("oauth.api.secret") or defaults.client_secret
    if not client_id:
        raise fail("oauth.api.key", None, "missing (and QBO_CLIENT_ID is not set)")
    if not client_secret:
        raise ConfigError(
            f"{fail.prefix}oauth.api.secret: missing (and QBO_CLIENT_SECRET is not set)"
        )
    return str(client_id), str(client_secret)


def _callback(config: Mapping[str, Any], enabled: bool, fail: _Fail) -> str | None:
    url = config.get("event.notification.callback.url")
    if url is None or (isinstance(url, str) and not url.strip()):
        if enabled:
            raise fail(
                "event.notification.callback.url",
                url,
                "required when event.notification.enabled is true",
            )
        return None
    try:
        return parse_callback_url(url)
    except ValueError as exc:
        raise fail("event.notification.callback.url", url, str(exc)) from None


def _signature_key(config: Mapping[str, Any], fail: _Fail) -> str | None:
    return _secret_text(config, "event.notification.signature.key", fail)


def _secret_text(config: Mapping[str, Any], key: str, fail: _Fail) -> str | None:
    value = config.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise fail(key, value, "expected a string")
    return value


def _vendor_type(value: Any) -> VendorType:
    kind = VENDOR_TYPES.get(str(value).strip().lower())
    if kind is None:
        raise ValueError("expected polling or webhook")
    return kind


def _initial_mode(value: Any) -> InitialMode:
    mode = str(value).strip().lower()
    if mode not in INITIAL_MODES:
        raise ValueError("expected now or backfill")
    return InitialMode(mode)


def _tags(value: Any, fail: _Fail) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise fail("tags", value, "expected a list of strings")
    return tuple(value)


# --- files ----------------------------------------------------------------------------------


def load_bodies(path: Path, source: str = "POLLER_INSTANCES_FILE") -> list[Any]:
    """Read a file holding one instance object or an array of them."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}={str(path)!r}: cannot read: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{source}={str(path)!r}: invalid JSON at line {exc.lineno} "
            f"column {exc.colno}: {exc.msg}"
        ) from None
    bodies = data if isinstance(data, list) else [data]
    if not bodies:
        raise ConfigError(f"{source}={str(path)!r}: the array holds no instances")
    return bodies


def load_file(
    path: Path, defaults: ClientDefaults | None = None, source: str = "POLLER_INSTANCES_FILE"
) -> list[Instance]:
    """Parse and validate every instance in a file; names must be unique."""
    parsed = [parse_instance(body, defaults) for body in load_bodies(path, source)]
    seen: set[str] = set()
    for inst in parsed:
        if inst.name in seen:
            raise ConfigError(f"{source}={str(path)!r}: instance name {inst.name!r} appears twice")
        seen.add(inst.name)
    return parsed
