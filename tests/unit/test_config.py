"""Settings: defaults, parsing, and one-line errors naming the variable and the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from poller.config import (
    HttpAddr,
    load_settings,
    masked_dsn,
    parse_duration,
    parse_schedule,
    read_environment,
    unknown_variables,
)
from poller.errors import ConfigError


def test_defaults_match_the_design() -> None:
    s = load_settings(env={})
    assert s.database_url is None
    assert s.qbo_api_base_url == "https://quickbooks.api.intuit.com"
    assert s.qbo_minor_version == 75
    assert s.http_addr == HttpAddr("127.0.0.1", 8080)
    assert s.overlap_seconds == 120
    assert s.reconcile_interval_s == 6 * 3600
    assert s.retry_schedule_s == (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
    assert s.delivery_timeout_s == 15 and s.delivery_concurrency == 64
    assert s.events_per_notification == 10 and s.signature_scheme == "both"
    assert s.auto_migrate is True


def test_sandbox_picks_intuit_sandbox_url_and_override_wins() -> None:
    assert (
        load_settings(env={"QBO_ENVIRONMENT": "sandbox"}).qbo_api_base_url
        == "https://sandbox-quickbooks.api.intuit.com"
    )
    s = load_settings(
        env={"QBO_ENVIRONMENT": "sandbox", "QBO_API_BASE_URL": "http://127.0.0.1:8765/"}
    )
    assert s.qbo_api_base_url == "http://127.0.0.1:8765"


@pytest.mark.parametrize(
    "raw,seconds",
    [
        ("90", 90),
        ("90s", 90),
        ("5m", 300),
        ("2h", 7200),
        ("1d", 86400),
        ("250ms", 0.25),
        ("0.5s", 0.5),
    ],
)
def test_durations(raw: str, seconds: float) -> None:
    assert parse_duration(raw) == pytest.approx(seconds)


def test_schedule_accepts_commas_and_spaces() -> None:
    assert parse_schedule("5s, 5m,30m 2h") == (5, 300, 1800, 7200)


def test_empty_http_addr_disables_the_listener() -> None:
    assert load_settings(env={"POLLER_HTTP_ADDR": ""}).http_addr is None
    assert load_settings(env={"POLLER_HTTP_ADDR": "0.0.0.0:9000"}).http_addr == HttpAddr(
        "0.0.0.0", 9000
    )


@pytest.mark.parametrize(
    "name,value,fragment",
    [
        ("POLLER_OVERLAP_SECONDS", "abc", "POLLER_OVERLAP_SECONDS='abc': expected a whole number"),
        ("POLLER_OVERLAP_SECONDS", "0", "POLLER_OVERLAP_SECONDS='0': must be at least 1"),
        ("POLLER_RETRY_SCHEDULE", "5s,soon", "POLLER_RETRY_SCHEDULE='5s,soon'"),
        ("POLLER_SIGNATURE_SCHEME", "md5", "expected one of elements, standard, both"),
        ("QBO_ENVIRONMENT", "staging", "QBO_ENVIRONMENT='staging'"),
        ("POLLER_HTTP_ADDR", "localhost", "POLLER_HTTP_ADDR='localhost': expected host:port"),
        ("POLLER_AUTO_MIGRATE", "maybe", "POLLER_AUTO_MIGRATE='maybe': expected true or false"),
        ("QBO_API_BASE_URL", "ftp://x", "QBO_API_BASE_URL='ftp://x': expected an http(s) URL"),
        ("POLLER_LOG_LEVEL", "loud", "POLLER_LOG_LEVEL='loud'"),
        ("POLLER_QBO_BUDGET_SHARE", "0", "POLLER_QBO_BUDGET_SHARE='0': must be greater than 0"),
        ("POLLER_QBO_BUDGET_SHARE", "1.5", "POLLER_QBO_BUDGET_SHARE='1.5': must be greater"),
        ("POLLER_QBO_BUDGET_SHARE", "most", "POLLER_QBO_BUDGET_SHARE='most': expected a fraction"),
        ("POLLER_QBO_BUDGET_SHARE", "nan", "POLLER_QBO_BUDGET_SHARE='nan': must be greater"),
    ],
)
def test_invalid_values_name_the_variable_and_value(name: str, value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={name: value})
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_secret_values_are_never_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={"POLLER_SECRET_KEY": "short"})
    assert "short" not in str(info.value) and "POLLER_SECRET_KEY" in str(info.value)


def test_env_file_is_read_and_real_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / "custom.env"
    env_file.write_text("POLLER_OVERLAP_SECONDS=30\nPOLLER_EVENTS_PER_NOTIFICATION=3\n")
    merged = read_environment(env_file, environ={"POLLER_EVENTS_PER_NOTIFICATION": "7"})
    s = load_settings(env=merged)
    assert s.overlap_seconds == 30
    assert s.events_per_notification == 7


def test_missing_env_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--env-file"):
        read_environment(tmp_path / "nope.env", environ={})


def test_secret_values_include_dsn_password() -> None:
    s = load_settings(
        env={
            "DATABASE_URL": "postgresql://u:pa55word!@db/x",
            "QBO_CLIENT_SECRET": "client-secret-value",
        }
    )
    assert set(s.secret_values()) == {"pa55word!", "client-secret-value"}


def test_budget_share_accepts_fractions_up_to_the_whole_budget() -> None:
    assert load_settings(env={"POLLER_QBO_BUDGET_SHARE": " 0.5 "}).qbo_budget_share == 0.5
    assert load_settings(env={"POLLER_QBO_BUDGET_SHARE": "1"}).qbo_budget_share == 1.0
    assert load_settings(env={}).qbo_budget_share == 0.8


def test_startup_timeout_defaults_to_60_seconds() -> None:
    assert load_settings(env={}).startup_timeout_s == 60.0
    assert load_settings(env={"POLLER_STARTUP_TIMEOUT": "5s"}).startup_timeout_s == 5.0


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://u:secret@h:5432/db", "postgresql://u:********@h:5432/db"),
        ("postgresql://u:p@ss@h/db", "postgresql://u:********@h/db"),
        (
            "postgresql://u@h/db?sslmode=disable&password=pw",
            "postgresql://u@h/db?sslmode=disable&password=********",
        ),
        ("postgresql:///db?host=/run/postgresql", "postgresql:///db?host=/run/postgresql"),
    ],
)
def test_masked_dsn_hides_every_password(dsn: str, shown: str) -> None:
    assert masked_dsn(dsn) == shown


@pytest.mark.parametrize(
    ("dsn", "says"),
    [
        ("mysql://app:pw@db/app", "not a PostgreSQL URL"),
        ("db.example:5432/app", "not a PostgreSQL URL"),
        ("postgresql://h:abc/db", "port 'abc' is not a number"),
        ("postgresql://h:0/db", "port '0' is not a number"),
        ("postgresql://h/db?sslmode=on", "sslmode='on': expected one of disable"),
        ("postgresql://h/db?nonsense", "malformed options 'nonsense'"),
    ],
)
def test_database_url_that_cannot_work_is_refused_naming_it(dsn: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"DATABASE_URL": dsn})
    assert str(caught.value).startswith(f"DATABASE_URL={masked_dsn(dsn)}: {says}")
    assert ":pw@" not in str(caught.value)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgres://u:p@h/db",
        "postgresql://u@[::1]:5432/db?sslmode=verify-full",
        "postgresql://u:p@h1:5432,h2:5433/db?target_session_attrs=read-write",
        "postgresql:///qbo?host=/var/run/postgresql",
    ],
)
def test_database_urls_asyncpg_takes_are_accepted(dsn: str) -> None:
    assert load_settings(env={"DATABASE_URL": dsn}).database_url == dsn


def test_secret_values_include_a_query_password() -> None:
    s = load_settings(env={"DATABASE_URL": "postgresql://u@db/x?password=qu3ry-pass"})
    assert s.secret_values() == ["qu3ry-pass"]


def test_unknown_variables_name_the_nearest_known_one() -> None:
    names = ["POLLER_INSTANCE_FILE", "QBO_CLIENTID", "POLLER_XYZZY", "QBO_CLIENT_ID", "HOME"]
    assert unknown_variables(names) == [
        "POLLER_INSTANCE_FILE: unknown variable, did you mean POLLER_INSTANCES_FILE?",
        "POLLER_XYZZY: unknown variable",
        "QBO_CLIENTID: unknown variable, did you mean QBO_CLIENT_ID?",
    ]
