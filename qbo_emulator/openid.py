"""OpenID Connect pieces: the RS256 signing key, its JWKS and the ``id_token``.

Intuit signs ``id_token`` with RS256 and publishes the public key at the
discovery document's ``jwks_uri``; ``intuitlib`` (intuit-oauth) checks ``iss``
against the discovery ``issuer``, ``aud[0]`` against the client id and ``exp``,
then verifies the signature with the JWK named by the header's ``kid``.  The
claims are Intuit's: ``sub``, ``aud`` (a list), ``realmid``, ``auth_time``,
``iss``, ``exp``, ``iat``.

intuitlib decodes the header and payload with the standard base64 alphabet, not
the URL-safe one; that only works because compact JSON of ASCII text never
produces ``-`` or ``_`` unless it contains ``>``, ``?`` or ``~``, which these
claims never do.

The key is generated on first use (2048 bits) and can be saved and restored
with the emulator's state, so tokens issued before a restart still verify.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ID_TOKEN_LIFETIME = 3600


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_uint(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


class Signer:
    """The emulator's one RS256 key, made lazily (key generation takes ~0.1 s)."""

    def __init__(self) -> None:
        self._key: rsa.RSAPrivateKey | None = None
        self.kid = "qbo-emulator-1"

    @property
    def key(self) -> rsa.RSAPrivateKey:
        if self._key is None:
            self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return self._key

    def pem(self) -> str:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    def load_pem(self, pem: str) -> None:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("the saved OpenID key is not an RSA key")
        self._key = key

    def jwks(self) -> dict[str, Any]:
        numbers = self.key.public_key().public_numbers()
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "e": _b64url_uint(numbers.e),
                    "use": "sig",
                    "kid": self.kid,
                    "alg": "RS256",
                    "n": _b64url_uint(numbers.n),
                }
            ]
        }

    def sign(self, claims: dict[str, Any]) -> str:
        header = b64url(orjson.dumps({"kid": self.kid, "alg": "RS256"}))
        payload = b64url(orjson.dumps(claims))
        signing_input = f"{header}.{payload}".encode()
        signature = self.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return f"{header}.{payload}.{b64url(signature)}"

    def id_token(self, *, issuer: str, audience: str, subject: str, realm: str, now: float) -> str:
        issued = int(now)
        return self.sign(
            {
                "sub": subject,
                "aud": [audience],
                "realmid": realm,
                "auth_time": issued,
                "iss": issuer,
                "exp": issued + ID_TOKEN_LIFETIME,
                "iat": issued,
            }
        )
