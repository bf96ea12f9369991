"""The instance object of DESIGN §9, built from a stored row."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from poller.instances import InstanceStatus
from poller.manage.users import Caller
from poller.store.crypto import SecretBox

MASK = "********"
ELEMENT: dict[str, Any] = {
    "id": 39,
    "key": "quickbooks",
    "name": "QuickBooks Online",
    "hub": "finance",
}
# Configuration keys whose values are secrets: answered as MASK, never in clear.
SECRET_KEYS = ("oauth.api.secret", "event.notification.signature.key")
VERIFIER_KEY = "event.webhook.verifier.token"


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def as_string(value: Any) -> str | None:
    """Open Connectors answered every configuration value as a string."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()


def configuration(row: asyncpg.Record) -> dict[str, str | None]:
    stored = row["configuration"] or {}
    shown = {key: as_string(value) for key, value in stored.items()}
    shown["oauth.api.secret"] = MASK
    if row["has_signature_key"]:
        shown["event.notification.signature.key"] = MASK
    if shown.get(VERIFIER_KEY):
        shown[VERIFIER_KEY] = MASK
    return shown


def _status(stored: str) -> str:
    """§9 knows active, paused and needs_reconnect; events switched off reads as paused."""
    if stored == InstanceStatus.DISABLED:
        return InstanceStatus.PAUSED
    return stored


def _lag(oldest_watermark: datetime | None) -> float | None:
    if oldest_watermark is None:
        return None
    return round(max(0.0, (datetime.now(UTC) - oldest_watermark).total_seconds()), 1)


def instance_object(row: asyncpg.Record, box: SecretBox, caller: Caller) -> dict[str, Any]:
    """Open Connectors' fields, then ours. The token is shown to its owner only;
    `providerData` is never part of it."""
    token = None
    if row["token_enc"] is not None:
        token = box.open(row["token_enc"]) if row["owner_user_id"] == caller.user_id else MASK
    user = (
        {"id": row["owner_user_id"], "name": row["owner_name"]}
        if row["owner_user_id"] is not None
        else {"id": 0, "name": None}
    )
    status = str(row["status"])
    return {
        "id": row["id"],
        "name": row["name"],
        "token": token,
        "element": dict(ELEMENT),
        "elementId": ELEMENT["id"],
        "tags": list(row["tags"] or []),
        "createdDate": iso(row["created_at"]),
        "updatedDate": iso(row["updated_at"]),
        "valid": status != InstanceStatus.NEEDS_RECONNECT,
        "disabled": status == InstanceStatus.PAUSED,
        "eventsEnabled": bool(row["events_enabled"]),
        "eventsNotificationCallbackUrl": row["callback_url"],
        "configuration": configuration(row),
        "provisionInteractions": [],
        "externalAuthentication": "none",
        "user": user,
        "realmId": row["realm_id"],
        "status": _status(status),
        "resources": list(row["resources"]),
        "lastPolledAt": iso(row["last_polled_at"]),
        "lagSeconds": _lag(row["oldest_watermark"]),
    }
