"""Open Connectors instance bodies: every rule of DESIGN §3."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from poller import resources
from poller.errors import ConfigError
from poller.instances import ClientDefaults, load_file, parse_instance, split_resources

BODY: dict[str, Any] = {
    "element": {"key": "quickbooks"},
    "providerData": {"code": "AUTH-CODE-1", "realmId": "9130357766900456"},
    "configuration": {
        "oauth.callback.url": "https://myapp.example/oauth",
        "oauth.api.key": "CLIENT-ID",
        "oauth.api.secret": "CLIENT-SECRET-XYZ",
        "authentication.type": "oauth2",
        "event.notification.enabled": True,
        "event.vendor.type": "polling",
        "event.notification.callback.url": "https://myapp.example/qbo-events",
        "event.notification.signature.key": "SIGNATURE-KEY-1",
        "event.poller.refresh_interval": "15",
        "event.poller.urls": "customers|invoices|payments",
    },
    "tags": ["Docs"],
    "name": "API Instance",
}


def body(**config: Any) -> dict[str, Any]:
    b = copy.deepcopy(BODY)
    for key, value in config.items():
        key = key.replace("__", ".")
        if value is None:
            b["configuration"].pop(key, None)
        else:
            b["configuration"][key] = value
    return b


def test_the_design_example_parses() -> None:
    inst = parse_instance(BODY)
    assert inst.name == "API Instance" and inst.realm_id == "9130357766900456"
    assert inst.provider.code == "AUTH-CODE-1" and inst.provider.refresh_token is None
    assert inst.redirect_uri == "https://myapp.example/oauth"
    assert inst.resources == ("customers", "invoices", "payments")
    assert inst.refresh_interval_s == 15 * 60
    assert inst.events_enabled and inst.vendor_type == "polling"
    assert inst.signature_key == "SIGNATURE-KEY-1"
    assert inst.tags == ("Docs",) and inst.timezone == "UTC" and inst.initial == "now"
    assert "oauth.api.secret" not in inst.configuration
    assert "event.notification.signature.key" not in inst.configuration
    assert "CLIENT-SECRET-XYZ" not in repr(inst) and "SIGNATURE-KEY-1" not in repr(inst)


@pytest.mark.parametrize(
    "value,expected",
    [
        ("customers|invoices", ("customers", "invoices")),
        ("customers, invoices", ("customers", "invoices")),
        ("customers invoices\nvendors", ("customers", "invoices", "vendors")),
        (["customers", "invoices"], ("customers", "invoices")),
        ('["customers","invoices"]', ("customers", "invoices")),
        ("Customers|INVOICES", ("customers", "invoices")),
        ("customers|customers", ("customers",)),
        ("estimates|deposits", ("estimates", "deposits")),
    ],
)
def test_resource_list_forms(value: Any, expected: tuple[str, ...]) -> None:
    assert split_resources(value) == expected


def test_run_together_form_of_the_published_docs() -> None:
    run_together = (
        "bill-paymentsbillsclassescredit-memoscredit-termscurrenciescustomersemployees"
        "invoicesjournal-entriesledger-accountspayment-methodspaymentsproducts"
        "purchase-ordersrefund-receiptssales-receiptstax-codestax-ratestime-activities"
        "vendor-creditsvendors"
    )
    assert split_resources(run_together) == resources.DEFAULT_NAMES
    assert len(resources.DEFAULT_NAMES) == 22


def test_default_is_all_22_resources() -> None:
    inst = parse_instance(body(event__poller__urls=None))
    assert inst.resources == resources.DEFAULT_NAMES


def test_unknown_resource_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        parse_instance(body(event__poller__urls="customers|widgets"))
    message = str(info.value)
    assert "event.poller.urls" in message and "'widgets'" in message
    assert "bill-payments" in message and "vendors" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "value,seconds", [("15", 900), (15, 900), ("0.02", 1.2), (0.5, 30), (" 2 ", 120)]
)
def test_refresh_interval_minutes_with_fractions(value: Any, seconds: float) -> None:
    assert parse_instance(
        body(event__poller__refresh_interval=value)
    ).refresh_interval_s == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["soon", "-1", "0", True, "nan"])
def test_bad_refresh_interval(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"event.poller.refresh_interval"):
        parse_instance(body(event__poller__refresh_interval=value))


@pytest.mark.parametrize(
    "value,shown", [("1e-9", "'1e-9'"), ("1e300", "'1e300'"), (0.009, "0.009"), ("1441", "'1441'")]
)
def test_refresh_interval_outside_its_bounds(value: Any, shown: str) -> None:
    """1e-9 spent a realm's whole Intuit budget; 1e300 overflowed the next due time."""
    with pytest.raises(ConfigError) as info:
        parse_instance(body(event__poller__refresh_interval=value))
    assert str(info.value) == (
        f"instance 'API Instance': event.poller.refresh_interval={shown}: "
        "must be between 0.01 and 1440 minutes"
    )


