"""PollerService: owns every instance's ChangeFeed and pair tasks (DESIGN §2).

The supervisor builds it with its dependencies. It re-reads the instances table
every `rescan_s` and starts, restarts (config_version changed) or stops instances without a
daemon restart. Every task lives in a TaskGroup: an instance's cycle loop and pair tasks in the
instance's group, the instances in the service's group. An instance that loses its OAuth grant
(`ReconnectRequired`) is marked `needs_reconnect` and stops; the others go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from poller import metrics, resources
from poller.aio import sleep_unless
from poller.config import Settings
from poller.detect.cycle import DEFAULT_WINDOW_S, BeforeCommit, InstanceConfig, InstanceCycles
from poller.detect.feed import BatchCdcMemory, ChangeFeed
from poller.detect.heartbeat import Liveness
from poller.detect.pairs import PairPoller
from poller.detect.schedule import InstanceSchedule
from poller.detect.wakeups import Target, Wakeups
from poller.errors import DatabaseError
from poller.instances import VendorType
from poller.logs import get_logger
from poller.progress import Progress
from poller.qbo.types import RealmApi, ReconnectRequired
from poller.store import cursors, db, instance_rows
from poller.store.cursors import PollableInstance

log = get_logger(__name__)

RESCAN_S = 2.0
RESTART_BACKOFF_S = 5.0
RealmFactory = Callable[[int, str], RealmApi]


@dataclass(frozen=True)
class PollerOptions:
    """Knobs with daemon defaults; tests shorten them."""

    rescan_s: float = RESCAN_S
    window_s: float = DEFAULT_WINDOW_S  # coalescing window of a cycle (capped by interval/4)
    cdc_cap: int = 1000
    page_size: int = 1000
    initial_spread_s: float | None = None  # None: min(interval, 30 s)
    before_commit: BeforeCommit | None = None  # test hook: runs between QBO's answer and commit


@dataclass(eq=False)
class _Running:
    instance: PollableInstance
    stop: asyncio.Event
    task: asyncio.Task[None] | None = None
    cycles: InstanceCycles | None = None
    pairs: list[PairPoller] = field(default_factory=list)


class PollerService:
    name = "poller"

    def __init__(
        self,
        pool: db.Pool,
        settings: Settings,
        realm_factory: RealmFactory,
        options: PollerOptions | None = None,
        dsn: str | None = None,
        liveness: Liveness | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.realm_factory = realm_factory
        self.options = options or PollerOptions()
        # The replica's heartbeat (poller.detect.heartbeat), shared by every instance's leases.
        self.liveness = liveness or Liveness(settings.replica_timeout_s)
        # Poll requests of other processes (poller.store.polls) wake pairs; None: no listener.
        self.wakeups = (
            None if dsn is None else Wakeups(pool, partial(db.connect, dsn), self._targets)
        )
        self.batch_cdc = BatchCdcMemory()
        self.running: dict[int, _Running] = {}
        # Each turn of the rescan loop, for the systemd watchdog (poller.progress).
        self.progress = progress or Progress(self.name)

    async def run(self, stop: asyncio.Event) -> None:
        log.info("poller_started", replica=self.settings.replica_id)
        try:
            async with asyncio.TaskGroup() as group:
                if self.wakeups is not None:
                    group.create_task(self.wakeups.run(stop), name="poller:wakeups")
                while not stop.is_set():
                    self.progress.beat()
                    await self._rescan_logged(group)
                    self.progress.idle()
                    await sleep_unless(stop, self.options.rescan_s)
                for run in self.running.values():
                    run.stop.set()
        finally:
            self.running.clear()
        log.info("poller_stopped")

    def _targets(self) -> dict[int, Target]:
        """The instances polling here, for poll requests."""
        return {
            instance_id: Target(run.cycles, [pair.resource.name for pair in run.pairs])
            for instance_id, run in self.running.items()
            if run.cycles is not None and not run.stop.is_set()
        }

    async def _rescan_logged(self, group: asyncio.TaskGroup) -> None:
        try:
            await self.rescan(group)
        except DatabaseError as exc:
            log.warning("instance_scan_failed", error=f"{type(exc).__name__}: {exc}")

    async def rescan(self, group: asyncio.TaskGroup) -> None:
        """Bring the running instances in line with the database."""
        async with db.acquire(self.pool) as conn:
            wanted = {i.id: i for i in await cursors.pollable_instances(conn)}
        for instance_id, run in list(self.running.items()):
            inst = wanted.get(instance_id)
            if run.task is None or run.task.done():
                del self.running[instance_id]
            elif inst is None or inst.config_version != run.instance.config_version:
                log.info(
                    "instance_stopping",
                    instance=run.instance.name,
                    instance_id=instance_id,
                    reason="removed or paused" if inst is None else "configuration changed",
                )
                run.stop.set()
        for instance_id, inst in wanted.items():
            current = self.running.get(instance_id)
            if current is None or current.task is None or current.task.done():
                self._start(group, inst, None)
            elif current.stop.is_set() and current.instance.config_version != inst.config_version:
                # Restart after the old tasks are gone: two pollers of one pair in one replica
                # would share the lease owner and both believe they hold it.
                self._start(group, inst, current.task)

    def _start(
        self, group: asyncio.TaskGroup, inst: PollableInstance, previous: asyncio.Task[None] | None
    ) -> None:
        run = _Running(inst, asyncio.Event())
        run.task = group.create_task(self._instance(run, previous), name=f"instance:{inst.id}")
        self.running[inst.id] = run

    async def _instance(self, run: _Running, previous: asyncio.Task[None] | None) -> None:
        """One instance's lifetime; never raises (one instance must not stop the others)."""
        if previous is not None:
            await asyncio.wait({previous})
        inst = run.instance
        try:
            await self._run_instance(run)
        except Exception as exc:
            log.error(
                "instance_failed",
                instance=inst.name,
                instance_id=inst.id,
                error=f"{type(exc).__name__}: {exc}",
                exc_info=exc,
            )
            await sleep_unless(run.stop, RESTART_BACKOFF_S)
        finally:
            metrics.forget_instance(inst.name, list(inst.resources))

    async def _run_instance(self, run: _Running) -> None:
        inst = run.instance
        realm = self.realm_factory(inst.id, inst.realm_id)
        interval = inst.refresh_interval_s
        feed = ChangeFeed(
            realm,
            overlap_s=self.settings.overlap_seconds,
            batch_cdc=self.batch_cdc,
            cdc_cap=self.options.cdc_cap,
            page_size=self.options.page_size,
            name=inst.name,
        )
        cycles = InstanceCycles(
            self.pool,
            feed,
            self._instance_config(inst),
            InstanceSchedule(
                interval,
                self.options.initial_spread_s,
                baseline_now=inst.vendor_type == VendorType.WEBHOOK,
            ),
            window_s=min(self.options.window_s, interval / 4),
            before_commit=self.options.before_commit,
            liveness=self.liveness,
        )
        lost: list[ReconnectRequired] = []

        def reconnect(exc: ReconnectRequired) -> None:
            lost.append(exc)
            run.stop.set()

        run.cycles = cycles
        run.pairs = [PairPoller(cycles, res, reconnect) for res in self._resources(inst)]
        log.info(
            "instance_polling",
            instance=inst.name,
            instance_id=inst.id,
            realm_id=inst.realm_id,
            pairs=len(run.pairs),
            refresh_interval_s=interval,
        )
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(cycles.run(run.stop), name=f"cycles:{inst.id}")
                for pair in run.pairs:
                    group.create_task(
                        pair.run(run.stop), name=f"pair:{inst.id}:{pair.resource.name}"
                    )
            if lost:
                await self._needs_reconnect(inst, lost[0])
        finally:
            await cycles.release()

    def _resources(self, inst: PollableInstance) -> Sequence[resources.Resource]:
        known = []
        for name in inst.resources:
            if name in resources.ALL_RESOURCES:
                known.append(resources.get(name))
            else:
                log.warning("unknown_resource_skipped", instance=inst.name, resource=name)
        return known

    def _instance_config(self, inst: PollableInstance) -> InstanceConfig:
        settings = self.settings
        return InstanceConfig(
            inst.id,
            inst.name,
            inst.refresh_interval_s,
            inst.initial_mode,
            inst.deactivated_as_deleted,
            settings.reconcile_interval_s,
            settings.events_per_notification,
            settings.replica_timeout_s,
            settings.replica_id,
            changes=inst.changes,
        )

    async def _needs_reconnect(self, inst: PollableInstance, exc: ReconnectRequired) -> None:
        log.error(
            "instance_needs_reconnect",
            instance=inst.name,
            instance_id=inst.id,
            error=str(exc),
            action="polling stopped until the company is reconnected",
        )
        try:
            async with db.acquire(self.pool) as conn:
                await instance_rows.mark_needs_reconnect(conn, inst.id, f"OAuth grant lost: {exc}")
        except DatabaseError as db_exc:
            log.warning("instance_status_not_saved", instance=inst.name, error=str(db_exc))
