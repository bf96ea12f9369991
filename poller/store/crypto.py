"""Encryption at rest for tokens, client secrets and signature keys (Fernet, from cryptography).

With `POLLER_SECRET_KEY` set, values are stored as `fernet:<token>`; without it as
`plain:<value>` (the daemon warns once at start-up). Reading accepts both, so setting a key
later encrypts values as they are next written, and `qbo-poller rekey` encrypts the rest.

Writes always use the current key. Reads try, in order (cryptography's MultiFernet): the
current key, then each of `POLLER_SECRET_KEY_PREVIOUS`, each also through the legacy derivation
of earlier versions (poller.secret_keys). So a key is rotated without downtime: restart with the
new key and the old one as previous, run `rekey`, drop the previous key.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from poller import secret_keys
from poller.errors import ConfigError

_PLAIN, _FERNET = "plain:", "fernet:"


class SecretKeyError(ConfigError):
    """A stored secret that the configured keys cannot open (wrong or missing key)."""


class SecretBox:
    def __init__(self, secret_key: str | None, previous: Sequence[str] = ()) -> None:
        if secret_key is not None and not secret_keys.is_generated_key(secret_key):
            # Settings refuse it already (poller.config); this guards other callers.
            raise ConfigError("POLLER_SECRET_KEY=<hidden>: not a key made by qbo-poller keygen")
        self._primary = Fernet(secret_keys.fernet_key(secret_key)) if secret_key else None
        configured = [secret_key] if secret_key else []
        readers = [
            Fernet(key)
            for value in [*configured, *previous]
            for key in secret_keys.reading_keys(value)
        ]
        self._reader = MultiFernet(readers) if readers else None

    @property
    def encrypts(self) -> bool:
        return self._primary is not None

    def seal(self, value: str | None) -> str | None:
        if value is None:
            return None
        if self._primary is None:
            return _PLAIN + value
        return _FERNET + self._primary.encrypt(value.encode()).decode()

    def open(self, stored: str | None) -> str | None:
        if stored is None:
            return None
        if stored.startswith(_PLAIN):
            return stored[len(_PLAIN) :]
        if not stored.startswith(_FERNET):
            raise ValueError("unrecognised stored secret format")
        if self._reader is None:
            raise SecretKeyError(
                "POLLER_SECRET_KEY=<unset>: the database holds encrypted "
                "secrets; set the key they were written with"
            )
        try:
            return self._reader.decrypt(stored[len(_FERNET) :].encode()).decode()
        except InvalidToken:
            raise SecretKeyError(
                "POLLER_SECRET_KEY=<hidden>: cannot decrypt stored secrets "
                "(the key differs from the one they were written with)"
            ) from None

    def readable(self, stored: str) -> bool:
        """Whether `open` succeeds, without raising."""
        try:
            self.open(stored)
        except SecretKeyError:
            return False
        return True

    def is_current(self, stored: str) -> bool:
        """Sealed the way `seal` seals today: encrypted with the current key (or, with no key,
        in clear)."""
        if self._primary is None:
            return stored.startswith(_PLAIN)
        if not stored.startswith(_FERNET):
            return False
        try:
            self._primary.decrypt(stored[len(_FERNET) :].encode())
        except InvalidToken:
            return False
        return True

    def reseal(self, stored: str | None) -> str | None:
        """`stored` sealed with the current key: None when it already is (or is None). Raises
        SecretKeyError when no configured key opens it."""
        if stored is None or self.is_current(stored):
            return None
        return self.seal(self.open(stored))
