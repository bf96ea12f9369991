"""Encryption at rest for tokens, client secrets and signature keys (Fernet, from cryptography).

With `POLLER_SECRET_KEY` set, values are stored as `fernet:<token>`; without it as
`plain:<value>` (the daemon warns once at start-up). Reading accepts both, so setting a key
later encrypts values as they are next written.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from poller.errors import ConfigError

_PLAIN, _FERNET = "plain:", "fernet:"


class SecretBox:
    def __init__(self, secret_key: str | None) -> None:
        self._fernet = Fernet(_derive(secret_key)) if secret_key else None

    @property
    def encrypts(self) -> bool:
        return self._fernet is not None

    def seal(self, value: str | None) -> str | None:
        if value is None:
            return None
        if self._fernet is None:
            return _PLAIN + value
        return _FERNET + self._fernet.encrypt(value.encode()).decode()

    def open(self, stored: str | None) -> str | None:
        if stored is None:
            return None
        if stored.startswith(_PLAIN):
            return stored[len(_PLAIN) :]
        if stored.startswith(_FERNET):
            if self._fernet is None:
                raise ConfigError(
                    "POLLER_SECRET_KEY=<unset>: the database holds encrypted "
                    "secrets; set the key they were written with"
                )
            try:
                return self._fernet.decrypt(stored[len(_FERNET) :].encode()).decode()
            except InvalidToken:
                raise ConfigError(
                    "POLLER_SECRET_KEY=<hidden>: cannot decrypt stored secrets "
                    "(the key differs from the one they were written with)"
                ) from None
        raise ValueError("unrecognised stored secret format")


def _derive(secret_key: str) -> bytes:
    """Any passphrase of ≥16 characters → a Fernet key (HKDF-SHA256, fixed context)."""
    raw = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"qbo-poller/at-rest/v1", info=b"fernet"
    ).derive(secret_key.encode())
    return base64.urlsafe_b64encode(raw)
