"""Settings: the environment (and `.env`), validated once at start-up and frozen.

Every invalid value raises `ConfigError` with one line that names the variable and the
offending value (secrets are never echoed). The CLI turns that into exit code 2.
"""

from __future__ import annotations

import difflib
import os
import re
import secrets
import socket
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from dotenv import dotenv_values

from poller import secret_keys
from poller.errors import ConfigError
from poller.vocab import SignatureScheme

T = TypeVar("T")

INTUIT_API_BASE = {
    "production": "https://quickbooks.api.intuit.com",
    "sandbox": "https://sandbox-quickbooks.api.intuit.com",
}
INTUIT_TOKEN_URL = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"
INTUIT_REVOKE_URL = "https://developer.api.intuit.com/v2/oauth2/tokens/revoke"
INTUIT_AUTHORIZE_URL = "https://appcenter.intuit.com/connect/oauth2"

DEFAULT_RETRY_SCHEDULE = "5s,5m,30m,2h,5h,10h,14h,20h,24h"
SIGNATURE_SCHEMES = tuple(SignatureScheme)
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})


@dataclass(frozen=True)
class HttpAddr:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class LogFormat(StrEnum):
    """POLLER_LOG_FORMAT: `auto` is console on a terminal, json elsewhere."""

    JSON = "json"
    CONSOLE = "console"
    AUTO = "auto"


LOG_FORMATS = tuple(LogFormat)


# --- value parsers: each raises ValueError with a short reason ------------------------------


def _dsn_passwords(dsn: str) -> list[str]:
    """The passwords a DSN carries: in its authority and as `?password=`."""
    rest = dsn.partition("://")[2]
    authority, _, tail = rest.partition("/")
    userinfo = authority.rpartition("@")[0]
    found = [userinfo.split(":", 1)[1]] if ":" in userinfo else []
    found += re.findall(r"(?i)(?:^|[?&])password=([^&#]*)", tail)
    return [value for value in found if value]


MASK = "********"
# asyncpg's values for sslmode (it refuses others when it connects; we refuse them up front).
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_DSN_SCHEMES = ("postgresql", "postgres")


def masked_dsn(dsn: str) -> str:
    """`dsn` fit for an error line: its password (in the authority or as `?password=`) masked."""
    scheme, sep, rest = dsn.partition("://")
    if not sep:
        return dsn
    authority, slash, tail = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    if at and ":" in userinfo:
        authority = f"{userinfo.split(':', 1)[0]}:{MASK}@{hosts}"
    tail = re.sub(r"(?i)((?:^|[?&])password=)[^&#]*", rf"\g<1>{MASK}", tail)
    return f"{scheme}://{authority}{slash}{tail}"


def parse_database_url(raw: str) -> str:
    """A PostgreSQL URL asyncpg can use: checked here what can be checked without a server
    (scheme, ports, sslmode); unknown options are refused by the server (poller.store.probe)."""
    value = raw.strip()
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in _DSN_SCHEMES:
        raise ValueError("not a PostgreSQL URL (expected postgresql://user:password@host/db)")
    hosts = parts.netloc.rpartition("@")[2]
    for host in hosts.split(","):
        port = host.rpartition("]")[2].partition(":")[2]
        if port and not (port.isdigit() and 0 < int(port) <= 65535):
            raise ValueError(f"port {port!r} is not a number from 1 to 65535")
    try:
        query = urllib.parse.parse_qs(parts.query, strict_parsing=True) if parts.query else {}
    except ValueError:
        raise ValueError(f"malformed options {parts.query!r} (expected ?name=value&…)") from None
    for mode in query.get("sslmode", []):
        if mode not in SSL_MODES:
            raise ValueError(f"sslmode={mode!r}: expected one of {', '.join(SSL_MODES)}")
    return value


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("expected true or false")


def parse_duration(raw: str) -> float:
    """`90`, `90s`, `5m`, `2h`, `1d`, `250ms` → seconds."""
    match = _DURATION.match(raw)
    if not match:
        raise ValueError("expected a duration such as 30s, 5m, 2h or 1d")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_schedule(raw: str) -> tuple[float, ...]:
    parts = [p for p in re.split(r"[,\s]+", raw.strip()) if p]
    if not parts:
        raise ValueError("expected a comma-separated list of durations")
    return tuple(parse_duration(p) for p in parts)


