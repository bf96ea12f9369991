"""Signatures: Elements checked by hand, Standard Webhooks with the published verifier."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from poller.deliver.signing import USER_AGENT, callback_headers, standard_secret, standard_signature

BODY = b'{"message":{"eventId":"e1","raw":{"x":[{"Id":"1"}]}}}'
EVENT_ID = "6f1c0c3e-5d0b-4c7e-9a53-0c7bb3d3a3f1"
WHSEC = "whsec_" + base64.b64encode(bytes(range(32))).decode()
PLAIN = "my-plain signature key"


def test_elements_signature_by_hand() -> None:
    headers = callback_headers(EVENT_ID, BODY, PLAIN, "elements", 1)
    expected = base64.b64encode(hmac.new(PLAIN.encode(), BODY, hashlib.sha256).digest()).decode()
    assert headers["Elements-Webhook-Signature"] == "sha256=" + expected
    assert headers["Elements-Webhook-Id"] == EVENT_ID
    assert "webhook-signature" not in headers and "webhook-id" not in headers


def test_elements_key_is_the_utf8_key_even_for_whsec() -> None:
    headers = callback_headers(EVENT_ID, BODY, WHSEC, "both", 1)
    expected = base64.b64encode(hmac.new(WHSEC.encode(), BODY, hashlib.sha256).digest()).decode()
    assert headers["Elements-Webhook-Signature"] == "sha256=" + expected


@pytest.mark.parametrize("key, verifier_secret", [(WHSEC, WHSEC), (PLAIN, PLAIN.encode())])
def test_standard_webhooks_verifies_with_the_published_library(
    key: str, verifier_secret: object
) -> None:
    now = int(time.time())
    headers = callback_headers(EVENT_ID, BODY, key, "standard", now)
    assert headers["webhook-id"] == EVENT_ID and headers["webhook-timestamp"] == str(now)
    assert Webhook(verifier_secret).verify(BODY, headers) == {
        "message": {"eventId": "e1", "raw": {"x": [{"Id": "1"}]}}
    }
    assert "Elements-Webhook-Signature" not in headers
    with pytest.raises(WebhookVerificationError):
        Webhook(verifier_secret).verify(BODY + b" ", headers)


def test_svix_test_vector() -> None:
    secret = standard_secret("whsec_plJ3nmyCDGBKInavdOK15jsl")
    assert (
        standard_signature(
            secret,
            "msg_loFOjxBNrRLzqYUf",
            1731705121,
            b'{"event_type":"ping","data":{"success":true}}',
        )
        == "v1,rAvfW3dJ/X/qxhsaXPOyyCGmRKsaKWcsNccKXlIktD0="
    )


def test_both_schemes_and_fixed_headers() -> None:
    headers = callback_headers(EVENT_ID, BODY, PLAIN, "both", 1700000000)
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == USER_AGENT and USER_AGENT.startswith("qbo-poller/")
    assert {
        "Elements-Webhook-Signature",
        "webhook-signature",
        "webhook-id",
        "webhook-timestamp",
    } <= set(headers)


def test_timestamp_changes_the_standard_signature_only() -> None:
    a = callback_headers(EVENT_ID, BODY, PLAIN, "both", 1700000000)
    b = callback_headers(EVENT_ID, BODY, PLAIN, "both", 1700000005)
    assert a["Elements-Webhook-Signature"] == b["Elements-Webhook-Signature"]
    assert a["webhook-signature"] != b["webhook-signature"]


def test_no_key_no_signature_headers() -> None:
    headers = callback_headers(EVENT_ID, BODY, None, "both", 1)
    assert not any("signature" in h.lower() for h in headers)
    assert headers["Elements-Webhook-Id"] == headers["webhook-id"] == EVENT_ID


def test_undecodable_whsec_key_falls_back_to_utf8() -> None:
    assert standard_secret("whsec_not base64!") == b"whsec_not base64!"
