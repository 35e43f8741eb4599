"""The firing loop: each process runs one; it submits the tasks of the schedules whose fire
time has come, and sleeps until the next one is due.

Exactly one task per schedule and fire time, across restarts and replicas: the task of a
fire time is inserted with an Idempotency-Key made of the schedule's name and the fire time
(Schedule.task_key), which the store's unique index holds in the insert's transaction.
Whatever happens around it (a kill between the insert and the move to the next fire time,
two replicas on one fire time), a second insert of that key returns the first task.

So that replicas do not all try every fire time, a process first claims the due schedules
under a lease (PostgreSQL: FOR UPDATE SKIP LOCKED), fires them, and moves each on to its
next fire time, which lets the lease go. A process that dies holding a lease leaves those
schedules to the others once it ends (schedule_lease).

Schedules declared in the configuration are created, or their definition replaced, at
start; one that was declared there and no longer is, is deleted (its tasks stay)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Mapping

from . import clock
from .config import ConfigError, Settings
from .errors import BadRequest, SidetaskError, Unprocessable
from .model import GraphRef
from .schedules import Definition, Schedule, plan
from .store import ScheduleStore
from .supervisor import Supervisor

log = logging.getLogger("sidetask.scheduler")

#: the longest the loop sleeps without asking the store when the next schedule is due (a
#: schedule made on another replica, a lease another let run out)
MAX_IDLE_SECONDS = 30.0
#: schedules claimed by one round
CLAIM_LIMIT = 100
#: fire times one claimed schedule submits in one round (more: the next round goes on)
FIRES_PER_ROUND = 1000
#: when a fire time's task could not be submitted now (a full queue: max_waiting; the store
#: could not write), it is tried again this much later
RETRY_SECONDS = 1.0
#: when it was refused as a bad request (its job type is not registered in this process,
#: or its input no longer fits the type: a command's parameters changed), this much later
REFUSED_RETRY_SECONDS = 60.0
#: a store that cannot be read or written: the loop waits this long before it tries again
STORE_RETRY_SECONDS = 1.0


class Scheduler:
    """Fires the schedules of the store this process shares; `wake` after a change."""

    def __init__(self, settings: Settings, store: ScheduleStore, supervisor: Supervisor) -> None:
        self.settings = settings
        self.store = store
        self.supervisor = supervisor
        #: this process's name on the leases it takes (new at every start), on a store of
        #: one process; on a shared one its replica id (owner)
        self._local_owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._grace_ms = int(settings.schedule_grace * 1000)
        self._lease_ms = max(1, int(settings.schedule_lease * 1000))
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        #: tasks submitted by this process's firings (for /metrics and tests)
        self.fired = 0

    @property
    def owner(self) -> str:
        """Who the leases this process takes name: on a store several processes share, its
        replica id, so that the sweep lets go of them once it is declared dead (a firing
        it died in is taken up then, not when the lease runs out)."""
        replica = self.supervisor.store.replica_id
        return self._local_owner if replica is None else replica

    # --- lifecycle ---

    async def start(self) -> None:
        await self.declare(self.settings.schedules_declared())
        self._loop = asyncio.create_task(self._run(), name="sidetask-scheduler")

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None

    def wake(self) -> None:
        """Something changed (a schedule made, resumed, the clock moved): look again now."""
        self._wake.set()

    # --- the configuration's schedules ---

    async def declare(self, declared: Mapping[tuple[GraphRef, str], Definition]) -> None:
        """Makes the stored schedules from the configuration what it says: a new one is
        created, one whose definition changed is replaced (its fire times counted from now),
        one the configuration had and no longer has is deleted; an unchanged one keeps its
        next fire time (what a restart missed is then the missed policy's)."""
        registered = set(self.supervisor.registry.names())
        for (_, name), definition in declared.items():
            if definition.type not in registered:
                raise ConfigError(
                    f"schedules.{name}: job type '{definition.type}' is not registered; "
                    f"registered types: {', '.join(sorted(registered))}"
                )
        now = clock.now_ms()
        stored = {(s.graph, s.name): s for s in await self.store.schedules(None)}
        for key, definition in declared.items():
            old = stored.get(key)
            if old is not None and old.definition == definition and old.source == "config":
                continue
            await self.store.save_schedule(
                self.new_schedule(key[0], key[1], definition, now, source="config"),
                replace=True,
            )
            log.info("schedule %s/%s declared: %s", key[0], key[1], definition.describe())
        for key, old in stored.items():
            if old.source == "config" and key not in declared:
                with contextlib.suppress(SidetaskError):  # another replica did it first
                    await self.store.delete_schedule(old.graph, old.name)
                log.info("schedule %s/%s deleted: no longer in the configuration", *key)

    @staticmethod
    def new_schedule(
        graph: GraphRef,
        name: str,
        definition: Definition,
        now_ms: int,
        *,
        source: str = "api",
        paused: bool = False,
    ) -> Schedule:
        return Schedule(
            graph=graph,
            name=name,
            definition=definition,
            paused=paused,
            next_fire_ms=None if paused else definition.next_after(now_ms, now_ms),
            anchor_ms=now_ms,
            source=source,
        )

    # --- the API's requests ---

    async def create(
        self, graph: GraphRef, name: str, definition: Definition, paused: bool = False
    ) -> Schedule:
        schedule = await self.store.save_schedule(
            self.new_schedule(graph, name, definition, clock.now_ms(), paused=paused)
        )
        self.wake()
        return schedule

    async def pause(self, graph: GraphRef, name: str) -> Schedule:
        return await self.store.pause_schedule(graph, name, True, None)

    async def resume(self, graph: GraphRef, name: str) -> Schedule:
        """Fires again from the next fire time after now: what came while it was paused
        is not fired (a pause is asked for)."""
        schedule = await self.store.schedule(graph, name)
        if schedule is None:
            return await self.store.pause_schedule(graph, name, False, None)  # NotFound
        if not schedule.paused:
            return schedule
        next_ms = schedule.definition.next_after(clock.now_ms(), schedule.anchor_ms)
        resumed = await self.store.pause_schedule(graph, name, False, next_ms)
        self.wake()
        return resumed

    # --- firing ---

    async def fire_due(self) -> int:
        """One round: claims the due schedules, submits their fire times' tasks, moves each
        on to its next fire time. Returns how many tasks it submitted."""
        now = clock.now_ms()
        claimed = await self.store.claim_schedules(
            now, now + self._lease_ms, self.owner, CLAIM_LIMIT
        )
        # the schedules at once: their inserts share the store's commits (group commit)
        # instead of one commit after another; each schedule's own fire times go in order
        made = await asyncio.gather(*(self.fire_schedule(s, now) for s in claimed))
        return sum(made)

    async def fire_schedule(self, schedule: Schedule, now: int) -> int:
        """Submits the tasks of `schedule`'s fire times that have come by `now` and moves
        it on, when this process holds its lease (else its tasks are submitted all the
        same, once each by their key, and it is left as it is). Returns how many it made."""
        d = schedule.definition
        firing = plan(schedule, now, self._grace_ms, FIRES_PER_ROUND)
        if firing.missed:
            log.warning(
                "schedule %s/%s missed fire times before %d (missed = %s)",
                schedule.graph,
                schedule.name,
                now - self._grace_ms,
                d.missed,
            )
        last: tuple[int, int] | None = None
        submitted = 0
        for fire_ms in firing.fires:
            try:
                task, created = await self.supervisor.submit(
                    schedule.graph,
                    d.type,
                    d.input,
                    name=d.task_name if d.task_name is not None else schedule.name,
                    priority=d.priority,
                    max_retries=d.max_retries,
                    timeout=d.timeout,
                    idempotency_key=schedule.task_key(fire_ms),
                    schedule=(schedule.name, fire_ms),
                )
            except Unprocessable:
                # the key was used by another definition of the schedule (replaced since
                # this fire time's task was made): the fire time has its task
                continue
            except SidetaskError as exc:
                wait = REFUSED_RETRY_SECONDS if isinstance(exc, BadRequest) else RETRY_SECONDS
                log.warning(
                    "schedule %s/%s: the task of fire time %d was not submitted (tried again "
                    "in %g s): %s",
                    schedule.graph,
                    schedule.name,
                    fire_ms,
                    wait,
                    exc.message,
                )
                hold = clock.now_ms() + int(wait * 1000)
                await self.store.advance_schedule(schedule, self.owner, fire_ms, last, hold)
                return submitted
            last = (fire_ms, task.id)
            if created:
                submitted += 1
                self.fired += 1
        if not await self.store.advance_schedule(schedule, self.owner, firing.next_fire_ms, last):
            log.info(
                "schedule %s/%s changed while it fired: its new state stands",
                schedule.graph,
                schedule.name,
            )
        return submitted

    async def _run(self) -> None:
        while True:
            try:
                await self.fire_due()
                due = await self.store.next_schedule_due()
            except SidetaskError as exc:
                log.warning("schedules not fired now: %s", exc.message)
                due = clock.now_ms() + int(STORE_RETRY_SECONDS * 1000)
            except Exception:  # a bug: said, and the loop goes on (a dead loop fires nothing)
                log.exception("the firing loop failed; it goes on")
                due = clock.now_ms() + int(STORE_RETRY_SECONDS * 1000)
            timeout = MAX_IDLE_SECONDS
            if due is not None:
                timeout = min(timeout, max(0.0, (due - clock.now_ms()) / 1000))
            if timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
