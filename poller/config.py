"""Settings: the environment (and `.env`), validated once at start-up and frozen.

Every invalid value raises `ConfigError` with one line that names the variable and the
offending value (secrets are never echoed). The CLI turns that into exit code 2.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from dotenv import dotenv_values

from poller.errors import ConfigError

T = TypeVar("T")

INTUIT_API_BASE = {
    "production": "https://quickbooks.api.intuit.com",
    "sandbox": "https://sandbox-quickbooks.api.intuit.com",
}
INTUIT_TOKEN_URL = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"
INTUIT_REVOKE_URL = "https://developer.api.intuit.com/v2/oauth2/tokens/revoke"

DEFAULT_RETRY_SCHEDULE = "5s,5m,30m,2h,5h,10h,14h,20h,24h"
SIGNATURE_SCHEMES = ("elements", "standard", "both")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("json", "console", "auto")

# Variables whose values are secrets: never echoed in errors, redacted from logs.
SECRET_VARIABLES = frozenset({"QBO_CLIENT_SECRET", "POLLER_SECRET_KEY", "DATABASE_URL"})

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


@dataclass(frozen=True)
class Settings:
    """Everything the daemon reads from its environment. Built by `load_settings`."""

    database_url: str | None = None
    data_dir: Path = field(default_factory=lambda: Path("~/.local/share/qbo-poller").expanduser())
    instances_file: Path | None = None
    qbo_client_id: str | None = None
    qbo_client_secret: str | None = field(default=None, repr=False)
    qbo_environment: str = "production"
    qbo_api_base_url: str = INTUIT_API_BASE["production"]
    qbo_oauth_token_url: str = INTUIT_TOKEN_URL
    qbo_oauth_revoke_url: str = INTUIT_REVOKE_URL
    qbo_minor_version: int = 75
    qbo_request_timeout_s: float = 60.0
    http_addr: HttpAddr | None = HttpAddr("127.0.0.1", 8080)
    secret_key: str | None = field(default=None, repr=False)
    log_level: str = "info"
    log_format: str = "auto"
    overlap_seconds: int = 120
    reconcile_interval_s: float = 6 * 3600.0
    retry_schedule_s: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
    delivery_timeout_s: float = 15.0
    delivery_concurrency: int = 64
    delivery_per_url_concurrency: int = 8
    delivery_retention_s: float = 7 * 86400.0
    delivery_poll_interval_s: float = 1.0
    delivery_lease_s: float = 120.0
    events_per_notification: int = 10
    signature_scheme: str = "both"
    callback_deny_private: bool = False
    auto_migrate: bool = True
    shutdown_grace_s: float = 5.0
    db_pool_size: int = 10
    pair_lease_s: float = 60.0
    replica_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    env_file: Path | None = None

    def secret_values(self) -> list[str]:
        """The configured secret values, for log redaction."""
        values = [self.qbo_client_secret, self.secret_key]
        if self.database_url and "@" in self.database_url:
            password = _dsn_password(self.database_url)
            values.append(password)
        return [v for v in values if v]


def _dsn_password(dsn: str) -> str | None:
    match = re.match(r"^[a-z]+://[^:/@]*:([^@]*)@", dsn)
    return match.group(1) if match and match.group(1) else None


# --- value parsers: each raises ValueError with a short reason ------------------------------


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


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return value

    return parse


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

    def get(self, name: str, parse: Callable[[str], T], default: T) -> T:
        raw = self.env.get(name)
        if raw is None or (raw.strip() == "" and name != "POLLER_HTTP_ADDR"):
            return default
        try:
            return parse(raw)
        except ValueError as exc:
            shown = "<hidden>" if name in SECRET_VARIABLES else repr(raw)
            raise ConfigError(f"{name}={shown}: {exc}") from None

    def text(self, name: str) -> str | None:
        raw = self.env.get(name, "").strip()
        return raw or None


def load_settings(
    env: Mapping[str, str] | None = None, env_file: str | Path | None = None
) -> Settings:
    """Build the frozen Settings from `env` (default: os.environ over `.env`)."""
    if env is None:
        env = read_environment(env_file)
    r = _Reader(env)
    environment = r.get("QBO_ENVIRONMENT", _choice(("production", "sandbox")), "production")
    data_dir = Path(r.text("POLLER_DATA_DIR") or "~/.local/share/qbo-poller").expanduser()
    instances_file = r.text("POLLER_INSTANCES_FILE")
    secret_key = r.text("POLLER_SECRET_KEY")
    if secret_key is not None and len(secret_key) < 16:
        raise ConfigError("POLLER_SECRET_KEY=<hidden>: must be at least 16 characters")
    return Settings(
        database_url=r.text("DATABASE_URL"),
        data_dir=data_dir,
        instances_file=Path(instances_file).expanduser() if instances_file else None,
        qbo_client_id=r.text("QBO_CLIENT_ID"),
        qbo_client_secret=r.text("QBO_CLIENT_SECRET"),
        qbo_environment=environment,
        qbo_api_base_url=r.get("QBO_API_BASE_URL", parse_url, INTUIT_API_BASE[environment]),
        qbo_oauth_token_url=r.get("QBO_OAUTH_TOKEN_URL", parse_url, INTUIT_TOKEN_URL),
        qbo_oauth_revoke_url=r.get("QBO_OAUTH_REVOKE_URL", parse_url, INTUIT_REVOKE_URL),
        qbo_minor_version=r.get("QBO_MINOR_VERSION", _int_at_least(1), 75),
        qbo_request_timeout_s=r.get("QBO_REQUEST_TIMEOUT_SECONDS", _positive_seconds, 60.0),
        http_addr=r.get("POLLER_HTTP_ADDR", parse_http_addr, HttpAddr("127.0.0.1", 8080)),
        secret_key=secret_key,
        log_level=r.get("POLLER_LOG_LEVEL", _choice(LOG_LEVELS), "info"),
        log_format=r.get("POLLER_LOG_FORMAT", _choice(LOG_FORMATS), "auto"),
        overlap_seconds=r.get("POLLER_OVERLAP_SECONDS", _int_at_least(1), 120),
        reconcile_interval_s=r.get("POLLER_RECONCILE_INTERVAL", _positive_seconds, 6 * 3600.0),
        retry_schedule_s=r.get(
            "POLLER_RETRY_SCHEDULE", parse_schedule, parse_schedule(DEFAULT_RETRY_SCHEDULE)
        ),
        delivery_timeout_s=r.get("POLLER_DELIVERY_TIMEOUT_SECONDS", _positive_seconds, 15.0),
        delivery_concurrency=r.get("POLLER_DELIVERY_CONCURRENCY", _int_at_least(1), 64),
        delivery_per_url_concurrency=r.get(
            "POLLER_DELIVERY_PER_URL_CONCURRENCY", _int_at_least(1), 8
        ),
        delivery_retention_s=r.get("POLLER_DELIVERY_RETENTION", _positive_seconds, 7 * 86400.0),
        delivery_poll_interval_s=r.get("POLLER_DELIVERY_POLL_INTERVAL", _positive_seconds, 1.0),
        delivery_lease_s=r.get("POLLER_DELIVERY_LEASE", _positive_seconds, 120.0),
        events_per_notification=r.get("POLLER_EVENTS_PER_NOTIFICATION", _int_at_least(1), 10),
        signature_scheme=r.get("POLLER_SIGNATURE_SCHEME", _choice(SIGNATURE_SCHEMES), "both"),
        callback_deny_private=r.get("POLLER_CALLBACK_DENY_PRIVATE", parse_bool, False),
        auto_migrate=r.get("POLLER_AUTO_MIGRATE", parse_bool, True),
        shutdown_grace_s=r.get("POLLER_SHUTDOWN_GRACE_SECONDS", _positive_seconds, 5.0),
        db_pool_size=r.get("POLLER_DB_POOL_SIZE", _int_at_least(2), 10),
        pair_lease_s=r.get("POLLER_PAIR_LEASE", _positive_seconds, 60.0),
        replica_id=r.text("POLLER_REPLICA_ID") or f"{socket.gethostname()}:{os.getpid()}",
        env_file=Path(env_file) if env_file else None,
    )
