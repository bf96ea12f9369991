"""PollerService: owns every instance's ChangeFeed and pair tasks (DESIGN §2).

The supervisor builds it with its dependencies. It starts, restarts (config_version changed)
or stops instances without a daemon restart. With a listener (a DSN), it reads every instance
once at start-up and then only the instances a notification names
(`cursors.INSTANCES_CHANNEL`, sent by the database's triggers for every change that matters,
from any process): the cost of a rescan follows what changed, not how many instances there
are. A full read again only after the LISTEN connection was lost (notifications sent
meanwhile are gone) and every `full_rescan_s` as a backstop. Without one, it re-reads
everything every `rescan_s`. Every task lives in a TaskGroup: an instance's cycle loop and its
pair schedule (one task: `poller.detect.pairs`) in the instance's group, the instances in the
service's group. An instance that loses its OAuth grant
(`ReconnectRequired`) is marked `needs_reconnect` and stops; the others go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from poller import metrics, resources
from poller.aio import sleep_unless
from poller.config import Settings
from poller.detect.cycle import DEFAULT_WINDOW_S, BeforeCommit, InstanceConfig, InstanceCycles
from poller.detect.feed import BatchCdcMemory, ChangeFeed
from poller.detect.heartbeat import Liveness
from poller.detect.pairs import InstancePairs
from poller.detect.schedule import INITIAL_SPREAD_CAP_S, InstanceSchedule
from poller.detect.wakeups import Target, Wakeups
from poller.errors import DatabaseError
from poller.instances import VendorType
from poller.logs import get_logger
from poller.progress import Progress
from poller.qbo.types import RealmApi, ReconnectRequired
from poller.store import cursors, db, instance_rows
from poller.store.cursors import PollableInstance

log = get_logger(__name__)

RESCAN_S = 2.0  # without a listener: the full re-read's period
FULL_RESCAN_S = 600.0  # with one: a backstop (the instances' tasks re-read themselves on exit)
CHANGES_WINDOW_S = 0.1  # notifications arriving within this window become one read
SETTLE_S = 5.0  # instances started or stopped, then no change for this long: settled
RESTART_BACKOFF_S = 5.0
# Instances started together (a daemon's start-up) take their first polls, each with a token
# refresh, at most about this many per second: 4,500 within 30 s made the token saves time
# out waiting for the pool, and their in-flight state set the process's high-water RSS.
START_RATE = 50.0
RealmFactory = Callable[[int, str], RealmApi]


@dataclass(frozen=True)
class PollerOptions:
    """Knobs with daemon defaults; tests shorten them."""

    rescan_s: float = RESCAN_S
    full_rescan_s: float = FULL_RESCAN_S
    settle_s: float = SETTLE_S
    window_s: float = DEFAULT_WINDOW_S  # coalescing window of a cycle (capped by interval/4)
    cdc_cap: int = 1000
    page_size: int = 1000
    # None: min(interval, 30 s, or longer when many instances start at once: START_RATE)
    initial_spread_s: float | None = None
    before_commit: BeforeCommit | None = None  # test hook: runs between QBO's answer and commit


@dataclass(eq=False)
class _Running:
    instance: PollableInstance
    stop: asyncio.Event
    spread_s: float | None = None  # the first poll within this long (None: the schedule's)
    task: asyncio.Task[None] | None = None
    cycles: InstanceCycles | None = None
    pairs: InstancePairs | None = None


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
        on_settled: Callable[[], None] | None = None,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.realm_factory = realm_factory
        self.options = options or PollerOptions()
        # The replica's heartbeat (poller.detect.heartbeat), shared by every instance's leases.
        self.liveness = liveness or Liveness(settings.replica_timeout_s)
        # Poll requests of other processes (poller.store.polls) wake pairs, and instance
        # changes reach the rescan, on one LISTEN connection; None: no listener.
        self.wakeups = (
            None
            if dsn is None
            else Wakeups(
                pool,
                partial(db.connect, dsn),
                self._targets,
                channels={cursors.INSTANCES_CHANNEL: self._instance_notified},
                on_listening=self._listening,
            )
        )
        self.batch_cdc = BatchCdcMemory()
        self.running: dict[int, _Running] = {}
        # Each turn of the rescan loop, for the systemd watchdog (poller.progress).
        self.progress = progress or Progress(self.name)
        # Called once the running instances have settled after a change (the supervisor
        # freezes the long-lived state out of the garbage collector's way then).
        self.on_settled = on_settled
        self.full_scans = 0  # reads of every instance (tests look)
        self.partial_scans = 0  # reads of the instances notifications named
        self._changed: set[int] = set()  # instance ids to re-read
        self._full = True  # the next read is of every instance
        self._dirty = asyncio.Event()  # something to re-read

    async def run(self, stop: asyncio.Event) -> None:
        log.info("poller_started", replica=self.settings.replica_id)
        try:
            async with asyncio.TaskGroup() as group:
                if self.wakeups is not None:
                    group.create_task(self.wakeups.run(stop), name="poller:wakeups")
                unsettled = False
                while not stop.is_set():
                    self.progress.beat()
                    changed = await self._rescan_logged(group)
                    unsettled |= changed
                    if unsettled and not changed:  # a read that found nothing more to do
                        unsettled = False
                        if self.on_settled is not None:
                            self.on_settled()
                    self.progress.idle()
                    await self._wait_for_changes(stop, settling=unsettled)
                for run in self.running.values():
                    run.stop.set()
        finally:
            self.running.clear()
        log.info("poller_stopped")

    def _targets(self) -> dict[int, Target]:
        """The instances polling here, for poll requests."""
        return {
            instance_id: Target(run.cycles, run.pairs.names())
            for instance_id, run in self.running.items()
            if run.cycles is not None and run.pairs is not None and not run.stop.is_set()
        }

    async def _wait_for_changes(self, stop: asyncio.Event, *, settling: bool) -> None:
        """Until there is something to re-read: a notification (then a short window that
        gathers the ones close behind it), or without a listener the next periodic read.
        `settling`: instances were just started or stopped; come back after `settle_s` if
        nothing else changes, to tell `on_settled`."""
        if self.wakeups is None:
            await sleep_unless(stop, self.options.rescan_s)
            self._full = True
            return
        dirty = asyncio.ensure_future(self._dirty.wait())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait(
                (dirty, stopped),
                timeout=self.options.settle_s if settling else self.options.full_rescan_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            dirty.cancel()
            stopped.cancel()
        if not self._dirty.is_set():
            self._full |= not settling  # the backstop
            return
        await sleep_unless(stop, CHANGES_WINDOW_S)

    def _instance_notified(self, payload: str) -> None:
        """A notification of `cursors.INSTANCES_CHANNEL`: the instance id to re-read."""
        try:
            self._changed.add(int(payload))
        except ValueError:
            log.warning("instance_change_unreadable", payload=payload[:100])
            self._full = True
        self._dirty.set()

    async def _listening(self, missed: bool) -> None:
        """After a reconnect: changes may have been missed, read everything once."""
        if missed:
            self._full = True
            self._dirty.set()

    async def _rescan_logged(self, group: asyncio.TaskGroup) -> bool:
        """A rescan that fails is retried (everything it was to read is kept); whether it
        started or stopped an instance."""
        full, changed = self._full, self._changed
        self._full, self._changed = False, set()
        self._dirty.clear()
        try:
            return await self.rescan(group, None if full else changed)
        except DatabaseError as exc:
            log.warning("instance_scan_failed", error=f"{type(exc).__name__}: {exc}")
            self._full |= full
            self._changed |= changed
            if self.wakeups is not None:  # no backstop of its own: try again after a pause
                self._retry_later()
            return False

    def _retry_later(self) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(RESTART_BACKOFF_S, self._dirty.set)

    async def rescan(self, group: asyncio.TaskGroup, ids: set[int] | None = None) -> bool:
        """Bring the running instances in line with the database: all of them, or those of
        `ids`. Whether any instance was started or stopped."""
        if ids is not None and not ids:
            return False
        async with db.acquire(self.pool) as conn:
            found = await cursors.pollable_instances(conn, None if ids is None else sorted(ids))
        if ids is None:
            self.full_scans += 1
        else:
            self.partial_scans += 1
        wanted = {i.id: i for i in found}
        scope = set(self.running) | set(wanted) if ids is None else ids
        changed = False
        for instance_id, run in list(self.running.items()):
            if instance_id not in scope:
                continue
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
                changed = True
        starting: list[tuple[PollableInstance, asyncio.Task[None] | None]] = []
        for instance_id, inst in wanted.items():
            current = self.running.get(instance_id)
            if current is None or current.task is None or current.task.done():
                starting.append((inst, None))
            elif current.stop.is_set() and current.instance.config_version != inst.config_version:
                # Restart after the old tasks are gone: two pollers of one pair in one replica
                # would share the lease owner and both believe they hold it.
                starting.append((inst, current.task))
        spread_s = self._spread_s(len(starting))
        for inst, previous in starting:
            self._start(group, inst, previous, spread_s)
        changed |= bool(starting)
        return changed

    def _spread_s(self, starting: int) -> float | None:
        """How long the first polls of `starting` instances started together spread over."""
        if self.options.initial_spread_s is not None:
            return self.options.initial_spread_s
        return max(INITIAL_SPREAD_CAP_S, starting / START_RATE)

    def _start(
        self,
        group: asyncio.TaskGroup,
        inst: PollableInstance,
        previous: asyncio.Task[None] | None,
        spread_s: float | None = None,
    ) -> None:
        run = _Running(inst, asyncio.Event(), spread_s)
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
            if not run.stop.is_set():  # ended by itself: read its row again, restart it
                self._changed.add(inst.id)
                self._dirty.set()
            elif self.running.get(inst.id) is run:  # stopped for good (removed, paused)
                del self.running[inst.id]

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
                None if run.spread_s is None else min(interval, run.spread_s),
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
        pairs = run.pairs = InstancePairs(cycles, self._resources(inst), reconnect)
        log.info(
            "instance_polling",
            instance=inst.name,
            instance_id=inst.id,
            realm_id=inst.realm_id,
            pairs=len(pairs.resources),
            refresh_interval_s=interval,
        )
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(cycles.run(run.stop), name=f"cycles:{inst.id}")
                group.create_task(pairs.run(run.stop), name=f"pairs:{inst.id}")
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
            per_instance_metrics=settings.metrics_per_instance,
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
