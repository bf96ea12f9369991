"""The forms of `POLLER_SECRET_KEY` and `POLLER_SECRET_KEY_PREVIOUS`, and the Fernet keys they
stand for.

A *generated key* is what `qbo-poller keygen` prints: 32 random bytes in URL-safe base64
(`Fernet.generate_key()`, 44 characters), used as the Fernet key itself. It is the only form
`POLLER_SECRET_KEY` accepts. A human passphrase is refused rather than stretched: a key with
256 random bits needs no work factor, while a passphrase behind scrypt is still a guessable
secret in front of every database dump, and its salt would need a home that every replica
shares (the database, or a second variable to keep and to lose).

Before this module, any string of at least 16 characters was a key, turned into a Fernet key
with HKDF-SHA256 and a fixed salt: no work factor (`legacy_fernet_key`). Values written that way
stay readable: every configured key is also tried through that derivation, and a passphrase is
accepted in `POLLER_SECRET_KEY_PREVIOUS` for reading only, so `qbo-poller rekey` can move the
values under a generated key.
"""

from __future__ import annotations

import base64
import binascii
import re

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32  # Fernet: 16 bytes signing key + 16 bytes AES-128 key
LEGACY_MIN_LENGTH = 16  # what the legacy passphrase form required
# An unescaped comma separates the keys of POLLER_SECRET_KEY_PREVIOUS; `\,` is a comma inside a
# legacy passphrase (a generated key never holds one).
_SEPARATOR = re.compile(r"(?<!\\),")


def generate_key() -> str:
    """A new random key, as `qbo-poller keygen` prints it."""
    return Fernet.generate_key().decode("ascii")


def is_generated_key(value: str) -> bool:
    """32 bytes in base64 (URL-safe as keygen prints it, or the standard alphabet, as
    `openssl rand -base64 32` does): a random key, usable as is."""
    try:
        raw = base64.b64decode(value.encode("ascii"), altchars=b"-_", validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return False
    return len(raw) == KEY_BYTES


def fernet_key(value: str) -> bytes:
    """The Fernet key of a generated key (URL-safe base64 of its 32 bytes)."""
    raw = base64.b64decode(value.encode("ascii"), altchars=b"-_", validate=True)
    return base64.urlsafe_b64encode(raw)


def legacy_fernet_key(value: str) -> bytes:
    """The derivation of earlier versions (HKDF-SHA256, fixed salt, no work factor): read only."""
    raw = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"qbo-poller/at-rest/v1", info=b"fernet"
    ).derive(value.encode())
    return base64.urlsafe_b64encode(raw)


def reading_keys(value: str) -> list[bytes]:
    """The Fernet keys a configured key opens values with: a generated key as is and through the
    legacy derivation (it may have been used as a passphrase before); a passphrase only through
    the legacy derivation."""
    legacy = legacy_fernet_key(value)
    return [fernet_key(value), legacy] if is_generated_key(value) else [legacy]


def parse_current(raw: str) -> str:
    """POLLER_SECRET_KEY: a generated key. The message never repeats the value."""
    value = raw.strip()
    if not is_generated_key(value):
        raise ValueError(
            "not a key made by qbo-poller keygen (passphrases are not accepted): set it to "
            "the output of qbo-poller keygen, put this value in POLLER_SECRET_KEY_PREVIOUS "
            "and run qbo-poller rekey"
        )
    return value


def parse_previous(raw: str) -> tuple[str, ...]:
    """POLLER_SECRET_KEY_PREVIOUS: comma-separated keys, newest first; each a generated key or a
    legacy passphrase (at least 16 characters; a comma in it written `\\,`)."""
    keys: list[str] = []
    for position, piece in enumerate(_SEPARATOR.split(raw), start=1):
        value = piece.strip().replace("\\,", ",")
        if not value:
            continue
        if not is_generated_key(value) and len(value) < LEGACY_MIN_LENGTH:
            raise ValueError(
                f"key {position} is neither a key made by qbo-poller keygen nor a passphrase "
                f"of at least {LEGACY_MIN_LENGTH} characters (keys are separated by commas)"
            )
        keys.append(value)
    return tuple(keys)
