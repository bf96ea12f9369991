"""Callback headers: the Open Connectors signature and/or Standard Webhooks (DESIGN §6).

- `Elements-Webhook-Signature: sha256=<base64 HMAC-SHA256(key UTF-8, body)>` — Open Connectors'
  scheme; the key is always the signature key's UTF-8 bytes.
- `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256(secret,
  "id.ts.body")>` — Standard Webhooks; the secret is the base64-decoded part of a `whsec_…` key
  (what every Standard Webhooks verifier does with such a key), else the key's UTF-8 bytes.

The ids are the notification's eventId (stable across retries); the timestamp is per attempt,
so the Standard signature is recomputed on every attempt while the body stays fixed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from poller import __version__
from poller.vocab import SignatureScheme

USER_AGENT = f"qbo-poller/{__version__}"
WHSEC_PREFIX = "whsec_"


def _hmac_b64(key: bytes, message: bytes) -> str:
    return base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()


def elements_signature(key: str, body: bytes) -> str:
    return "sha256=" + _hmac_b64(key.encode(), body)


def standard_secret(key: str) -> bytes:
    """The HMAC key of the Standard Webhooks signature.

    A `whsec_` key whose rest is not base64 is used as UTF-8 text as a whole rather than refused:
    the instance was accepted with it, and a signature the receiver can reproduce beats none.
    """
    if key.startswith(WHSEC_PREFIX):
        rest = key[len(WHSEC_PREFIX) :]
        try:
            decoded = base64.b64decode(rest + "=" * (-len(rest) % 4), validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        if decoded:
            return decoded
    return key.encode()


def standard_signature(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    return "v1," + _hmac_b64(secret, f"{msg_id}.{timestamp}.".encode() + body)


def callback_headers(
    event_id: str, body: bytes, key: str | None, scheme: SignatureScheme | str, timestamp: int
) -> dict[str, str]:
    """Every header of one attempt. No signature headers when the instance has no key.

    `scheme` is a `SignatureScheme` or its text (`"both"`); any other text raises ValueError.
    """
    scheme = SignatureScheme(scheme)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Elements-Webhook-Id": event_id,
    }
    if scheme.signs_standard:
        headers["webhook-id"] = event_id
        headers["webhook-timestamp"] = str(timestamp)
    if key:
        if scheme.signs_elements:
            headers["Elements-Webhook-Signature"] = elements_signature(key, body)
        if scheme.signs_standard:
            headers["webhook-signature"] = standard_signature(
                standard_secret(key), event_id, timestamp, body
            )
    return headers
