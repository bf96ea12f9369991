"""A dispatcher process for the crash test: `python -m tests.deliver.crash_child DSN LEASE_S`.
The test kills it with SIGKILL while its deliveries hang."""

from __future__ import annotations

import asyncio
import sys

from poller.deliver.dispatcher import Dispatcher
from poller.store import db
from tests.deliver.helpers import BOX, settings


async def main(dsn: str, lease_s: float) -> None:
    pool = await db.create_pool(dsn, max_size=4)
    cfg = settings(
        replica_id="doomed",
        delivery_lease_s=lease_s,
        delivery_concurrency=500,
        delivery_per_url_concurrency=500,
        delivery_timeout_s=60,
    )
    await Dispatcher(cfg, pool, dsn, BOX).run(asyncio.Event())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
