"""Field-level changes (DESIGN §12): storage per snapshot row and CPU per UPDATED event.

Storage: the emulator's sample entities (Customer, Invoice, Item, Bill; --objects of each,
10,000 by default) go through the real outbox write (`outbox.write`, the statement a poll
cycle commits) for two instances on a scratch database (BENCH_DATABASE_URL, DATABASE_URL, or
127.0.0.1:5432): one without `event.poller.changes` (rows keep no object) and one with it (rows
keep the full object, `json`). Printed per resource: the object's JSON size, bytes per row
(pg_column_size of the row) with and without the option, and the table's growth
(pg_total_relation_size, heap + TOAST + index, per row). Then the same objects stored under
other compression choices: PostgreSQL's default (pglz, but only for rows over the ~2 kB TOAST
threshold), `toast_tuple_target = 128` (pglz for every row over 128 bytes), the same with lz4,
and explicit zlib in Python (bytea).

CPU: per UPDATED event, what the cycle adds for an instance with the option: decoding the
stored old object, comparing it with the new one and serialising the changes
(`changes.annotate` + `outbox.serialize_changes`), and serialising the object each snapshot
row keeps. Measured with process time over --events edits made in the emulator (a billing
address, a line amount, an inserted line).

    .venv/bin/python bench/changes.py [--objects 10000] [--events 4000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scratch import drop_database, scratch_database  # noqa: E402  (bench/scratch.py)

from poller import logs  # noqa: E402
from poller.detect import changes  # noqa: E402
from poller.instances import parse_instance  # noqa: E402
from poller.qbo.parse import loads_verbatim  # noqa: E402
from poller.records import Event, EventType, SnapshotRow  # noqa: E402
from poller.store import db, instance_rows, outbox  # noqa: E402
from poller.store.crypto import SecretBox  # noqa: E402
from qbo_emulator.core import Emulator  # noqa: E402

ENTITIES = {"Customer": "customers", "Invoice": "invoices", "Item": "products", "Bill": "bills"}
T0 = datetime(2026, 11, 24, tzinfo=UTC)
BATCH = 1000


async def add_instance(conn: Any, name: str, realm: str, keep: bool) -> int:
    body = {
        "name": name,
        "providerData": {"refreshToken": "bench", "realmId": realm},
        "configuration": {
            "oauth.api.key": "k",
            "oauth.api.secret": "s",
            "event.notification.enabled": True,
            "event.notification.callback.url": "http://127.0.0.1:9/hook",
            "event.poller.urls": "|".join(ENTITIES.values()),
            "event.poller.changes": keep,
        },
    }
    result = await instance_rows.upsert(conn, parse_instance(body), SecretBox(None))
    return result.instance_id


def sample(emu: Emulator, realm: str) -> dict[str, list[Any]]:
    """Each resource's objects as the client decodes them (decimal literals verbatim)."""
    out: dict[str, list[Any]] = {}
    for entity, resource in ENTITIES.items():
        table = emu.realm(realm).table(entity)
        out[resource] = [loads_verbatim(rec.json()) for rec in table.live.values()]
    return out


async def store(conn: Any, instance_id: int, objects: dict[str, list[Any]], keep: bool) -> None:
    for resource, objs in objects.items():
        for i in range(0, len(objs), BATCH):
            chunk = objs[i : i + BATCH]
            rows = [
                SnapshotRow(str(o["Id"]), str(o["SyncToken"]), T0, o.get("Active")) for o in chunk
            ]
            kept = {str(o["Id"]): o for o in chunk} if keep else None
            write = outbox.PairWrite(resource, rows, [], kept)
            async with conn.transaction():
                await outbox.write(conn, instance_id, [write], 10)


SIZES = """
SELECT resource, count(*) AS n,
       avg(pg_column_size(s.*)) AS row_bytes,
       avg(coalesce(pg_column_size(object), 0)) AS object_bytes
FROM object_snapshots s WHERE instance_id = $1 GROUP BY resource ORDER BY resource
"""


async def table_bytes(conn: Any) -> int:
    await conn.execute("VACUUM object_snapshots")
    return int(await conn.fetchval("SELECT pg_total_relation_size('object_snapshots')"))


async def sizes(conn: Any, instance_id: int) -> dict[str, asyncpg.Record]:
    return {r["resource"]: r for r in await conn.fetch(SIZES, instance_id)}


async def as_json_column(
    conn: Any, objects: dict[str, list[Any]], options: str
) -> dict[str, float]:
    """pg_column_size of the objects stored as text in a `json` column left to PostgreSQL."""
    name = f"alt_{uuid.uuid4().hex[:6]}"
    await conn.execute(f"CREATE TABLE {name} (resource text, id text, object json) {options}")
    for resource, objs in objects.items():
        await conn.executemany(
            f"INSERT INTO {name} VALUES ($1, $2, $3::json)",
            [(resource, str(o["Id"]), outbox.serialize(o)) for o in objs],
        )
    rows = await conn.fetch(
        f"SELECT resource, avg(pg_column_size(object)) AS b FROM {name} GROUP BY resource"
    )
    await conn.execute(f"DROP TABLE {name}")
    return {r["resource"]: float(r["b"]) for r in rows}


