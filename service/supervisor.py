"""The supervisor: claims waiting tasks, runs them as asyncio tasks, cancels, retries and drains.

It decides; the store saves (every step a compare-and-set against the transition table);
the store's commit listeners announce.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import heapq
import logging
import random
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from . import clock, jsontext, tracing
from .backoff import Backoff
from .config import Settings
from .errors import (
    BadRequest,
    NotFound,
    ServiceUnavailable,
    SidetaskError,
    TooManyRequests,
    TransitionRefused,
)
from .jobs import JobContext, JobType, PermanentFailure, capture, command
from .jobs.base import (
    MAX_ERROR_CHARS,
    ChildError,
    ReportedFailure,
    describe_error,
    error_name,
    format_traceback,
)
from .jobs.registry import Registry
from .model import (
    ACTION_STATUSES,
    LOG_LEVEL_INDEX,
    Action,
    AttemptEnd,
    AttemptOutcome,
    Event,
    EventKind,
    GraphRef,
    LogLine,
    NewTask,
    Status,
    Task,
)
from .policy import Outcome, after_failure, after_interruption, delete_sources, refusal
from .policy import retry_delay as backoff_delay
from .ready import ReadyQueue
from .store import Change, Recovery, Store

log = logging.getLogger("sidetask.supervisor")

#: progress writes in flight at once; more reports wait and coalesce
MAX_PROGRESS_FLUSHES = 4
#: the longest the scheduler sleeps without looking for due tasks (delays, backoffs)
IDLE_POLL_SECONDS = 1.0
#: how often the scheduler reads the paused job types again (a pause made through another
#: replica reaches the tasks this one has already claimed within this; the claims
#: themselves read the store's table in their own transaction)
PAUSED_REFRESH_SECONDS = 0.5
#: how long a drain waits for the scheduler to finish the step it is in
SCHEDULER_STOP_SECONDS = 5.0
#: tasks claimed ahead per slot (queued here, waiting for a slot), and more on a shared
#: store, where a claimed task takes three commits before it can start
PREFETCH_PER_SLOT = 2
HAND_ON_PREFETCH = 2
#: what a refused submission is told to wait before it tries again (Retry-After)
RETRY_AFTER_SECONDS = 1
#: the share of replica_timeout after which a process that cannot write its heartbeat
#: stops its jobs (it is about to be declared dead, and they to run elsewhere)
CUT_OFF_SHARE = 0.8
#: the first and the longest wait before a job's end is written again when the store
#: cannot write (a full disk, a locked database)
SETTLE_RETRY_FIRST = 0.05
SETTLE_RETRY_MAX = 1.0
#: a run a cancel ended
_CANCELLED = AttemptEnd(AttemptOutcome.CANCELLED)
#: how a run ends when its outcome says nothing of it, by the status it goes to
_ENDS = {
    Status.SUCCESS: AttemptEnd(AttemptOutcome.SUCCESS),
    Status.CANCELLED: _CANCELLED,
}


T = TypeVar("T")


def _from_any_thread(
    loop: asyncio.AbstractEventLoop, record: Callable[[T], None]
) -> Callable[[T], None]:
    """`record` called on `loop`: at once from the loop's own thread, else handed to it (a
    plain function's worker thread reports this way)."""

    def report(value: T) -> None:
        try:
            in_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            in_loop = False
        if in_loop:
            record(value)
        else:
            loop.call_soon_threadsafe(record, value)

    return report


def _default_end(outcome: Outcome) -> AttemptEnd:
    """A job's end whose outcome names no attempt end: a success, a cancel, or a failure
    told only by its result (a result too large, an input not JSON)."""
    end = _ENDS.get(outcome.target)
    if end is not None:
        return end
    return AttemptEnd(AttemptOutcome.FAILED, error_message=outcome.fields.get("result"))


@dataclass
class _Running:
    """A job executing in this process."""

    task: Task
    job: asyncio.Task[None] | None = None
    progress: int | None = None
    #: the total the job declared (ctx.progress(n, total=…)), if it declared one
    progress_total: int | None = None
    #: the job's last checkpoint (JSON text), if it stored one in this run
    checkpoint: str | None = None
    #: a cancel that arrived before the job was created
    cancel_requested: bool = False
    #: the job's `ctx.cancelled`: set by a cancel or the timeout, read from any thread
    cancel: threading.Event = field(default_factory=threading.Event)
    #: the job has ended and its end is being written: a cancel landing now is recorded
    #: by that write (which finds the task `cancelling`), with the final progress
    ending: bool = False
    #: its end is handed to the writer: the slot is free for the next job
    slot_freed: bool = False
    #: this process was declared dead while the job ran: the task is another's now, and
    #: the job is stopped without a word written about it
    abandoned: bool = False


