"""The cost of the secret key's start-up check and of `rekey`, for N instances.

A scratch database on PostgreSQL (BENCH_DATABASE_URL, DATABASE_URL, or 127.0.0.1:5432) gets N
instances, each with every sealed value (client secret, signature key, instance token, webhook
verifier token, authorization code, access and refresh tokens) under key A. Then it times
`check_readable` (what `run` and `check-config` do at start-up) with A as the current key, with
B current and A previous (each value is first tried with B, directly and through the legacy
derivation), `rekey` to B, and a second `rekey` (nothing to do).

    .venv/bin/python bench/secret_key.py [--instances 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import sys
import time
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scratch import drop_database, scratch_database  # noqa: E402  (bench/scratch.py)

from poller import logs, secret_keys  # noqa: E402
from poller.instances import parse_instance  # noqa: E402
from poller.store import db, instance_rows, sealed  # noqa: E402
from poller.store.crypto import SecretBox  # noqa: E402

BODY = {
    "providerData": {"code": "AUTH-CODE", "realmId": "9130357766900456"},
    "configuration": {
        "oauth.callback.url": "https://myapp.example/oauth",
        "oauth.api.key": "CLIENT-ID",
        "oauth.api.secret": "CLIENT-SECRET",
        "event.notification.enabled": True,
        "event.notification.callback.url": "https://myapp.example/qbo-events",
        "event.notification.signature.key": "SIGNATURE-KEY",
        "event.webhook.verifier.token": "VERIFIER-TOKEN",
        "event.poller.urls": "customers|invoices",
    },
}


async def seed(conn: asyncpg.Connection, box: SecretBox, n: int) -> None:
    for i in range(n):
        body = copy.deepcopy(BODY)
        body["name"] = f"bench-{i}"
        result = await instance_rows.upsert(conn, parse_instance(body), box)
        await conn.execute(
            "UPDATE instances SET token_enc = $2, token_hash = $3 WHERE id = $1",
            result.instance_id,
            box.seal(f"element-token-{i}"),
            f"hash-{i}",
        )
        await conn.execute(
            "UPDATE oauth_credentials SET access_token_enc = $2, refresh_token_enc = $3"
            " WHERE instance_id = $1",
            result.instance_id,
            box.seal(f"access-token-{i}"),
            box.seal(f"refresh-token-{i}"),
        )


async def timed(label: str, call: object) -> object:
    started, cpu = time.perf_counter(), time.process_time()
    result = await call  # type: ignore[misc]
    wall, used = time.perf_counter() - started, time.process_time() - cpu
    print(f"{label:<40} {wall * 1000:8.1f} ms wall  {used * 1000:8.1f} ms CPU  {result}")
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000)
    args = parser.parse_args()
    logs.configure("error", "console")
    server = (
        os.environ.get("BENCH_DATABASE_URL")
        or os.environ.get("DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    key_a, key_b = secret_keys.generate_key(), secret_keys.generate_key()
    dsn = await scratch_database(server)
    try:
        conn = await db.connect(dsn)
        try:
            await seed(conn, SecretBox(key_a), args.instances)
            print(f"{args.instances} instances, 7 sealed values each; load {os.getloadavg()}")
            await timed("check_readable, key A", sealed.check_readable(conn, SecretBox(key_a)))
            rotated = SecretBox(key_b, [key_a])
            await timed("check_readable, key B + previous A", sealed.check_readable(conn, rotated))
            await timed("rekey to B", sealed.rekey(conn, rotated))
            await timed("rekey again (nothing to do)", sealed.rekey(conn, rotated))
            await timed("check_readable, key B", sealed.check_readable(conn, SecretBox(key_b)))
        finally:
            await conn.close()
    finally:
        await drop_database(server, dsn)


if __name__ == "__main__":
    asyncio.run(main())