def parse_http_addr(raw: str) -> HttpAddr | None:
    value = raw.strip()
    if not value:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("expected host:port")
    return HttpAddr(host.strip("[]") or "0.0.0.0", int(port))


def parse_url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError("expected an http(s) URL")
    return value


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError("expected a whole number") from None
        if value < minimum:
            raise ValueError(f"must be at least {minimum}")
        return value

    return parse


def _positive_seconds(raw: str) -> float:
    value = parse_duration(raw)
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


def _share(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError("expected a fraction such as 0.8") from None
    if not 0 < value <= 1:
        raise ValueError("must be greater than 0 and at most 1")
    return value


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return value

    return parse


def _signature_scheme(raw: str) -> SignatureScheme:
    return SignatureScheme(_choice(SIGNATURE_SCHEMES)(raw))


def _log_format(raw: str) -> LogFormat:
    return LogFormat(_choice(LOG_FORMATS)(raw))


def _text(raw: str) -> str:
    return raw.strip()


def _path(raw: str) -> Path:
    return Path(raw.strip()).expanduser()


def _org_secret(raw: str) -> str:
    value = raw.strip()
    if len(value) < 16:
        raise ValueError("must be at least 16 characters")
    return value


# Drawn once per process start: every Settings of this process names the same replica.
_PROCESS_NONCE = secrets.token_hex(4)


def _default_replica_id() -> str:
    """Unique per process start (DESIGN §8): hostname and pid alone repeat in containers,
    where every replica may be pid 1 of a host named after the image."""
    return f"{socket.gethostname()}:{os.getpid()}:{_PROCESS_NONCE}"


def _default_data_dir() -> Path:
    return Path("~/.local/share/qbo-poller").expanduser()


def variable(
    name: str,
    parse: Callable[[str], Any],
    default: Any = None,
    *,
    factory: Callable[[], Any] | None = None,
    secret: bool = False,
) -> Any:
    """A Settings field read from the environment variable `name`: the one place where its
    parser and its default are written."""
    metadata = {"variable": name, "parse": parse}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata, repr=not secret)
    return field(default=default, metadata=metadata, repr=not secret)


