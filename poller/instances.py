"""Open Connectors `POST /instances` bodies → validated `Instance` values (DESIGN §3).

Every rule of DESIGN §3 lives here; invalid bodies raise `ConfigError` with one line naming the
instance, the key and (unless it is a secret) the value. Values are quoted escaped (`\\x1b`, never a
raw control character) and cut at 120 characters. Before any rule reads a body, its shape is
checked against the limits below (README "Instance input"): a file or an API body is hostile
input, and nothing in it may cost more than a bounded, linear amount of work.
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
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from poller import logs, resources
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

# --- input limits (documented in the README, "Instance input") ------------------------------
MAX_FILE_BYTES = 8 * 1024 * 1024  # an instances file; an API body is 1 MiB (DESIGN §9)
MAX_FILE_INSTANCES = 10_000
MAX_DEPTH = 8  # a body nests 3 levels (body → configuration → a list of resources)
MAX_NAME_CHARS = 200  # `name` and each tag
MAX_URL_CHARS = 2048  # the callback and redirect URLs
MAX_TEXT_CHARS = 4096  # any other string: keys' values, secrets, the run-together resource list
MAX_KEY_CHARS = 200  # an object's key
MAX_OBJECT_KEYS = 200  # keys in `configuration` (or any other object)
MAX_LIST_ITEMS = 100  # `tags`, `event.poller.urls` as an array, any other array
URL_KEYS = frozenset({"oauth.callback.url", "event.notification.callback.url"})
SHOWN_CHARS = 120  # a value quoted in an error is cut here
_CONTROL = logs.CONTROL_CHARS


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
        self.prefix = f"instance {shown(name, 60)}: " if name else "instance: "

    def __call__(self, key: str, value: Any, reason: str) -> ConfigError:
        if key in URL_KEYS and isinstance(value, str):
            value = logs.strip_url_secrets(value)  # an error line is a log line under systemd
        text = "<hidden>" if is_secret_path(key) else shown(value)
        return ConfigError(f"{self.prefix}{key}={text}: {reason}")

    def bare(self, key: str, reason: str) -> ConfigError:
        """An error that names the key but not its value."""
        return ConfigError(f"{self.prefix}{key}: {reason}")


class _Nested(_Fail):
    """The errors of keys inside an object (`providerData.code`)."""

    def __init__(self, outer: _Fail, path: str) -> None:
        self.prefix, self.path = outer.prefix, path

    def __call__(self, key: str, value: Any, reason: str) -> ConfigError:
        return super().__call__(self.path + key, value, reason)

    def bare(self, key: str, reason: str) -> ConfigError:
        return super().bare(self.path + key, reason)


def is_secret_path(key: str) -> bool:
    """Keys whose values are never quoted: §3's secrets, providerData's credentials, and any
    key whose name says it holds a secret (`...token`, `...secret`, `...password`)."""
    if key in SECRET_CONFIG_KEYS:
        return True
    if key == "oauth.api.key":  # the app's client id: public (it is in every consent URL)
        return False
    if key.startswith("providerData") and key != "providerData.realmId":
        return True
    return logs.is_secret_key(key)


escaped = logs.escape_controls


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """A value as an error quotes it: a string repr-quoted, anything else as JSON; escaped,
    and cut at `limit` characters."""
    if isinstance(value, str):
        cut = value[:limit]
        text = repr(cut) + ("..." if len(value) > limit else "")
        return escaped(text)
    if isinstance(value, (dict, list)) and len(value) > 20:
        value = value[:20] if isinstance(value, list) else dict(list(value.items())[:20])
    text = escaped(json.dumps(value, ensure_ascii=False, default=str))
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- the shape of a body: depth, sizes, control characters -----------------------------------


def _string_limit(path: str) -> int:
    if path == "name" or path.startswith("tags["):
        return MAX_NAME_CHARS
    return MAX_URL_CHARS if path in URL_KEYS else MAX_TEXT_CHARS


def _child_path(parent: str, key: str) -> str:
    # Configuration keys are named bare, as §3 writes them (`event.poller.urls`).
    if parent == "configuration":
        return key
    return f"{parent}.{key}" if parent else key


def check_shape(body: Mapping[str, Any], fail: _Fail) -> None:
    """Refuse a body nested too deep, too large, or holding control characters, walking it
    without recursion (so no body can exhaust the stack) and before any rule reads it."""
    stack: list[tuple[Any, str, int]] = [(body, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            _check_string(value, path, fail)
        elif isinstance(value, dict | list):
            where = path or "body"
            if depth > MAX_DEPTH:
                raise fail.bare(where, f"nested deeper than {MAX_DEPTH} levels")
            if isinstance(value, list):
                if len(value) > MAX_LIST_ITEMS:
                    raise fail.bare(where, f"more than {MAX_LIST_ITEMS} items ({len(value)})")
                stack.extend((item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value))
                continue
            if len(value) > MAX_OBJECT_KEYS:
                raise fail.bare(where, f"more than {MAX_OBJECT_KEYS} keys ({len(value)})")
            for key, item in value.items():
                _check_key(key, where, fail)
                stack.append((item, _child_path(path, key), depth + 1))


def _check_key(key: str, where: str, fail: _Fail) -> None:
    if len(key) > MAX_KEY_CHARS:
        raise fail.bare(f"{where}", f"a key longer than {MAX_KEY_CHARS} characters: {shown(key)}")
    if _CONTROL.search(key):
        raise fail.bare(f"{where}", f"a key holds a control character: {shown(key)}")


def _check_string(value: str, path: str, fail: _Fail) -> None:
    limit = _string_limit(path)
    if len(value) > limit:
        raise fail.bare(path, f"longer than {limit} characters ({len(value)})")
    if _CONTROL.search(value):
        raise fail(path, value, "control characters (CR, LF, ESC, ...) are not allowed")


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
        if not all(isinstance(v, str) for v in value):
            raise ValueError("expected resource names (strings)")
        parts = [v.strip() for v in value]
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return split_resources(_json_array(text))
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


def _json_array(text: str) -> list[Any]:
    """`event.poller.urls` written as a JSON array inside a string: one flat array."""
    try:
        loaded = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise ValueError("looks like a JSON array but is not valid JSON") from None
    if not isinstance(loaded, list) or len(loaded) > MAX_LIST_ITEMS:
        raise ValueError(f"expected a JSON array of at most {MAX_LIST_ITEMS} resource names")
    return loaded


def _segment(part: str) -> list[str]:
    """One name, or the run-together form of the published docs split against known names."""
    if part in resources.ALL_RESOURCES:
        return [part]
    found = segment_run_together(part)
    if found is None:
        valid = ", ".join(sorted(resources.ALL_RESOURCES))
        raise ValueError(f"unknown resource {shown(part, 60)}; valid resources: {valid}")
    return found


def segment_run_together(text: str) -> list[str] | None:
    """`text` as a concatenation of known names, or None. Linear in `len(text)` (times the
    number of names) and without recursion: a long run of names cannot exhaust the stack.

    The split that a depth-first search trying longest names first would find: computed
    backwards, `choice[i]` is the longest name that starts at `i` and leaves a splittable rest
    (so "bill-payments" wins over "bills" where both could start)."""
    names = sorted(resources.ALL_RESOURCES, key=len, reverse=True)
    size = len(text)
    choice: list[str | None] = [None] * (size + 1)
    splittable = [False] * (size + 1)
    splittable[size] = True
    for i in range(size - 1, -1, -1):
        for name in names:
            end = i + len(name)
            if end <= size and splittable[end] and text.startswith(name, i):
                choice[i], splittable[i] = name, True
                break
    if not splittable[0]:
        return None
    found: list[str] = []
    i = 0
    while i < size:
        chosen = choice[i]
        assert chosen is not None  # splittable[i] holds for every i the walk reaches
        found.append(chosen)
        i += len(chosen)
    return found


def parse_callback_url(value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"^https?://[^/\s?#]+", value.strip(), re.I):
        raise ValueError("must be an http:// or https:// URL")
    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018 - raises for a port beyond 65535 or not a number
    except ValueError:
        # Else every delivery fails later with aiohttp's InvalidUrlClientError.
        raise ValueError("must be an http:// or https:// URL with a valid host and port") from None
    if not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
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


def precheck(body: Mapping[str, Any]) -> _Fail:
    """The checks a whole body and a partial one (an API PATCH) share, before any other: its
    shape (`check_shape`), and `name`, `configuration` and `providerData` of the right type.
    The API runs it before its schema check, so both say the same thing."""
    name = body.get("name")
    fail = _Fail(name if isinstance(name, str) else None)
    check_shape(body, fail)
    if name is not None and not isinstance(name, str):
        raise fail("name", name, f"expected a string, got {_json_type(name)}")
    config = body.get("configuration")
    if config is not None and not isinstance(config, dict):
        raise fail.bare("configuration", _not_an_object(config))
    data = body.get("providerData")
    if data is not None and not isinstance(data, dict):
        raise fail.bare(
            "providerData",
            "expected an object with code (or refreshToken) and realmId, got "
            f"{_json_type(data)} (not shown: it may hold secrets)",
        )
    return fail


def parse_instance(body: Any, defaults: ClientDefaults | None = None) -> Instance:
    """Validate one Open Connectors instance body."""
    defaults = defaults or ClientDefaults()
    if not isinstance(body, dict):
        raise ConfigError(f"instance: expected a JSON object, got {_json_type(body)}")
    fail = precheck(body)
    name = body.get("name")
    if not name or not name.strip():
        raise fail("name", name, "every instance needs a non-empty name")
    element_key = _element_key(body, fail)
    config = body.get("configuration") or {}
    provider = _provider(body.get("providerData"), config, fail)
    client_id, client_secret = _client(config, defaults, fail)
    redirect_uri = _text(config, "oauth.callback.url", fail)
    if redirect_uri is not None:
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


def _not_an_object(value: Any) -> str:
    # The value is not quoted: a string here is often the whole object pasted as text, secrets
    # included.
    return f"expected a JSON object, got {_json_type(value)} (not shown: it may hold secrets)"


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, dict) else "null"


def _text(config: Mapping[str, Any], key: str, fail: _Fail) -> str | None:
    """A key whose value must be a string (absent or empty: None); never coerced."""
    value = config.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise fail(key, value, f"expected a string, got {_json_type(value)}")
    return value


def _provider(data: Any, config: Mapping[str, Any], fail: _Fail) -> ProviderData:
    auth_type = (_text(config, "authentication.type", fail) or "oauth2").strip().lower()
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
    if not isinstance(data, dict):  # absent: a non-object was refused by precheck
        raise fail.bare("providerData", "missing: needs code (or refreshToken) and realmId")
    realm = data.get("realmId")
    if (
        isinstance(realm, bool)
        or not isinstance(realm, str | int)
        or not str(realm).strip().isdigit()
    ):
        raise fail("providerData.realmId", realm, "expected the company's numeric realm id")
    code = _text(data, "code", _Nested(fail, "providerData."))
    refresh = _text(data, "refreshToken", _Nested(fail, "providerData."))
    if not code and not refresh:
        raise ConfigError(
            f"{fail.prefix}providerData: needs code (an authorization grant code) "
            "or refreshToken, with realmId"
        )
    return ProviderData(
        realm_id=str(realm).strip(),
        code=code or None,
        refresh_token=None if code else refresh,
    )


def _client(config: Mapping[str, Any], defaults: ClientDefaults, fail: _Fail) -> tuple[str, str]:
    client_id = _text(config, "oauth.api.key", fail) or defaults.client_id
    client_secret = _text(config, "oauth.api.secret", fail) or defaults.client_secret
    if not client_id:
        raise fail("oauth.api.key", None, "missing (and QBO_CLIENT_ID is not set)")
    if not client_secret:
        raise ConfigError(
            f"{fail.prefix}oauth.api.secret: missing (and QBO_CLIENT_SECRET is not set)"
        )
    return client_id, client_secret


def _callback(config: Mapping[str, Any], enabled: bool, fail: _Fail) -> str | None:
    url = _text(config, "event.notification.callback.url", fail)
    if url is None or not url.strip():
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
    return _text(config, key, fail)


def _vendor_type(value: Any) -> VendorType:
    kind = VENDOR_TYPES.get(value.strip().lower()) if isinstance(value, str) else None
    if kind is None:
        raise ValueError("expected polling or webhook")
    return kind


def _initial_mode(value: Any) -> InitialMode:
    mode = value.strip().lower() if isinstance(value, str) else None
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
    """Read a file holding one instance object or an array of them (at most MAX_FILE_BYTES,
    UTF-8, JSON): each refusal is one line naming the file and where in it."""
    where = f"{source}={shown(str(path))}"
    raw = _read_capped(path, where)
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark, as some editors write, is fine
    except UnicodeDecodeError as exc:
        line, column = line_column(raw, exc.start)
        raise ConfigError(
            f"{where}: not UTF-8: byte 0x{raw[exc.start]:02x} at line {line} column {column} "
            f"(byte offset {exc.start})"
        ) from None
    data = _parse_json(text, where)
    bodies = data if isinstance(data, list) else [data]
    # An empty array is the caller's to judge: POLLER_INSTANCES_FILE warns (DESIGN §7: the
    # daemon goes on), `instances add FILE` refuses.
    if len(bodies) > MAX_FILE_INSTANCES:
        raise ConfigError(f"{where}: more than {MAX_FILE_INSTANCES} instances ({len(bodies)})")
    return bodies


def _read_capped(path: Path, where: str) -> bytes:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)  # bounded even for /dev/zero or a FIFO
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{where}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    return raw


def line_column(raw: bytes, offset: int) -> tuple[int, int]:
    """The line and (byte) column of `offset` in `raw`, both from 1."""
    line_start = raw.rfind(b"\n", 0, offset) + 1
    return raw.count(b"\n", 0, offset) + 1, offset - line_start + 1


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{where}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise ConfigError(f"{where}: invalid JSON: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # NaN/Infinity, or a number of more than 4300 digits
        reason = str(exc) if "JSON number" in str(exc) else "a number is too long"
        raise ConfigError(f"{where}: invalid JSON: {reason}") from None


def load_file(
    path: Path, defaults: ClientDefaults | None = None, source: str = "POLLER_INSTANCES_FILE"
) -> list[Instance]:
    """Parse and validate every instance in a file; names must be unique."""
    parsed = [parse_instance(body, defaults) for body in load_bodies(path, source)]
    seen: set[str] = set()
    for inst in parsed:
        if inst.name in seen:
            raise ConfigError(
                f"{source}={shown(str(path))}: instance name {shown(inst.name)} appears twice"
            )
        seen.add(inst.name)
    return parsed