class Supervisor:
    """Runs tasks: at most `concurrency` at once (and per type where configured),
    highest priority first, then oldest."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        registry: Registry,
        *,
        jitter: Callable[[], float] = random.random,
        waiting: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self._jitter = jitter
        #: tasks waiting to run, as counted from the committed events (None: not counted yet)
        self._waiting = waiting
        #: submissions between admission and their commit
        self._admitting = 0
        self._running: dict[int, _Running] = {}
        #: entries of _running whose job has returned and whose end is being written
        self._freed = 0
        #: tasks this process claimed (`queued`), waiting for a free slot
        self._ready = ReadyQueue()
        #: scheduling steps in flight (hand-ons, starts)
        self._steps: set[asyncio.Task[None]] = set()
        #: tasks claimed and being handed on (`scheduling` -> `scheduled` -> `queued`)
        self._handing = 0
        #: a store several processes share: claims come `scheduling`, and are handed on
        self._hands_on = store.replica_id is not None
        self._dirty_progress: dict[int, int] = {}
        #: totals declared since the last flush, written with their task's progress
        self._dirty_totals: dict[int, int] = {}
        #: checkpoints stored since the last flush (JSON text), written with the progress
        self._dirty_checkpoints: dict[int, str] = {}
        #: jobs' log lines since the last flush, by task (bounded: max_log_lines each)
        self._dirty_logs: dict[int, list[LogLine]] = {}
        #: whether this supervisor installed the capture of jobs' logging and print
        self._capturing = False
        #: progress reports replaced by a later value before they were written (for /metrics)
        self.progress_coalesced = 0
        self._wakeup = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        #: due times (epoch ms) of delayed and backed-off tasks this process knows of
        self._due: list[int] = []
        self._accepting = False
        #: set when a drain's grace has run out: the jobs still running are left for restore
        self._abandoning = False
        #: set when a drain has ended: a job's end that could not be written stays unwritten
        self._stopped = False
        self.started = False
        #: when this process's heartbeat was last written (time.monotonic())
        self.beat_at = time.monotonic()
        #: it gave up what it held (cut off for too long): its next heartbeat leaves the
        #: old identity for a new one
        self._rejoin = False
        #: the job types this process runs itself (not the external workers')
        self._runs = sorted(set(registry.names()) - set(settings.external_types))
        #: the spans of submissions and attempts (setting tracing); None: none are made
        self.tracer = tracing.tracer(settings.tracing)
        #: the job types paused as a whole (type -> since when, epoch ms), as last read
        self.paused_types: dict[str, int] = {}
        self._paused_read_at = 0.0

    # --- lifecycle ---

    async def start(self) -> None:
        # Command processes a crashed run left are stopped before their tasks run again.
        await self._stop_orphans()
        # External workers' tasks were not running here: their leases decide (service.leases).
        recovery = await self.store.recover(
            self._interrupted_change, keep_types=self.settings.external_types
        )
        # Groups of the processes the recovery found dead (replicas, on PostgreSQL): their
        # tasks wait for them to be stopped, then are recovered too.
        if await self._stop_orphans():
            recovery += await self.store.sweep(
                self._interrupted_change, keep_types=self.settings.external_types
            )
        if recovery.restored or recovery.failed or recovery.cancelled:
            log.info(
                "recovered interrupted tasks: %d restoring, %d failed, %d cancelled",
                recovery.restored,
                recovery.failed,
                recovery.cancelled,
            )
        if recovery.unknown:
            log.warning(
                "%d interrupted task(s) cannot be interpreted (a newer version's or damaged):"
                " left as they are, shown as unknown",
                recovery.unknown,
            )
        # Tasks waiting for dependencies: what a process stopped mid-way left is put right.
        if await self.store.recheck_dependencies():
            log.info("tasks waiting for dependencies re-checked")
        self.paused_types = await self.store.paused_types()
        self._paused_read_at = time.monotonic()
        self._accepting = True
        capture.install()
        self._capturing = True
        self._loops = [
            # first: a drain lets the scheduler finish its step instead of cancelling it
            asyncio.create_task(self._schedule_loop(), name="sidetask-scheduler"),
            asyncio.create_task(self._progress_loop(), name="sidetask-progress"),
            asyncio.create_task(self._purge_loop(), name="sidetask-purge"),
            asyncio.create_task(self._liveness_loop(), name="sidetask-liveness"),
        ]
        self.started = True

    async def drain(self, grace: float | None = None) -> None:
        """Stop taking work, give running jobs `grace` seconds, then leave the rest to be
        restored at the next start (SPEC 9)."""
        if not self.started:
            return
        self.started = False
        self._accepting = False
        # The scheduler is not cancelled mid-step: a claim it made would be left `queued`
        # without its slot, or a start it recorded without its job, and counted as
        # interrupted at the next start. It finishes the step, starting nothing more, and
        # stops; the others are cancelled.
        self._wakeup.set()
        scheduler, others = self._loops[0], self._loops[1:]
        for loop in others:
            loop.cancel()
        _, stuck = await asyncio.wait([scheduler], timeout=SCHEDULER_STOP_SECONDS)
        for loop in stuck:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        # Steps in flight finish their writes (a start they record gets its job and the grace).
        await asyncio.gather(*self._steps, return_exceptions=True)
        # Queued tasks never started: hand them back as `restoring`, with no retry spent.
        await self._return_ready_tasks()
        jobs = [r.job for r in self._running.values() if r.job is not None]
        grace = self.settings.drain_grace if grace is None else grace
        if jobs:
            log.info("draining: %d running job(s), %.1f s grace", len(jobs), grace)
            _, still_running = await asyncio.wait(jobs, timeout=grace)
            if still_running:
                log.warning(
                    "drain grace over: %d job(s) left running, to be restored at next start",
                    len(still_running),
                )
                self._abandoning = True
                for job in still_running:
                    job.cancel()
                ended, _ = await asyncio.wait(still_running, timeout=5)
                # A plain function's thread cannot be stopped: it runs until the process
                # exits, so its task is not handed back before (the others' sweep takes it
                # then). Nor is any other: the old identity goes as a whole.
                threads = any(
                    not job_type.is_async
                    for r in self._running.values()
                    if (job_type := self.registry.get(r.task.type)) is not None
                )
                if len(ended) == len(still_running) and not threads:
                    await self._hand_back()
        self._stopped = True
        with contextlib.suppress(SidetaskError):  # the store cannot write: it is only progress
            await self._flush_progress()
        if self._capturing:
            self._capturing = False
            capture.uninstall()

    async def _hand_back(self) -> None:
        """The jobs a drain gave up on: on a store several processes share, their tasks go
        to the others now (this process leaves under its old identity, and recovers what
        that held as a dead process's), not at their next sweep. A store of one process:
        they are restored at the next start."""
        with contextlib.suppress(SidetaskError):  # not now: the others' sweep does it later
            await self.store.beat(rejoin=True)
            recovery = await self.store.sweep(
                self._handed_back_change, keep_types=self.settings.external_types
            )
            if recovery.restored or recovery.failed or recovery.cancelled:
                log.info(
                    "handed back the tasks left running: %d restoring, %d failed, %d cancelled",
                    recovery.restored,
                    recovery.failed,
                    recovery.cancelled,
                )

    async def _stop_orphans(self) -> int:
        """Stops the command process groups that processes no longer alive left on this
        machine (the store says which; a job of this process's own is never one); how many
        there were."""
        groups = [g for g in await self.store.process_groups() if g.task_id not in self._running]
        if not groups:
            return 0
        stopped = await asyncio.gather(
            *(command.stop_orphan(g.group, g.token, self.settings.kill_grace) for g in groups)
        )
        log.info(
            "%d command process group(s) of a previous run stopped, %d already gone",
            sum(stopped),
            len(stopped) - sum(stopped),
        )
        for group in groups:
            await self.store.set_process_group(group.task_id, None, None)
        return len(groups)

    async def _return_ready_tasks(self) -> None:
        """Queued tasks that never started go back as `restoring`."""
        waiting = list(self._ready)
        if not waiting:
            return
        self._ready.clear()
        try:
            results = await self.store.transition_many(
                [Change(task_id, Status.RESTORING, fenced=True) for task_id in waiting]
            )
        except SidetaskError as exc:  # left as they are: restored at the next start
            log.warning("%d waiting task(s) not handed back: %s", len(waiting), exc.message)
            return
        for result in results:
            if isinstance(result, Exception):
                log.info("queued task not handed back: %s", result)

    # --- requests ---

    async def submit(
        self,
        graph: GraphRef,
        type_name: str,
        input_json: str | None,
        *,
        name: str | None = None,
        priority: int = 0,
        max_retries: int | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- the task's timeout, not this call's
        delay: float = 0.0,
        run_at: int | None = None,
        idempotency_key: str | None = None,
        schedule: tuple[str, int] | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
        callback: str | None = None,
        dependencies: Sequence[int] = (),
    ) -> tuple[Task, bool]:
        job_type = self.registry.get(type_name)
        if job_type is None:
            raise BadRequest(
                f"Job type '{type_name}' is not registered; registered types: "
                + ", ".join(self.registry.names())
            )
        if job_type.validate is not None:  # e.g. a command's declared parameters
            try:
                job_type.validate(None if input_json is None else orjson.loads(input_json))
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
        if traceparent is None:  # a tracestate means nothing without its traceparent
            tracestate = None
        tracer = self.tracer
        span = None if tracer is None else tracer.submit(traceparent, tracestate, type_name)
        if span is not None and traceparent is None:  # the task joins the submission's trace
            traceparent, tracestate = span.traceparent, span.tracestate
        new = NewTask(
            graph=graph,
            type=type_name,
            callable=job_type.callable_path,
            name=name if name is not None else type_name,
            input=input_json,
            priority=priority,
            max_retries=self.settings.default_max_retries if max_retries is None else max_retries,
            timeout=timeout,
            delay_ms=int(delay * 1000),
            run_at_ms=run_at,
            idempotency_key=idempotency_key,
            schedule=None if schedule is None else schedule[0],
            schedule_fire_ms=None if schedule is None else schedule[1],
            traceparent=traceparent,
            tracestate=tracestate,
            callback=callback,
            dependencies=tuple(dict.fromkeys(dependencies)),  # each once, in the given order
        )
        try:
            self._admit()
            self._admitting += 1
            try:
                task, created = await self.store.insert(new)
            finally:
                self._admitting -= 1
        except BaseException as exc:
            if span is not None:
                span.end(None, False, describe_error(exc))
            raise
        if span is not None:
            span.end(task, created)
        if created and task.waiting_on and await self._ended_dependency(task):
            # A dependency that had already ended failed or cancelled ends this one too, in
            # a commit of its own (a status step per commit); the recovery's re-check does
            # it if this process stops first. One that ends after the insert ends it itself.
            if await self.store.recheck_dependencies([task.id]):
                task = await self.store.get(graph, task.id) or task
        if created:
            self._due_at(task.run_after_ms)
        return task, created

    def _admit(self) -> None:
        """Admission control: past `max_waiting` tasks waiting to run, a submission is
        refused (429) rather than queued behind work that cannot start for a long time.
        Submissions in flight count too, so a burst cannot slip past the limit together."""
        limit = self.settings.max_waiting
        waiting = self._waiting() if limit else None
        if waiting is not None and waiting + self._admitting >= limit:
            raise TooManyRequests(
                f"{waiting} tasks are waiting to run, the limit is {limit} (max_waiting); "
                "retry later",
                retry_after=RETRY_AFTER_SECONDS,
            )

    async def pause_type(self, type_name: str) -> int:
        """Pauses a job type as a whole: nothing new of it starts (its running jobs
        finish); the tasks of it this process had taken and not started go back to wait
        (`restoring`). Held in the store, so every replica obeys it. Since when it is paused."""
        self._registered(type_name)
        since = await self.store.pause_type(type_name)
        await self._paused_now({**self.paused_types, type_name: since})
        return since

    async def resume_type(self, type_name: str) -> bool:
        """Resumes a paused type; whether it was paused."""
        self._registered(type_name)
        resumed = await self.store.resume_type(type_name)
        await self._paused_now({k: v for k, v in self.paused_types.items() if k != type_name})
        return resumed

    def _registered(self, type_name: str) -> None:
        if self.registry.get(type_name) is None:
            raise NotFound(
                f"Job type '{type_name}' is not registered; registered types: "
                + ", ".join(self.registry.names())
            )

    async def _paused_now(self, paused: dict[str, int]) -> None:
        """The paused types as just read or changed: the tasks of a paused one this process
        had taken and not started (claimed before the pause) are handed back; a resumed one
        is claimed again."""
        before = self.paused_types
        self.paused_types = paused
        if set(before) - set(paused):
            self._wakeup.set()
        waiting = [t.id for t in self._ready.tasks() if t.type in paused]
        if not waiting:
            return
        for task_id in waiting:
            self._ready.discard(task_id)
        try:
            results = await self.store.transition_many(
                [Change(task_id, Status.RESTORING, fenced=True) for task_id in waiting]
            )
        except SidetaskError as exc:  # left queued: restored by the next start's recovery
            log.warning("%d task(s) of a paused type not handed back: %s", len(waiting), exc)
            return
        for result in results:
            if isinstance(result, Exception):
                log.info("queued task of a paused type not handed back: %s", result)

    async def cancel(self, graph: GraphRef, task_id: int) -> Task:
        """A task that has not started is cancelled at once; a running one goes
        `cancelling` and its job is interrupted at its next await."""

        task = await self._change(
            graph,
            task_id,
            Action.CANCEL,
            lambda t: Status.CANCELLING if t.status is Status.RUNNING else Status.CANCELLED,
        )
        self._ready.discard(task_id)
        if task.status is Status.CANCELLING:
            running = self._running.get(task_id)
            if task.type in self.settings.external_types:
                pass  # its worker learns it from its next report and ends it (service.leases)
            elif running is None and await self.store.held_elsewhere(task_id):
                pass  # another live process runs it: it sees the event and interrupts its job
            elif running is None:  # nothing here is running it: there is nothing to interrupt
                try:
                    task = await self.store.transition(
                        Change(task_id, Status.CANCELLED, ends_attempt=_CANCELLED)
                    )
                except TransitionRefused:
                    # Its job had just ended, and that end recorded the cancel itself.
                    current = await self.store.get(graph, task_id)
                    if current is None or current.status is not Status.CANCELLED:
                        raise
                    task = current
            else:
                self._interrupt(running)
        return task

    @staticmethod
    def _interrupt(running: _Running) -> None:
        """Stops a job this process runs whose task went `cancelling`."""
        if running.job is None:  # its start is being recorded: it is cancelled there
            running.cancel_requested = True
        elif not running.ending and not running.cancel.is_set():
            # The flag first: a plain function's thread, which cannot be interrupted,
            # and a job's handler of the CancelledError both see it.
            running.cancel.set()
            running.job.cancel()

    def on_events(self, events: Sequence[Event]) -> None:
        """The store's listener: what other processes sharing the store did, seen here. A
        cancel sent to another one for a job running here stops the job; a task submitted,
        resumed or retried there may be claimed here at once (not at the next poll)."""
        wake = False
        running = self._running
        for event in events:
            status = event.status
            if status is Status.CANCELLING:
                job = running.get(event.task_id)
                if job is not None:
                    self._interrupt(job)
            elif wake:
                continue
            # NEW without a creation: its last dependency succeeded, it may run now
            elif (
                event.kind is EventKind.CREATED
                or status is Status.RESTORING
                or status is Status.NEW
            ):
                wake = True
        if wake and self._accepting:
            self._wakeup.set()

    async def pause(self, graph: GraphRef, task_id: int) -> Task:
        task = await self._change(graph, task_id, Action.PAUSE, lambda t: Status.PENDING)
        self._ready.discard(task_id)
        return task

    async def resume(self, graph: GraphRef, task_id: int) -> Task:
        task = await self._change(
            graph, task_id, Action.RESUME, lambda t: Status.RESTORING, lambda t: {"run_after_ms": 0}
        )
        self._wakeup.set()
        return task

    async def retry(self, graph: GraphRef, task_id: int) -> Task:
        await self._refuse_dependant_retry(graph, task_id)
        task = await self._change(
            graph,
            task_id,
            Action.RETRY,
            lambda t: Status.RESTORING,
            lambda t: {"retries": t.retries + 1, "run_after_ms": 0},
        )
        self._wakeup.set()
        return task

    async def delete(self, graph: GraphRef, task_id: int, force: bool) -> Task:
        """Removes the record; a force-deleted running job runs on, and its end is not recorded."""
        sources = delete_sources(force)
        for _ in range(20):
            if sources is not None:  # decided on the task as read (a force delete needs no read)
                self._refuse(Action.DELETE, await self._read(graph, task_id))
            try:
                task = await self.store.delete(graph, task_id, sources)
                break
            except TransitionRefused:
                continue  # it moved on between the read and the delete: look again
        else:
            raise SidetaskError(f"Task '{task_id}' kept changing; try again")
        self._ready.discard(task_id)
        return task

    async def delete_many(
        self, graph: GraphRef, task_ids: Sequence[int], force: bool
    ) -> list[Task | SidetaskError]:
        """`delete` of tasks listed in a status that allows it (a bulk delete's group), in
        one write; one that moved on since it was listed is decided again alone, by
        `delete`, on the task as it is then."""
        results = await self.store.delete_many(graph, task_ids, delete_sources(force))
        decided: list[Task | SidetaskError] = []
        for task_id, result in zip(task_ids, results, strict=True):
            if isinstance(result, TransitionRefused):
                try:
                    result = await self.delete(graph, task_id, force)
                except SidetaskError as exc:
                    result = exc
            if isinstance(result, Task):
                self._ready.discard(task_id)
            decided.append(result)
        return decided

    async def _ended_dependency(self, task: Task) -> bool:
        """Whether one of the task's dependencies has ended failed or cancelled (a read:
        most submissions find none, and write nothing more)."""
        found = await self.store.list_ids(task.graph, list(task.dependencies))
        return any(d.status in (Status.FAILED, Status.CANCELLED) for d in found)

    async def _refuse_dependant_retry(self, graph: GraphRef, task_id: int) -> None:
        """A task ended by its dependency's failure or cancel runs again with it: a retry of
        it while that dependency is still failed or cancelled is refused (400), naming the
        dependency to retry (its retry puts this one back)."""
        task = await self._read(graph, task_id)
        if not task.dependencies or task.status not in ACTION_STATUSES[Action.RETRY]:
            return
        for dependency in await self.store.list_ids(graph, list(task.dependencies)):
            if dependency.status in (Status.FAILED, Status.CANCELLED):
                raise BadRequest(
                    f"Can't retry task '{task_id}' while its dependency '{dependency.id}' is "
                    f"{dependency.status.value}: retry task '{dependency.id}', and the tasks "
                    "its end ended run again with it"
                )

    async def _change(
        self,
        graph: GraphRef,
        task_id: int,
        action: Action,
        target: Callable[[Task], Status],
        fields: Callable[[Task], dict[str, Any]] = lambda t: {},
    ) -> Task:
        """A user's status change, decided on the task as read and applied only if it is still
        in that status; when the supervisor moved it meanwhile, decide again."""
        for _ in range(20):
            task = await self._read(graph, task_id)
            self._refuse(action, task)
            change = Change(task_id, target(task), fields(task), frozenset({task.status}))
            try:
                return await self.store.transition(change)
            except TransitionRefused:
                continue  # it moved on between the read and the write: look again
        raise SidetaskError(f"Task '{task_id}' kept changing; try again")

    async def _read(self, graph: GraphRef, task_id: int) -> Task:
        task = await self.store.get(graph, task_id)
        if task is None:
            raise NotFound(f"Can't find task with id '{task_id}'")
        return task

    @staticmethod
    def _refuse(action: Action, task: Task) -> None:
        """Raises the refusal of `action` on `task` as read, if the policy refuses it."""
        refused = refusal(action, task)
        if refused is not None:
            raise BadRequest(refused.message, refused.cause)

    @staticmethod
    def _change_of(task: Task, outcome: Outcome) -> Change:
        return Change(task.id, outcome.target, outcome.fields, ends_attempt=outcome.attempt)

    # --- scheduling ---

    def _due_at(self, run_after_ms: int) -> None:
        if run_after_ms > clock.now_ms():
            heapq.heappush(self._due, run_after_ms)
            if self._due[0] != run_after_ms:
                return  # an earlier due time already bounds the scheduler's sleep
        self._wakeup.set()

    def _free_slot(self, running: _Running) -> None:
        """The job has returned and its end is about to be handed to the writer: its slot
        is free (the task stays in _running, so a cancel landing meanwhile is recorded by
        that write). Called with no await between it and that hand-off."""
        if not running.slot_freed:
            running.slot_freed = True
            self._freed += 1
            self._wakeup.set()

    def _executing(self) -> int:
        """Jobs holding a slot: starting or running, not those whose end is being written."""
        return len(self._running) - self._freed

    def _slots_free(self) -> int:
        return self.settings.concurrency - self._executing()

    def _type_load(self, type_name: str) -> int:
        waiting = sum(1 for t in self._ready.tasks() if t.type == type_name)
        return self._running_of_type(type_name) + waiting

    def _type_room(self) -> dict[str, int]:
        """How many more tasks of each limited type may be claimed now; none of the types
        external workers serve (they claim those themselves)."""
        room = {
            name: limit - self._type_load(name)
            for name, limit in self.settings.type_concurrency.items()
        }
        room.update(dict.fromkeys(self.settings.external_types, 0))
        room.update(dict.fromkeys(self.paused_types, 0))  # the claim reads the store too
        return room

    async def _schedule_loop(self) -> None:
        while self._accepting:
            try:
                await self._schedule_once()
            except asyncio.CancelledError:
                raise
            except SidetaskError as exc:  # the store cannot write now: try again shortly
                log.warning("scheduling paused: %s", exc.message)
                await asyncio.sleep(0.5)
                continue
            except Exception:
                log.exception("scheduler step failed")
                await asyncio.sleep(0.5)
                continue
            timeout = IDLE_POLL_SECONDS
            if self._due:
                timeout = min(timeout, max(0.0, (self._due[0] - clock.now_ms()) / 1000))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()
            self._wakeup.clear()

    async def _schedule_once(self) -> None:
        """Claim what fits and start what has a slot; hand-ons and starts run as their own
        tasks, so the next claim does not wait for their commits: with group commit, the
        steps of several batches share transactions instead of queueing behind each other
        (each task's steps still one commit each)."""
        now = clock.now_ms()
        while self._due and self._due[0] <= now:
            heapq.heappop(self._due)
        if time.monotonic() - self._paused_read_at >= PAUSED_REFRESH_SECONDS:
            self._paused_read_at = time.monotonic()
            await self._paused_now(await self.store.paused_types())
        # What is ready starts at once: a start does not wait for the claim's commit (on a
        # shared store it then shares a transaction with the claim and the hand-ons).
        if self._ready and self._slots_free() > 0:
            self._spawn(self._start_ready())
        # Prefetch up to one slot's worth per slot, so a freed slot starts work at once; on
        # a shared store, claimed tasks take three commits (claim, scheduled, queued)
        # before they can start: two slots' worth more cover them, and each transaction
        # then carries every step of a batch (PREFETCH_PER_SLOT)
        per_slot = PREFETCH_PER_SLOT + (HAND_ON_PREFETCH if self._hands_on else 0)
        room = (
            per_slot * self.settings.concurrency
            - self._executing()
            - len(self._ready)
            - self._handing
        )
        if room > 0:
            claimed = await self.store.claim(
                room,
                now,
                self._type_room(),
                self.settings.server_name,
                type_caps=self.settings.type_concurrency,
                runs=self._runs,
                type_rates=self.settings.type_rates,
            )
            if len(claimed) == room:
                self._wakeup.set()  # there may be more waiting
            elif rates := self.settings.type_rates:
                # a type at its rate may have tasks left: claimed again as its window turns
                self._due_at(min(now - now % window + window for _, window in rates.values()))
            await self._accept(claimed)
        if self._ready and self._slots_free() > 0:
            self._spawn(self._start_ready())

    async def _accept(self, claimed: list[Task]) -> None:
        # A task stored by a service that had a job type this one lacks: new, or restoring
        # (recovered, resumed or retried), it cannot run here.
        runnable: list[Task] = []
        for task in claimed:
            if task.type not in self.registry:
                await self._settle(
                    task,
                    Outcome(
                        Status.FAILED,
                        {"result": f"Job type '{task.type}' is not registered in this service"},
                    ),
                )
            else:
                runnable.append(task)
        handed = [t for t in runnable if t.status is Status.SCHEDULING]
        if handed:
            runnable = [t for t in runnable if t.status is not Status.SCHEDULING]
            self._handing += len(handed)
            self._spawn(self._hand_on(handed))
        for task in runnable:
            self._ready.add(task)

    async def _hand_on(self, handed: list[Task]) -> None:
        """Claimed from a store several processes share, they are `scheduling` (SPEC 3):
        handed to this process's slots (`scheduled`), which confirm them (`queued`), each
        step its own commit, then ready to start. One that moved meanwhile (cancelled,
        paused) is left out. A step of its own: the next claim does not wait for these
        commits, and shares their transactions. A step the store cannot write now is
        tried again while this process takes work (else the tasks would stay claimed by a
        live process, which nobody recovers); a drain leaves them to the recovery of what a
        stopped process held."""
        count = len(handed)
        try:
            for target in (Status.SCHEDULED, Status.QUEUED):
                results = await self._hand_step(handed, target)
                handed = [r for r in results if isinstance(r, Task)]
        finally:
            self._handing -= count
        for task in handed:
            self._ready.add(task)
        if handed and self._slots_free() > 0:
            await self._start_ready()

    async def _hand_step(self, handed: list[Task], target: Status) -> list[Task | Exception]:
        backoff = Backoff(SETTLE_RETRY_FIRST, SETTLE_RETRY_MAX, jitter=0)
        retried = False
        while True:
            try:
                return await self.store.transition_many(
                    [Change(t.id, target, fenced=True) for t in handed]
                )
            except ServiceUnavailable as exc:
                if not self._accepting:
                    raise
                if not retried:
                    log.warning(
                        "%d task(s) not handed on to %s yet, trying again: %s",
                        len(handed),
                        target,
                        exc.message,
                    )
                retried = True
                await asyncio.sleep(backoff.next() or SETTLE_RETRY_MAX)

    def _spawn(self, step: Coroutine[Any, Any, None]) -> None:
        """Runs a scheduling step as its own task; a drain waits for the steps in flight."""
        task = asyncio.create_task(step)
        self._steps.add(task)
        task.add_done_callback(self._step_done)

    def _step_done(self, task: asyncio.Task[None]) -> None:
        self._steps.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, SidetaskError):  # the store cannot write now: the next step retries
            log.warning("scheduling step not written: %s", exc.message)
        elif exc is not None:
            log.error("scheduling step failed", exc_info=exc)

    def _next_ready(self) -> Task | None:
        limits = self.settings.type_concurrency

        def fits(task: Task) -> bool:
            if task.type in self.paused_types:
                return False
            limit = limits.get(task.type)
            return limit is None or self._running_of_type(task.type) < limit

        return self._ready.take(fits)

    def _running_of_type(self, type_name: str) -> int:
        return sum(
            1 for r in self._running.values() if r.task.type == type_name and not r.slot_freed
        )

    async def _start_ready(self) -> None:
        if not self._accepting:  # draining: what is queued is handed back, not started
            return
        to_start: list[Task] = []
        while self._slots_free() > 0:  # each task taken holds its slot from here
            task = self._next_ready()
            if task is None:
                break
            to_start.append(task)
            # reserve the slot now so per-type limits count it
            self._running[task.id] = _Running(task)
        if not to_start:
            return
        try:
            # each start opens the task's next attempt, in the same transaction
            results = await self.store.transition_many(
                [Change(t.id, Status.RUNNING, fenced=True, starts_attempt=True) for t in to_start]
            )
        except BaseException:
            # Nothing was written: they are still queued, and wait for the next step.
            for task in to_start:
                del self._running[task.id]
                self._ready.add(task)
            raise
        for task, result in zip(to_start, results, strict=True):
            if isinstance(result, Task):
                running = self._running[task.id]
                running.task = result
                if running.cancel_requested:
                    await self._settle(result, Outcome(Status.CANCELLED))
                    continue
                running.job = asyncio.create_task(
                    self._run(result), name=f"sidetask-task-{task.id}"
                )
            else:  # paused, cancelled or deleted while it waited
                del self._running[task.id]
                log.info("task %d not started: %s", task.id, result)

    # --- running ---

    async def _run(self, task: Task) -> None:
        job_type = self.registry.get(task.type)
        assert job_type is not None
        try:
            job_input = task.decoded_input()
        except orjson.JSONDecodeError as exc:  # damaged in the file: no run can mend it
            result = f"The task's stored input is not valid JSON: {exc}"
            await asyncio.shield(self._settle(task, Outcome(Status.FAILED, {"result": result})))
            return
        running = self._running[task.id]
        try:
            checkpoint = await self._last_checkpoint(task)
        except SidetaskError as exc:  # the store cannot read now: this run fails, and retries
            failure = f"The task's checkpoint could not be read: {exc.message}"
            await asyncio.shield(self._settle(task, self._failure(task, failure)))
            return
        try:
            dependency_results = await self._dependency_results(task)
        except SidetaskError as exc:  # as for the checkpoint
            failure = f"The task's dependencies' results could not be read: {exc.message}"
            await asyncio.shield(self._settle(task, self._failure(task, failure)))
            return
        span = None if self.tracer is None else await self._attempt_span(self.tracer, task)
        ctx = JobContext(
            task_id=task.id,
            graph=task.graph,
            input=job_input,
            settings=self.settings,
            retries=task.retries,
            checkpoint_value=checkpoint,
            dependency_results=dependency_results,
            last_progress=task.progress,
            last_progress_total=task.progress_total,
            max_checkpoint_bytes=self.settings.max_checkpoint_bytes,
            traceparent=task.traceparent if span is None else span.traceparent,
            tracestate=task.tracestate if span is None else span.tracestate,
            _report=self._reporter(task.id),
            _report_total=self._reporter(task.id, total=True),
            _report_checkpoint=self._checkpointer(task.id),
            _report_log=self._logger(task.id),
            _record_process=functools.partial(self.store.set_process_group, task.id),
            _cancel=running.cancel,
            _abandoned=lambda: self._abandoning,
        )
        capture.running.set(ctx)  # this task's (and its thread's) logging and print are its
        capture.wrap_streams()
        if span is not None:
            span.enter()  # the job's own code (and a thread it runs in) runs under the span
        try:
            outcome = await self._execute(task, job_type, ctx)
        except asyncio.CancelledError as exc:
            if self._abandoning or running.abandoned:
                # drained, or no longer ours: the row is recovered as interrupted
                if span is not None:
                    span.end(AttemptOutcome.HANDED_BACK.value)
                raise
            if running.cancel.is_set():
                outcome = Outcome(Status.CANCELLED, attempt=_CANCELLED)
            else:  # no cancel was asked for: the job raised CancelledError itself
                outcome = self._failure(task, self._describe(exc), self._error(exc))
        capture.job_ended(ctx)
        if span is not None:
            end = outcome.attempt or _default_end(outcome)
            span.end(end.outcome.value, end.error_message)
        # From here a cancel interrupts nothing: the end written next records it.
        running.ending = True
        # The final write must happen even if this task is cancelled again meanwhile.
        await asyncio.shield(self._settle(task, outcome))

    async def _attempt_span(self, tracer: tracing.Tracer, task: Task) -> tracing.AttemptSpan:
        """The span of the attempt just started, after that of its wait in the queue (from
        the task's creation, or the end of its previous attempt, to this start)."""
        now = clock.now_ms()
        number, start_ms, waited_from = task.retries + 1, now, task.create_ms
        try:
            attempts = await self.store.attempts(task.id)
        except SidetaskError as exc:  # the spans go on without the attempts' times
            log.info("task %d: its attempts could not be read for its spans: %s", task.id, exc)
            attempts = []
        if attempts:
            number, start_ms = attempts[-1].number, attempts[-1].start_ms
            if len(attempts) > 1 and attempts[-2].end_ms is not None:
                waited_from = attempts[-2].end_ms
        tracer.queued(task, number, waited_from, start_ms)
        return tracer.attempt(task, number, start_ms)

    async def _execute(self, task: Task, job_type: JobType, ctx: JobContext) -> Outcome:
        loop = asyncio.get_running_loop()
        timed_out = False

        def expire() -> None:
            # ctx.cancelled first, then the cancel: a thread (which cannot be interrupted)
            # and the job's own handler of the cancel both see it
            nonlocal timed_out
            timed_out = True
            ctx._cancel.set()
            deadline.reschedule(loop.time())  # expires at once

        try:
            async with asyncio.timeout(None) as deadline:
                timer = None if task.timeout is None else loop.call_later(task.timeout, expire)
                try:
                    value = await job_type.run(ctx)
                finally:
                    if timer is not None:
                        timer.cancel()
        except TimeoutError as exc:
            if timed_out:
                return self._timed_out(task)
            # the job's own operation timed out (no task timeout, or not yet): a plain failure
            return self._failure(task, f"{type(exc).__name__}: {exc}", self._error(exc))
        except PermanentFailure as exc:
            message = self._describe(exc, with_type=False)
            return Outcome(Status.FAILED, {"result": message}, self._error(exc))
        except ReportedFailure as exc:  # a child process's job: already `Type: message`
            text = self._describe(exc, with_type=False)
            return self._failure(task, text, self._error(exc))
        except asyncio.CancelledError:
            if timed_out:  # the job stopped at its deadline (JobCancelled) before the cancel came
                return self._timed_out(task)
            raise
        except BaseException as exc:  # anything a job raises fails the task, never the service
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                log.warning("task %d raised %s", task.id, type(exc).__name__)
            return self._failure(task, self._describe(exc), self._error(exc))
        try:
            encoded = jsontext.dumps(value, "The job's result")
        except jsontext.TooDeep as exc:
            return Outcome(Status.FAILED, {"result": str(exc)})
        except TypeError as exc:
            return Outcome(
                Status.FAILED, {"result": f"The job's result is not JSON-serialisable: {exc}"}
            )
        limit = self.settings.max_result_bytes
        if len(encoded) > limit:
            return Outcome(
                Status.FAILED,
                {
                    "result": f"The job's result is {len(encoded)} bytes of JSON, over the "
                    f"limit of {limit} bytes (max_result_bytes)"
                },
            )
        return Outcome(Status.SUCCESS, {"result": encoded.decode()})

    def _timed_out(self, task: Task) -> Outcome:
        message = f"Task '{task.id}' timed out after {task.timeout:g} s"
        return self._failure(
            task, message, AttemptEnd(AttemptOutcome.TIMED_OUT, "TimeoutError", message)
        )

    def _describe(self, exc: BaseException, with_type: bool = True) -> str:
        return describe_error(exc, with_type, self._message_limit())

    def _message_limit(self) -> int:
        return min(self.settings.max_result_bytes, MAX_ERROR_CHARS)

    def _error(self, exc: BaseException) -> AttemptEnd:
        """A failed run's end: the exception's type, message and traceback (its last
        max_traceback_chars characters); for a job in a child process, the child's own."""
        limit = self.settings.max_traceback_chars
        child = getattr(exc, "child_error", None)
        if isinstance(child, ChildError):
            bounded = self._message_limit()
            return AttemptEnd(
                AttemptOutcome.FAILED,
                child.type,
                None if child.message is None else child.message[:bounded],
                None if child.traceback is None or not limit else child.traceback[-limit:],
            )
        if isinstance(exc, ReportedFailure):  # `Type: message`, without a traceback
            return self._reported_error(self._describe(exc, with_type=False))
        return AttemptEnd(
            AttemptOutcome.FAILED,
            error_name(exc),
            describe_error(exc, False, self._message_limit()),
            format_traceback(exc, limit) if limit else None,
        )

    @staticmethod
    def _reported_error(text: str) -> AttemptEnd:
        """A failure a child process put as `Type: message`: its type and message apart."""
        name, sep, message = text.partition(": ")
        if sep and name.replace(".", "").replace("_", "").isalnum():
            return AttemptEnd(AttemptOutcome.FAILED, name, message)
        return AttemptEnd(AttemptOutcome.FAILED, None, text)

    def _failure(self, task: Task, message: str, error: AttemptEnd | None = None) -> Outcome:
        """Retry while retries are left (exponential backoff with jitter), else fail."""
        return after_failure(task, message, clock.now_ms(), self.retry_delay, error=error)

    async def _dependency_results(self, task: Task) -> dict[int, Any]:
        """What the task's dependencies returned, by id, decoded (ctx.dependency_results);
        a dependency deleted since it succeeded is left out."""
        if not task.dependencies:
            return {}
        found: dict[int, Any] = {}
        for dependency in await self.store.list_ids(task.graph, list(task.dependencies)):
            text = dependency.result
            try:
                found[dependency.id] = None if text is None else orjson.loads(text)
            except orjson.JSONDecodeError:  # stored by hand or damaged: given as it is
                found[dependency.id] = text
        return {d: found[d] for d in task.dependencies if d in found}

    async def _last_checkpoint(self, task: Task) -> Any:
        """The checkpoint an earlier attempt stored, decoded (None: none). Only a task run
        before can have one, and every run after the first comes with a retry spent (a
        failure's, a restore's, a user's), so a first run reads nothing."""
        if task.retries == 0:
            return None
        text = await self.store.checkpoint(task.id)
        if text is None:
            return None
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:  # damaged in the file: the job starts over
            log.warning("task %d: its stored checkpoint is not JSON; not given", task.id)
            return None

    def retry_delay(self, retries: int) -> float:
        """Seconds before retry number `retries` + 1: exponential backoff with jitter."""
        settings = self.settings
        return backoff_delay(
            retries, settings.retry_backoff, settings.retry_backoff_max, self._jitter()
        )

    async def _settle(self, task: Task, outcome: Outcome) -> None:
        """Writes a job's end; a cancel that arrived meanwhile wins over the job's own outcome.
        The job has returned, so its slot is free at once: the end is handed to the writer
        before anything can start in its place (the scheduler runs only once this yields),
        so the end and that start share a transaction or the end comes first."""
        running = self._running.get(task.id)
        if running is not None:
            running.ending = True
            self._free_slot(running)
        self._dirty_progress.pop(task.id, None)
        self._dirty_totals.pop(task.id, None)
        self._dirty_checkpoints.pop(task.id, None)
        last_lines = self._dirty_logs.pop(task.id, None)
        fields = dict(outcome.fields)
        if running is not None and running.progress is not None:
            fields["progress"] = running.progress  # the latest value is never lost
        if running is not None and running.progress_total is not None:
            fields["progress_total"] = running.progress_total
        # the run ends with the status step, in its transaction (no attempt open: nothing)
        end = outcome.attempt or _default_end(outcome)
        if running is not None and running.checkpoint is not None:
            end = dataclasses.replace(end, checkpoint=running.checkpoint)
        try:
            if last_lines:
                # queued before the end: written first, in its transaction or before it
                await asyncio.gather(
                    self._write_logs({task.id: last_lines}),
                    self._write_end(task, outcome.target, fields, end),
                )
            else:
                await self._write_end(task, outcome.target, fields, end)
        finally:
            if running is not None and self._running.get(task.id) is running:
                del self._running[task.id]
                self._freed -= 1
        if outcome.target is Status.RESTORING:
            self._due_at(int(fields.get("run_after_ms", 0)))

    async def _write_end(
        self, task: Task, target: Status, fields: dict[str, Any], end: AttemptEnd
    ) -> None:
        """Writes the end, again and again while the store cannot write (unless a drain
        has given up on the job)."""
        # One writer: nothing to spread out, so no jitter; no budget, it tries until it can.
        backoff = Backoff(SETTLE_RETRY_FIRST, SETTLE_RETRY_MAX, jitter=0)
        retried = False
        while True:
            try:
                await self._record_end(task.id, target, fields, end)
            except NotFound:
                log.info(
                    "task %d was deleted while it ran; its end (%s) is not recorded",
                    task.id,
                    target,
                )
            except ServiceUnavailable as exc:
                # A full disk or a locked database passes: the end is written once it does.
                # A drain that has given up on the running jobs gives up on this too; the
                # task, still `running` in the file, is restored at the next start.
                if not (self._abandoning or self._stopped):
                    if not retried:
                        log.warning(
                            "task %d: %s not recorded yet, trying again: %s",
                            task.id,
                            target,
                            exc.message,
                        )
                    retried = True
                    await asyncio.sleep(backoff.next() or SETTLE_RETRY_MAX)
                    continue
                log.error("task %d: could not record %s: %s", task.id, target, exc.message)
            except SidetaskError as exc:
                log.error("task %d: could not record %s: %s", task.id, target, exc.message)
            else:
                if retried:
                    log.info("task %d: %s recorded", task.id, target)
            break

    async def _record_end(
        self, task_id: int, target: Status, fields: dict[str, Any], end: AttemptEnd
    ) -> None:
        try:
            await self.store.transition(
                Change(task_id, target, fields, fenced=True, ends_attempt=end)
            )
            return
        except TransitionRefused as exc:
            refused = exc
        # A cancel landed as the job ended: the cancel wins, with the job's final progress.
        cancelled = {k: v for k, v in fields.items() if k in ("progress", "progress_total")}
        current = await self.store.get(None, task_id)
        if current is not None and current.status is Status.CANCELLING:
            try:
                await self.store.transition(
                    Change(
                        task_id,
                        Status.CANCELLED,
                        cancelled,
                        fenced=True,
                        ends_attempt=AttemptEnd(
                            AttemptOutcome.CANCELLED, checkpoint=end.checkpoint
                        ),
                    )
                )
                return
            except TransitionRefused:
                current = await self.store.get(None, task_id)
        if current is not None and current.status is Status.CANCELLED:
            return  # recorded already (by a cancel that found no job left to interrupt): done
        raise refused

    # --- progress ---

    def _reporter(self, task_id: int, total: bool = False) -> Callable[[int], None]:
        """What a job's progress reports (or, with `total`, its declared totals) go through."""
        loop = asyncio.get_running_loop()

        def record(value: int) -> None:
            # SQLite stores 64-bit integers: a job's absurd progress is kept within them
            value = max(-(2**63), min(2**63 - 1, value))
            running = self._running.get(task_id)
            if total:
                if running is not None and not running.ending and running.progress_total != value:
                    running.progress_total = value
                    self._dirty_totals[task_id] = value
                    # written with the progress it goes with, at the next flush
                    if task_id not in self._dirty_progress:
                        current = running.progress
                        self._dirty_progress[task_id] = (
                            running.task.progress if current is None else current
                        )
                return
            if running is not None and not running.ending:
                running.progress = value
                if task_id in self._dirty_progress:
                    self.progress_coalesced += 1  # replaced before it was written
                self._dirty_progress[task_id] = value

        return _from_any_thread(loop, record)

    def _checkpointer(self, task_id: int) -> Callable[[str], None]:
        """Where a job's checkpoints (JSON text, checked by the context) go: kept with its
        run, and written with the next progress flush (so its progress is flushed too)."""
        loop = asyncio.get_running_loop()

        def record(text: str) -> None:
            running = self._running.get(task_id)
            if running is None or running.ending:
                return  # its end is being written, with the checkpoint it had
            running.checkpoint = text
            self._dirty_checkpoints[task_id] = text
            if task_id not in self._dirty_progress:
                current = running.progress
                self._dirty_progress[task_id] = (
                    running.task.progress if current is None else current
                )

        return _from_any_thread(loop, record)

    def _logger(self, task_id: int) -> Callable[[int, int, str], None]:
        """Where a job's log lines go: buffered, and written with the next progress flush
        (or its end). Past max_log_lines unwritten, the oldest half is dropped here, and a
        line says how many."""
        loop = asyncio.get_running_loop()
        keep = self.settings.max_log_lines

        def record(time_ms: int, level: int, text: str) -> None:
            running = self._running.get(task_id)
            if running is None:
                return  # its end has been written
            lines = self._dirty_logs.setdefault(task_id, [])
            lines.append(LogLine(time_ms, level, text))
            if len(lines) > 2 * keep:
                cut = len(lines) - keep
                del lines[:cut]
                note = f"… {cut} lines dropped before they were written (max_log_lines)"
                lines.insert(0, LogLine(time_ms, LOG_LEVEL_INDEX["warning"], note))

        # A thread's lines are handed to the loop in bunches: one wake-up of the loop for
        # whatever the thread wrote meanwhile (before the job's end, which is handed after)
        lock = threading.Lock()
        handed: list[tuple[int, int, str]] = []

        def take() -> None:
            with lock:
                bunch = handed[:]
                handed.clear()
            for line in bunch:
                record(*line)

        def report(time_ms: int, level: int, text: str) -> None:
            try:
                in_loop = asyncio.get_running_loop() is loop
            except RuntimeError:
                in_loop = False
            if in_loop:
                record(time_ms, level, text)
                return
            with lock:  # a plain function's worker thread
                handed.append((time_ms, level, text))
                first = len(handed) == 1
            if first:
                with contextlib.suppress(RuntimeError):  # the loop is closed: a drain left it
                    loop.call_soon_threadsafe(take)

        return report

    async def _write_logs(self, lines: dict[int, list[LogLine]]) -> None:
        """Log lines into the store; lines it cannot write now are lost (logged), the
        job goes on."""
        try:
            await self.store.append_logs(lines, self.settings.max_log_lines)
        except SidetaskError as exc:
            log.warning("%d log lines not written: %s", sum(map(len, lines.values())), exc.message)

    async def _progress_loop(self) -> None:
        # A flush is not awaited before the next tick: the cadence stays `progress_interval`
        # however long a commit takes (the store keeps writes in order). A few in flight at
        # most; past that, reports wait and coalesce.
        flushes: set[asyncio.Task[None]] = set()
        try:
            while True:
                await asyncio.sleep(self.settings.progress_interval)
                dirty = self._dirty_progress or self._dirty_logs
                if dirty and len(flushes) < MAX_PROGRESS_FLUSHES:
                    flush = asyncio.create_task(self._flush_progress_logged())
                    flushes.add(flush)
                    flush.add_done_callback(flushes.discard)
        finally:
            if flushes:  # a flush already handed to the store finishes its write
                await asyncio.gather(*flushes, return_exceptions=True)

    async def _flush_progress_logged(self) -> None:
        try:
            await self._flush_progress()
        except SidetaskError as exc:
            log.warning("progress not written: %s", exc.message)

    async def _flush_progress(self) -> None:
        if self._dirty_logs:
            lines, self._dirty_logs = self._dirty_logs, {}
            # queued before the progress: the same transaction, or the one before it
            writing = asyncio.ensure_future(self._write_logs(lines))
            try:
                await self._flush_dirty_progress()
            finally:
                await writing
        else:
            await self._flush_dirty_progress()

    async def _flush_dirty_progress(self) -> None:
        if self._dirty_progress:
            batch, self._dirty_progress = self._dirty_progress, {}
            totals, self._dirty_totals = self._dirty_totals, {}
            checkpoints, self._dirty_checkpoints = self._dirty_checkpoints, {}
            try:
                if checkpoints:
                    # both queued before either is awaited: they share a transaction
                    await asyncio.gather(
                        self.store.set_progress(batch, totals),
                        self.store.set_checkpoints(checkpoints),
                    )
                else:
                    await self.store.set_progress(batch, totals)
            except SidetaskError:
                # Written at the next flush, unless a newer value or the job's end came first.
                for task_id, value in batch.items():
                    if task_id in self._running:
                        self._dirty_progress.setdefault(task_id, value)
                        if task_id in totals:
                            self._dirty_totals.setdefault(task_id, totals[task_id])
                        if task_id in checkpoints:
                            self._dirty_checkpoints.setdefault(task_id, checkpoints[task_id])
                raise

    # --- liveness (a store shared by several processes) ---

    async def _liveness_loop(self) -> None:
        """Every heartbeat_interval: this process's heartbeat; then, one round at a time,
        the process groups that dead processes of this machine left (stopped, so their
        tasks can run again) and the sweep (the tasks of processes declared dead, recovered
        as a restart recovers them). Cut off from the store for most of replica_timeout,
        this process is about to be declared dead: it stops its jobs first, so none runs
        here while the others run it again, and takes a new identity once it can write.

        A heartbeat that gets no answer (a network gone silent: no error comes) is waited
        for only until then; it goes on meanwhile, and the next is written after it. The
        sweep is no part of the heartbeat: it may wait for a lock (one a replica cut off
        in the middle of a transaction holds, until PostgreSQL ends its session) while the
        heartbeats, which do not wait behind other writes, say this process is alive."""
        beating: asyncio.Task[None] | None = None
        sweeping: asyncio.Task[None] | None = None
        try:
            while True:
                await asyncio.sleep(self.settings.heartbeat_interval)
                if beating is None:
                    beating = asyncio.create_task(self._beat(self._rejoin))
                cut_off = self.beat_at + CUT_OFF_SHARE * self.settings.replica_timeout
                await asyncio.wait({beating}, timeout=max(0.0, cut_off - time.monotonic()))
                if beating.done():
                    finished, beating = beating, None
                    try:
                        finished.result()
                    except SidetaskError as exc:
                        failure = exc.message
                    else:
                        if sweeping is None or sweeping.done():
                            sweeping = asyncio.create_task(self._sweep())
                        continue
                else:
                    failure = "the database has not answered"
                log.warning("heartbeat not written: %s", failure)
                silent = time.monotonic() - self.beat_at
                if not self._rejoin and silent >= CUT_OFF_SHARE * self.settings.replica_timeout:
                    self._abandon_all(f"no heartbeat could be written for {silent:.0f} s")
                    self._rejoin = True
        finally:
            for task in (beating, sweeping):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)

    async def _beat(self, rejoin: bool) -> None:
        """This process's heartbeat; `rejoin`: leave the identity given up for a new one
        (declared dead, it has a new one already). It counts from when it was sent: the
        answer to one sent before a partition may come only when the network heals, after
        the others have declared this process dead."""
        sent = time.monotonic()
        alive = await self.store.beat(rejoin)
        if not alive:
            self._abandon_all("it was declared dead")
        self.beat_at = sent
        if rejoin or not alive:
            self._rejoin = False

    async def _sweep(self) -> None:
        try:
            await self._stop_orphans()
            recovery = await self.store.sweep(
                self._interrupted_change, keep_types=self.settings.external_types
            )
        except SidetaskError as exc:
            log.warning("sweep not written: %s", exc.message)
            return
        self._log_recovery(recovery)

    @staticmethod
    def _log_recovery(recovery: Recovery) -> None:
        if recovery.restored or recovery.failed or recovery.cancelled:
            log.info(
                "recovered the tasks of a process declared dead: %d restoring, "
                "%d failed, %d cancelled",
                recovery.restored,
                recovery.failed,
                recovery.cancelled,
            )

    @property
    def alive(self) -> bool:
        """Whether this process's heartbeat was written recently enough that the others
        count it alive (/ready)."""
        return time.monotonic() - self.beat_at < self.settings.replica_timeout

    def _interrupted_change(self, task: Task) -> Change:
        return self._change_of(task, after_interruption(task, clock.now_ms()))

    def _handed_back_change(self, task: Task) -> Change:
        """As `_interrupted_change`, for the tasks a drain gives back: their runs end
        `handed_back`."""
        change = self._interrupted_change(task)
        if change.ends_attempt is None:
            return change
        return dataclasses.replace(change, ends_attempt=AttemptEnd(AttemptOutcome.HANDED_BACK))

    def _abandon_all(self, why: str) -> None:
        """What this process holds is the others' now (it was declared dead, or is about
        to be): its claimed tasks are dropped and its jobs stopped, without a word written
        about them (every such write would be refused by the fence anyway)."""
        log.error(
            "%s: its %d running and %d claimed task(s) are left to the other processes; "
            "it goes on with a new identity",
            why,
            len(self._running),
            len(self._ready),
        )
        self._ready.clear()
        for running in self._running.values():
            running.abandoned = True
            if running.job is not None:
                running.cancel.set()
                running.job.cancel()

    # --- retention ---

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.purge_interval)
            await self.purge()
            # what another replica stopped between a submission and its check left
            with contextlib.suppress(SidetaskError):
                await self.store.recheck_dependencies()

    async def purge(self) -> tuple[int, int]:
        now = clock.now_ms()
        total_tasks = total_events = 0
        while True:
            try:
                tasks, events = await self.store.purge(
                    now - int(self.settings.task_retention * 1000),
                    now - int(self.settings.event_retention * 1000),
                )
            except SidetaskError as exc:
                log.warning("purge failed: %s", exc.message)
                break
            total_tasks += tasks
            total_events += events
            if tasks == 0 and events == 0:
                break
        if total_tasks or total_events:
            log.info("purged %d completed task(s) and %d event(s)", total_tasks, total_events)
        return total_tasks, total_events
