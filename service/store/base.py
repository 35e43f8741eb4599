"""What the rest of the service may ask of a store; SQLite now, PostgreSQL behind the same interface later."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import SidetaskError
from ..model import (
    Attempt,
    AttemptEnd,
    Delivery,
    DeliveryAnswer,
    DeliveryState,
    DueDelivery,
    Event,
    GraphRef,
    LogLine,
    NewTask,
    Outbox,
    Status,
    Task,
)
from ..schedules import Schedule
from ..selection import EVERY, Selection

#: called with the events of every committed write, in id order, after the commit
CommitListener = Callable[[Sequence[Event]], None]


@dataclass(frozen=True, slots=True)
class Change:
    """One compare-and-set status change: `task_id` moves to `target` only from a status
    the transition table allows (narrowed further by `sources` when given).

    On a store several processes share, a task is held by the process that claimed it:
    `claims` makes this process the holder; `fenced` (a start, a job's end, a hand-back)
    applies only while this process holds the task, so a process declared dead, whose
    tasks went to the others, changes none of them. One process alone holds every task:
    SQLite ignores both."""

    task_id: int
    target: Status
    fields: Mapping[str, Any] | None = None
    sources: frozenset[Status] | None = None
    claims: bool = False
    fenced: bool = False
    #: the change starts a run of the task: a new attempt is written with it
    starts_attempt: bool = False
    #: the change ends the task's run: its open attempt is closed with this, with it
    ends_attempt: AttemptEnd | None = None


@dataclass(frozen=True, slots=True)
class Recovery:
    """What start-up found of tasks a previous process left unfinished."""

    restored: int
    failed: int
    cancelled: int
    #: interrupted rows that read as `unknown` (damaged): left as they are
    unknown: int = 0

    def __add__(self, other: Recovery) -> Recovery:
        return Recovery(
            self.restored + other.restored,
            self.failed + other.failed,
            self.cancelled + other.cancelled,
            self.unknown + other.unknown,
        )


@dataclass(frozen=True, slots=True)
class Lease:
    """An external worker's claim on a task: who shows `token` may report on the task
    until `expires_ms` (each report moves it on)."""

    task: Task
    token: str
    expires_ms: int


@dataclass(frozen=True, slots=True)
class ProcessGroup:
    """A command job's process group, as stored while it runs."""

    task_id: int
    group: int
    #: tells the group apart from a later one with the same id (see service.jobs.command)
    token: str | None


#: decides, on a task as read inside the write, the change to make to it
Decision = Callable[[Task], Change]


class Store(Protocol):
    """Every read and write of task state. Writes are durable when they return."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    def add_listener(self, listener: CommitListener) -> None: ...

    # --- writes ---
    async def insert(self, new: NewTask) -> tuple[Task, bool]:
        """The stored task and whether it was created (False: an Idempotency-Key replay)."""
        ...

    async def transition(self, change: Change) -> Task: ...
    async def transition_many(self, changes: Sequence[Change]) -> list[Task | Exception]: ...
    async def set_progress(
        self, progress: Mapping[int, int], totals: Mapping[int, int] | None = None
    ) -> None: ...
    async def delete(
        self, graph: GraphRef, task_id: int, sources: frozenset[Status] | None
    ) -> Task:
        """Removes the task if it is in one of `sources` (None: any status); else
        TransitionRefused, and NotFound when no such task is in `graph`."""
        ...

    async def delete_many(
        self, graph: GraphRef, task_ids: Sequence[int], sources: frozenset[Status] | None
    ) -> list[Task | SidetaskError]:
        """`delete` of each, in one transaction: each one's task, or its refusal."""
        ...

    async def claim(
        self,
        limit: int,
        now_ms: int,
        type_room: Mapping[str, int],
        server: str | None = None,
        type_caps: Mapping[str, int] | None = None,
        runs: Sequence[str] | None = None,
        type_rates: Mapping[str, tuple[int, int]] | None = None,
    ) -> list[Task]:
        """Up to `limit` due tasks, at most `type_room[t]` of each limited type `t`, on
        `server` (their task_server): `queued` on a store of one process; on a store
        several processes share, `scheduling` (claimed by this process: SPEC 3, the caller
        hands them on), only of the types in `runs` (those this process has: another may
        have the others), and with `type_caps`, the limits of type_concurrency, held
        across all of them (the tasks of a type in hand anywhere count). With
        `type_rates` (type -> (starts, window ms): type_rate_limits), at most that many
        of a type are claimed in each fixed window of that length, counted in the store
        for every process; none of a paused type."""
        ...

    async def recheck_dependencies(self, task_ids: Sequence[int] | None = None) -> int:
        """Looks again at every task waiting for a dependency (or those of `task_ids`): its
        count of unfinished dependencies made true, and one whose dependency ended failed
        or cancelled ended as HugeGraph ends it; how many changed."""
        ...

    async def recover(self, decide: Decision, keep_types: Iterable[str] = ()) -> Recovery:
        """Changes each task a dead process left in an interruptible status as `decide` says;
        tasks of `keep_types` that a lease holds are left to their leases, damaged rows as
        they are. On a shared store, also what the sweep does: with several processes, a
        task held by a live one is not a dead process's."""
        ...

    async def beat(self, rejoin: bool = False) -> bool:
        """This process is alive (a shared store's heartbeat); False when it had been
        declared dead meanwhile: its tasks went to the others, and it has been given a new
        identity. `rejoin`: it gave up what it held (it was cut off for too long), so it
        takes a new identity now, leaving the old one's tasks to the sweep. A store of one
        process: always True."""
        ...

    async def sweep(self, decide: Decision, keep_types: Iterable[str] = ()) -> Recovery:
        """Declares dead the processes whose heartbeat is too old, and recovers the tasks
        they held as `recover` does (one process at a time across them). A store of one
        process: nothing to do."""
        ...

    async def held_elsewhere(self, task_id: int) -> bool:
        """Whether another live process holds the task (a cancel must reach its job
        there). A store of one process: never."""
        ...

    @property
    def replica_id(self) -> str | None:
        """This process's identity among those sharing the store (new at every start and
        when it was declared dead); None on a store of one process."""
        ...

    def made_here(self, event_id: int) -> bool:
        """Whether this process committed the event: asked by a commit listener about the
        events it is handed (per-replica metrics count only these). A store of one
        process: always."""
        ...

    async def set_process_group(
        self, task_id: int, group: int | None, token: str | None
    ) -> None: ...

    async def purge(self, tasks_before_ms: int, events_before_ms: int) -> tuple[int, int]: ...
    async def set_checkpoints(self, checkpoints: Mapping[int, str]) -> None:
        """The checkpoints (JSON text) of jobs running here, each into its task's open
        attempt; a task whose run has ended (or another process holds) is left alone."""
        ...

    # --- reads ---
    async def process_groups(self) -> list[ProcessGroup]:
        """The process groups stored for command jobs that may have been left behind: on a
        store of one process, every one (the caller leaves out its own jobs'); on a shared
        store, those of this machine whose task no live process holds."""
        ...

    async def get(self, graph: GraphRef | None, task_id: int) -> Task | None: ...
    async def list_tasks(
        self,
        graph: GraphRef,
        status: Status | frozenset[Status] | None,
        limit: int | None,
        after_id: int,
        *,
        task_type: str | None = None,
        descending: bool = False,
        selection: Selection = EVERY,
    ) -> list[Task]:
        """A graph's tasks in id order after `after_id`; descending: newest first, below
        `after_id` (0: from the newest). `status`: one, or any of a set; `selection`: a
        name prefix and created / updated ranges besides."""
        ...

    async def list_ids(self, graph: GraphRef, ids: Sequence[int]) -> list[Task]: ...
    def iter_tasks(
        self,
        graph: GraphRef,
        status: Status | frozenset[Status] | None,
        limit: int | None,
        after_id: int = 0,
        *,
        task_type: str | None = None,
        descending: bool = False,
        selection: Selection = EVERY,
    ) -> AsyncGenerator[list[Task], None]:
        """What `list_tasks` gives, in lists read in bounded batches: a large task is read
        on its own and comes alone, so a list of large tasks holds one at a time."""
        ...

    def iter_ids(self, graph: GraphRef, ids: Sequence[int]) -> AsyncGenerator[list[Task], None]:
        """What `list_ids` gives, in lists as `iter_tasks` gives them."""
        ...

    async def events_after(
        self,
        after_id: int,
        graph: GraphRef | None,
        task_id: int | None,
        limit: int,
        max_bytes: int | None = None,
    ) -> list[Event]:
        """Up to `limit` events after `after_id`; with `max_bytes`, only those that start
        within that many bytes of data (at least one)."""
        ...

    async def append_logs(self, lines: Mapping[int, Sequence[LogLine]], keep: int) -> None:
        """Jobs' new log lines by task, in their order, numbered with the task's current
        attempt; each task keeps its last `keep` (the others dropped, counted for the
        marker line) and gets one task.log event carrying them. A task gone: left alone."""
        ...

    async def logs(self, task_id: int, after: int, limit: int, level: int = 0) -> list[LogLine]:
        """Up to `limit` of the task's lines with an id above `after` and a level of at
        least `level`, in order; a marker line (id: the first kept line's - 1) says how
        many of the oldest were dropped, when the page starts before them."""
        ...

    async def attempts(self, task_id: int) -> list[Attempt]:
        """The task's attempts, in the order they started (none: never run, or no task)."""
        ...

    async def pause_type(self, type_name: str) -> int:
        """Pauses a job type as a whole: no task of it is claimed, by any process sharing
        the store or any external worker, until it is resumed (held in the store, so every
        replica obeys it). The time it has been paused since."""
        ...

    async def resume_type(self, type_name: str) -> bool:
        """Resumes a paused type; whether it was paused."""
        ...

    async def paused_types(self) -> dict[str, int]:
        """The paused types, each with the time it was paused (epoch ms)."""
        ...

    async def checkpoint(self, task_id: int) -> str | None:
        """The last checkpoint any attempt of the task stored (JSON text), or None."""
        ...

    # --- webhooks: the outbox (README, "Webhooks") ---
    def set_outbox(self, outbox: Outbox | None) -> None:
        """Which status changes write deliveries in their transaction from now on (each
        to a matching hook, and to the task's own callback URL); None: none."""
        ...

    async def claim_deliveries(self, limit: int, lease_ms: int) -> list[DueDelivery]:
        """Up to `limit` due pending deliveries, oldest due first, claimed for `lease_ms`
        ms; several processes claiming at once get different ones, and a claim that runs
        out (its process died) comes due again."""
        ...

    async def record_delivery(
        self,
        delivery: DueDelivery,
        answer: DeliveryAnswer,
        state: DeliveryState,
        next_ms: int | None,
    ) -> bool:
        """A try's answer and the state it leaves (pending again at `next_ms`); False, and
        nothing written, when the claim is no longer this one's."""
        ...

    async def deliveries(self, task_id: int) -> list[Delivery]:
        """The task's deliveries in the order they were written, each with its answers."""
        ...

    async def next_delivery_ms(self) -> int | None:
        """When the next pending delivery comes due (None: none is pending)."""
        ...

    async def last_event_id(self) -> int: ...
    async def count_by_status(self) -> dict[tuple[str, str], int]: ...
    async def count_statuses(self, graph: GraphRef) -> dict[Status, int]:
        """A graph's tasks per status, every status present (zeros too)."""
        ...


class LeaseStore(Protocol):
    """External workers' leases: what the lease hub (and only it) asks of a store. A leased
    task moves through the same statuses as any other, by the same compare-and-set."""

    def add_listener(self, listener: CommitListener) -> None: ...
    async def checkpoint(self, task_id: int) -> str | None: ...
    async def transition(self, change: Change) -> Task:
        """As Store.transition: a claim nobody received is given back by one."""
        ...

    async def lease(
        self,
        worker: str,
        types: Sequence[str],
        now_ms: int,
        token: str,
        expires_ms: int,
        type_rates: Mapping[str, tuple[int, int]] | None = None,
    ) -> tuple[Lease | None, int | None]:
        """The first due task of `types`, claimed for `worker`; else None and when the next
        one of those types comes due (None: none is waiting). `type_rates` as claim's: a
        lease is a start, counted into its type's window with the claims'; a type at its
        limit is passed over, and when only such types have due tasks, the time is when
        the first of their windows opens."""
        ...

    async def report(
        self,
        graph: GraphRef,
        task_id: int,
        token: str,
        progress: int | None,
        expires_ms: int,
        checkpoint: str | None = None,
    ) -> Lease:
        """A lease holder's progress (None: a heartbeat) and checkpoint (JSON text, into
        the task's open attempt; None: none), in one transaction."""
        ...

    async def settle_lease(
        self, graph: GraphRef, task_id: int, token: str, progress: int | None, decide: Decision
    ) -> Task: ...
    async def expire_leases(
        self,
        now_ms: int,
        types: Sequence[str],
        decide: Decision,
        unleased: Decision | None = None,
    ) -> list[Task]:
        """Tasks of `types` whose lease ran out, by `decide`; those in a worker's status with
        no lease at all (run in-process before the type became external), by `unleased`."""
        ...

    async def renew_leases(self, types: Sequence[str], until_ms: int) -> int: ...


class ScheduleStore(Protocol):
    """Schedules (service.schedules) and their firing loop's leases (service.scheduler).
    A task a fire time submits goes in by `Store.insert`, under the schedule's key."""

    async def schedules(self, graph: GraphRef | None) -> list[Schedule]:
        """A graph's schedules by name (None: every graph's)."""
        ...

    async def schedule(self, graph: GraphRef, name: str) -> Schedule | None: ...
    async def save_schedule(self, schedule: Schedule, replace: bool = False) -> Schedule:
        """A new schedule as given; one of that name in the graph: Conflict, or with
        `replace` its definition, source, anchor and next fire time replaced (its paused
        state and its last fire kept)."""
        ...

    async def pause_schedule(
        self, graph: GraphRef, name: str, paused: bool, next_fire_ms: int | None
    ) -> Schedule:
        """Paused (next None) or resumed with its next fire time; NotFound."""
        ...

    async def delete_schedule(self, graph: GraphRef, name: str) -> Schedule:
        """Removes it (its tasks stay); NotFound."""
        ...

    async def claim_schedules(
        self, now_ms: int, until_ms: int, owner: str, limit: int
    ) -> list[Schedule]:
        """Up to `limit` schedules due by `now_ms` that no lease holds, held for `owner`
        until `until_ms`: a firing elsewhere skips them meanwhile."""
        ...

    async def advance_schedule(
        self,
        schedule: Schedule,
        owner: str,
        next_fire_ms: int,
        fired: tuple[int, int] | None,
        hold_until_ms: int = 0,
    ) -> bool:
        """The end of a firing by the holder of the lease: the next fire time, the last
        (fire time, task id) it submitted, and the lease let go (or held until
        `hold_until_ms`, to be tried again then). False: the lease was lost meanwhile (a
        pause, a new definition, a delete), and nothing changed."""
        ...

    async def next_schedule_due(self) -> int | None:
        """When the firing loop next has something to do (epoch ms); None: nothing."""
        ...


class Backend(Store, LeaseStore, ScheduleStore, Protocol):
    """A store that keeps leases too: what `open_store` gives."""
