"""What the console shows beside the instance object (DESIGN §10): counts per instance, and
"poll now" (issue 7's request_poll). Visibility as for instances."""

from __future__ import annotations

from collections.abc import Sequence

from poller import logs
from poller.manage.errors import NotFound
from poller.manage.users import Caller
from poller.store import api_instances, db, polls
from poller.store.console import InstanceCounts, instance_counts

log = logs.get_logger(__name__)
NO_COUNTS = InstanceCounts(0, 0, 0, 0)


class Overview:
    def __init__(self, pool: db.Pool) -> None:
        self.pool = pool

    async def counts(
        self, caller: Caller, instance_ids: Sequence[int]
    ) -> dict[int, InstanceCounts]:
        """Counts of the instances the caller may see (others are left out)."""
        async with db.acquire(self.pool) as conn:
            return await instance_counts(conn, instance_ids, caller.owner_filter)

    async def poll_now(self, caller: Caller, instance_id: int) -> int:
        """Makes every pair of the instance due now; the number of pairs (0: paused,
        disconnected or events off)."""
        async with db.acquire(self.pool) as conn:
            if await api_instances.one(conn, instance_id, caller.owner_filter) is None:
                raise NotFound(f"no instance with id {instance_id}")
            request = await polls.request_poll(conn, instance_id=instance_id)
        log.info("poll_requested", instance_id=instance_id, pairs=request.pairs, user=caller.name)
        return request.pairs