@dataclass(frozen=True)
class Settings:
    """Everything the daemon reads from its environment. Built by `load_settings`; each field
    names its variable, parser and default once."""

    database_url: str | None = variable("DATABASE_URL", parse_database_url, secret=True)
    data_dir: Path = variable("POLLER_DATA_DIR", _path, factory=_default_data_dir)
    instances_file: Path | None = variable("POLLER_INSTANCES_FILE", _path)
    qbo_client_id: str | None = variable("QBO_CLIENT_ID", _text)
    qbo_client_secret: str | None = variable("QBO_CLIENT_SECRET", _text, secret=True)
    qbo_environment: str = variable(
        "QBO_ENVIRONMENT", _choice(tuple(INTUIT_API_BASE)), "production"
    )
    # Unset: Intuit's base URL for QBO_ENVIRONMENT (see load_settings).
    qbo_api_base_url: str = variable("QBO_API_BASE_URL", parse_url, INTUIT_API_BASE["production"])
    qbo_oauth_token_url: str = variable("QBO_OAUTH_TOKEN_URL", parse_url, INTUIT_TOKEN_URL)
    qbo_oauth_revoke_url: str = variable("QBO_OAUTH_REVOKE_URL", parse_url, INTUIT_REVOKE_URL)
    qbo_oauth_authorize_url: str = variable(
        "QBO_OAUTH_AUTHORIZE_URL", parse_url, INTUIT_AUTHORIZE_URL
    )
    qbo_minor_version: int = variable("QBO_MINOR_VERSION", _int_at_least(1), 75)
    qbo_request_timeout_s: float = variable("QBO_REQUEST_TIMEOUT_SECONDS", _positive_seconds, 60.0)
    # The share of each realm's Intuit budget (500 requests a minute) this daemon may use; the
    # rest is left to the company's other apps and to other daemons (poller.qbo.limiter).
    qbo_budget_share: float = variable("POLLER_QBO_BUDGET_SHARE", _share, 0.8)
    http_addr: HttpAddr | None = variable(
        "POLLER_HTTP_ADDR", parse_http_addr, HttpAddr("127.0.0.1", 8080)
    )
    # A key made by `qbo-poller keygen` (poller.secret_keys); previous keys are only read, so a
    # key is rotated by restarting with both, `qbo-poller rekey`, then dropping the previous.
    secret_key: str | None = variable("POLLER_SECRET_KEY", secret_keys.parse_current, secret=True)
    secret_key_previous: tuple[str, ...] = variable(
        "POLLER_SECRET_KEY_PREVIOUS", secret_keys.parse_previous, (), secret=True
    )
    # Set: the HTTP API (DESIGN §9) is on; every call carries it as `Organization <secret>`.
    api_organization_secret: str | None = variable(
        "POLLER_API_ORGANIZATION_SECRET", _org_secret, secret=True
    )
    # How browsers reach the daemon: the console's OAuth redirect URI is built from it and its
    # cookies are Secure when it is https. Unset: http:// + POLLER_HTTP_ADDR (public_url()).
    public_url: str | None = variable("POLLER_PUBLIC_URL", parse_url)
    log_level: str = variable("POLLER_LOG_LEVEL", _choice(LOG_LEVELS), "info")
    log_format: LogFormat = variable("POLLER_LOG_FORMAT", _log_format, LogFormat.AUTO)
    overlap_seconds: int = variable("POLLER_OVERLAP_SECONDS", _int_at_least(1), 120)
    reconcile_interval_s: float = variable(
        "POLLER_RECONCILE_INTERVAL", _positive_seconds, 6 * 3600.0
    )
    retry_schedule_s: tuple[float, ...] = variable(
        "POLLER_RETRY_SCHEDULE", parse_schedule, parse_schedule(DEFAULT_RETRY_SCHEDULE)
    )
    delivery_timeout_s: float = variable("POLLER_DELIVERY_TIMEOUT_SECONDS", _positive_seconds, 15.0)
    delivery_concurrency: int = variable("POLLER_DELIVERY_CONCURRENCY", _int_at_least(1), 64)
    delivery_per_url_concurrency: int = variable(
        "POLLER_DELIVERY_PER_URL_CONCURRENCY", _int_at_least(1), 8
    )
    # A URL that times out this many times in a row is paused (its breaker opens) for
    # delivery_breaker_pause_s, doubling after each probe that times out, up to the max.
    delivery_breaker_timeouts: int = variable(
        "POLLER_DELIVERY_BREAKER_TIMEOUTS", _int_at_least(1), 5
    )
    delivery_breaker_pause_s: float = variable(
        "POLLER_DELIVERY_BREAKER_PAUSE", _positive_seconds, 30.0
    )
    delivery_breaker_max_pause_s: float = variable(
        "POLLER_DELIVERY_BREAKER_MAX_PAUSE", _positive_seconds, 600.0
    )
    delivery_retention_s: float = variable(
        "POLLER_DELIVERY_RETENTION", _positive_seconds, 7 * 86400.0
    )
    delivery_poll_interval_s: float = variable(
        "POLLER_DELIVERY_POLL_INTERVAL", _positive_seconds, 1.0
    )
    delivery_lease_s: float = variable("POLLER_DELIVERY_LEASE", _positive_seconds, 120.0)
    events_per_notification: int = variable("POLLER_EVENTS_PER_NOTIFICATION", _int_at_least(1), 10)
    signature_scheme: SignatureScheme = variable(
        "POLLER_SIGNATURE_SCHEME", _signature_scheme, SignatureScheme.BOTH
    )
    callback_deny_private: bool = variable("POLLER_CALLBACK_DENY_PRIVATE", parse_bool, False)
    auto_migrate: bool = variable("POLLER_AUTO_MIGRATE", parse_bool, True)
    metrics_per_instance: bool = variable("POLLER_METRICS_PER_INSTANCE", parse_bool, False)
    shutdown_grace_s: float = variable("POLLER_SHUTDOWN_GRACE_SECONDS", _positive_seconds, 5.0)
    db_pool_size: int = variable("POLLER_DB_POOL_SIZE", _int_at_least(2), 10)
    # How long `run` retries a DATABASE_URL server that cannot be reached (DESIGN §7).
    startup_timeout_s: float = variable("POLLER_STARTUP_TIMEOUT", parse_duration, 60.0)
    replica_timeout_s: float = variable("POLLER_REPLICA_TIMEOUT", _positive_seconds, 15.0)
    replica_id: str = variable("POLLER_REPLICA_ID", _text, factory=_default_replica_id)
    # Intuit webhooks (DESIGN §11): the app's verifier token (instances may add their own), and
    # how long notifications of one realm are collected into one poll request.
    webhook_verifier_token: str | None = variable("QBO_WEBHOOK_VERIFIER_TOKEN", _text, secret=True)
    webhook_coalesce_s: float = variable("POLLER_WEBHOOK_COALESCE", _positive_seconds, 1.0)
    env_file: Path | None = None  # the --env-file that was read, if any

    def console_url(self) -> str:
        """POLLER_PUBLIC_URL, or http:// + POLLER_HTTP_ADDR."""
        if self.public_url:
            return self.public_url
        return f"http://{self.http_addr or HttpAddr('127.0.0.1', 8080)}"

    def secret_values(self) -> list[str]:
        """The configured secret values, for log redaction."""
        values = [
            self.qbo_client_secret,
            self.secret_key,
            self.api_organization_secret,
            self.webhook_verifier_token,
            *self.secret_key_previous,
        ]
        if self.database_url:
            values.extend(_dsn_passwords(self.database_url))
        return [v for v in values if v]


