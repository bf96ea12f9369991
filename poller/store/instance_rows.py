"""Instances in PostgreSQL: upsert by name, list, remove, status.

Stored credentials win over a file (DESIGN §3): `providerData` replaces the stored tokens only
when the instance is new or when its fingerprint differs from what was last loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from poller import resources
from poller.instances import Instance, InstanceStatus
from poller.store.crypto import SecretBox
from poller.store.db import Conn, store_call
from poller.store.sql import queries

Q = queries("instances")


@dataclass(frozen=True)
class UpsertResult:
    instance_id: int
    action: str  # "created", "updated" or "unchanged"
    credentials_replaced: bool


def _status(inst: Instance, previous: str | None, credentials_replaced: bool) -> InstanceStatus:
    if not inst.events_enabled:
        return InstanceStatus.DISABLED
    if previous == InstanceStatus.NEEDS_RECONNECT and not credentials_replaced:
        return InstanceStatus.NEEDS_RECONNECT
    if previous == InstanceStatus.PAUSED:
        return InstanceStatus.PAUSED
    return InstanceStatus.ACTIVE


def _row_values(inst: Instance, box: SecretBox) -> dict[str, Any]:
    return {
        "element_key": inst.element_key,
        "realm_id": inst.realm_id,
        "client_id": inst.client_id,
        "client_secret_enc": box.seal(inst.client_secret),
        "redirect_uri": inst.redirect_uri,
        "events_enabled": inst.events_enabled,
        "vendor_type": inst.vendor_type,
        "callback_url": inst.callback_url,
        "signature_key_enc": box.seal(inst.signature_key),
        "refresh_interval_s": inst.refresh_interval_s,
        "resources": list(inst.resources),
        "timezone": inst.timezone,
        "initial_mode": inst.initial,
        "deactivated_as_deleted": inst.deactivated_as_deleted,
        "changes": inst.changes,
        "tags": list(inst.tags),
        "configuration": inst.public_configuration(),
        "provider_fingerprint": inst.provider.fingerprint(),
        "webhook_verifier_enc": box.seal(inst.webhook_verifier_token),
    }


def _secret_of(inst: Instance, column: str) -> str | None:
    """The clear value an `*_enc` column holds for this instance."""
    clear = {
        "client_secret_enc": inst.client_secret,
        "signature_key_enc": inst.signature_key,
        "webhook_verifier_enc": inst.webhook_verifier_token,
    }
    return clear[column]


def _unchanged(
    existing: asyncpg.Record, inst: Instance, box: SecretBox, fingerprint: str | None = None
) -> bool:
    """Compare decrypted secrets, so re-encryption (random IVs) does not count as a change."""
    new = _row_values(inst, box)
    if fingerprint is not None:
        new["provider_fingerprint"] = fingerprint
    for key, value in new.items():
        if key.endswith("_enc"):
            if box.open(existing[key]) != _secret_of(inst, key):
                return False
        elif key == "element_key":
            continue
        elif existing[key] != value:
            return False
    return True


@store_call
async def upsert(conn: Conn, inst: Instance, box: SecretBox) -> UpsertResult:
    async with conn.transaction():
        existing = await conn.fetchrow(Q["lock_by_name"], inst.name)
        if existing is None:
            return await _insert(conn, inst, box)
        return await _update(conn, existing, inst, box)


async def _insert(conn: Conn, inst: Instance, box: SecretBox) -> UpsertResult:
    v = _row_values(inst, box)
    instance_id = await conn.fetchval(
        Q["insert"],
        inst.name,
        v["element_key"],
        v["realm_id"],
        _status(inst, None, True),
        *_settings_values(v),
    )
    await _replace_credentials(conn, instance_id, inst, box)
    await _sync_pairs(conn, instance_id, inst)
    return UpsertResult(instance_id, "created", True)


# The instance's settings columns, in the order both the insert and the update list them.
_SETTINGS_COLUMNS = (
    "client_id",
    "client_secret_enc",
    "redirect_uri",
    "events_enabled",
    "vendor_type",
    "callback_url",
    "signature_key_enc",
    "refresh_interval_s",
    "resources",
    "timezone",
    "initial_mode",
    "deactivated_as_deleted",
    "tags",
    "configuration",
    "provider_fingerprint",
    "webhook_verifier_enc",
    "changes",
)


def _settings_values(values: dict[str, Any]) -> list[Any]:
    return [values[column] for column in _SETTINGS_COLUMNS]


@store_call
async def update_by_id(
    conn: Conn, instance_id: int, inst: Instance, box: SecretBox, *, replace_credentials: bool
) -> UpsertResult | None:
    """An edit through the API (DESIGN §9): the instance `instance_id` takes `inst`'s settings
    (not its name: see `rename`); its credentials are replaced only when asked, whatever
    `inst.provider` holds. None when there is no such instance."""
    async with conn.transaction():
        existing = await conn.fetchrow(Q["lock_by_id"], instance_id)
        if existing is None:
            return None
        return await _update(conn, existing, inst, box, replace=replace_credentials)


@store_call
async def rename(conn: Conn, instance_id: int, name: str) -> bool:
    """False when another instance has that name already."""
    return await conn.fetchval(Q["rename"], instance_id, name) is not None


async def _update(
    conn: Conn,
    existing: asyncpg.Record,
    inst: Instance,
    box: SecretBox,
    replace: bool | None = None,
) -> UpsertResult:
    instance_id = existing["id"]
    if replace is None:
        replace = existing["provider_fingerprint"] != inst.provider.fingerprint()
    v = _row_values(inst, box)
    if not replace:
        # The credentials stay, and so does the fingerprint of the providerData they came from
        # (a reload of that same file must still recognise it).
        v["provider_fingerprint"] = existing["provider_fingerprint"]
        if _unchanged(existing, inst, box, fingerprint=existing["provider_fingerprint"]):
            return UpsertResult(instance_id, "unchanged", False)
    status = _status(inst, existing["status"], replace)
    reason = None if status in ("active", "disabled") else "kept from before the reload"
    await conn.execute(
        Q["update"],
        instance_id,
        v["element_key"],
        v["realm_id"],
        status,
        reason,
        *_settings_values(v),
    )
    if replace:
        if existing["realm_id"] != inst.realm_id:
            # Another company: watermarks and snapshots of the old realm mean nothing here.
            await conn.execute(Q["drop_all_pairs"], instance_id)
        await _replace_credentials(conn, instance_id, inst, box)
    await _sync_pairs(conn, instance_id, inst)
    if existing["changes"] and not inst.changes:
        # `event.poller.changes` turned off: the full objects kept for it go (DESIGN §12).
        await conn.execute(Q["forget_objects"], instance_id)
    return UpsertResult(instance_id, "updated", replace)


async def _replace_credentials(
    conn: Conn, instance_id: int, inst: Instance, box: SecretBox
) -> None:
    await conn.execute(
        Q["upsert_credentials"],
        instance_id,
        inst.realm_id,
        box.seal(inst.provider.code),
        box.seal(inst.provider.refresh_token),
    )


async def _sync_pairs(conn: Conn, instance_id: int, inst: Instance) -> None:
    names = list(inst.resources)
    entities = [resources.get(n).entity for n in names]
    await conn.execute(Q["drop_pairs_except"], instance_id, names)
    await conn.execute(Q["add_pairs"], instance_id, names, entities)


@store_call
async def list_all(conn: Conn) -> list[asyncpg.Record]:
    return list(await conn.fetch(Q["list"]))


@store_call
async def count_pollable(conn: Conn) -> tuple[int, int]:
    """(instances, those active with events enabled): what a poller has to do."""
    row = await conn.fetchrow(Q["count_pollable"])
    assert row is not None
    return int(row["total"]), int(row["pollable"])


@store_call
async def remove(conn: Conn, name: str) -> bool:
    """Remove the instance and everything it owns, undelivered notifications included."""
    return await conn.fetchval(Q["remove"], name) is not None


@dataclass(frozen=True)
class Removal:
    """What `remove_unless_undelivered` found: the instance's undelivered notifications, and
    whether it was removed (always when forced; else only when there were none)."""

    found: bool
    removed: bool
    pending: int = 0
    held: int = 0
    dead: int = 0

    @property
    def undelivered(self) -> int:
        return self.pending + self.held + self.dead


@store_call
async def remove_unless_undelivered(conn: Conn, name: str, *, force: bool) -> Removal:
    """`instances remove`: refused while notifications wait for delivery (pending, held or
    dead) unless `force`, which cancels them with the instance. The instance row stays locked
    from the count to the delete, so a poll cannot add notifications in between."""
    async with conn.transaction():
        row = await conn.fetchrow(Q["lock_for_removal"], name)
        if row is None:
            return Removal(found=False, removed=False)
        counts = {"pending": row["pending"], "held": row["held"], "dead": row["dead"]}
        if sum(counts.values()) and not force:
            return Removal(found=True, removed=False, **counts)
        await conn.execute(Q["remove"], name)
    return Removal(found=True, removed=True, **counts)


@store_call
async def mark_needs_reconnect(conn: Conn, instance_id: int, reason: str) -> bool:
    """The one way an instance becomes `needs_reconnect`; True when this call changed it."""
    result = await conn.execute(Q["mark_needs_reconnect"], instance_id, reason[:500])
    return result == "UPDATE 1"


@store_call
async def set_status(conn: Conn, instance_id: int, status: str, reason: str | None) -> bool:
    result = await conn.execute(Q["set_status"], instance_id, status, reason)
    return result.endswith(" 1")
