"""The CLI's tables never print a control character or a callback URL's secrets (issue 16):
an instance stored before names were checked (here written by SQL, as an older daemon could)
is listed with its ESC and CR/LF escaped, by the real `qbo-poller` in a subprocess."""

from __future__ import annotations

import asyncio

from poller import logs
from poller.store import db
from tests.deliver.helpers import insert_instance, insert_many
from tests.e2e.daemon import base_env, run_once

NAME = "evil\x1b[31mred\r\nX"
SHOWN = "evil\\x1b[31mred\\r\\nX"


async def _seed(dsn: str) -> None:
    pool = await db.create_pool(dsn, max_size=2)
    try:
        url = "http://alice:s3cr3t-pass@127.0.0.1:9/hook?token=tok-abc123"
        iid = await insert_instance(pool, url, name=NAME)
        await insert_many(pool, iid, 1, notify=False)
        await pool.execute(
            "UPDATE notifications SET status = 'held', target_url = $1, attempts = 1", url
        )
        await pool.execute(
            "INSERT INTO callback_endpoints (url, status, gone_at) VALUES ($1, 'gone', now())", url
        )
    finally:
        await pool.close()


def test_instances_and_deliveries_lists_escape_names_and_redact_urls(db_dsn: str) -> None:
    asyncio.run(_seed(db_dsn))
    env = base_env(DATABASE_URL=db_dsn)
    for command in (["instances", "list"], ["deliveries", "list"]):
        result = run_once(command, env)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        out = result.stdout
        assert not logs.CONTROL_CHARS.search(out.replace("\n", "")), out
        assert "s3cr3t-pass" not in out and "tok-abc123" not in out
        assert SHOWN[:24] in out, out
    assert "410 Gone from http://***@127.0.0.1:9/hook?***" in out
    assert "  http://***@127.0.0.1:9/hook?***  gone since " in out
    assert f"held 1  ({SHOWN})" in out