def variables() -> dict[str, str]:
    """Every environment variable the daemon reads → the Settings field it sets."""
    return {
        settings_field.metadata["variable"]: settings_field.name
        for settings_field in fields(Settings)
        if "variable" in settings_field.metadata
    }


SECRET_VARIABLES = frozenset(
    settings_field.metadata["variable"]
    for settings_field in fields(Settings)
    if "variable" in settings_field.metadata and not settings_field.repr
)


# --- loading -------------------------------------------------------------------------------


def read_environment(
    env_file: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The process environment over the `.env` file (real environment variables win)."""
    environ = os.environ if environ is None else environ
    path = Path(env_file) if env_file else Path(".env")
    merged: dict[str, str] = {}
    if env_file and not path.is_file():
        raise ConfigError(f"--env-file: no such file: {path}")
    if path.is_file():
        merged.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    merged.update(environ)
    return merged


class _Reader:
    """Reads one variable at a time and turns parse failures into one-line ConfigErrors."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def is_set(self, name: str) -> bool:
        raw = self.env.get(name)
        # An empty POLLER_HTTP_ADDR means "no listener"; elsewhere empty means unset.
        return raw is not None and (raw.strip() != "" or name == "POLLER_HTTP_ADDR")

    def parse(self, name: str, parse: Callable[[str], T]) -> T:
        raw = self.env[name]
        try:
            return parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{name}={_shown(name, raw)}: {exc}") from None


def _shown(name: str, raw: str) -> str:
    """A value for an error line: secrets hidden, a DSN with its password masked, the rest as
    written."""
    if name == "DATABASE_URL":
        return masked_dsn(raw.strip())
    return "<hidden>" if name in SECRET_VARIABLES else repr(raw)


def unknown_variables(names: Iterable[str]) -> list[str]:
    """One warning line for each POLLER_* or QBO_* name the daemon does not read, with the
    nearest known name (DESIGN §7): typos would otherwise be ignored without a word."""
    known = sorted(variables())
    lines = []
    for name in sorted(set(names)):
        if not name.startswith(("POLLER_", "QBO_")) or name in known:
            continue
        nearest = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f", did you mean {nearest[0]}?" if nearest else ""
        lines.append(f"{name}: unknown variable{hint}")
    return lines


def load_settings(
    env: Mapping[str, str] | None = None, env_file: str | Path | None = None
) -> Settings:
    """Build the frozen Settings from `env` (default: os.environ over `.env`); a variable that
    is unset (or empty) keeps the field's default."""
    if env is None:
        env = read_environment(env_file)
    reader = _Reader(env)
    values: dict[str, Any] = {}
    for settings_field in fields(Settings):
        name = settings_field.metadata.get("variable")
        if name is not None and reader.is_set(name):
            values[settings_field.name] = reader.parse(name, settings_field.metadata["parse"])
    if "qbo_api_base_url" not in values:
        environment = values.get("qbo_environment", "production")
        values["qbo_api_base_url"] = INTUIT_API_BASE[environment]
    if values.get("secret_key_previous") and "secret_key" not in values:
        # Old keys only read: with no current key, new secrets would be written in clear.
        raise ConfigError(
            "POLLER_SECRET_KEY=<unset>: POLLER_SECRET_KEY_PREVIOUS is set, so set "
            "POLLER_SECRET_KEY to the key to encrypt with (qbo-poller keygen makes one)"
        )
    return Settings(**values, env_file=Path(env_file) if env_file else None)