async def measure_storage(conn: Any, objects: dict[str, list[Any]], realm: str) -> None:
    n = sum(len(v) for v in objects.values())
    before = await table_bytes(conn)
    plain = await add_instance(conn, "plain", realm, keep=False)
    await store(conn, plain, objects, keep=False)
    after_plain = await table_bytes(conn)
    full = await add_instance(conn, "full", realm, keep=True)
    await store(conn, full, objects, keep=True)
    after_full = await table_bytes(conn)
    off, on = await sizes(conn, plain), await sizes(conn, full)
    print(f"snapshot rows: {n} per instance ({len(objects)} resources)")
    print(
        f"{'resource':<10} {'objects':>7} {'JSON B':>7} {'kept B':>7} {'row B off':>9} "
        f"{'row B on':>9}"
    )
    for resource, objs in objects.items():
        a, b = off[resource], on[resource]
        text_bytes = sum(len(outbox.serialize(o)) for o in objs) / len(objs)
        print(
            f"{resource:<10} {b['n']:>7} {text_bytes:>7.0f} {b['object_bytes']:>7.0f} "
            f"{a['row_bytes']:>9.0f} {b['row_bytes']:>9.0f}"
        )
    print(
        f"table growth per row (pg_total_relation_size: heap, TOAST, index): without the option "
        f"{(after_plain - before) / n:.0f} B, with it {(after_full - after_plain) / n:.0f} B"
    )
    print("\nthe kept object (bytes per row) by storage choice:")
    choices = {
        "json column, PostgreSQL default": await as_json_column(conn, objects, ""),
        "json column, toast_tuple_target=128": await as_json_column(
            conn, objects, "WITH (toast_tuple_target = 128)"
        ),
    }
    for level in (1, 6, 9):
        choices[f"zlib level {level} (bytea)"] = {
            r: sum(len(zlib.compress(outbox.serialize(o).encode(), level)) + 4 for o in objs)
            / len(objs)
            for r, objs in objects.items()
        }
    print(f"{'choice':<38}" + "".join(f"{r:>10}" for r in objects))
    for label, per in choices.items():
        print(f"{label:<38}" + "".join(f"{per[r]:>10.0f}" for r in objects))
    flat = [o for objs in objects.values() for o in objs]
    start = time.process_time()
    packed = [outbox.pack_object(o) for o in flat]
    pack_s = time.process_time() - start
    start = time.process_time()
    for p in packed:
        outbox.unpack_object(p)
    unpack_s = time.process_time() - start
    print(
        f"zlib as stored (default level): pack {pack_s / len(flat) * 1e6:.0f} µs, "
        f"unpack {unpack_s / len(flat) * 1e6:.0f} µs per object"
    )


def edits(emu: Emulator, realm: str, count: int) -> list[tuple[str, Any]]:
    """(old object's stored text, new object) for `count` UPDATEDs of three kinds."""
    pairs: list[tuple[str, Any]] = []
    customers = emu.ids(realm, "Customer", include_inactive=False)
    invoices = emu.ids(realm, "Invoice")
    for i in range(count):
        kind = i % 3
        if kind == 0:
            entity, oid = "Customer", customers[i % len(customers)]
            old = emu.get(realm, entity, oid)
            assert old is not None
            body: dict[str, Any] = {"Id": oid, "BillAddr": dict(old["BillAddr"], City=f"City {i}")}
        else:
            entity, oid = "Invoice", invoices[i % len(invoices)]
            old = emu.get(realm, entity, oid)
            assert old is not None
            lines = [
                dict(line) for line in old["Line"] if line.get("DetailType") != "SubTotalLineDetail"
            ]
            if kind == 1:
                lines[0]["Amount"] = round(float(lines[0]["Amount"]) + 1.25, 2)
            else:
                lines.insert(
                    0,
                    {
                        "Amount": 9.5,
                        "DetailType": "SalesItemLineDetail",
                        "SalesItemLineDetail": {"ItemRef": {"value": "1"}},
                    },
                )
            body = {"Id": oid, "Line": lines}
        old_text = emu.realm(realm).get(entity, oid).json().decode()  # type: ignore[union-attr]
        emu.update(realm, entity, body)
        new = loads_verbatim(emu.realm(realm).get(entity, oid).json())  # type: ignore[union-attr]
        pairs.append((old_text, new))
    return pairs


def measure_cpu(pairs: list[tuple[str, Any]]) -> None:
    events = [
        Event(str(new["Id"]), str(new["SyncToken"]), EventType.UPDATED, T0, new) for _, new in pairs
    ]
    stored = [zlib.compress(old.encode()) for old, _ in pairs]  # as object_snapshots keeps it
    start = time.process_time()
    total_changes = 0
    for event, packed in zip(events, stored, strict=True):
        (annotated,) = changes.annotate([event], {event.object_id: outbox.unpack_object(packed)})
        total_changes += len(annotated.changes or [])
        outbox.serialize_changes(annotated.changes)
    compare_s = time.process_time() - start
    start = time.process_time()
    for _, new in pairs:
        outbox.pack_object(new)
    keep_s = time.process_time() - start
    n = len(pairs)
    print(
        f"\nCPU per UPDATED event ({n} edits: address, line amount, inserted line; "
        f"{total_changes / n:.1f} changes each on average):"
    )
    print(f"  unpack + decode the kept object, compare, serialise: {compare_s / n * 1e6:.0f} µs")
    print(f"  serialise and compress the object the row keeps:    {keep_s / n * 1e6:.0f} µs")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=10_000, help="per entity")
    parser.add_argument("--events", type=int, default=4000)
    args = parser.parse_args()
    logs.configure("error", "console")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    emu = Emulator()
    realm = emu.add_realm(seed=7, per_entity={e: args.objects for e in ENTITIES})
    objects = sample(emu, realm)
    server = (
        os.environ.get("BENCH_DATABASE_URL")
        or os.environ.get("DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    dsn = await scratch_database(server)
    try:
        conn = await db.connect(dsn)
        try:
            await measure_storage(conn, objects, realm)
        finally:
            await conn.close()
    finally:
        await drop_database(server, dsn)
    measure_cpu(edits(emu, realm, args.events))


if __name__ == "__main__":
    asyncio.run(main())
