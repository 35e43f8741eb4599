"""The PostgreSQL store: the Store and LeaseStore contracts on a PostgreSQL schema, written
by one connection with group commit (every write waiting when a transaction ends goes into
the next one) and read through a small pool. The SQL is in service.store.pg_queries, the
schema in service.store.pg_schema; rows read as in SQLite (service.store.rows).

A write is an async function of the transaction (PgTx). A batch runs first as it comes,
without savepoints; if any write raises (or a change meets a damaged row), that attempt is
rolled back and the batch is run again with a savepoint per write, so the failing one
leaves nothing behind and the others commit. Events are appended by the schema's
`sidetask_append_events`, last before the commit, which takes their ids in commit order.

Several processes may share a schema (replicas). Each registers in `replicas` with an id
of its own at every start and keeps a heartbeat there, on the database's clock; a task
holds the id of the process that claimed it (`owner`), and that process's writes to it
are fenced by the id (Change.fenced), so one declared dead changes nothing it no longer
holds. Any process sweeps (one at a time): it declares dead those whose heartbeat is too
old and recovers the tasks no live process holds, as a restart recovers them. Events
reach every process through its event pump (_EventPump), in id order."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import re
import secrets
import socket
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import asyncpg
import orjson

from .. import clock
from ..errors import (
    Conflict,
    NotFound,
    ServiceUnavailable,
    SidetaskError,
    TooManyRequests,
    TransitionRefused,
    Unprocessable,
)
from ..model import (
    COMPLETED_STATUSES,
    INTERRUPTIBLE_STATUSES,
    LEASED_STATUSES,
    WAITING_STATUSES,
    Attempt,
    AttemptEnd,
    AttemptOutcome,
    Delivery,
    DeliveryAnswer,
    DeliveryState,
    DueDelivery,
    Event,
    EventKind,
    GraphRef,
    LogLine,
    NewTask,
    Outbox,
    Status,
    Task,
)
from ..schedules import Schedule
from ..selection import EVERY, Selection
from . import dependencies
from . import pg_queries as q
from .base import Change, CommitListener, Decision, Lease, ProcessGroup, Recovery
from .changes import (
    answer,
    attempt_rows,
    changeable,
    check_live,
    delete_refused,
    delivery_rows,
    fail,
    lease_start,
    leased_task,
    refusal,
    replica_name,
    sources_of,
)
from .pg_schema import MIGRATIONS
from .rows import (
    deliveries_of,
    log_event_data,
    log_page,
    row_to_attempt,
    row_to_due_delivery,
    row_to_event,
    row_to_log_line,
    row_to_schedule,
    row_to_task,
    stored_status,
)

log = logging.getLogger("sidetask.store")

T = TypeVar("T")

#: what a `db` setting for this store starts with
URL_PREFIXES = ("postgresql://", "postgres://")
#: a schema name as written unquoted in SQL
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
DEFAULT_SCHEMA = "sidetask"
#: the most writes one transaction carries; the rest wait for the next one
MAX_BATCH = 4096
#: the planner's random_page_cost on the store's sessions (PostgreSQL's default is 4,
#: for spinning disks): every write reaches its rows by their ids or by a small index, in
#: tables whose hot part is cached. With the default, a status change for 16 ids in a
#: table of a few thousand rows with no statistics yet (a new schema, or one growing
#: faster than autovacuum analyzes it) was planned as a scan of the whole table: 580 of
#: them over 3 ms in a run of 5,000 tasks, half the writer's time
SESSION_RANDOM_PAGE_COST = "1.1"
#: turns of the event loop the writer gives the steps just answered to queue their next
#: writes before it starts a transaction (PostgresStore._gather)
GATHER_TURNS = 8
#: tasks a streamed list reads per query, and the characters of input and result past
#: which a task is read on its own (as in SQLite)
LIST_BATCH = 101
LIST_ROW_CHARS = 32 * 1024
PURGE_CHUNK = 5000
#: a time range of this many tasks or fewer gives the list its first and last id
ID_RANGE_AT_MOST = 200_000
#: above every task id: where a descending list starts
MAX_ID = 2**63 - 1
#: the event pump reads at least this often (seconds), notifications or not
PUMP_POLL_SECONDS = 1.0
#: events the pump reads per query
PUMP_BATCH = 1000
#: default seconds after its last heartbeat a process is declared dead (setting
#: replica_timeout)
REPLICA_TIMEOUT = 30.0
_LEASED_VALUES = sorted(s.value for s in LEASED_STATUSES)
_INTERRUPTIBLE_VALUES = sorted(s.value for s in INTERRUPTIBLE_STATUSES)
_COMPLETED_VALUES = sorted(s.value for s in COMPLETED_STATUSES)
_WAITING_VALUES = sorted(s.value for s in WAITING_STATUSES)
#: a cancel that wins over a worker's last report ends its run
_CANCELLED = AttemptEnd(AttemptOutcome.CANCELLED)
#: the statuses a claim takes tasks from (to `scheduling`)
_SCHEDULING_SOURCES = sources_of(Change(0, Status.SCHEDULING))
#: the cluster's locks a write may take (submissions: max_waiting; capped claims:
#: type_concurrency), in the order every transaction takes them
LOCK_ORDER = (q.ADMIT_LOCK, q.CLAIM_LOCK)
#: errors that mean the connection, not the write, failed: no write of the batch is kept
_CONNECTION_ERRORS = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError)


def is_postgres_url(db: str) -> bool:
    return db.startswith(URL_PREFIXES)


def _as_client_error(exc: BaseException) -> Exception:
    if isinstance(exc, SidetaskError):
        return exc
    if isinstance(exc, asyncpg.DiskFullError):
        return ServiceUnavailable("The store cannot write: the database's disk is full", str(exc))
    if isinstance(exc, (asyncpg.PostgresError, *_CONNECTION_ERRORS)):
        return ServiceUnavailable("The store cannot write now", str(exc))
    return exc if isinstance(exc, Exception) else ServiceUnavailable(str(exc))


class _Redo(Exception):
    """A change met a damaged row in a batch run without savepoints: the batch is run
    again with them, so that change can be refused alone."""


class QuickClaim:
    """A claim that goes as one statement (q.CLAIM_DUE), alone or as the last part of the
    status changes' (q.change_statuses): its parameters."""

    __slots__ = ("excluded", "limit", "now_ms", "only", "server")

    def __init__(
        self,
        limit: int,
        now_ms: int,
        excluded: list[str],
        server: str | None,
        only: list[str] | None,
    ) -> None:
        self.limit = limit
        self.now_ms = now_ms
        self.excluded = excluded
        self.server = server
        self.only = only

    def params(self, tx: PgTx) -> list[Any]:
        """CLAIM_DUE's parameters, in its order."""
        return [
            self.now_ms,
            tx.now,
            self.server,
            tx.me,
            _SCHEDULING_SOURCES,
            self.excluded,
            self.limit,
            self.only,
        ]

    @staticmethod
    def order(tasks: Iterable[Task]) -> list[Task]:
        """The tasks claimed, in claim order (the statement's rows come in any)."""
        return sorted(tasks, key=lambda t: (-t.priority, t.id))


