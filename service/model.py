"""The task, its statuses and the transition table: pure data, no I/O."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, replace
from typing import Any

import orjson


class Status(enum.StrEnum):
    """A task's status; the lower-case value is what the API writes."""

    #: a stored task whose state cannot be interpreted; never run
    UNKNOWN = "unknown"
    #: accepted and durably stored; nothing has looked at it yet
    NEW = "new"
    #: claimed by a replica's scheduler, which is choosing where it runs (several replicas)
    SCHEDULING = "scheduling"
    #: assigned to an executor that has not confirmed yet (an external worker's lease)
    SCHEDULED = "scheduled"
    #: taken by this process's scheduler (or confirmed by its executor); waiting for a slot
    QUEUED = "queued"
    #: suspended by a user; not run until resumed
    PENDING = "pending"
    #: coming back after a restart, a resume, or before a retry
    RESTORING = "restoring"
    #: executing
    RUNNING = "running"
    #: finished; the result holds the return value
    SUCCESS = "success"
    #: cancel requested while running; the job is being interrupted
    CANCELLING = "cancelling"
    #: cancelled; final
    CANCELLED = "cancelled"
    #: failed with no retries left; the result holds the error; final
    FAILED = "failed"

    @classmethod
    def parse(cls, text: str) -> Status:
        """Case-insensitive lookup (`SUCCESS`, `success`); ValueError for anything else."""
        return cls(text.lower())


#: final: a task in one of these has ended (only a retry of a failed or cancelled one, or
#: a delete, changes it again)
COMPLETED_STATUSES = frozenset({Status.SUCCESS, Status.CANCELLED, Status.FAILED})
#: every other status, `unknown` included: what a plain delete refuses
NOT_COMPLETED_STATUSES = frozenset(Status) - COMPLETED_STATUSES
#: statuses in which the job itself may be executing (its run time is measured from `running`)
EXECUTING_STATUSES = frozenset({Status.RUNNING, Status.CANCELLING})
#: statuses a crash interrupts: they are restored at the next start (SPEC 9)
INTERRUPTIBLE_STATUSES = frozenset(
    {Status.SCHEDULING, Status.SCHEDULED, Status.QUEUED, Status.RUNNING, Status.CANCELLING}
)
#: statuses the scheduler claims a task from, once its run_after_ms has come
CLAIMABLE_STATUSES = frozenset({Status.NEW, Status.RESTORING})
#: statuses of a task that has not started executing
NOT_STARTED_STATUSES = frozenset(
    {
        Status.NEW,
        Status.SCHEDULING,
        Status.SCHEDULED,
        Status.QUEUED,
        Status.PENDING,
        Status.RESTORING,
    }
)
#: accepted, not paused, not yet running: what the queue depth (and max_waiting) counts
WAITING_STATUSES = NOT_STARTED_STATUSES - {Status.PENDING}
#: a task on its way, as far as it can be read: not started, or executing (neither
#: completed nor `unknown`); what `sidetask watch` starts from
UNFINISHED_STATUSES = NOT_STARTED_STATUSES | EXECUTING_STATUSES
#: statuses in which an external worker holds a task under a lease
LEASED_STATUSES = frozenset({Status.SCHEDULED, Status.RUNNING, Status.CANCELLING})

#: HugeGraph's results (HugeTask.checkDependenciesSuccess) of a task whose dependency ended
#: failed or cancelled: the dependency's end -> the status it ends in and its result
DEPENDENCY_ENDS: dict[Status, tuple[Status, str]] = {
    Status.FAILED: (Status.FAILED, "Failed due to dependent task '{id}' failed"),
    Status.CANCELLED: (Status.CANCELLED, "Cancelled due to dependent task '{id}' cancelled"),
}
#: the result of a task whose dependency was deleted (force=true) before it ended
DEPENDENCY_DELETED = "Cancelled due to dependent task '{id}' deleted"
#: the most dependencies one task may name
MAX_DEPENDENCIES = 1000


def dependency_results(dependency: int) -> tuple[str, str]:
    """The results a dependency's failure and cancel give the tasks waiting for it: what a
    retry of it looks for in the tasks it ended."""
    failed = DEPENDENCY_ENDS[Status.FAILED][1].format(id=dependency)
    return failed, DEPENDENCY_ENDS[Status.CANCELLED][1].format(id=dependency)