@pytest.mark.parametrize("value,seconds", [("0.01", 0.6), ("1440", 86400.0)])
def test_refresh_interval_bounds_are_inclusive(value: str, seconds: float) -> None:
    inst = parse_instance(body(event__poller__refresh_interval=value))
    assert inst.refresh_interval_s == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value,expected", [(True, True), ("true", True), ("FALSE", False), (False, False)]
)
def test_boolean_strings(value: Any, expected: bool) -> None:
    b = body(event__notification__enabled=value)
    assert parse_instance(b).events_enabled is expected


def test_bad_boolean_names_key_and_value() -> None:
    with pytest.raises(
        ConfigError, match=r"event.notification.enabled='yes please': expected true or false"
    ):
        parse_instance(body(event__notification__enabled="yes please"))


def test_oauth1_body_is_refused_with_the_retirement_date() -> None:
    b = copy.deepcopy(BODY)
    b["providerData"] = {
        "oauth_token": "tok",
        "oauth_verifier": "ver",
        "secret": "s",
        "realmId": "123",
    }
    with pytest.raises(ConfigError) as info:
        parse_instance(b)
    assert "OAuth 1.0" in str(info.value) and "2019-12-17" in str(info.value)
    assert "tok" not in str(info.value).replace("providerData.oauth_token", "")


def test_oauth1_authentication_type_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"2019-12-17"):
        parse_instance(body(authentication__type="oauth1"))


def test_refresh_token_provider_data() -> None:
    b = copy.deepcopy(BODY)
    b["providerData"] = {"refreshToken": "RT-123456", "realmId": "42"}
    inst = parse_instance(b)
    assert inst.provider.refresh_token == "RT-123456" and inst.provider.code is None


def test_missing_provider_credentials() -> None:
    b = copy.deepcopy(BODY)
    b["providerData"] = {"realmId": "42"}
    with pytest.raises(ConfigError, match="providerData"):
        parse_instance(b)


def test_client_keys_fall_back_to_environment_defaults() -> None:
    b = body(oauth__api__key=None, oauth__api__secret=None)
    with pytest.raises(ConfigError, match=r"oauth.api.key.*QBO_CLIENT_ID"):
        parse_instance(b)
    inst = parse_instance(b, ClientDefaults("ENV-ID", "ENV-SECRET"))
    assert (inst.client_id, inst.client_secret) == ("ENV-ID", "ENV-SECRET")


def test_events_enabled_needs_a_callback_url() -> None:
    with pytest.raises(ConfigError, match=r"event.notification.callback.url.*required"):
        parse_instance(body(event__notification__callback__url=None))


@pytest.mark.parametrize("url", ["ftp://example.com/x", "example.com/hook", "mailto:a@b.c"])
def test_callback_url_must_be_http(url: str) -> None:
    with pytest.raises(ConfigError, match=r"must be an http:// or https:// URL"):
        parse_instance(body(event__notification__callback__url=url))


def test_vendor_type_webhooks_spelling() -> None:
    assert parse_instance(body(event__vendor__type="webhooks")).vendor_type == "webhook"
    with pytest.raises(ConfigError, match=r"event.vendor.type"):
        parse_instance(body(event__vendor__type="push"))


def test_timezone_initial_and_deactivated_as_deleted() -> None:
    inst = parse_instance(
        body(
            event__poller__timezone="Europe/Berlin",
            event__poller__initial="backfill",
            event__poller__deactivated_as_deleted="true",
        )
    )
    assert (inst.timezone, inst.initial, inst.deactivated_as_deleted) == (
        "Europe/Berlin",
        "backfill",
        True,
    )
    with pytest.raises(ConfigError, match=r"event.poller.timezone='Mars/Base'"):
        parse_instance(body(event__poller__timezone="Mars/Base"))


@pytest.mark.parametrize("value,expected", [(True, True), ("true", True), ("False", False)])
def test_changes_option_is_a_boolean(value: Any, expected: bool) -> None:
    assert parse_instance(body()).changes is False  # off unless asked
    assert parse_instance(body(event__poller__changes=value)).changes is expected


def test_bad_changes_option_names_key_and_value() -> None:
    with pytest.raises(ConfigError, match=r"event.poller.changes='fields': expected true or false"):
        parse_instance(body(event__poller__changes="fields"))


def test_code_needs_the_redirect_uri() -> None:
    with pytest.raises(ConfigError, match=r"oauth.callback.url"):
        parse_instance(body(oauth__callback__url=None))


def test_secrets_never_appear_in_errors() -> None:
    b = body(event__notification__signature__key=12345678)
    with pytest.raises(ConfigError) as info:
        parse_instance(b)
    assert "12345678" not in str(info.value)


def test_file_with_array_and_duplicate_names(tmp_path: Path) -> None:
    other = copy.deepcopy(BODY)
    other["name"] = "Second"
    path = tmp_path / "instances.json"
    path.write_text(json.dumps([BODY, other]))
    assert [i.name for i in load_file(path)] == ["API Instance", "Second"]
    path.write_text(json.dumps([BODY, BODY]))
    with pytest.raises(ConfigError, match=r"appears twice"):
        load_file(path)


def test_malformed_json_reports_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "name": "x",\n  "configuration": {,}\n}\n')
    with pytest.raises(ConfigError) as info:
        load_file(path)
    assert "line 3 column 21" in str(info.value)