class PgTx:
    """The writer's view of one transaction: the connection, the transaction's time, and the
    events its writes append (their ids are taken at the end, in commit order)."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        careful: bool,
        me: uuid.UUID,
        outbox: Outbox | None = None,
    ) -> None:
        self.conn = conn
        #: which status changes write webhook deliveries (None: none do)
        self.outbox = outbox
        #: this process's id (replicas.id): the holder its claims make, its fence
        self.me = me
        self.now = clock.now_ms()
        #: True when each write runs in a savepoint (a batch redone): a damaged row met by
        #: a change is then undone and refused there, not by redoing the batch
        self.careful = careful
        self.pending: list[tuple[EventKind, Task, bytes]] = []
        #: tasks waiting to run across the cluster, counted once per transaction (under
        #: the admission lock) when max_waiting is set, then kept up by its inserts
        self.waiting: int | None = None
        #: the cluster's locks taken first (_lock_first), held till the end
        self.locks: set[str] = set()
        #: the tasks a claim that went into the status changes' statement took
        #: (change_many's `claim`)
        self.claimed: list[Task] = []
        #: the tasks a running dependency follow has still to look at (service.store.
        #: dependencies); None when none runs
        self.following: list[tuple[Task, bool]] | None = None

    def event(self, kind: EventKind, task: Task, data: dict[str, Any] | None = None) -> None:
        """An event of the task; `data` (a task.log event's) instead of the task's."""
        if data is not None:
            body: dict[str, Any] = data
        elif kind is EventKind.DELETED:
            body = {"id": task.id}
        else:
            body = task.to_api()
            if kind is not EventKind.CREATED:
                body.pop("task_input", None)  # SPEC 7: only task.created carries the input
        self.pending.append((kind, task, orjson.dumps(body)))

    async def delivery_rows(self) -> list[tuple[str, int, str, str, str, bytes]]:
        """The outbox rows of the transaction's status events, written with its events (a
        write undone to its savepoint took its events out of `pending`, and so its
        deliveries): a change and its deliveries are committed together or not at all."""
        outbox = self.outbox
        if outbox is None:
            return []
        wanted = outbox.statuses
        tasks = [
            t for kind, t, _ in self.pending if kind is EventKind.STATUS and t.status in wanted
        ]
        if not tasks:
            return []
        called = [t.id for t in tasks if t.status in outbox.callback_statuses]
        callbacks: dict[int, str] = {}
        if called:
            callbacks = dict(await self.conn.fetch(q.CALLBACKS_OF, called))  # type: ignore[arg-type]
        return delivery_rows(outbox, tasks, callbacks)

    async def append_events(self) -> list[Event]:
        """The transaction's events, stored with ids taken under the events lock, and the
        deliveries they make in the same statement (no round trip of their own)."""
        deliveries = await self.delivery_rows()
        if not self.pending:
            return []
        rows = self.pending
        params: list[Any] = [
            [task.id for _, task, _ in rows],
            [task.graph.graphspace for _, task, _ in rows],
            [task.graph.graph for _, task, _ in rows],
            [kind.value for kind, _, _ in rows],
            [task.type for _, task, _ in rows],
            [None if kind is EventKind.DELETED else task.status.value for kind, task, _ in rows],
            [data for _, _, data in rows],
            self.now,
        ]
        if deliveries:
            params.extend(list(column) for column in zip(*deliveries, strict=True))
        sql = q.APPEND_EVENTS_AND_DELIVERIES if deliveries else q.APPEND_EVENTS
        ids = await self.conn.fetchval(sql, *params)
        return [
            Event(
                event_id,
                kind,
                task.id,
                task.graph,
                task.type,
                None if kind is EventKind.DELETED else task.status,
                data,
            )
            for event_id, (kind, task, data) in zip(ids, rows, strict=True)
        ]

    async def select_task(self, task_id: int) -> Task | None:
        row = await self.conn.fetchrow(q.SELECT_TASK, task_id)
        return None if row is None else row_to_task(row)

    async def change(self, change: Change) -> Task:
        """Compare-and-set: the update applies only from an allowed status, else it raises
        and leaves the row as it was."""
        (result,) = await self.change_many([change])
        if isinstance(result, Task):
            return result
        raise result

    async def change_many(
        self, changes: Sequence[Change], claim: QuickClaim | None = None
    ) -> list[Task | SidetaskError]:
        """Several changes, each applied or refused on its own, in as few statements as
        their shapes allow; a task changed twice is changed in their order. With `claim`
        (not careful), the claim goes into the last statement (what it took: `claimed`)."""
        results: list[Task | SidetaskError] = []
        segment: list[Change] = []
        ids: set[int] = set()
        for change in changes:
            if change.task_id in ids:
                results.extend(await self._change_segment(segment))
                segment, ids = [], set()
            segment.append(change)
            ids.add(change.task_id)
        results.extend(await self._change_segment(segment, claim))
        return results

    async def _change_segment(
        self, changes: Sequence[Change], claim: QuickClaim | None = None
    ) -> list[Task | SidetaskError]:
        results: list[Task | SidetaskError | None] = [None] * len(changes)
        groups: dict[Any, list[int]] = {}
        for index, change in enumerate(changes):
            shape = (
                change.target,
                tuple(change.fields or ()),
                change.sources,
                change.claims,
                change.fenced,
            )
            groups.setdefault(shape, []).append(index)
        if claim is not None or (
            not self.careful
            and (len(groups) > 1 or any(c.starts_attempt or c.ends_attempt for c in changes))
        ):
            return await self._change_sets(changes, list(groups.values()), claim)
        for indexes in groups.values():
            applied = await self._change_set([changes[i] for i in indexes])
            for i, result in zip(indexes, applied, strict=True):
                results[i] = result
        return results  # type: ignore[return-value]

    async def _change_sets(
        self,
        changes: Sequence[Change],
        groups: Sequence[Sequence[int]],
        claim: QuickClaim | None = None,
    ) -> list[Task | SidetaskError]:
        """Changes of several shapes (each group one), and the attempts they start and end,
        as one statement (q.change_statuses): one round trip for a transaction's steps of
        several batches, where each shape and each attempts' write took one. Not careful:
        a damaged row among them redoes the batch, whose changes then go shape by shape."""
        parts: list[tuple[str, int, bool, bool]] = []
        params: list[Any] = []
        for indexes in groups:
            subset = [changes[i] for i in indexes]
            sql, own = self._set_statement(subset)
            starts = [c.task_id for c in subset if c.starts_attempt]
            ends = [c for c in subset if not c.starts_attempt and c.ends_attempt is not None]
            parts.append((sql, len(own), bool(starts), bool(ends)))
            params.extend(own)
            if starts:
                params.extend([replica_name(), self.me, self.now, starts])
            if ends:
                params.extend(self._end_params(ends))
        if claim is None:
            tasks = await self._apply(q.change_statuses(tuple(parts)), params)
            claimed: list[Task] = []
        else:
            params.extend([*claim.params(self), [c.task_id for c in changes]])
            rows = await self.conn.fetch(q.change_statuses(tuple(parts), claim=True), *params)
            tasks = {task.id: task for task in map(row_to_task, (r for r in rows if not r[-1]))}
            claimed = claim.order(map(row_to_task, (r for r in rows if r[-1])))
            if any(task.status is Status.UNKNOWN for task in [*tasks.values(), *claimed]):
                tasks = None
        if tasks is None:  # a damaged row among them (rare): the batch again, carefully
            raise _Redo
        results: list[Task | SidetaskError] = []
        for change in changes:
            task = tasks.get(change.task_id)
            if task is None:
                results.append(await self._refusal(change))
            else:
                self.event(EventKind.STATUS, task)
                results.append(task)
        for task in claimed:
            self.event(EventKind.STATUS, task)
        self.claimed = claimed
        # what their new statuses do to the tasks waiting for them, in this transaction
        followed = [t for t in results if isinstance(t, Task) and t.dependants]
        if followed:
            await dependencies.follow_pg(self, followed)
        return results

    def _end_params(self, ends: Sequence[Change]) -> list[Any]:
        """The parameters of the attempts `ends` close (q.END_ATTEMPTS', after its time)."""
        done = [end for c in ends if (end := c.ends_attempt) is not None]
        return [
            self.now,
            [c.task_id for c in ends],
            [end.outcome.value for end in done],
            [end.error_type for end in done],
            [end.error_message for end in done],
            [end.traceback for end in done],
            [end.checkpoint for end in done],
        ]

    def _set_statement(self, changes: Sequence[Change]) -> tuple[str, list[Any]]:
        """The UPDATE of changes of one shape, and its parameters."""
        first = changes[0]
        names = changeable(first.fields or {})
        sources = sources_of(first)
        ids = [c.task_id for c in changes]
        owner = [self.me] if first.claims or first.fenced else []
        if names and any(c.fields != first.fields for c in changes):
            columns = [[(c.fields or {})[name] for c in changes] for name in names]
            sql = q.change_status_rows(names, first.claims, first.fenced)
            params: list[Any] = [first.target.value, self.now, ids, *columns, sources, *owner]
        else:
            sql = q.change_status(names, first.claims, first.fenced)
            values = (first.fields or {}).values()
            params = [first.target.value, self.now, *values, ids, sources, *owner]
        return sql, params

    async def _change_set(self, changes: Sequence[Change]) -> list[Task | SidetaskError]:
        """Changes of one shape as one UPDATE."""
        first = changes[0]
        sql, params = self._set_statement(changes)
        if not self.careful:
            tasks = await self._apply(sql, params)
            if tasks is None:  # a damaged row among them (rare): the batch again, carefully
                raise _Redo
        else:
            savepoint = self.conn.transaction()
            await savepoint.start()
            tasks = await self._apply(sql, params)
            if tasks is None:  # a damaged row among them: undo, and take them one at a time
                await savepoint.rollback()
                if len(changes) == 1:
                    return [await self._refusal(first)]
                return [r for c in changes for r in await self._change_set([c])]
            await savepoint.commit()
        results: list[Task | SidetaskError] = []
        attempts: list[tuple[Change, Task]] = []
        for change in changes:
            task = tasks.get(change.task_id)
            if task is None:
                results.append(await self._refusal(change))
            else:
                self.event(EventKind.STATUS, task)
                results.append(task)
                if change.starts_attempt or change.ends_attempt is not None:
                    attempts.append((change, task))
        if attempts:
            await self.write_attempts(attempts)
        # what their new statuses do to the tasks waiting for them, in this transaction
        followed = [t for t in results if isinstance(t, Task) and t.dependants]
        if followed:
            await dependencies.follow_pg(self, followed)
        return results

    async def write_attempts(self, applied: Sequence[tuple[Change, Task]]) -> None:
        """The attempts the applied changes start or end, in their transaction: one
        statement for the starts, one for the ends."""
        starts, ends = attempt_rows(applied)
        if starts:
            await self.conn.execute(
                q.START_ATTEMPTS,
                [task.id for task in starts],
                [task.server for task in starts],
                replica_name(),
                self.me,
                self.now,
            )
        if ends:
            await self.conn.execute(
                q.END_ATTEMPTS,
                self.now,
                [task.id for task, _ in ends],
                [end.outcome.value for _, end in ends],
                [end.error_type for _, end in ends],
                [end.error_message for _, end in ends],
                [end.traceback for _, end in ends],
                [end.checkpoint for _, end in ends],
            )

    async def _apply(self, sql: str, params: Sequence[Any]) -> dict[int, Task] | None:
        """The UPDATE's rows as tasks by id; None when one of them reads as `unknown` (a
        damaged row, which no change may touch)."""
        tasks = {task.id: task for task in map(row_to_task, await self.conn.fetch(sql, *params))}
        if any(task.status is Status.UNKNOWN for task in tasks.values()):
            return None
        return tasks

    async def _refusal(self, change: Change) -> SidetaskError:
        return refusal(change, await self.select_task(change.task_id))


#: a write: run by the writer, inside the transaction, on its PgTx
PgOp = Callable[[PgTx], Awaitable[T]]


class _ChangeOp:
    """A write that is one status change: a run of them goes into as few UPDATEs as their
    shapes allow (a batch of job ends becomes one statement)."""

    __slots__ = ("change",)

    def __init__(self, change: Change) -> None:
        self.change = change

    async def __call__(self, tx: PgTx) -> Task:
        return await tx.change(self.change)


class _ChangesOp:
    """A write that is several status changes, each applied or refused on its own
    (transition_many): a run of these and _ChangeOp goes into change_many together."""

    __slots__ = ("changes",)

    def __init__(self, changes: list[Change]) -> None:
        self.changes = changes

    async def __call__(self, tx: PgTx) -> list[Task | SidetaskError]:
        return list(await tx.change_many(self.changes))


class _NewOp:
    """A submission without an Idempotency-Key: a run of them goes in as one INSERT."""

    __slots__ = ("locks", "new", "store")

    def __init__(self, store: PostgresStore, new: NewTask) -> None:
        self.store = store
        self.new = new
        self.locks = store.admit_locks

    async def __call__(self, tx: PgTx) -> tuple[Task, bool]:
        return await self.store.insert_one(tx, self.new, None)


class _ClaimOp:
    """A claim (PostgresStore.claim): it goes last in its transaction (_run_plainly), and
    takes the claim lock first when a type it may claim is capped across the cluster.
    `quick`: it may go as one statement, into the status changes' before it."""

    __slots__ = ("locks", "op", "quick")

    def __init__(
        self, op: PgOp[list[Task]], locks: tuple[str, ...], quick: QuickClaim | None
    ) -> None:
        self.op = op
        self.locks = locks
        self.quick = quick

    async def __call__(self, tx: PgTx) -> list[Task]:
        return await self.op(tx)


class _Locked:
    """A write that takes some of the cluster's locks (LOCK_ORDER): its transaction takes
    them before anything else (_lock_first)."""

    __slots__ = ("locks", "op")

    def __init__(self, op: PgOp[Any], locks: tuple[str, ...]) -> None:
        self.op = op
        self.locks = locks

    async def __call__(self, tx: PgTx) -> Any:
        return await self.op(tx)


async def _lock_first(tx: PgTx, ops: Sequence[PgOp[Any]]) -> None:
    """The cluster's locks the batch's writes take (_NewOp, _Locked), taken first, in one
    order, before any row: a transaction that took them as its writes came, after rows,
    deadlocked with another that held one and waited for such a row (a cancel sent to one
    process for a task another runs, amid submissions to both; a capped claim and a
    submission in either order)."""
    wanted = {lock for op in ops for lock in getattr(op, "locks", ())}
    for lock in LOCK_ORDER:
        if lock in wanted:
            await tx.conn.execute(lock)
            tx.locks.add(lock)


async def _next_look(
    tx: PgTx,
    free: list[str],
    held: list[str],
    damaged: list[int],
    windows: Mapping[str, int],
    rates: Mapping[str, tuple[int, int]],
) -> int | None:
    """As sqlite._next_look: when the next waiting task of the `free` types comes due, or
    a `held` type's window opens (its end on the database's clock) on a task of it that
    waits; None: nothing waits."""
    times: list[int] = []
    if free:
        next_due = await tx.conn.fetchval(q.NEXT_DUE, free, damaged)
        if next_due is not None:
            times.append(int(next_due))
    for name in held:
        opens = windows[name] + rates[name][1]
        if await tx.conn.fetchval(q.HAS_DUE, name, damaged):
            times.append(opens)
            continue
        next_due = await tx.conn.fetchval(q.NEXT_DUE, [name], damaged)
        if next_due is not None:
            times.append(max(int(next_due), opens))
    return min(times) if times else None


class _EventPump:
    """Hands every committed event of every process sharing the schema to the store's
    listeners, in id order, with no gap and no repeat: it reads the events table after the
    last id it gave out (ids become visible in increasing order: sidetask_append_events).
    Woken by NOTIFY from the others (a hint on a connection of its own), and every
    PUMP_POLL_SECONDS whatever happens, so a lost notification or a dropped listening
    connection delays an event but never loses it.

    This process's own commits are handed to it by the writer (`own`), not read back: the
    events before them that it has not given out yet (the others', committed before this
    transaction took the events lock, so visible now) are read first, then the own ones
    go out as the writer made them. Its own NOTIFY (from the writer's backend, `own_pid`)
    is ignored; an own commit the writer could not hand over (its answer lost) is read by
    the next round that reads."""

    def __init__(
        self,
        channel: str,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        fetch: Callable[..., Awaitable[list[asyncpg.Record]]],
        announce: Callable[[Sequence[Event]], None],
        own_pid: Callable[[], int | None] = lambda: None,
    ) -> None:
        self._channel = channel
        self._connect = connect
        self._fetch = fetch
        self._announce = announce
        self._own_pid = own_pid
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listening: asyncpg.Connection | None = None
        self._last = 0
        self._stopping = False
        #: the writer's committed transactions' events, in commit order, not given out yet
        self._own: collections.deque[list[Event]] = collections.deque()
        #: the next round reads the table (a notification from another process, the poll)
        self._read = True

    async def start(self, after_id: int) -> None:
        self._last = after_id
        await self._listen()
        self._task = asyncio.create_task(self._run(), name="sidetask-event-pump")

    def wake(self, *_: object) -> None:
        self._read = True
        self._wakeup.set()

    def _notified(self, conn: object, pid: int, channel: str, payload: object) -> None:
        if pid != self._own_pid():  # this process's writer hands its own over (own)
            self.wake()

    def own(self, events: list[Event]) -> None:
        """A committed transaction of this process's writer: its events, in id order."""
        self._own.append(events)
        self._wakeup.set()

    async def _listen(self) -> None:
        """NOTIFY on a dedicated connection (a pooled one would lose its LISTEN)."""
        try:
            conn = await self._connect()
            await conn.add_listener(self._channel, self._notified)
            conn.add_termination_listener(self._lost)
        except (SidetaskError, *_CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
            log.warning("event notifications unavailable, polling only: %s", exc)
            return
        self._listening = conn

    def _lost(self, conn: Any) -> None:
        if self._listening is conn:
            self._listening = None
            self.wake()  # the next round reads what was missed, and listens again

    async def stop(self) -> None:
        """Gives out what is committed, then stops."""
        self._stopping = True
        if self._task is not None:
            self._wakeup.set()
            await self._task
            self._task = None
        if self._listening is not None:
            conn, self._listening = self._listening, None
            with contextlib.suppress(*_CONNECTION_ERRORS, asyncpg.PostgresError):
                await conn.close()

    async def _run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(PUMP_POLL_SECONDS):
                    await self._wakeup.wait()
            except TimeoutError:
                self._read = True
            self._wakeup.clear()
            if self._stopping:
                self._read = True  # what is committed goes out before it stops
            try:
                await self._drain()
                if self._listening is None and not self._stopping:
                    await self._listen()
            except (SidetaskError, *_CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
                self._read = True  # the next round reads what this one could not
                log.warning("event pump: %s", exc)
            if self._stopping:
                return

    async def _drain(self) -> None:
        while self._own:
            events = self._own[0]
            if events[-1].id > self._last:
                if events[0].id > self._last + 1:
                    await self._give_out(events[0].id)
                fresh = [e for e in events if e.id > self._last]
                self._last = fresh[-1].id
                self._announce(fresh)
            self._own.popleft()
        if self._read:
            self._read = False
            await self._give_out(None)

    async def _give_out(self, before: int | None) -> None:
        """The events after the last given out (below `before`), read and handed out."""
        while True:
            if before is None:
                rows = await self._fetch(q.PUMP, self._last, PUMP_BATCH)
            else:
                rows = await self._fetch(q.PUMP_BEFORE, self._last, PUMP_BATCH, before)
            if rows:
                events = [row_to_event(row) for row in rows]
                self._last = events[-1].id
                self._announce(events)
            if len(rows) < PUMP_BATCH:
                return


class PostgresStore:
    """Task state in one PostgreSQL schema, shared by every sidetask process that names
    it. Only this package knows SQL."""

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        readers: int = 4,
        replica_timeout: float = REPLICA_TIMEOUT,
        max_waiting: int = 0,
    ) -> None:
        if not SCHEMA_NAME.fullmatch(schema):
            raise ValueError(
                f"PostgreSQL schema name {schema!r}: lower-case letters, digits and _, "
                "not starting with a digit, at most 63"
            )
        self.dsn = dsn
        self.schema = schema
        self._readers = max(1, readers)
        #: a process whose heartbeat is older than this (seconds, the database's clock) is dead
        self.replica_timeout = replica_timeout
        #: tasks waiting to run across every process past which a submission is refused (429);
        #: 0: no limit
        self.max_waiting = max_waiting
        #: the cluster's locks a submission takes, and a capped claim (LOCK_ORDER)
        self.admit_locks: tuple[str, ...] = (q.ADMIT_LOCK,) if max_waiting else ()
        self._claim_locks = (q.CLAIM_LOCK,)
        self._pool: asyncpg.Pool | None = None
        self._conn: asyncpg.Connection | None = None
        #: the advisory lock the writer's session holds while this process lives
        self._life_key = 0
        self._pending: list[tuple[PgOp[Any], asyncio.Future[Any]]] = []
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._listeners: list[CommitListener] = []
        #: ids of the events this process's transactions appended (taken before their
        #: commit, so the pump never hands one out unmarked), in increasing order, until
        #: the pump has handed out everything up to them (made_here); a rolled-back
        #: transaction's ids never come, and go once the pump is past them
        self._own: set[int] = set()
        self._own_order: collections.deque[int] = collections.deque()
        self._closed = False
        #: which status changes write webhook deliveries (set_outbox)
        self._outbox: Outbox | None = None
        #: this process's id in `replicas`: new at every start, and when it was declared dead
        self._me = uuid.uuid4()
        #: the heartbeat's connection (beat), apart from the writer's
        self._beat_conn: asyncpg.Connection | None = None
        self._host = socket.gethostname()
        self._pump = _EventPump(
            f"{schema}_events", self._connect, self._fetch, self._announce, self._writer_pid
        )

    @property
    def replica_id(self) -> str:
        return str(self._me)

    # --- lifecycle ---

    async def _connect(self) -> asyncpg.Connection:
        return await connect(self.dsn, self.schema)

    async def _connect_writer(self) -> asyncpg.Connection:
        """The writer's connection. A session left in a transaction for replica_timeout
        is ended by PostgreSQL: its process went silent in the middle of one (a network
        partition, a hung process), and the locks the transaction holds (a task's row, its
        replicas row, the events lock) would otherwise stop every other replica's writes
        until the network came back. Its life lock goes with it: the others declare it
        dead at once."""
        conn = await self._connect()
        try:
            limit_ms = max(1, int(self.replica_timeout * 1000))
            await conn.execute(q.IDLE_IN_TRANSACTION_LIMIT, str(limit_ms))
        except BaseException:
            await conn.close()
            raise
        return conn

    async def open(self) -> None:
        """Connects, migrates the schema (under a lock: several processes may start at
        once), joins the replicas, and starts the commit loop and the event pump."""
        conn = await self._connect_writer()
        try:
            await migrate(conn, self.schema)
            await self._register(conn)
            self._pool = await asyncpg.create_pool(
                self.dsn,
                # none kept open by force: a pool that keeps a minimum tries again and
                # again, with a traceback each time, while the database is away
                min_size=0,
                max_size=self._readers,
                server_settings=session_settings(self.schema),
                # Its connections only read (_fetch): no session state to undo. asyncpg's
                # reset (unlock all, CLOSE ALL, UNLISTEN, RESET ALL) was one more round
                # trip on every read given back, the event pump's included.
                reset=_read_only_reset,
            )
            await self._pump.start(await self.last_event_id())
        except BaseException:
            await self._pump.stop()
            if self._pool is not None:
                await self._pool.close()
            await conn.close()
            raise
        self._conn = conn
        self._loop_task = asyncio.create_task(self._run_writes(), name="sidetask-store-writer")

    async def _register(self, conn: asyncpg.Connection) -> None:
        """Holds a new life lock, then joins the replicas under this process's id: in that
        order, a row is never seen without its lock held (a sweep would take it for a dead
        process's, and recover what it claims)."""
        self._life_key = secrets.randbits(63)
        await conn.execute(q.HOLD_LIFE, self._life_key)
        await conn.execute(q.REGISTER, self._me, self._host, os.getpid(), self._life_key)

    def _writer_pid(self) -> int | None:
        """The writer's backend (whose notifications are this process's own)."""
        conn = self._conn
        return None if conn is None or conn.is_closed() else conn.get_server_pid()

    async def _writer(self) -> asyncpg.Connection:
        """The writer's connection; after it was lost (the database restarted, the network
        broke), a new one that takes the life lock again. Meanwhile the others may have
        found the lock free and declared this process dead: its next heartbeat tells."""
        conn = self._conn
        if conn is not None and not conn.is_closed():
            return conn
        conn = await self._connect_writer()
        try:
            await conn.execute(q.HOLD_LIFE, self._life_key)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        log.info("the writer's connection to PostgreSQL is back")
        return conn

    async def close(self) -> None:
        """Refuses new writes, commits those queued, hands the last events out, leaves the
        replicas (what this process still held is then the others' to recover), and closes
        the connections."""
        if self._closed:
            return
        self._closed = True
        if self._loop_task is not None:
            self._wakeup.set()
            await self._loop_task
        await self._pump.stop()
        if self._beat_conn is not None:
            self._beat_conn.terminate()
            self._beat_conn = None
        if self._conn is not None:
            with contextlib.suppress(*_CONNECTION_ERRORS, asyncpg.PostgresError):
                await self._conn.execute(q.UNREGISTER, self._me)
            with contextlib.suppress(*_CONNECTION_ERRORS):
                await self._conn.close()
        if self._pool is not None:
            await self._pool.close()

    def set_outbox(self, outbox: Outbox | None) -> None:
        self._outbox = outbox

    def add_listener(self, listener: CommitListener) -> None:
        """`listener` gets every committed event of every process sharing the schema, in
        id order, from the event pump (a process's own commits included)."""
        self._listeners.append(listener)

    def _announce(self, events: Sequence[Event]) -> None:
        for listener in self._listeners:
            try:
                listener(events)
            except Exception:
                log.exception("commit listener failed")
        last, order = events[-1].id, self._own_order
        while order and order[0] <= last:
            self._own.discard(order.popleft())

    def made_here(self, event_id: int) -> bool:
        """Whether this process's writer committed the event (asked while it is handed out)."""
        return event_id in self._own

    def _mark_own(self, events: Sequence[Event]) -> None:
        for event in events:
            self._own.add(event.id)
            self._own_order.append(event.id)

    # --- replicas ---

    async def beat(self, rejoin: bool = False) -> bool:
        """A heartbeat goes on a connection of its own, not through the writer, whose
        transactions may wait for a lock (one a replica cut off in the middle of a
        transaction holds, until PostgreSQL ends its session) while this process is alive.
        A rejoin, and a heartbeat that finds this process declared dead, go through the
        writer: a new identity is registered on the session that holds the life lock."""
        if not rejoin and await self._beat_apart():
            return True

        async def op(tx: PgTx) -> bool:
            if rejoin:  # what the old identity held is left to the sweep
                await tx.conn.execute(q.UNREGISTER, self._me)
            status = await tx.conn.execute(q.HEARTBEAT, self._me)
            if status.split()[-1] != "0":
                return True
            # Declared dead (a pause longer than the timeout): what it held went to the
            # others, and every fenced write of the old identity is refused from here.
            self._me = uuid.uuid4()
            tx.me = self._me
            await self._register(tx.conn)
            return False

        return await self._write(op)

    async def _beat_apart(self) -> bool:
        """The heartbeat on its own connection: False when this identity has no row (it
        was declared dead)."""
        if self._closed:
            raise ServiceUnavailable("The store is closed")
        try:
            conn = self._beat_conn
            if conn is None or conn.is_closed():
                conn = self._beat_conn = await self._connect()
            status = await conn.execute(q.HEARTBEAT, self._me)
        except (*_CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
            if self._beat_conn is not None:
                self._beat_conn.terminate()  # the next heartbeat connects again
                self._beat_conn = None
            raise ServiceUnavailable("The store cannot write now", str(exc)) from exc
        return bool(status.split()[-1] != "0")

    async def sweep(self, decide: Decision, keep_types: Iterable[str] = ()) -> Recovery:
        return await self._recover(decide, keep_types, forget_dead=True)

    async def held_elsewhere(self, task_id: int) -> bool:
        rows = await self._fetch(q.HELD_ELSEWHERE, task_id, self._me, _INTERRUPTIBLE_VALUES)
        return bool(rows[0][0])

    # --- group commit ---

    async def _write(self, op: PgOp[T]) -> T:
        if self._closed or self._conn is None:
            raise ServiceUnavailable("The store is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((op, future))
        self._wakeup.set()
        return await future

    async def _run_writes(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                await self._gather()
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
                ops = [op for op, _ in batch]
                try:
                    outcomes, events = await self._commit_batch(ops)
                except Exception as exc:  # the transaction failed: nothing of it was written
                    error = _as_client_error(exc)
                    log.error("write transaction failed: %s", exc)
                    if isinstance(exc, _CONNECTION_ERRORS) and self._conn is not None:
                        self._conn.terminate()  # the next batch connects again
                    fail(batch, error)
                    continue
                answer(batch, outcomes)
                if events:
                    self._pump.own(events)  # handed out in order with the others'
            if self._closed:
                return

    async def _gather(self) -> None:
        """Lets the steps the last commit answered put in their next writes before the
        next transaction starts, so they share it: a task's next step is a write queued a
        few turns of the loop after the answer to its last (a claim's hand-on, a start's
        job ending, the start in a freed slot). Without this, steps of different batches
        settle into turns of their own, one transaction each. At most GATHER_TURNS turns;
        it stops after two in a row that added nothing."""
        idle = 0
        for _ in range(GATHER_TURNS):
            before = len(self._pending)
            await asyncio.sleep(0)
            idle = idle + 1 if len(self._pending) == before else 0
            if idle == 2:
                return

    async def _commit_batch(
        self, ops: list[PgOp[Any]]
    ) -> tuple[list[tuple[bool, Any]], list[Event]]:
        conn = await self._writer()
        tx = PgTx(conn, careful=False, me=self._me, outbox=self._outbox)
        try:
            async with conn.transaction():
                await _lock_first(tx, ops)
                outcomes = await self._run_plainly(tx, ops)
                events = await tx.append_events()
                self._mark_own(events)
            return outcomes, events
        except _CONNECTION_ERRORS:
            raise
        except Exception:
            return await self._commit_carefully(conn, ops)

    async def _run_plainly(self, tx: PgTx, ops: list[PgOp[Any]]) -> list[tuple[bool, Any]]:
        """The writes of a batch; its status changes (single ones and transition_many's)
        between two other writes go into as few statements as their tasks allow (one,
        unless a task is changed twice), its keyless submissions there into one INSERT,
        before them. Claims come last: the writes of a batch were all queued at once,
        none waiting for another's answer, so any order is one they could have come in;
        in this one the first claim goes into the status changes' statement."""
        outcomes: list[tuple[bool, Any] | None] = [None] * len(ops)
        changes: list[Change] = []
        #: the change ops of the run in `changes`, with their places in `ops`
        changers: list[tuple[int, _ChangeOp | _ChangesOp]] = []
        news: list[tuple[int, NewTask]] = []

        async def flush(claim: QuickClaim | None = None) -> None:
            if news:
                made = await self.insert_many(tx, [new for _, new in news])
                for (index, _), created in zip(news, made, strict=True):
                    outcomes[index] = (True, created)
                news.clear()
            if changes:
                results = iter(await tx.change_many(changes, claim))
                for index, changer in changers:
                    if isinstance(changer, _ChangeOp):
                        result = next(results)
                        outcomes[index] = (not isinstance(result, SidetaskError), result)
                    else:
                        outcomes[index] = (True, [next(results) for _ in changer.changes])
                changes.clear()
                changers.clear()

        claims: list[int] = []
        for index, op in enumerate(ops):
            if isinstance(op, _ChangeOp | _ChangesOp):
                changes.extend([op.change] if isinstance(op, _ChangeOp) else op.changes)
                changers.append((index, op))
            elif isinstance(op, _NewOp):
                news.append((index, op.new))
            elif isinstance(op, _ClaimOp):
                claims.append(index)
            else:
                await flush()
                outcomes[index] = (True, await op(tx))
        # the first claim into the last status changes' statement, when it can go as one
        first = ops[claims[0]] if claims and changes and not tx.careful else None
        if isinstance(first, _ClaimOp) and first.quick is not None:
            await flush(first.quick)
            outcomes[claims.pop(0)] = (True, tx.claimed)
        await flush()
        for index in claims:
            outcomes[index] = (True, await ops[index](tx))
        return [outcome for outcome in outcomes if outcome is not None]

    async def _commit_carefully(
        self, conn: asyncpg.Connection, ops: list[PgOp[Any]]
    ) -> tuple[list[tuple[bool, Any]], list[Event]]:
        """The batch again, one savepoint per write."""
        tx = PgTx(conn, careful=True, me=self._me, outbox=self._outbox)
        outcomes: list[tuple[bool, Any]] = []
        async with conn.transaction():
            await _lock_first(tx, ops)
            for op in ops:
                mark = len(tx.pending)
                try:
                    async with conn.transaction():
                        value = await op(tx)
                except _CONNECTION_ERRORS:
                    raise
                except Exception as exc:
                    del tx.pending[mark:]
                    outcomes.append((False, _as_client_error(exc)))
                else:
                    outcomes.append((True, value))
            events = await tx.append_events()
            self._mark_own(events)
        return outcomes, events

    # --- writes ---

    async def insert(self, new: NewTask) -> tuple[Task, bool]:
        """A new task; with an Idempotency-Key already used in the graph, the task it made
        (a replay) when the request was the same, else Unprocessable. Submissions without
        a key that share a transaction go in as one statement (_NewOp)."""
        if new.idempotency_key is None and not new.dependencies:
            return await self._write(_NewOp(self, new))
        fingerprint = new.fingerprint()  # outside the transaction

        async def op(tx: PgTx) -> tuple[Task, bool]:
            return await self.insert_one(tx, new, fingerprint)

        return await self._write(_Locked(op, self.admit_locks))

    async def insert_one(
        self, tx: PgTx, new: NewTask, fingerprint: str | None
    ) -> tuple[Task, bool]:
        await self._admit(tx)
        key = new.idempotency_key
        row = await tx.conn.fetchrow(
            q.INSERT_TASK,
            new.graph.graphspace,
            new.graph.graph,
            new.name,
            new.type,
            new.callable,
            tx.now,
            new.input,
            new.max_retries,
            new.priority,
            new.timeout,
            new.run_after(tx.now),
            key,
            fingerprint,
            new.traceparent,
            new.tracestate,
        )
        if row is None:  # the key was taken (maybe by another process just now)
            found = await tx.conn.fetchrow(
                q.SELECT_BY_IDEMPOTENCY_KEY, new.graph.graphspace, new.graph.graph, key
            )
            assert found is not None
            task = row_to_task(found)
            if found[-1] is not None and found[-1] != fingerprint:
                raise Unprocessable(
                    f"Idempotency-Key '{key}' was used with a different request for task {task.id}"
                )
            return task, False
        if new.schedule is not None:
            row = await tx.conn.fetchrow(
                q.SET_TASK_SCHEDULE, new.schedule, new.schedule_fire_ms, row[0]
            )
            assert row is not None  # the row this transaction inserted
        task = row_to_task(row)
        if new.callback is not None:
            await tx.conn.execute(q.INSERT_CALLBACKS, [task.id], [new.callback])
        if new.dependencies:
            task = await dependencies.insert_dependencies_pg(tx, task, new.dependencies)
        tx.event(EventKind.CREATED, task)
        if tx.waiting is not None:
            tx.waiting += 1
        return task, True

    async def insert_many(self, tx: PgTx, news: Sequence[NewTask]) -> list[tuple[Task, bool]]:
        """Submissions without a key as one INSERT (their ids taken in it): one round trip
        for the lot, not one each. Past max_waiting, the batch is run again write by
        write, so each is admitted or refused on its own."""
        await self._admit(tx)
        if tx.waiting is not None and tx.waiting + len(news) > self.max_waiting:
            raise _Redo
        rows = await tx.conn.fetch(
            q.INSERT_TASKS,
            list(range(len(news))),
            [n.graph.graphspace for n in news],
            [n.graph.graph for n in news],
            [n.name for n in news],
            [n.type for n in news],
            [n.callable for n in news],
            tx.now,
            [n.input for n in news],
            [n.max_retries for n in news],
            [n.priority for n in news],
            [n.timeout for n in news],
            [n.run_after(tx.now) for n in news],
            [n.traceparent for n in news],
            [n.tracestate for n in news],
        )
        tasks = [row_to_task(row) for row in rows]  # in the order of `news`
        ids = [task.id for task in tasks]
        called = [(task_id, n.callback) for task_id, n in zip(ids, news, strict=True) if n.callback]
        if called:
            await tx.conn.execute(
                q.INSERT_CALLBACKS, [i for i, _ in called], [url for _, url in called]
            )
        for task in tasks:
            tx.event(EventKind.CREATED, task)
        if tx.waiting is not None:
            tx.waiting += len(tasks)
        return [(task, True) for task in tasks]

    async def _admit(self, tx: PgTx) -> None:
        """max_waiting across the cluster: the waiting tasks counted under a lock every
        submitting transaction takes, so submissions to several processes at once cannot
        slip past it together."""
        if not self.max_waiting:
            return
        if (tx.waiting is None and q.ADMIT_LOCK not in tx.locks) or tx.careful:
            # redone with savepoints, the lock is taken again: a savepoint rolled back
            # lets go of what was taken in it
            await tx.conn.execute(q.ADMIT_LOCK)
        if tx.waiting is None:
            tx.waiting = int(await tx.conn.fetchval(q.COUNT_WAITING, _WAITING_VALUES))
        if tx.waiting >= self.max_waiting:
            raise TooManyRequests(
                f"{tx.waiting} tasks are waiting to run, the limit is {self.max_waiting} "
                "(max_waiting); retry later"
            )

    async def transition(self, change: Change) -> Task:
        return await self._write(_ChangeOp(change))

    async def transition_many(self, changes: Sequence[Change]) -> list[Task | Exception]:
        return list(await self._write(_ChangesOp(list(changes))))

    async def set_progress(
        self, progress: Mapping[int, int], totals: Mapping[int, int] | None = None
    ) -> None:
        items = [
            (task_id, value, (totals or {}).get(task_id)) for task_id, value in progress.items()
        ]

        async def op(tx: PgTx) -> None:
            for task_id, value, total in items:
                row = await tx.conn.fetchrow(q.SET_PROGRESS, value, total, tx.now, task_id, tx.me)
                if row is not None:
                    tx.event(EventKind.PROGRESS, row_to_task(row))

        await self._write(op)

    async def append_logs(self, lines: Mapping[int, Sequence[LogLine]], keep: int) -> None:
        """Jobs' new log lines, by task: one statement for the batch's lines, one for the
        counts, one per task past `keep` for its oldest; a task.log event per task."""
        batches = {task_id: list(batch) for task_id, batch in lines.items() if batch}
        if not batches:
            return

        async def op(tx: PgTx) -> None:
            rows = await tx.conn.fetch(q.LOG_TASKS, list(batches), tx.me)
            present = [(row_to_task(row), row[-1]) for row in rows]
            if not present:
                return
            kept = {task.id: batches[task.id][-keep:] for task, _ in present}
            # a batch cut before it is written leaves the marker's place before its lines
            cut = {task_id for task_id, batch in kept.items() if len(batch) < len(batches[task_id])}
            ids = await tx.conn.fetch(q.LOG_IDS, sum(map(len, kept.values())) + len(cut))
            next_id = iter(row[0] for row in ids)
            stored: dict[int, list[LogLine]] = {}
            for task, attempt in present:
                if task.id in cut:
                    next(next_id)
                stored[task.id] = [
                    LogLine(line.time_ms, line.level, line.text, attempt, next(next_id))
                    for line in kept[task.id]
                ]
            flat = [(task_id, line) for task_id, batch in stored.items() for line in batch]
            await tx.conn.execute(
                q.INSERT_LOGS,
                [line.id for _, line in flat],
                [task_id for task_id, _ in flat],
                [line.time_ms for _, line in flat],
                [line.level for _, line in flat],
                [line.attempt for _, line in flat],
                [line.text for _, line in flat],
            )
            counts = await tx.conn.fetch(
                q.COUNT_LOGS,
                list(stored),
                [len(batch) for batch in stored.values()],
                [len(batches[task_id]) - len(batch) for task_id, batch in stored.items()],
            )
            for row in counts:
                over = int(row[1]) - keep
                if over > 0:
                    await tx.conn.execute(q.DROP_OLDEST_LOGS, row[0], over)
                    await tx.conn.execute(q.SET_LOG_COUNT, row[0], over)
            for task, _ in present:
                tx.event(EventKind.LOG, task, log_event_data(task.id, stored[task.id]))

        await self._write(op)

    async def delete(
        self, graph: GraphRef, task_id: int, sources: frozenset[Status] | None
    ) -> Task:
        wanted = None if sources is None else sorted(s.value for s in sources)

        async def op(tx: PgTx) -> Task:
            task = await tx.select_task(task_id)
            if task is None or task.graph != graph:
                raise NotFound(f"Can't find task with id '{task_id}'")
            if sources is None or wanted is None:
                await tx.conn.execute(q.DELETE_TASK, task_id)
            else:
                if task.status not in sources:
                    raise delete_refused(task)
                await tx.conn.execute(q.DELETE_TASK_FROM, task_id, wanted)
            tx.event(EventKind.DELETED, task)
            if task.dependants and not task.completed:  # those waiting for it end cancelled
                await dependencies.follow_pg(tx, [task], deleted=True)
            return task

        return await self._write(op)

    async def delete_many(
        self, graph: GraphRef, task_ids: Sequence[int], sources: frozenset[Status] | None
    ) -> list[Task | SidetaskError]:
        """One DELETE for them all (a bulk delete's group), its events and what it does to
        the tasks waiting for them; one not deleted is read to say why (NotFound, or
        TransitionRefused as `delete` refuses it)."""
        wanted = None if sources is None else sorted(s.value for s in sources)
        ids = list(dict.fromkeys(task_ids))

        async def op(tx: PgTx) -> list[Task | SidetaskError]:
            rows = await tx.conn.fetch(q.DELETE_TASKS, graph.graphspace, graph.graph, ids, wanted)
            deleted = {task.id: task for task in map(row_to_task, rows)}
            results: list[Task | SidetaskError] = []
            for task_id in task_ids:
                task = deleted.get(task_id)
                if task is not None:
                    results.append(task)
                    continue
                current = await tx.select_task(task_id)
                if current is None or current.graph != graph:
                    results.append(NotFound(f"Can't find task with id '{task_id}'"))
                else:
                    results.append(delete_refused(current))
            gone = [deleted[task_id] for task_id in ids if task_id in deleted]  # in their order
            for task in gone:
                tx.event(EventKind.DELETED, task)
            # those waiting for them end cancelled
            followed = [t for t in gone if t.dependants and not t.completed]
            if followed:
                await dependencies.follow_pg(tx, followed, deleted=True)
            return results

        return await self._write(op)

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
        """Up to `limit` due waiting tasks of the types in `runs`, highest priority first,
        at most `type_room[t]` of a limited type `t`: each goes `scheduling` on `server`,
        held by this process, which hands it on (SPEC 3: `scheduled`, then `queued`). With
        `type_caps`, the claims of every process take one lock, under which the tasks of
        each capped type in hand anywhere are counted: a cap holds across the cluster
        (counting without the lock, claimers running at once overshoot it). Rate limits
        (`type_rates`) are counted under the same lock, in windows of the database's clock."""
        on_server = None if server is None else {"server": server}
        caps = dict(type_caps or {})
        rates = dict(type_rates or {})
        only = None if runs is None else sorted(set(runs))
        quick = None
        if not (caps or rates) and all(n <= 0 or n >= limit for n in type_room.values()):
            excluded = sorted(name for name, left in type_room.items() if left <= 0)
            quick = QuickClaim(limit, now_ms, excluded, server, only)

        async def op(tx: PgTx) -> list[Task]:
            if quick is not None and not tx.careful:
                return await self._claim_at_once(tx, quick)
            await tx.conn.execute(q.RELEASE_DUE, now_ms)
            room = dict(type_room)
            if caps:
                await tx.conn.execute(q.CLAIM_LOCK)  # taken first already (_Locked)
                names = sorted(caps)
                rows = await tx.conn.fetch(q.IN_HAND_BY_TYPE, names, _INTERRUPTIBLE_VALUES)
                in_hand: dict[str, int] = {row[0]: int(row[1]) for row in rows}
                for name in names:
                    left = caps[name] - in_hand.get(name, 0)
                    room[name] = min(room.get(name, left), left)
            windows: dict[str, int] = {}
            if rates:  # under the lock _ClaimOp took first, as the caps' count
                for name, start, count, now in await tx.conn.fetch(q.RATE_COUNTS, list(rates)):
                    starts, window = rates[name]
                    windows[name] = int(now) - int(now) % window
                    used = int(count) if start is not None and int(start) == windows[name] else 0
                    room[name] = min(room.get(name, starts - used), starts - used)
            claimed: list[Task] = []
            damaged: list[int] = []
            while len(claimed) < limit:
                excluded = sorted(name for name, left in room.items() if left <= 0)
                found = await tx.conn.fetch(
                    q.CLAIM_WAITING, excluded, damaged, limit - len(claimed), only
                )
                again = False
                taken: list[tuple[int, str]] = []
                for task_id, _, type_name in found:
                    if type_name in room and room[type_name] <= 0:
                        again = True
                        break
                    if type_name in room:
                        room[type_name] -= 1
                    taken.append((task_id, type_name))
                changes = [Change(i, Status.SCHEDULING, on_server, claims=True) for i, _ in taken]
                results = await tx.change_many(changes) if changes else []
                for (task_id, type_name), result in zip(taken, results, strict=True):
                    if isinstance(result, Task):
                        claimed.append(result)
                    else:  # the row reads as `unknown`: left alone
                        damaged.append(task_id)
                        again = True
                        if type_name in room:
                            room[type_name] += 1
                if not again:
                    break
            if windows:
                started: dict[str, int] = {}
                for task in claimed:
                    if task.type in windows:
                        started[task.type] = started.get(task.type, 0) + 1
                if started:
                    names = list(started)
                    await tx.conn.execute(
                        q.COUNT_STARTS,
                        names,
                        [windows[n] for n in names],
                        [started[n] for n in names],
                    )
            return claimed

        locks = self._claim_locks if caps or rates else ()
        return await self._write(_ClaimOp(op, locks, quick))

    async def _claim_at_once(self, tx: PgTx, quick: QuickClaim) -> list[Task]:
        """The claim as one statement (q.CLAIM_DUE: the release of due tasks, the pick and
        the step to `scheduling`), when no type's room is short of the limit. A damaged
        row among those picked redoes the batch, whose claim then goes row by row."""
        rows = await tx.conn.fetch(q.CLAIM_DUE, *quick.params(tx))
        claimed = quick.order(map(row_to_task, rows))
        if any(task.status is Status.UNKNOWN for task in claimed):
            raise _Redo
        for task in claimed:
            tx.event(EventKind.STATUS, task)
        return claimed

    async def recheck_dependencies(self, task_ids: Sequence[int] | None = None) -> int:
        """As SQLiteStore.recheck_dependencies, in bounded batches."""
        changed, after = 0, 0
        while True:

            async def op(tx: PgTx, after_id: int = after) -> tuple[int, int]:
                return await dependencies.recheck_pg(tx, after_id, task_ids)

            after, count = await self._write(op)
            changed += count
            if after == 0:
                return changed

    async def recover(self, decide: Decision, keep_types: Iterable[str] = ()) -> Recovery:
        return await self._recover(decide, keep_types, forget_dead=True)

    async def _recover(
        self, decide: Decision, keep_types: Iterable[str], *, forget_dead: bool
    ) -> Recovery:
        """SPEC 9 for the tasks no live process holds: each gets the change `decide` gives
        it. One process at a time does it (the others find the lock taken and skip)."""
        kept = sorted(set(keep_types))
        timeout_ms = int(self.replica_timeout * 1000)

        async def op(tx: PgTx) -> Recovery:
            counts = dict.fromkeys(Status, 0)
            if not await tx.conn.fetchval(q.TRY_SWEEP):
                return Recovery(0, 0, 0)
            if forget_dead:
                await tx.conn.execute(q.FORGET_DEAD, timeout_ms, self._me)
            await tx.conn.execute(q.RELEASE_DEAD_SCHEDULE_LEASES)
            for row in await tx.conn.fetch(q.INTERRUPTED, _INTERRUPTIBLE_VALUES, kept):
                task = row_to_task(row)
                if task.status is Status.UNKNOWN:
                    counts[Status.UNKNOWN] += 1
                else:
                    counts[(await tx.change(decide(task))).status] += 1
            return Recovery(
                counts[Status.RESTORING],
                counts[Status.FAILED],
                counts[Status.CANCELLED],
                counts[Status.UNKNOWN],
            )

        return await self._write(op)

    async def set_checkpoints(self, checkpoints: Mapping[int, str]) -> None:
        """Running jobs' checkpoints, each into its task's open attempt, if this process
        started it; not an event."""
        ids, values = list(checkpoints), list(checkpoints.values())

        async def op(tx: PgTx) -> None:
            await tx.conn.execute(q.SET_CHECKPOINTS, ids, values, tx.me)

        await self._write(op)

    async def set_process_group(self, task_id: int, group: int | None, token: str | None) -> None:
        async def op(tx: PgTx) -> None:
            await tx.conn.execute(
                q.SET_PROCESS_GROUP,
                group,
                None if group is None else token,
                None if group is None else self._host,
                task_id,
            )

        await self._write(op)

    async def purge(self, tasks_before_ms: int, events_before_ms: int) -> tuple[int, int]:
        async def op(tx: PgTx) -> tuple[int, int]:
            if not await tx.conn.fetchval(q.TRY_PURGE):
                return 0, 0  # another process is purging
            rows = await tx.conn.fetch(
                q.PURGEABLE_TASKS, _COMPLETED_VALUES, tasks_before_ms, PURGE_CHUNK
            )
            purged = 0
            for row in rows:
                task = row_to_task(row)
                if task.status is Status.UNKNOWN:
                    continue
                await tx.conn.execute(q.DELETE_TASK, task.id)
                tx.event(EventKind.DELETED, task)
                purged += 1
            status = await tx.conn.execute(q.PURGE_EVENTS, PURGE_CHUNK, events_before_ms)
            return purged, int(status.split()[-1])

        return await self._write(op)

    # --- webhooks' deliveries (service.webhooks) ---

    async def claim_deliveries(self, limit: int, lease_ms: int) -> list[DueDelivery]:
        """As SQLite's; rows another replica is claiming at the same moment are skipped
        (SKIP LOCKED), so each delivery is claimed by one replica at a time."""
        token = uuid.uuid4().hex

        async def op(tx: PgTx) -> list[DueDelivery]:
            rows = await tx.conn.fetch(q.CLAIM_DELIVERIES, tx.now + lease_ms, token, tx.now, limit)
            return [row_to_due_delivery(row, token) for row in rows]

        return await self._write(op)

    async def record_delivery(
        self,
        delivery: DueDelivery,
        answer: DeliveryAnswer,
        state: DeliveryState,
        next_ms: int | None,
    ) -> bool:
        async def op(tx: PgTx) -> bool:
            tries = await tx.conn.fetchval(
                q.RECORD_DELIVERY, state.value, next_ms, delivery.id, delivery.lease
            )
            if tries is None:
                return False
            await tx.conn.execute(
                q.INSERT_DELIVERY_ANSWER,
                delivery.id,
                int(tries),
                answer.time_ms,
                answer.code,
                answer.error,
                answer.duration_ms,
            )
            return True

        return await self._write(op)

    async def deliveries(self, task_id: int) -> list[Delivery]:
        if not 0 < task_id <= MAX_ID:
            return []
        rows = await self._fetch(q.SELECT_DELIVERIES, task_id)
        answers = await self._fetch(q.SELECT_DELIVERY_ANSWERS, task_id)
        return deliveries_of(rows, answers)

    async def next_delivery_ms(self) -> int | None:
        rows = await self._fetch(q.NEXT_DELIVERY)
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    # --- external workers' leases (LeaseStore) ---

    async def lease(
        self,
        worker: str,
        types: Sequence[str],
        now_ms: int,
        token: str,
        expires_ms: int,
        type_rates: Mapping[str, tuple[int, int]] | None = None,
    ) -> tuple[Lease | None, int | None]:
        """As SQLiteStore.lease. A rate-limited type's count is read and written under the
        claims' lock, taken first as the scheduler's claim takes it (LOCK_ORDER), in windows
        of the database's clock: workers and replicas share one limit."""
        wanted = sorted(set(types))
        rates = {n: r for n, r in (type_rates or {}).items() if n in wanted}

        async def op(tx: PgTx) -> tuple[Lease | None, int | None]:
            damaged: list[int] = []
            await tx.conn.execute(q.RELEASE_DUE, now_ms)
            windows: dict[str, int] = {}
            held: list[str] = []
            if rates:  # under the lock _lock_first took, as the scheduler's claim
                for name, start, count, now in await tx.conn.fetch(q.RATE_COUNTS, list(rates)):
                    starts, window = rates[name]
                    windows[name] = int(now) - int(now) % window
                    used = int(count) if start is not None and int(start) == windows[name] else 0
                    if used >= starts:
                        held.append(name)
            free = [name for name in wanted if name not in held]
            while True:
                task_id = await tx.conn.fetchval(q.NEXT_LEASABLE, free, damaged) if free else None
                if task_id is None:
                    return None, await _next_look(tx, free, held, damaged, windows, rates)
                try:
                    task = await tx.change(
                        Change(task_id, Status.SCHEDULED, {"server": worker}, claims=True)
                    )
                except TransitionRefused:
                    damaged.append(task_id)
                    continue
                break
            await tx.conn.execute(q.SET_LEASE, token, expires_ms, task_id)
            if task.type in windows:
                await tx.conn.execute(q.COUNT_STARTS, [task.type], [windows[task.type]], [1])
            return Lease(task, token, expires_ms), None

        return await self._write(_Locked(op, self._claim_locks) if rates else op)

    async def report(
        self,
        graph: GraphRef,
        task_id: int,
        token: str,
        progress: int | None,
        expires_ms: int,
        checkpoint: str | None = None,
    ) -> Lease:
        async def op(tx: PgTx) -> Lease:
            row = await tx.conn.fetchrow(q.SELECT_LEASED, task_id)
            task, current_expiry = leased_task(row, graph, task_id, token)
            if task.status is Status.CANCELLED:
                return Lease(task, token, current_expiry or 0)
            check_live(task, current_expiry, tx.now)
            fields = {} if progress is None else {"progress": progress}
            if task.status is Status.SCHEDULED:
                task = await tx.change(lease_start(task, fields))
            elif progress is not None and progress != task.progress:
                row = await tx.conn.fetchrow(q.REPORT_PROGRESS, progress, tx.now, task_id)
                assert row is not None  # the row was read in this transaction
                task = row_to_task(row)
                tx.event(EventKind.PROGRESS, task)
            if checkpoint is not None:  # the lease is the fence (any replica takes reports)
                await tx.conn.execute(q.SET_LEASED_CHECKPOINT, checkpoint, task_id)
            await tx.conn.execute(q.EXTEND_LEASE, expires_ms, task_id)
            return Lease(task, token, expires_ms)

        return await self._write(op)

    async def settle_lease(
        self, graph: GraphRef, task_id: int, token: str, progress: int | None, decide: Decision
    ) -> Task:
        async def op(tx: PgTx) -> Task:
            row = await tx.conn.fetchrow(q.SELECT_LEASED, task_id)
            task, current_expiry = leased_task(row, graph, task_id, token)
            check_live(task, current_expiry, tx.now)
            fields: dict[str, Any] = {} if progress is None else {"progress": progress}
            if task.status is Status.SCHEDULED:
                task = await tx.change(lease_start(task, fields))
            if task.status is Status.CANCELLING:
                task = await tx.change(
                    Change(task_id, Status.CANCELLED, fields, ends_attempt=_CANCELLED)
                )
            else:
                change = decide(task)
                task = await tx.change(
                    Change(
                        task_id,
                        change.target,
                        {**fields, **(change.fields or {})},
                        change.sources,
                        ends_attempt=change.ends_attempt,
                    )
                )
            await tx.conn.execute(q.END_LEASE, task_id)
            return task

        return await self._write(op)

    async def expire_leases(
        self,
        now_ms: int,
        types: Sequence[str],
        decide: Decision,
        unleased: Decision | None = None,
    ) -> list[Task]:
        wanted = sorted(set(types))

        async def op(tx: PgTx) -> list[Task]:
            expired = await tx.conn.fetch(q.EXPIRED_LEASES, now_ms, _LEASED_VALUES, wanted)
            orphans = await tx.conn.fetch(q.UNLEASED, _LEASED_VALUES, wanted)
            changed = []
            for rows, decision in ((expired, decide), (orphans, unleased or decide)):
                for row in rows:
                    task = row_to_task(row)
                    if task.status is Status.UNKNOWN:
                        continue
                    changed.append(await tx.change(decision(task)))
                    await tx.conn.execute(q.DROP_LEASE, task.id)
            return changed

        return await self._write(op)

    async def renew_leases(self, types: Sequence[str], until_ms: int) -> int:
        wanted = sorted(set(types))

        async def op(tx: PgTx) -> int:
            if await tx.conn.fetchval(q.OTHERS_ALIVE, self._me):
                # the others watched the leases while this process was away: a rolling
                # restart must not extend the leases of workers that died meanwhile
                return 0
            status = await tx.conn.execute(q.RENEW_LEASES, until_ms, _LEASED_VALUES, wanted)
            return int(status.split()[-1])

        return await self._write(op)

    # --- reads ---

    async def _fetch(self, sql: str, *params: Any) -> list[asyncpg.Record]:
        """A read on a pooled connection. Shielded: a caller that gives up (a request whose
        client went away) does not cancel the query half-way, which can hand the connection
        back to the pool while it is still busy, and fail the next read on it."""
        if self._pool is None:
            raise ServiceUnavailable("The store is not open")
        try:
            return list(await asyncio.shield(self._pool.fetch(sql, *params)))
        except (asyncpg.PostgresError, asyncpg.InternalClientError, *_CONNECTION_ERRORS) as exc:
            raise ServiceUnavailable("The store cannot read now", str(exc)) from exc

    async def process_groups(self) -> list[ProcessGroup]:
        rows = await self._fetch(q.PROCESS_GROUPS, self._host)
        return [ProcessGroup(int(r[0]), int(r[1]), r[2]) for r in rows]

    async def get(self, graph: GraphRef | None, task_id: int) -> Task | None:
        if not 0 < task_id <= MAX_ID:
            return None
        rows = await self._fetch(q.SELECT_TASK, task_id)
        if not rows:
            return None
        task = row_to_task(rows[0])
        if graph is not None and task.graph != graph:
            return None
        return task

    def _list_query(
        self,
        graph: GraphRef,
        status: Status | frozenset[Status] | None,
        after_id: int,
        task_type: str | None,
        descending: bool,
        bounded: bool,
        selection: Selection = EVERY,
        plan: tuple[str | None, tuple[int, int] | None] = (None, None),
    ) -> tuple[str, list[Any], frozenset[Status] | None]:
        """A list's query and its parameters but the limit (and the bound): the third is
        the id it goes on from. A selection's ranges are left to PostgreSQL's planner,
        which knows from its statistics how many tasks each holds (SQLite's store counts
        them first: SQLiteStore._selection_index)."""
        wanted = frozenset({status}) if isinstance(status, Status) else status
        bound = MAX_ID if descending and after_id == 0 else min(after_id, MAX_ID)
        params: list[Any] = [graph.graphspace, graph.graph, bound]
        if task_type is not None:
            params.append(task_type)
        terms, values = selection.terms()
        one_name, ids = plan
        if one_name is not None:
            params.append(one_name)
            params.extend(values[sum(terms[:2]) :])
            terms = (False, False, *terms[2:])
        else:
            params.extend(values)
        if ids is not None:
            params.extend(ids)
        stored: list[str] = []
        unknown = False
        if wanted is not None:
            stored = sorted(s.value for s in wanted if s is not Status.UNKNOWN)
            if stored:
                params.append(stored)
            unknown = Status.UNKNOWN in wanted
            if unknown:
                params.append(q.KNOWN_VALUES)
        sql = q.list_tasks(
            descending,
            task_type is not None,
            bool(stored),
            unknown,
            bounded,
            terms if any(terms) else (),
            one_name is not None,
            ids is not None,
        )
        return sql, params, wanted

    async def _selection_plan(
        self, graph: GraphRef, selection: Selection
    ) -> tuple[str | None, tuple[int, int] | None]:
        """What the planner is given besides a selection's ranges: the one name a prefix's
        range holds, when it holds one (an equality the name index reads in id order,
        where a range of 6,000 tasks sharing a name went to the primary key, filtered),
        and the first and last id of a time range of at most ID_RANGE_AT_MOST tasks (a
        range far from the newest tasks was looked for among all of them)."""
        name_range = selection.name_range
        one_name = None
        gs, g = graph.graphspace, graph.graph
        if name_range is not None and name_range[1] is not None:
            low, high = name_range
            first = await self._fetch(q.FIRST_NAME, gs, g, low, high)
            if first:
                second = await self._fetch(q.NEXT_NAME, gs, g, first[0][0], high)
                if not second:
                    one_name = str(first[0][0])
        terms, values = selection.terms()
        at = sum(terms[:2])
        for pair in (1, 2):
            mine = terms[2 * pair : 2 * pair + 2]
            used = sum(mine)
            if not used:
                continue
            chosen = q.SELECTION_TERMS[2 * pair : 2 * pair + 2]
            where = "".join(
                f" AND {t.format(n=3 + i)}"
                for i, t in enumerate(t for t, on in zip(chosen, mine, strict=True) if on)
            )
            table = "task_keys" if pair == 1 else "tasks"  # created: its index is there
            sql = q.IDS_SELECTED.format(table=table, terms=where, limit=3 + used)
            rows = await self._fetch(sql, gs, g, *values[at : at + used], ID_RANGE_AT_MOST + 1)
            at += used
            count, low_id, high_id = rows[0]
            if int(count) <= ID_RANGE_AT_MOST:
                return one_name, None if not count else (int(low_id), int(high_id))
        return one_name, None

    async def list_tasks(
        self,
        graph: GraphRef,
        status: Status | frozenset[Status] | None,
        limit: int | None,
        after_id: int = 0,
        *,
        task_type: str | None = None,
        descending: bool = False,
        selection: Selection = EVERY,
    ) -> list[Task]:
        tasks: list[Task] = []
        async for batch in self.iter_tasks(
            graph,
            status,
            limit,
            after_id,
            task_type=task_type,
            descending=descending,
            selection=selection,
        ):
            tasks.extend(batch)
        return tasks

    async def iter_tasks(
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
        """The tasks `list_tasks` gives, in lists of at most LIST_BATCH read by one query;
        a task larger than LIST_ROW_CHARS (input and result) is read on its own when its
        turn comes and comes alone. A row that reads as another status than the one it is
        stored with (damaged) is left out of a status's list."""
        plan = (None, None) if selection.empty else await self._selection_plan(graph, selection)
        sql, params, wanted = self._list_query(
            graph,
            status,
            after_id,
            task_type,
            descending,
            bounded=True,
            selection=selection,
            plan=plan,
        )
        left = limit
        while left is None or left > 0:
            asked = LIST_BATCH if left is None else min(LIST_BATCH, left)
            rows = await self._fetch(sql, *params, asked, LIST_ROW_CHARS)
            if rows:
                params[2] = rows[-1][0]  # the next query goes on after this one's last row
            run: list[Task] = []
            for row in rows:
                task: Task | None = row_to_task(row)
                if row[-1]:  # large: its input and result were left out; read it alone
                    if run:
                        yield self._take(run, left)
                        left = None if left is None else left - len(run)
                        run = []
                        if left == 0:
                            return
                    task = await self.get(graph, row[0])
                    if task is not None and (wanted is None or task.status in wanted):
                        yield [task]
                        left = None if left is None else left - 1
                        if left == 0:
                            return
                    continue
                assert task is not None
                if wanted is None or task.status in wanted:
                    run.append(task)
            if run:
                kept = self._take(run, left)
                yield kept
                left = None if left is None else left - len(kept)
                if left == 0:
                    return
            if len(rows) < asked:
                return

    @staticmethod
    def _take(run: list[Task], left: int | None) -> list[Task]:
        return run if left is None else run[:left]

    async def iter_ids(
        self, graph: GraphRef, ids: Sequence[int]
    ) -> AsyncGenerator[list[Task], None]:
        unique = sorted({i for i in ids if 0 < i <= MAX_ID})
        for start in range(0, len(unique), LIST_BATCH):
            chunk = unique[start : start + LIST_BATCH]
            rows = await self._fetch(q.GRAPH_TASKS_BY_ID, graph.graphspace, graph.graph, chunk)
            if rows:
                yield [row_to_task(row) for row in rows]

    async def list_ids(self, graph: GraphRef, ids: Sequence[int]) -> list[Task]:
        tasks: list[Task] = []
        async for batch in self.iter_ids(graph, ids):
            tasks.extend(batch)
        return tasks

    async def events_after(
        self,
        after_id: int,
        graph: GraphRef | None,
        task_id: int | None,
        limit: int,
        max_bytes: int | None = None,
    ) -> list[Event]:
        params: list[Any] = [min(after_id, MAX_ID)]
        if task_id is not None:
            params.append(task_id)
        if graph is not None:
            params.extend((graph.graphspace, graph.graph))
        params.append(limit)
        if max_bytes is not None:
            params.append(max_bytes)
        sql = q.events_after(task_id is not None, graph is not None, max_bytes is not None)
        return [row_to_event(row) for row in await self._fetch(sql, *params)]

    async def attempts(self, task_id: int) -> list[Attempt]:
        if not 0 < task_id <= MAX_ID:
            return []
        return [row_to_attempt(row) for row in await self._fetch(q.SELECT_ATTEMPTS, task_id)]

    async def logs(self, task_id: int, after: int, limit: int, level: int = 0) -> list[LogLine]:
        if not 0 < task_id <= MAX_ID:
            return []
        after = max(0, min(after, MAX_ID))
        rows = await self._fetch(q.SELECT_LOGS, task_id, after, level, limit)
        lines = [row_to_log_line(row) for row in rows]
        state = await self._fetch(q.LOG_STATE, task_id)
        if not state:
            return lines
        return log_page(lines, int(state[0][0]), state[0][1], after, level, limit)

    # --- job types paused as a whole ---

    async def pause_type(self, type_name: str) -> int:
        """Pauses `type_name`: no task of it is claimed (by this process or a worker) until
        it is resumed. The time it is paused since (its first pause's, if it was)."""

        async def op(tx: PgTx) -> int:
            await tx.conn.execute(q.PAUSE_TYPE, type_name, tx.now)
            return int(await tx.conn.fetchval(q.PAUSED_SINCE, type_name))

        return await self._write(op)

    async def resume_type(self, type_name: str) -> bool:
        """Resumes `type_name`; whether it was paused."""

        async def op(tx: PgTx) -> bool:
            return str(await tx.conn.execute(q.RESUME_TYPE, type_name)) != "DELETE 0"

        return await self._write(op)

    async def paused_types(self) -> dict[str, int]:
        """The paused types and since when (epoch ms)."""
        return {str(name): int(since) for name, since in await self._fetch(q.PAUSED_TYPES)}

    async def checkpoint(self, task_id: int) -> str | None:
        if not 0 < task_id <= MAX_ID:
            return None
        rows = await self._fetch(q.LAST_CHECKPOINT, task_id)
        return None if not rows else str(rows[0][0])

    async def last_event_id(self) -> int:
        rows = await self._fetch(q.LAST_EVENT_ID)
        return int(rows[0][0])

    async def count_by_status(self) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {}
        for status, task_type, count in await self._fetch(q.COUNT_BY_STATUS_TYPE):
            name = stored_status(status).value
            counts[(name, task_type)] = counts.get((name, task_type), 0) + int(count)
        return counts

    async def count_statuses(self, graph: GraphRef) -> dict[Status, int]:
        counts = dict.fromkeys(Status, 0)
        for status, count in await self._fetch(
            q.COUNT_GRAPH_STATUSES, graph.graphspace, graph.graph
        ):
            counts[stored_status(status)] += int(count)
        return counts

    # --- schedules ---

    async def schedules(self, graph: GraphRef | None) -> list[Schedule]:
        if graph is None:
            rows = await self._fetch(q.SELECT_SCHEDULES)
        else:
            rows = await self._fetch(q.SELECT_GRAPH_SCHEDULES, graph.graphspace, graph.graph)
        return [row_to_schedule(row) for row in rows]

    async def schedule(self, graph: GraphRef, name: str) -> Schedule | None:
        rows = await self._fetch(q.SELECT_SCHEDULE, graph.graphspace, graph.graph, name)
        return row_to_schedule(rows[0]) if rows else None

    async def save_schedule(self, schedule: Schedule, replace: bool = False) -> Schedule:
        s = schedule
        where = (s.graph.graphspace, s.graph.graph, s.name)
        definition = s.definition.to_json().decode()

        async def op(tx: PgTx) -> Schedule:
            row = await tx.conn.fetchrow(
                q.INSERT_SCHEDULE,
                *where, definition, s.paused, s.next_fire_ms, s.anchor_ms, s.source, tx.now,
            )  # fmt: skip
            if row is None and replace:
                row = await tx.conn.fetchrow(
                    q.REPLACE_SCHEDULE,
                    *where, definition, s.next_fire_ms, s.anchor_ms, s.source, tx.now,
                )  # fmt: skip
            if row is None:
                raise Conflict(f"Schedule '{s.name}' already exists in graph '{s.graph.graph}'")
            return row_to_schedule(row)

        return await self._write(op)

    async def pause_schedule(
        self, graph: GraphRef, name: str, paused: bool, next_fire_ms: int | None
    ) -> Schedule:
        async def op(tx: PgTx) -> Schedule:
            row = await tx.conn.fetchrow(
                q.PAUSE_SCHEDULE, graph.graphspace, graph.graph, name, paused, next_fire_ms, tx.now
            )
            if row is None:
                raise NotFound(f"Can't find schedule with name '{name}'")
            return row_to_schedule(row)

        return await self._write(op)

    async def delete_schedule(self, graph: GraphRef, name: str) -> Schedule:
        async def op(tx: PgTx) -> Schedule:
            row = await tx.conn.fetchrow(q.DELETE_SCHEDULE, graph.graphspace, graph.graph, name)
            if row is None:
                raise NotFound(f"Can't find schedule with name '{name}'")
            return row_to_schedule(row)

        return await self._write(op)

    async def claim_schedules(
        self, now_ms: int, until_ms: int, owner: str, limit: int
    ) -> list[Schedule]:
        async def op(tx: PgTx) -> list[Schedule]:
            rows = await tx.conn.fetch(q.CLAIM_SCHEDULES, owner, until_ms, now_ms, limit)
            return [row_to_schedule(row) for row in rows]

        return await self._write(op)

    async def advance_schedule(
        self,
        schedule: Schedule,
        owner: str,
        next_fire_ms: int,
        fired: tuple[int, int] | None,
        hold_until_ms: int = 0,
    ) -> bool:
        fire_ms, task_id = fired if fired is not None else (None, None)
        g = schedule.graph

        async def op(tx: PgTx) -> bool:
            status = await tx.conn.execute(
                q.ADVANCE_SCHEDULE,
                g.graphspace, g.graph, schedule.name, next_fire_ms, fire_ms, task_id, tx.now,
                hold_until_ms, owner,
            )  # fmt: skip
            return bool(status == "UPDATE 1")

        return await self._write(op)

    async def next_schedule_due(self) -> int | None:
        rows = await self._fetch(q.NEXT_SCHEDULE_DUE)
        return None if not rows or rows[0][0] is None else int(rows[0][0])


async def _read_only_reset(conn: asyncpg.Connection) -> None:
    """A pooled reader's reset when it is given back: nothing (PostgresStore.open)."""


def session_settings(schema: str) -> dict[str, str]:
    """What every connection of the store sets for its session: unqualified names are the
    schema's, and the planner's cost of a random page read is near a sequential one's
    (SESSION_RANDOM_PAGE_COST)."""
    return {"search_path": schema, "random_page_cost": SESSION_RANDOM_PAGE_COST}


async def connect(dsn: str, schema: str) -> asyncpg.Connection:
    """A connection whose unqualified names are the schema's."""
    try:
        return await asyncpg.connect(dsn, server_settings=session_settings(schema), timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise ServiceUnavailable(
            f"Cannot connect to PostgreSQL at {_safe_dsn(dsn)}", str(exc)
        ) from exc


async def migrate_url(dsn: str, schema: str = DEFAULT_SCHEMA) -> int:
    """`migrate` on a connection of its own (the `sidetask migrate` command)."""
    PostgresStore(dsn, schema=schema)  # checks the schema's name
    conn = await connect(dsn, schema)
    try:
        return await migrate(conn, schema)
    finally:
        await conn.close()


async def migrate(conn: asyncpg.Connection, schema: str) -> int:
    """Brings `schema` to the newest version this code knows, in one transaction under a
    lock (several processes may start at once; the first migrates, the others find it
    done). A schema newer than the code is refused. Returns the version now in force."""
    async with conn.transaction():
        await conn.execute(q.MIGRATE_LOCK, schema)
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(q.VERSION_TABLE)
        version = int(await conn.fetchval(q.SELECT_VERSION))
        if version > len(MIGRATIONS):
            raise SidetaskError(
                f"PostgreSQL schema '{schema}' has schema version {version}, newer than this "
                f"sidetask knows ({len(MIGRATIONS)}); upgrade sidetask"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            log.info("applying PostgreSQL schema migration %d to '%s'", number, schema)
            await conn.execute(script)
            await conn.execute(q.SET_VERSION.format(version=int(number)))
        return max(version, len(MIGRATIONS))


def _safe_dsn(dsn: str) -> str:
    """The URL without its password, for messages and logs."""
    from . import describe_db

    return describe_db(dsn)