_S = Status
#: Every allowed status change: target -> statuses it may come from.
#: The store enforces this table in SQL (UPDATE … WHERE status IN (…)).
TRANSITIONS: dict[Status, frozenset[Status]] = {
    # a task is only ever created `new`; nothing moves back to it
    _S.NEW: frozenset(),
    # Only the steps that happen (SPEC 3): in one process the scheduler takes a task
    # `new` -> `queued` -> `running`; an external worker's lease makes it `scheduled`, and
    # its first report `running`; `scheduling` is a replica's claim (several replicas).
    _S.SCHEDULING: frozenset({_S.NEW, _S.RESTORING}),
    _S.SCHEDULED: frozenset({_S.NEW, _S.RESTORING, _S.SCHEDULING}),
    _S.QUEUED: frozenset({_S.NEW, _S.RESTORING, _S.SCHEDULED}),
    _S.RUNNING: frozenset({_S.QUEUED, _S.SCHEDULED}),
    _S.SUCCESS: frozenset({_S.RUNNING}),
    # and a task waiting for its dependencies (new, restoring, pending) when one of them
    # ends failed: HugeGraph's "Failed due to dependent task '{id}' failed"
    _S.FAILED: INTERRUPTIBLE_STATUSES - {_S.CANCELLING} | {_S.NEW, _S.RESTORING, _S.PENDING},
    _S.CANCELLING: frozenset({_S.RUNNING}),
    _S.CANCELLED: NOT_STARTED_STATUSES | {_S.CANCELLING},
    _S.PENDING: NOT_STARTED_STATUSES - {_S.PENDING},
    # resume (pending), retry (failed, cancelled), a retry after a failed run (running),
    # restore after a crash (the interruptible statuses)
    _S.RESTORING: frozenset({_S.PENDING, _S.FAILED, _S.CANCELLED, _S.RUNNING})
    | INTERRUPTIBLE_STATUSES - {_S.CANCELLING},
    _S.UNKNOWN: frozenset(),
}


class Action(enum.StrEnum):
    """What a user may do to a task; `force_delete` is `DELETE …?force=true`, listed where
    a plain delete is refused."""

    CANCEL = "cancel"
    PAUSE = "pause"
    RESUME = "resume"
    RETRY = "retry"
    DELETE = "delete"
    FORCE_DELETE = "force_delete"


_A = Action
#: Each user action -> the statuses that allow it. The supervisor refuses an action in any
#: other status (400), and GET /actions serves this table, so a client offers only these.
#: Each is within TRANSITIONS: cancel moves a running task to `cancelling` and any other
#: to `cancelled`, pause to `pending`, resume and retry to `restoring`.
ACTION_STATUSES: dict[Action, frozenset[Status]] = {
    _A.CANCEL: NOT_STARTED_STATUSES | {_S.RUNNING},
    _A.PAUSE: NOT_STARTED_STATUSES - {_S.PENDING},
    _A.RESUME: frozenset({_S.PENDING}),
    _A.RETRY: frozenset({_S.FAILED, _S.CANCELLED}),
    # the record of a completed task (Task.completed, which the store's delete checks)
    _A.DELETE: COMPLETED_STATUSES,
    # where a delete needs force=true: every other status (a running job runs on)
    _A.FORCE_DELETE: NOT_COMPLETED_STATUSES,
}


def actions_of(status: Status) -> list[Action]:
    """The actions a task in `status` allows, in the enum's order."""
    return [a for a in Action if status in ACTION_STATUSES[a]]


def allows(status: Status, action: Action) -> bool:
    return status in ACTION_STATUSES[action]


def allowed_sources(target: Status) -> frozenset[Status]:
    """The statuses from which a task may move to `target`."""
    return TRANSITIONS[target]


def can_transition(source: Status, target: Status) -> bool:
    return source in TRANSITIONS[target]


@dataclass(frozen=True, slots=True)
class GraphRef:
    """A declared graph: the scope every task lives in."""

    graphspace: str
    graph: str

    def __str__(self) -> str:
        return f"{self.graphspace}/{self.graph}"


