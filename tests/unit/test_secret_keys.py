"""POLLER_SECRET_KEY forms and the SecretBox's keys: generated keys only, previous keys and the
legacy derivation for reading, writes under the current key."""

from __future__ import annotations

import base64
import secrets

import pytest
from cryptography.fernet import Fernet

from poller import secret_keys
from poller.config import load_settings
from poller.errors import ConfigError
from poller.store.crypto import SecretBox, SecretKeyError

A = secret_keys.generate_key()
B = secret_keys.generate_key()
PASSPHRASE = "correct horse battery staple"


def legacy_sealed(key: str, value: str) -> str:
    """A value as earlier versions stored it: HKDF of the configured string, no work factor."""
    return "fernet:" + Fernet(secret_keys.legacy_fernet_key(key)).encrypt(value.encode()).decode()


def test_generated_keys_are_32_random_bytes_fernet_accepts() -> None:
    key = secret_keys.generate_key()
    assert len(key) == 44 and len(base64.urlsafe_b64decode(key)) == 32
    assert secret_keys.is_generated_key(key)
    Fernet(key)  # a valid Fernet key as printed
    assert key != secret_keys.generate_key()


@pytest.mark.parametrize(
    "value",
    [
        PASSPHRASE,
        "poller-secret-key-0123456789",
        secrets.token_urlsafe(32),  # 43 characters: unpadded, not keygen's form
        base64.urlsafe_b64encode(b"x" * 31).decode(),  # 31 bytes
        base64.urlsafe_b64encode(b"x" * 33).decode(),
        "",
    ],
    # Fixed ids: a random value in a test id differs between pytest-xdist workers (and a key
    # has no business in a report).
    ids=["passphrase", "named", "unpadded-43", "31-bytes", "33-bytes", "empty"],
)
def test_anything_else_is_not_a_generated_key(value: str) -> None:
    assert not secret_keys.is_generated_key(value)


def test_openssl_style_standard_base64_of_32_bytes_is_a_key() -> None:
    raw = bytes(range(250, 256)) + bytes(26)  # encodes with + and /
    value = base64.b64encode(raw).decode()
    assert "+" in value or "/" in value
    assert secret_keys.is_generated_key(value)
    assert SecretBox(value).open(SecretBox(value).seal("v")) == "v"


def test_a_passphrase_is_refused_in_one_line_without_the_value() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={"POLLER_SECRET_KEY": PASSPHRASE})
    message = str(info.value)
    assert message.startswith("POLLER_SECRET_KEY=<hidden>: not a key made by qbo-poller keygen")
    assert "POLLER_SECRET_KEY_PREVIOUS" in message and "rekey" in message
    assert PASSPHRASE not in message and "\n" not in message


def test_a_generated_key_is_accepted_as_written_with_surrounding_blanks() -> None:
    assert load_settings(env={"POLLER_SECRET_KEY": f"  {A}\n"}).secret_key == A


def test_previous_keys_are_comma_separated_and_may_hold_a_legacy_passphrase() -> None:
    current = secret_keys.generate_key()
    settings = load_settings(
        env={"POLLER_SECRET_KEY": current, "POLLER_SECRET_KEY_PREVIOUS": f"{A} , {PASSPHRASE},,{B}"}
    )
    assert settings.secret_key_previous == (A, PASSPHRASE, B)
    assert secret_keys.parse_previous(r"one\, two\, three and four") == (
        "one, two, three and four",
    )


def test_a_previous_key_too_short_for_either_form_is_refused_by_position() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={"POLLER_SECRET_KEY": B, "POLLER_SECRET_KEY_PREVIOUS": f"{A},short"})
    message = str(info.value)
    assert message.startswith("POLLER_SECRET_KEY_PREVIOUS=<hidden>: key 2 is neither")
    assert "short" not in message and A not in message


def test_previous_keys_without_a_current_key_are_refused() -> None:
    """Else secrets written from then on would be stored in clear."""
    with pytest.raises(ConfigError) as info:
        load_settings(env={"POLLER_SECRET_KEY_PREVIOUS": A})
    assert str(info.value).startswith("POLLER_SECRET_KEY=<unset>: POLLER_SECRET_KEY_PREVIOUS")
    assert A not in str(info.value)


def test_previous_keys_are_redacted_from_logs() -> None:
    settings = load_settings(
        env={"POLLER_SECRET_KEY": A, "POLLER_SECRET_KEY_PREVIOUS": f"{B},{PASSPHRASE}"}
    )
    assert {A, B, PASSPHRASE} <= set(settings.secret_values())
    assert A not in repr(settings) and PASSPHRASE not in repr(settings)


def test_writes_use_the_current_key_reads_accept_previous_ones() -> None:
    old = SecretBox(A).seal("refresh-token")
    rotated = SecretBox(B, [A])
    assert rotated.open(old) == "refresh-token"
    new = rotated.seal("refresh-token")
    assert SecretBox(B).open(new) == "refresh-token"  # without the previous key
    with pytest.raises(SecretKeyError):
        SecretBox(A).open(new)
    assert rotated.is_current(new) and not rotated.is_current(old)


def test_values_of_the_legacy_derivation_stay_readable() -> None:
    # A passphrase as earlier versions accepted it: readable as a previous key only.
    old = legacy_sealed(PASSPHRASE, "client-secret")
    box = SecretBox(B, [PASSPHRASE])
    assert box.open(old) == "client-secret" and not box.is_current(old)
    # A key that already had keygen's form was derived too: the same key reads it.
    derived = legacy_sealed(A, "signature-key")
    assert SecretBox(A).open(derived) == "signature-key"
    assert not SecretBox(A).is_current(derived)


def test_reseal_moves_everything_under_the_current_key_once() -> None:
    box = SecretBox(B, [A, PASSPHRASE])
    for stored in (SecretBox(A).seal("v"), legacy_sealed(PASSPHRASE, "v"), "plain:v"):
        again = box.reseal(stored)
        assert again is not None and again.startswith("fernet:")
        assert SecretBox(B).open(again) == "v" and not SecretBox(A, [PASSPHRASE]).readable(again)
        assert box.reseal(again) is None  # already current: nothing to do
    assert box.reseal(None) is None


def test_unreadable_values_name_the_variable_never_a_value() -> None:
    stored = SecretBox(A).seal("token-Zx91")
    assert stored is not None
    for box, start in ((SecretBox(B), "POLLER_SECRET_KEY=<hidden>"), (SecretBox(None), "<unset>")):
        with pytest.raises(SecretKeyError) as info:
            box.open(stored)
        assert start in str(info.value) and "token-Zx91" not in str(info.value)
        assert not box.readable(stored)


def test_clear_values_stay_readable_once_a_key_is_set() -> None:
    clear = SecretBox(None).seal("v")
    assert clear == "plain:v"
    assert SecretBox(A).open(clear) == "v" and not SecretBox(A).is_current(clear)
    assert SecretBox(None).is_current(clear)


def test_the_box_refuses_a_passphrase_as_its_current_key() -> None:
    with pytest.raises(ConfigError):
        SecretBox(PASSPHRASE)
