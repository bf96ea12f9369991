"""``--state FILE``: the emulator's data saved to a JSON file and loaded back.

Saved: every realm's objects and tombstones with their times, the Id and
DocNumber sequences, the CDC-in-batch switch; OAuth clients, connections
(chains), refresh tokens, access tokens and codes; the clock (offset from real
time, or the frozen instant); the OpenID signing key (so id_tokens issued before
a restart still verify).  Not saved: limits, throttles, fault rules and counters
(settings of a test run, not data).

The file is written to a temporary sibling and renamed over the old one, so a
crash mid-save leaves the previous state whole.  A crash (kill -9) loses the writes since
the last periodic save; so that the ids those writes took are not handed out again (a client
that saw them would take a new object for an old one), a file saved periodically rather than
at shutdown moves every Id sequence on by ``CRASH_ID_GAP`` when it is loaded.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from .entities import ENTITIES, json_default, normalize_money
from .oauth import AccessToken, AuthCode, Chain, RefreshToken
from .store import _SEQ, Realm, Record

if TYPE_CHECKING:
    from .core import Emulator

FORMAT = 1
CRASH_ID_GAP = 1000


def dump(emu: Emulator, *, at_shutdown: bool = True) -> dict[str, Any]:
    """Everything the state file holds, as plain JSON."""
    return {
        "format": FORMAT,
        "saved_at_shutdown": at_shutdown,
        "clock": _dump_clock(emu),
        "realms": [_dump_realm(realm) for realm in emu.realms.values()],
        "oauth": _dump_oauth(emu),
    }


def save(emu: Emulator, path: str | Path, *, at_shutdown: bool = True) -> None:
    target = Path(path)
    temporary = target.with_name(target.name + ".tmp")
    body = dump(emu, at_shutdown=at_shutdown)
    temporary.write_bytes(orjson.dumps(body, default=json_default))
    os.replace(temporary, target)


def load(emu: Emulator, path: str | Path) -> bool:
    """Restore ``path`` into ``emu`` (replacing its realms and tokens); False if absent."""
    target = Path(path)
    if not target.exists():
        return False
    restore(emu, orjson.loads(target.read_bytes()))
    return True


async def autosave(emu: Emulator, path: str | Path, interval: float) -> None:
    """Save every ``interval`` seconds until cancelled (the caller saves once more on exit)."""
    while True:
        await asyncio.sleep(interval)
        save(emu, path, at_shutdown=False)


def restore(emu: Emulator, data: dict[str, Any]) -> None:
    if data.get("format") != FORMAT:
        raise ValueError(f"unknown state format {data.get('format')!r}")
    _restore_clock(emu, data["clock"])
    emu.realms.clear()
    id_gap = 0 if data.get("saved_at_shutdown", True) else CRASH_ID_GAP
    for saved in data["realms"]:
        realm = _restore_realm(emu, saved, id_gap)
        # a loaded company's writes are announced as webhooks too, like add_realm's
        realm.on_change = emu.webhooks.recorder(realm.id)
        emu.realms[realm.id] = realm
    _restore_oauth(emu, data["oauth"])


# -- clock -------------------------------------------------------------------
def _dump_clock(emu: Emulator) -> dict[str, Any]:
    clock = emu.clock
    if clock.frozen:
        return {"frozen": clock.now().isoformat()}
    return {"offset_seconds": (clock.now() - datetime.now(UTC)).total_seconds()}


def _restore_clock(emu: Emulator, saved: dict[str, Any]) -> None:
    if saved.get("frozen"):
        emu.clock.freeze(datetime.fromisoformat(saved["frozen"]))
        return
    emu.clock.reset()
    emu.clock.advance(float(saved["offset_seconds"]))


# -- realms ------------------------------------------------------------------
def _dump_realm(realm: Realm) -> dict[str, Any]:
    tables = {}
    for name, table in realm.tables.items():
        tables[name] = {
            "next_id": table.next_id,
            "next_doc": table.next_doc,
            "live": [[r.id, r.created, r.updated, r.obj] for r in table.live.values()],
            "deleted": [[r.id, r.created, r.updated] for r in table.tombstones.values()],
        }
    return {"id": realm.id, "cdc_in_batch": realm.cdc_in_batch, "tables": tables}


def _restore_realm(emu: Emulator, saved: dict[str, Any], id_gap: int) -> Realm:
    realm = Realm(str(saved["id"]), emu.clock)
    realm.cdc_in_batch = bool(saved.get("cdc_in_batch", True))
    for name, table_data in saved["tables"].items():
        if name not in ENTITIES:
            continue  # an entity this version no longer knows
        table = realm.tables[name]
        table.live.clear()
        table.tombstones.clear()
        table.log.clear()
        table.next_id = int(table_data["next_id"]) + id_gap
        table.next_doc = int(table_data["next_doc"])
        for obj_id, created, updated, obj in table_data["live"]:
            normalize_money(obj)  # money comes back as plain numbers: 337.50 again on the wire
            record = Record(name, obj_id, obj, int(created), int(updated), next(_SEQ))
            table.live[obj_id] = record
            table.learn(obj)
            realm._claim_name(table.facts, obj, obj_id)
        for obj_id, created, updated in table_data["deleted"]:
            record = Record(name, obj_id, None, int(created), int(updated), next(_SEQ))
            table.tombstones[obj_id] = record
        table.log = sorted(
            (r.updated, r.seq, r.id) for r in [*table.live.values(), *table.tombstones.values()]
        )
    return realm


# -- OAuth -------------------------------------------------------------------
def _dump_oauth(emu: Emulator) -> dict[str, Any]:
    oauth = emu.oauth
    return {
        "clients": oauth.clients,
        "signing_key": oauth.signer.pem(),
        "chains": [
            [c.id, c.realm, c.client_id, c.created, c.scope, c.current_refresh, c.revoked]
            for c in oauth.chains.values()
        ],
        "refresh": [
            [t.value, t.chain.id, t.issued, t.expires, t.superseded]
            for t in oauth.refresh_tokens.values()
        ],
        "access": [[t.value, t.tid, t.chain.id, t.expires] for t in oauth.access_tokens.values()],
        "codes": [
            [
                value,
                c.realm,
                c.client_id,
                c.redirect_uri,
                c.scope,
                c.expires,
                c.used,
                c.chain.id if c.chain is not None else None,
            ]
            for value, c in oauth.codes.items()
        ],
    }


def _restore_oauth(emu: Emulator, saved: dict[str, Any]) -> None:
    oauth = emu.oauth
    oauth.reset()
    oauth.clients.update(saved["clients"])
    oauth.signer.load_pem(saved["signing_key"])
    for chain_id, realm, client_id, created, scope, current, revoked in saved["chains"]:
        oauth.chains[chain_id] = Chain(chain_id, realm, client_id, created, scope, current, revoked)
    for value, chain_id, issued, expires, superseded in saved["refresh"]:
        chain = oauth.chains[chain_id]
        oauth.refresh_tokens[value] = RefreshToken(value, chain, issued, expires, superseded)
    for value, tid, chain_id, expires in saved["access"]:
        oauth.access_tokens[value] = AccessToken(value, tid, oauth.chains[chain_id], expires)
    for value, realm, client_id, redirect, scope, expires, used, chain_id in saved["codes"]:
        issued_chain = oauth.chains.get(chain_id) if chain_id else None
        oauth.codes[value] = AuthCode(
            realm, client_id, redirect, scope, expires, used, issued_chain
        )
