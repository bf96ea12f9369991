"""POLLER_SECRET_KEY rotation end to end (README "Rotating the secret key"): an instance with
tokens, a signature key and a webhook verifier token stored under key A; restart with key B and
A as the previous key; `qbo-poller rekey`; restart with B alone. Polling and signed deliveries
go on throughout, token refreshes included, and the database ends with nothing A opens."""

from __future__ import annotations

import asyncio
import re
import sys

import asyncpg
import pytest

from poller import secret_keys, supervisor
from poller.demo.receiver import Receiver, run_receiver
from poller.store.crypto import SecretBox, SecretKeyError
from qbo_emulator import run_emulator
from tests.e2e.daemon import base_env
from tests.e2e.pipeline import events_of, instance_for, running_daemon, settings_for, wait_for

A = secret_keys.generate_key()
B = secret_keys.generate_key()
SIGNATURE_KEY = "rotation-signature-key-Tq8"
VERIFIER = "rotation-verifier-token-Wz3"
SEALED_COLUMNS = (
    "SELECT client_secret_enc, signature_key_enc, webhook_verifier_enc, token_enc,"
    " auth_code_enc, access_token_enc, refresh_token_enc"
    " FROM instances i JOIN oauth_credentials c ON c.instance_id = i.id"
)


async def sealed_values(db_dsn: str) -> list[str]:
    conn = await asyncpg.connect(db_dsn)
    try:
        row = await conn.fetchrow(SEALED_COLUMNS)
    finally:
        await conn.close()
    assert row is not None
    return [value for value in row.values() if value is not None]


async def rekey(db_dsn: str, **env: str) -> str:
    """`qbo-poller rekey` as an operator runs it, in its own process."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "poller",
        "rekey",
        env=base_env(DATABASE_URL=db_dsn, **env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def a_change_arrives(emu: object, realm: str, receiver: Receiver, name: str) -> None:
    customer = emu.create(realm, "Customer", {"DisplayName": name})  # type: ignore[attr-defined]
    await wait_for(
        lambda: ("CREATED", "customers", customer["Id"]) in set(events_of(receiver)),
        what=f"the callback for {name}",
    )


async def a_refresh_happens(emu: object, realm: str) -> None:
    """Expire the access token: the daemon refreshes (reads the sealed refresh token, writes the
    rotated one under its current key)."""
    before = emu.counters(realm).get("token", 0)  # type: ignore[attr-defined]
    emu.expire_access_tokens(realm)  # type: ignore[attr-defined]
    await wait_for(
        lambda: emu.counters(realm).get("token", 0) > before,  # type: ignore[attr-defined]
        what="a token refresh",
    )


@pytest.mark.slow
async def test_rotate_restart_rekey_restart_without_the_previous_key(db_dsn: str) -> None:
    receiver = Receiver(default_key=SIGNATURE_KEY)
    async with run_emulator(per_second=None) as emu, run_receiver(receiver) as url:
        realm = emu.add_realm("4620816365100077", seed=3, per_entity=2)
        inst = instance_for(
            emu,
            realm,
            url,
            key=SIGNATURE_KEY,
            resources="customers",
            **{"event.webhook.verifier.token": VERIFIER},
        )
        # 1. Key A: the code is exchanged, tokens stored under A.
        async with running_daemon(settings_for(db_dsn, emu, POLLER_SECRET_KEY=A), [inst]):
            await wait_for(lambda: emu.counters(realm).get("token", 0) >= 1, what="the exchange")
            await wait_for(
                lambda: (
                    sum(v for k, v in emu.counters(realm).items() if k in ("query", "cdc")) >= 2
                ),
                what="first polls",
            )
            await a_change_arrives(emu, realm, receiver, "Under key A")
        # 2. Key B with A as the previous key: everything reads, new writes go under B.
        rotated = settings_for(db_dsn, emu, POLLER_SECRET_KEY=B, POLLER_SECRET_KEY_PREVIOUS=A)
        async with running_daemon(rotated, [inst]):
            await a_refresh_happens(emu, realm)
            await a_change_arrives(emu, realm, receiver, "Under B, A previous")
        mixed = await sealed_values(db_dsn)
        assert any(SecretBox(A).readable(v) for v in mixed)  # the client secret, at least
        assert any(SecretBox(B).readable(v) for v in mixed)  # the refreshed tokens
        # 3. rekey moves what is left under A; a second run has nothing to do.
        moved = await rekey(db_dsn, POLLER_SECRET_KEY=B, POLLER_SECRET_KEY_PREVIOUS=A)
        found = re.fullmatch(
            r"rekey: (\d+) secret\(s\) re-encrypted under the current key \(0 were in clear\), "
            r"(\d+) already were\n",
            moved,
        )
        assert found is not None, moved
        assert int(found[1]) >= 3  # client secret, signature key, verifier token
        again = await rekey(db_dsn, POLLER_SECRET_KEY=B, POLLER_SECRET_KEY_PREVIOUS=A)
        assert again.startswith("rekey: 0 secret(s) re-encrypted")
        values = await sealed_values(db_dsn)
        assert len(values) == len(mixed) and all(v.startswith("fernet:") for v in values)
        assert not any(SecretBox(A).readable(v) for v in values)
        assert all(SecretBox(B).is_current(v) for v in values)
        # The old key alone no longer starts the daemon: one line, at start-up.
        with pytest.raises(SecretKeyError, match="cannot decrypt the stored secrets of instance"):
            await supervisor.run(settings_for(db_dsn, emu, POLLER_SECRET_KEY=A), [inst])
        # 4. B alone: polling, refreshes and signed deliveries go on.
        async with running_daemon(settings_for(db_dsn, emu, POLLER_SECRET_KEY=B), [inst]):
            await a_refresh_happens(emu, realm)
            await a_change_arrives(emu, realm, receiver, "Under B alone")
    assert len(receiver.notifications) >= 3
    for received in receiver.notifications.values():
        assert received.elements_ok is True
        assert received.standard_ok in (True, None)
