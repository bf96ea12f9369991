"""`instances remove` while the instance is being polled (issue 10 finding 8): the cycle's
commit finds the instance gone and ends the poll with one clear line, no FK-violation traceback."""

from __future__ import annotations

from typing import Any

import structlog

from poller.store import instance_rows
from tests.detect.harness import Env, add_instance


async def test_a_removal_during_a_poll_ends_it_cleanly(env: Env) -> None:
    emu, pool = env.emu, env.pool
    realm = emu.add_realm(seed=2, per_entity=2)
    iid = await add_instance(pool, emu, realm, resources=["customers"], initial="backfill")

    async def remove_meanwhile(*_: Any) -> None:
        async with pool.acquire() as conn:  # another connection: `qbo-poller instances remove`
            await instance_rows.remove(conn, "inst")

    with structlog.testing.capture_logs() as logged:
        async with env.driver(iid, before_commit=remove_meanwhile) as driver:
            outcomes = await driver.cycle(return_exceptions=True)
    assert await pool.fetchval("SELECT count(*) FROM instances") == 0
    assert await pool.fetchval("SELECT count(*) FROM events") == 0
    text = repr(logged) + repr(outcomes)
    assert "ForeignKeyViolation" not in text and "foreign key" not in text
    assert [e["event"] for e in logged if e["log_level"] in ("warning", "error")] == []
    removed = [e for e in logged if e["event"] == "instance_removed_during_poll"]
    assert len(removed) == 1 and removed[0]["instance"] == "inst"
    assert "exc_info" not in removed[0]