# Not frozen: a frozen dataclass sets each of its 18 fields through object.__setattr__,
# which made building a Task (every row read, every status step) cost ~5 us instead of ~1.
# It is treated as a value all the same: a change makes a new one (`evolve`).
@dataclass(slots=True)
class Task:
    """One task as stored. `input` and `result` are JSON text, as the API shows them.
    A value: never changed in place; `evolve` makes a changed copy."""

    id: int
    graph: GraphRef
    name: str
    type: str
    callable: str
    status: Status
    progress: int = 0
    create_ms: int = 0
    update_ms: int = 0
    result: str | None = None
    input: str | None = None
    retries: int = 0
    max_retries: int = 0
    priority: int = 0
    timeout: float | None = None
    run_after_ms: int = 0
    server: str | None = None
    description: str | None = None
    #: the progress value that means done, when the job declared one (ctx.progress(n,
    #: total=…), a command's `progress: N/M` or `total`); None: not known
    progress_total: int | None = None
    #: the W3C trace context the task was submitted under (its `traceparent` and
    #: `tracestate` headers, checked by service.tracing); None: none was given
    traceparent: str | None = None
    tracestate: str | None = None
    #: the tasks (ids, in the graph) this one waits for (HugeGraph's task_dependencies)
    dependencies: tuple[int, ...] = ()
    #: how many of them have not succeeded yet: it is not claimed while this is above 0
    waiting_on: int = 0
    #: how many tasks named this one as a dependency (0: its end concerns nobody else)
    dependants: int = 0
    #: the schedule that submitted it (its name, in the task's graph) and the fire time
    #: it was submitted for (epoch ms); None: not a schedule's
    schedule: str | None = None
    schedule_fire_ms: int | None = None

    @property
    def completed(self) -> bool:
        return self.status in COMPLETED_STATUSES

    def decoded_input(self) -> Any:
        return None if self.input is None else orjson.loads(self.input)

    def evolve(self, **changes: Any) -> Task:
        return replace(self, **changes)

    def to_api(self) -> dict[str, Any]:
        """The task as HugeGraph writes it: the seeds' eleven keys in order, then ours."""
        body: dict[str, Any] = {
            "task_name": self.name,
            "task_progress": self.progress,
            "task_create": self.create_ms,
            "task_status": self.status.value,
            "task_update": self.update_ms,
        }
        if self.result is not None:
            body["task_result"] = self.result
        body["task_retries"] = self.retries
        body["id"] = self.id
        body["task_type"] = self.type
        body["task_callable"] = self.callable
        if self.input is not None:
            body["task_input"] = self.input
        if self.dependencies:  # HugeGraph's key, after its eleven, only when there are some
            body["task_dependencies"] = list(self.dependencies)
        # ours from here on (SPEC 2 allows keys beyond HugeGraph's eleven)
        if self.waiting_on > 0 and self.status in NOT_STARTED_STATUSES:
            body["task_dependencies_left"] = self.waiting_on
        if self.progress_total is not None:
            body["task_progress_total"] = self.progress_total
        body["task_priority"] = self.priority
        body["task_max_retries"] = self.max_retries
        if self.timeout is not None:
            body["task_timeout"] = self.timeout
        if self.server is not None:
            body["task_server"] = self.server
        if self.description is not None:
            body["task_description"] = self.description
        body["task_graphspace"] = self.graph.graphspace
        body["task_graph"] = self.graph.graph
        if self.waits_until is not None:
            body["task_run_at"] = self.waits_until
        if self.traceparent is not None:
            body["task_traceparent"] = self.traceparent
            if self.tracestate is not None:
                body["task_tracestate"] = self.tracestate
        if self.schedule is not None:
            body["task_schedule"] = self.schedule
            body["task_schedule_fire"] = self.schedule_fire_ms
        return body

    @property
    def waits_until(self) -> int | None:
        """When a task waiting for its delay or a retry's backoff becomes due (epoch ms);
        None for any other. A task with no delay is due when it is written (its
        run_after_ms is its update_ms or 0), so only a later time is a wait."""
        if self.status in CLAIMABLE_STATUSES and self.run_after_ms > self.update_ms:
            return self.run_after_ms
        return None


