"""Hostile instance bodies (issue 16): each is refused with one exact line naming the key, the
value escaped (or hidden when it is, or may hold, a secret), never coerced, never a traceback.

`HOSTILE` is shared: tests/e2e/test_hostile_files.py feeds the same bodies to the real CLI,
tests/api/test_hostile_bodies.py to the real API.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from poller import instances, logs
from poller.errors import ConfigError
from poller.instances import load_bodies, parse_instance, segment_run_together, split_resources
from tests.unit.test_instances import BODY

PREFIX = "instance 'API Instance': "
CONTROL = "control characters (CR, LF, ESC, ...) are not allowed"
PASTED_SECRET = "pasted-secret-0123456789"


def changed(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    body = copy.deepcopy(BODY)
    change(body)
    return body


def config(key: str, value: Any) -> dict[str, Any]:
    return changed(lambda b: b["configuration"].__setitem__(key, value))


def top(key: str, value: Any) -> dict[str, Any]:
    return changed(lambda b: b.__setitem__(key, value))


def provider(key: str, value: Any) -> dict[str, Any]:
    return changed(lambda b: b["providerData"].__setitem__(key, value))


def nested(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = {"a": value}
    return value


# name → (body, the exact message). A backslash in a message is a literal backslash: control
# characters are shown as escapes, never raw.
HOSTILE: dict[str, tuple[dict[str, Any], str]] = {
    "code is an array": (
        provider("code", ["AUTH-CODE-1"]),
        PREFIX + "providerData.code=<hidden>: expected a string, got an array",
    ),
    "refreshToken is a number": (
        changed(lambda b: b.__setitem__("providerData", {"refreshToken": 5, "realmId": "1"})),
        PREFIX + "providerData.refreshToken=<hidden>: expected a string, got a number",
    ),
    "realmId is a boolean": (
        provider("realmId", True),
        PREFIX + "providerData.realmId=true: expected the company's numeric realm id",
    ),
    "providerData is a string": (
        top("providerData", f'{{"code": "{PASTED_SECRET}", "realmId": "1"}}'),
        PREFIX + "providerData: expected an object with code (or refreshToken) and realmId, "
        "got a string (not shown: it may hold secrets)",
    ),
    "providerData is an array": (
        top("providerData", [PASTED_SECRET]),
        PREFIX + "providerData: expected an object with code (or refreshToken) and realmId, "
        "got an array (not shown: it may hold secrets)",
    ),
    "configuration is a string": (
        top("configuration", f"oauth.api.secret={PASTED_SECRET}"),
        PREFIX + "configuration: expected a JSON object, got a string "
        "(not shown: it may hold secrets)",
    ),
    "configuration is a number": (
        top("configuration", 7),
        PREFIX + "configuration: expected a JSON object, got a number "
        "(not shown: it may hold secrets)",
    ),
    "name with ANSI escapes": (
        top("name", "evil\x1b[31mred"),
        "instance 'evil\\x1b[31mred': name='evil\\x1b[31mred': " + CONTROL,
    ),
    "name with CR LF": (
        top("name", "two\r\nlines"),
        "instance 'two\\r\\nlines': name='two\\r\\nlines': " + CONTROL,
    ),
    "name with a bidi override": (
        top("name", "abc\u202edcb"),
        "instance 'abc\\u202edcb': name='abc\\u202edcb': " + CONTROL,
    ),
    "name is an array": (
        top("name", ["API Instance"]),
        'instance: name=["API Instance"]: expected a string, got an array',
    ),
    "name too long": (
        top("name", "n" * 201),
        "instance '" + "n" * 60 + "'...: name: longer than 200 characters (201)",
    ),
    "tag with LF": (
        top("tags", ["Docs", "a\nb"]),
        PREFIX + "tags[1]='a\\nb': " + CONTROL,
    ),
    "too many tags": (
        top("tags", [f"t{i}" for i in range(101)]),
        PREFIX + "tags: more than 100 items (101)",
    ),
    "callback URL with a header injection": (
        config("event.notification.callback.url", "https://h.example/x\r\nX-Injected: 1"),
        PREFIX
        + "event.notification.callback.url='https://h.example/x\\r\\nX-Injected: 1': "
        + CONTROL,
    ),
    "callback URL too long": (
        config("event.notification.callback.url", "https://h.example/" + "p" * 2100),
        PREFIX + "event.notification.callback.url: longer than 2048 characters (2118)",
    ),
    "callback URL with a port beyond 65535": (
        config("event.notification.callback.url", "https://h.example:99999/x"),
        PREFIX + "event.notification.callback.url='https://h.example:99999/x': "
        "must be an http:// or https:// URL with a valid host and port",
    ),
    "callback URL with credentials only": (
        config("event.notification.callback.url", f"https://user:{PASTED_SECRET}@/x?t=1"),
        PREFIX + "event.notification.callback.url='https://***@/x?***': "
        "must be an http:// or https:// URL with a host",
    ),
    "redirect URL with a token, not http": (
        config("oauth.callback.url", f"ftp://u:{PASTED_SECRET}@h.example/cb?token=1"),
        PREFIX + "oauth.callback.url='ftp://***@h.example/cb?***': must be an http:// or "
        "https:// URL",
    ),
    "secret with a control character": (
        config("oauth.api.secret", PASTED_SECRET + "\x07"),
        PREFIX + "oauth.api.secret=<hidden>: " + CONTROL,
    ),
    "signature key is a number": (
        config("event.notification.signature.key", 123456789),
        PREFIX + "event.notification.signature.key=<hidden>: expected a string, got a number",
    ),
    "unknown secret-named key with a control character": (
        config("my.api.token", PASTED_SECRET + "\n"),
        PREFIX + "my.api.token=<hidden>: " + CONTROL,
    ),
    "client id is a number": (
        config("oauth.api.key", 5),
        PREFIX + "oauth.api.key=5: expected a string, got a number",
    ),
    "boolean as a number": (
        config("event.notification.enabled", 1),
        PREFIX + "event.notification.enabled=1: expected true or false",
    ),
    "changes not a boolean": (
        config("event.poller.changes", "maybe"),
        PREFIX + "event.poller.changes='maybe': expected true or false",
    ),
    "interval as an array": (
        config("event.poller.refresh_interval", [15]),
        PREFIX + "event.poller.refresh_interval=[15]: expected a number of minutes",
    ),
    "vendor type as an array": (
        config("event.vendor.type", ["polling"]),
        PREFIX + 'event.vendor.type=["polling"]: expected polling or webhook',
    ),
    "resources as numbers": (
        config("event.poller.urls", [1, 2]),
        PREFIX + "event.poller.urls=[1, 2]: expected resource names (strings)",
    ),
    "long run-together resource list": (
        config("event.poller.urls", "bills" * 1000),
        PREFIX + "event.poller.urls: longer than 4096 characters (5000)",
    ),
    "deep nesting": (
        config("x.custom", nested(10)),
        PREFIX + "x.custom.a.a.a.a.a.a: nested deeper than 8 levels",
    ),
    "too many configuration keys": (
        changed(lambda b: b["configuration"].update({f"k{i}": "v" for i in range(200)})),
        PREFIX + "configuration: more than 200 keys (210)",
    ),
    "a key with a control character": (
        config("event.poller.urls\x1b", "x"),
        PREFIX + "configuration: a key holds a control character: 'event.poller.urls\\x1b'",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_body_is_one_exact_line(case: str) -> None:
    body, expected = HOSTILE[case]
    with pytest.raises(ConfigError) as info:
        parse_instance(body)
    message = str(info.value)
    assert message == expected
    assert not logs.CONTROL_CHARS.search(message)  # nothing raw reaches a terminal
    assert PASTED_SECRET not in message and "CLIENT-SECRET-XYZ" not in message


@pytest.mark.parametrize(
    "key,value,expected",
    [
        ("event.notification.enabled", "TRUE", True),
        ("event.notification.enabled", False, False),
        ("event.poller.refresh_interval", 2, 120.0),
        ("event.poller.refresh_interval", "2", 120.0),
    ],
)
def test_the_forms_design_3_accepts(key: str, value: Any, expected: Any) -> None:
    inst = parse_instance(config(key, value))
    got = inst.events_enabled if key == "event.notification.enabled" else inst.refresh_interval_s
    assert got == expected


def test_a_numeric_realm_id_and_unicode_names_are_fine() -> None:
    inst = parse_instance(provider("realmId", 9130357766900456))
    assert inst.realm_id == "9130357766900456"
    assert parse_instance(top("name", "Café Zoë 東京")).name == "Café Zoë 東京"


def test_the_longest_run_together_list_allowed_splits_in_linear_time() -> None:
    """819 names (4095 characters): the recursive splitter this replaces needed one stack
    frame per name and died of RecursionError at about 1000."""
    assert split_resources("bills" * 819) == ("bills",)
    text = "bill-paymentsbills" * 227  # 4086 characters, the two names that share a prefix
    started = time.process_time()
    assert segment_run_together(text) == ["bill-payments", "bills"] * 227
    assert segment_run_together(text + "x") is None
    assert time.process_time() - started < 5  # a generous bound: the old one was quadratic


def test_run_together_split_prefers_longer_names_as_before() -> None:
    assert segment_run_together("bill-paymentsbills") == ["bill-payments", "bills"]
    assert segment_run_together("paymentspayment-methods") == ["payments", "payment-methods"]
    assert segment_run_together("billsx") is None


def test_a_json_array_in_a_string_is_bounded() -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        split_resources("[" * 5000)
    with pytest.raises(ValueError, match="at most 100"):
        split_resources(json.dumps(["bills"] * 101))


# --- files ------------------------------------------------------------------------------------

GOOD = json.dumps(BODY).encode()
FILE_CASES: dict[str, tuple[bytes, str]] = {
    "not UTF-8": (
        GOOD.replace(b'"name": "API Instance"', b'"name": "API \xff Instance"'),
        "not UTF-8: byte 0xff at line 1 column {col} (byte offset {off})",
    ),
    "not UTF-8 on a later line": (
        b'[\n  {"name":\n   "caf\xe9"}]',
        "not UTF-8: byte 0xe9 at line 3 column 8 (byte offset 20)",
    ),
    "nested past the parser's stack": (
        b"[" * 100_000 + b"]" * 100_000,
        "invalid JSON: nested deeper than 8 levels",
    ),
    "NaN": (b'[{"name": NaN}]', "invalid JSON: NaN is not a JSON number"),
    "a number of 5000 digits": (b"[" + b"7" * 5000 + b"]", "invalid JSON: a number is too long"),
    "too many instances": (b"[" + b"{}," * 10_000 + b"{}]", "more than 10000 instances (10001)"),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_hostile_file_is_one_exact_line(case: str, tmp_path: Path) -> None:
    data, expected = FILE_CASES[case]
    path = tmp_path / "instances.json"
    path.write_bytes(data)
    offset = data.find(b"\xff")
    expected = expected.format(col=offset + 1, off=offset)
    with pytest.raises(ConfigError) as info:
        load_bodies(path)
    assert str(info.value) == f"POLLER_INSTANCES_FILE={str(path)!r}: {expected}"


def test_a_file_over_the_size_limit_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    with path.open("wb") as handle:
        handle.truncate(instances.MAX_FILE_BYTES + 1)  # sparse: no disk used
    with pytest.raises(ConfigError) as info:
        load_bodies(path, source="FILE")
    assert str(info.value) == f"FILE={str(path)!r}: larger than 8 MiB"


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD)
    assert load_bodies(path) == [BODY]


def test_a_file_name_with_control_characters_is_shown_escaped(tmp_path: Path) -> None:
    path = tmp_path / "in\x1bstances.json"
    with pytest.raises(ConfigError) as info:
        load_bodies(path)
    assert "\x1b" not in str(info.value) and "in\\x1bstances.json" in str(info.value)
