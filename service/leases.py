"""The lease hub: external workers in any language claim tasks over HTTP under a lease,
report progress (each report extends the lease), and end them; a lease that runs out gives
the task back.

A worker's task moves through the same table as any other: `new`/`restoring` -> `scheduled`
when a worker claims it (`task_server` is the worker's name), `running` at its first report
(it confirmed, and it runs), then `success`, or a retry (`restoring`, backoff) or
`failed`. A cancel makes a running task `cancelling`; the worker reads that in the answer to
its next report, stops, and reports its end, and the task ends `cancelled`. A lease that
expires (the worker died or lost touch) puts the task back through `restoring` with
`task_retries` + 1, or ends it `failed` when no retries are left (`cancelled` if a cancel
was requested). The leases are stored: a restart of the service keeps them, and extends each
by one lease so that workers that kept working through the restart keep their tasks.

A task of an external type that no lease holds, in a worker's status, was run in-process
before its type became external (a restart with a changed `external_types`): no worker will
report on it, so it counts as expired. The restart's recovery restores such tasks (the
store's `recover`), and the sweep gives back any it meets later.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from . import clock
from .config import Settings
from .errors import BadRequest, PayloadTooLarge
from .jobs import JobContext, PermanentFailure
from .model import (
    CLAIMABLE_STATUSES,
    AttemptEnd,
    AttemptOutcome,
    Event,
    EventKind,
    GraphRef,
    Status,
    Task,
)
from .policy import Outcome, after_failure, after_lease_expired, after_unleased
from .store import Change, Lease, LeaseStore

#: the log channel of the external workers' leases (its name kept from the module's old name)
log = logging.getLogger("sidetask.workers")

#: the task_callable of the types external workers serve: stored in their rows and shown by
#: the API, so it keeps the name this module had when it was first written
CALLABLE_PATH = "service.workers.external"
#: the longest a claim may wait for work, in seconds
MAX_CLAIM_WAIT = 60.0
#: the sweep for expired leases runs this often at most, and at least four times a lease
MAX_SWEEP_SECONDS = 1.0


async def external(ctx: JobContext) -> None:
    """What a type external workers serve would run in-process: nothing. The supervisor
    never claims these types; this is what a stray one would say."""
    raise PermanentFailure("This job type is served by external workers, not in-process")


class LeaseHub:
    """Claims, reports and lease expiry for the types in `settings.external_types`."""

    def __init__(
        self, settings: Settings, store: LeaseStore, retry_delay: Callable[[int], float]
    ) -> None:
        self.settings = settings
        self.store = store
        self.types: tuple[str, ...] = tuple(settings.external_types)
        self._retry_delay = retry_delay
        self._lease_ms = max(1, int(settings.lease_duration * 1000))
        #: set (and replaced) whenever a task of an external type may have become claimable
        self._available = asyncio.Event()
        #: claims waiting for work now (long polls)
        self.waiting = 0
        self._closing = False
        self._sweeper: asyncio.Task[None] | None = None

    # --- lifecycle ---

    async def start(self) -> None:
        if self.types:
            renewed = await self.store.renew_leases(self.types, clock.now_ms() + self._lease_ms)
            if renewed:
                log.info("%d worker lease(s) of a previous run extended by one lease", renewed)
            self._sweeper = asyncio.create_task(self._sweep_loop(), name="sidetask-leases")
            # claims wait only for external types: without any, no event concerns the hub
            self.store.add_listener(self._on_commit)

    def release_waiters(self) -> None:
        """Ends every waiting claim (with no task): the service is shutting down."""
        self._closing = True
        self._wake()

    async def stop(self) -> None:
        self.release_waiters()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    def wake(self) -> None:
        """Waiting claims look again at once (a job type was resumed)."""
        self._wake()

    def _wake(self) -> None:
        self._available.set()
        self._available = asyncio.Event()

    def _on_commit(self, events: Sequence[Event]) -> None:
        for event in events:
            if (
                event.kind in (EventKind.CREATED, EventKind.STATUS)
                and event.status in CLAIMABLE_STATUSES
                and event.task_type in self.types
            ):
                self._wake()
                return

    # --- claims ---

    def check_types(self, requested: Sequence[str]) -> tuple[str, ...]:
        """The types a claim asks for (all external types when none is named)."""
        if not self.types:
            raise BadRequest(
                "No job type is served by external workers; declare some in the setting "
                "external_types"
            )
        if not requested:
            return self.types
        unknown = [t for t in requested if t not in self.types]
        if unknown:
            raise BadRequest(
                f"Job type(s) {', '.join(repr(t) for t in unknown)} not served by external "
                f"workers; external types: {', '.join(self.types)}"
            )
        return tuple(dict.fromkeys(requested))

    async def claim(
        self,
        worker: str,
        types: Sequence[str],
        wait: float,
        gone: Callable[[], bool] = lambda: False,
    ) -> Lease | None:
        """The next due task of `types`, leased to `worker`; waits up to `wait` seconds for
        one (None when none came, the caller went away, or the service is shutting down)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while not self._closing and not gone():
            available = self._available  # taken before looking: a wake after it is not missed
            now = clock.now_ms()
            lease, next_due_ms = await self.store.lease(
                worker,
                types,
                now,
                secrets.token_urlsafe(18),
                now + self._lease_ms,
                type_rates=self.settings.type_rates,
            )
            if lease is not None:
                log.info("task %d leased to worker %s", lease.task.id, worker)
                return lease
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            # a delayed task, a retry's backoff or a rate limit's window ends before that
            if next_due_ms is not None:
                remaining = min(remaining, max(0.001, (next_due_ms - clock.now_ms()) / 1000))
            log.debug("worker %s waits up to %.3f s for %s", worker, remaining, ", ".join(types))
            self.waiting += 1
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await available.wait()
            finally:
                self.waiting -= 1
        return None

    async def give_back(self, lease: Lease) -> None:
        """A claim nobody received (the worker hung up): the task waits again, no retry spent."""
        with contextlib.suppress(BadRequest):
            await self.store.transition(
                Change(
                    lease.task.id,
                    Status.RESTORING,
                    {"run_after_ms": 0},
                    frozenset({Status.SCHEDULED}),
                )
            )

    # --- reports ---

    async def report(
        self,
        graph: GraphRef,
        task_id: int,
        token: str,
        progress: int | None,
        checkpoint: Any = None,
    ) -> Lease:
        """Progress (None: a heartbeat) and a checkpoint (None: none); the lease lasts one
        more lease from now. The task in the answer says whether a cancel was requested
        (`wants_cancel`)."""
        return await self.store.report(
            graph,
            task_id,
            token,
            progress,
            clock.now_ms() + self._lease_ms,
            self.checkpoint_text(checkpoint),
        )

    def checkpoint_text(self, value: Any) -> str | None:
        """A worker's checkpoint as stored JSON text; over max_checkpoint_bytes is a 413."""
        if value is None:
            return None
        encoded = orjson.dumps(value)
        limit = self.settings.max_checkpoint_bytes
        if len(encoded) > limit:
            raise PayloadTooLarge(
                f"The checkpoint is {len(encoded)} bytes of JSON, over the limit of {limit} "
                "bytes (max_checkpoint_bytes): keep where the job got to, not its data"
            )
        return encoded.decode()

    async def last_checkpoint(self, task: Task) -> Any:
        """The checkpoint an earlier attempt of a claimed task stored, decoded (None: none,
        or damaged). A first run has none: only a task run before (a retry spent) can."""
        if task.retries == 0:
            return None
        text = await self.store.checkpoint(task.id)
        if text is None:
            return None
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            log.warning("task %d: its stored checkpoint is not JSON; not given", task.id)
            return None

    async def complete(
        self, graph: GraphRef, task_id: int, token: str, result_json: str, progress: int | None
    ) -> Task:
        return await self.store.settle_lease(
            graph,
            task_id,
            token,
            progress,
            lambda task: Change(
                task.id,
                Status.SUCCESS,
                {"result": result_json},
                ends_attempt=AttemptEnd(AttemptOutcome.SUCCESS),
            ),
        )

    async def fail(
        self,
        graph: GraphRef,
        task_id: int,
        token: str,
        error: str,
        retry: bool,
        progress: int | None,
        checkpoint: Any = None,
    ) -> Task:
        """The worker's job failed: retried after a backoff while retries are left (unless
        `retry` is false), else `failed`, as an in-process job's failure. A checkpoint
        given with it is stored in the attempt's end, for the next attempt."""
        text = self.checkpoint_text(checkpoint)

        def decide(task: Task) -> Change:
            outcome = after_failure(task, error, clock.now_ms(), self._retry_delay, retry=retry)
            change = _change_of(task, outcome)
            if text is not None and change.ends_attempt is not None:
                end = dataclasses.replace(change.ends_attempt, checkpoint=text)
                change = dataclasses.replace(change, ends_attempt=end)
            return change

        return await self.store.settle_lease(graph, task_id, token, progress, decide)

    # --- expiry ---

    async def expire(self) -> list[Task]:
        """Gives back the tasks whose lease ran out, and those of external types that no
        lease holds (run in-process before their type became external)."""
        now = clock.now_ms()

        def lapsed(task: Task) -> Change:
            return _change_of(task, after_lease_expired(task, now))

        def unleased(task: Task) -> Change:
            return _change_of(task, after_unleased(task, now))

        expired = await self.store.expire_leases(now, self.types, lapsed, unleased)
        for task in expired:
            log.warning("task %d: its worker's lease expired; now %s", task.id, task.status.value)
        return expired

    async def _sweep_loop(self) -> None:
        interval = min(MAX_SWEEP_SECONDS, self.settings.lease_duration / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.expire()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lease sweep failed")


def _change_of(task: Task, outcome: Outcome) -> Change:
    return Change(task.id, outcome.target, outcome.fields, ends_attempt=outcome.attempt)