class AttemptOutcome(enum.StrEnum):
    """How one run of a task (an attempt) ended; the value is what the API writes."""

    #: the job returned a value: the task succeeded
    SUCCESS = "success"
    #: the job raised: the task is retried while retries are left, else it failed
    FAILED = "failed"
    #: the task's timeout passed before the job returned
    TIMED_OUT = "timed_out"
    #: a cancel stopped it
    CANCELLED = "cancelled"
    #: the process running it stopped (a crash, a kill, a replica declared dead): found by
    #: the next start's restore or another replica's sweep
    INTERRUPTED = "interrupted"
    #: a drain gave up waiting for it and handed the task back to be run again
    HANDED_BACK = "handed_back"
    #: the external worker running it stopped reporting (its lease expired)
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    """What a status change that ends a run writes into its attempt: the outcome, for a
    failure the error (its type, message and traceback, each bounded by the caller), and
    the job's last checkpoint when it gave one since the last write."""

    outcome: AttemptOutcome
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    checkpoint: str | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One run of a task, as stored: numbered from 1 in the order they started."""

    task_id: int
    number: int
    #: the task_server the run was started under (this service's server_name, or the
    #: external worker's name)
    server: str | None
    #: the sidetask process that recorded the start, as host:pid
    replica: str | None
    start_ms: int
    #: None while it runs
    end_ms: int | None = None
    outcome: AttemptOutcome | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    #: whether a checkpoint was stored during this attempt (the value itself is the job's)
    checkpointed: bool = False

    def to_api(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "attempt": self.number,
            "server": self.server,
            "replica": self.replica,
            "start": self.start_ms,
            "end": self.end_ms,
            "outcome": "running" if self.outcome is None else self.outcome.value,
        }
        if self.error_type is not None or self.error_message is not None:
            body["error"] = {
                "type": self.error_type,
                "message": self.error_message,
                "traceback": self.traceback,
            }
        body["checkpointed"] = self.checkpointed
        return body


#: a log line's levels, lowest first; stored as their index
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")
LOG_LEVEL_INDEX: dict[str, int] = {name: index for index, name in enumerate(LOG_LEVELS)}


def log_level(name: str) -> int:
    """A level's index from its name (Python's names too: WARN, CRITICAL, FATAL);
    ValueError naming the known ones."""
    key = name.strip().lower()
    key = {"warn": "warning", "critical": "error", "fatal": "error"}.get(key, key)
    index = LOG_LEVEL_INDEX.get(key)
    if index is None:
        raise ValueError(f"unknown log level {name!r}: one of {', '.join(LOG_LEVELS)}")
    return index


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line of a job's log. `id` is the store's (increasing in the order lines were
    written; 0 until stored); `attempt` the run that wrote it."""

    time_ms: int
    level: int
    text: str
    attempt: int | None = None
    id: int = 0

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.time_ms,
            "level": LOG_LEVELS[self.level] if 0 <= self.level < len(LOG_LEVELS) else "info",
            "attempt": self.attempt,
            "text": self.text,
        }


@dataclass(frozen=True, slots=True)
class NewTask:
    """What a submission asks for, before the store gives it an id."""

    graph: GraphRef
    type: str
    callable: str
    name: str
    input: str | None
    priority: int = 0
    max_retries: int = 0
    timeout: float | None = None
    delay_ms: int = 0
    idempotency_key: str | None = None
    #: the submission's W3C trace context (not part of its fingerprint: a replay of the
    #: same request comes under a trace of its own)
    traceparent: str | None = None
    tracestate: str | None = None
    #: the URL sidetask POSTs the task to on its callback statuses (README, "Webhooks")
    callback: str | None = None
    #: the tasks it waits for (ids of tasks of its graph, no repeats)
    dependencies: tuple[int, ...] = ()
    #: the schedule (name) and fire time (epoch ms) it is submitted for
    schedule: str | None = None
    schedule_fire_ms: int | None = None
    #: `run_at`: the time (epoch ms) it may start, instead of a delay from its insert
    run_at_ms: int | None = None

    def run_after(self, now_ms: int) -> int:
        """Its run_after_ms when inserted at `now_ms`: 0 when due at once (the claim index
        holds only those; SQLite's schema 8), else when it becomes due."""
        due = self.run_at_ms if self.run_at_ms is not None else now_ms + self.delay_ms
        return due if due > now_ms else 0

    def fingerprint(self) -> str:
        """What an Idempotency-Key stands for: the job type, the input and every option
        (name, priority, max_retries, timeout, delay), as a SHA-256. The input is compared
        as a JSON value: the order of an object's members does not count."""
        options = [self.type, self.name, self.priority, self.max_retries, self.timeout]
        # run_at is a time, the same in a replay; a delay counts from each request
        when = self.delay_ms if self.run_at_ms is None else ["run_at", self.run_at_ms]
        digest = hashlib.sha256(orjson.dumps([*options, when]))
        if self.input is not None:
            # written on its own, not inside the list: an input as deep as can be stored fits
            value = orjson.loads(self.input)
            digest.update(b"\n" + orjson.dumps(value, option=orjson.OPT_SORT_KEYS))
        if self.callback is not None:  # only when given: older fingerprints stay the same
            digest.update(b"\ncallback " + self.callback.encode())
        if self.dependencies:  # only when given, as the callback
            digest.update(b"\ndependencies " + orjson.dumps(sorted(self.dependencies)))
        return digest.hexdigest()


class EventKind(enum.StrEnum):
    CREATED = "task.created"
    STATUS = "task.status"
    PROGRESS = "task.progress"
    DELETED = "task.deleted"
    #: a job's new log lines, one event per task per flush (data: {"id", "lines"})
    LOG = "task.log"


# Not frozen, for the same reason as Task: one is built for every change.
@dataclass(slots=True)
class Event:
    """One committed change, as the event log stores it and subscribers receive it."""

    id: int
    kind: EventKind
    task_id: int
    graph: GraphRef
    task_type: str
    status: Status | None
    #: compact JSON of the event's data (the task as GET returns it, or {"id": N})
    data: bytes


# --- webhooks (README, "Webhooks"): the outbox rows a status change writes ---


#: the hook name of the deliveries to a task's own callback URL
CALLBACK_HOOK = "callback"


class DeliveryState(enum.StrEnum):
    #: not yet answered with a 2xx; tried again at its next time
    PENDING = "pending"
    #: the target answered 2xx
    DELIVERED = "delivered"
    #: a permanent failure (410, another 4xx but 408/429, a refused target) or retried
    #: past webhook_retry_for
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class HookRule:
    """A configured hook as the outbox matches it: a task of one of `types` (empty: any)
    entering one of `statuses` gets a delivery to `url`."""

    name: str
    url: str
    statuses: frozenset[Status]
    types: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Outbox:
    """Which status changes write deliveries, in the change's transaction: the configured
    hooks, and a task's own callback on `callback_statuses` (empty: callbacks are off)."""

    rules: tuple[HookRule, ...] = ()
    callback_statuses: frozenset[Status] = frozenset()

    @property
    def statuses(self) -> frozenset[Status]:
        """Every status some delivery may be written for."""
        found = set(self.callback_statuses)
        for rule in self.rules:
            found |= rule.statuses
        return frozenset(found)

    def hooks_for(self, task: Task) -> list[HookRule]:
        return [
            rule
            for rule in self.rules
            if task.status in rule.statuses and (not rule.types or task.type in rule.types)
        ]


@dataclass(frozen=True, slots=True)
class DeliveryAnswer:
    """One attempt of a delivery: the target's HTTP status, or the error that stood for
    one (a timeout, a refused connection, a refused target)."""

    time_ms: int
    code: int | None
    error: str | None
    duration_ms: int

    def to_api(self) -> dict[str, Any]:
        return {
            "time": self.time_ms,
            "code": self.code,
            "error": self.error,
            "duration_ms": self.duration_ms,
        }


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A delivery a deliverer claimed: its request, and the lease its answer is recorded
    under (another process takes it over once `lease_until_ms` has passed)."""

    id: int
    uid: str
    task_id: int
    hook: str
    url: str
    status: str
    body: bytes
    attempts: int
    create_ms: int
    lease: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """A delivery as GET …/tasks/{id}/deliveries shows it."""

    id: int
    uid: str
    task_id: int
    hook: str
    url: str
    status: str
    state: DeliveryState
    attempts: int
    create_ms: int
    #: when it is tried next (pending only)
    next_ms: int | None
    answers: tuple[DeliveryAnswer, ...] = ()

    def to_api(self) -> dict[str, Any]:
        return {
            "delivery": self.uid,
            "hook": self.hook,
            "url": self.url,
            "event": "task.status",
            "status": self.status,
            "state": self.state.value,
            "attempts": self.attempts,
            "created": self.create_ms,
            "next_try": self.next_ms if self.state is DeliveryState.PENDING else None,
            "last_answer": self.answers[-1].to_api() if self.answers else None,
            "answers": [a.to_api() for a in self.answers],
        }
