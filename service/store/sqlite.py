"""The SQLite store: the Store and LeaseStore contracts on one file, written by one writer
(service.store.writer: group commit) and read by a few reader connections (WAL); the SQL is
in service.store.queries, the reading of rows in service.store.rows."""

from __future__ import annotations

import asyncio
import functools
import itertools
import sqlite3
import uuid
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import orjson

from ..errors import (
    Conflict,
    NotFound,
    ServiceUnavailable,
    SidetaskError,
    TransitionRefused,
    Unprocessable,
)
from ..model import (
    LEASED_STATUSES,
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
from . import queries as q
from .base import Change, CommitListener, Decision, Lease, ProcessGroup, Recovery
from .changes import check_live, delete_refused, lease_start, leased_task
from .lock import ProcessLock
from .rows import (
    deliveries_of,
    is_json,
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
from .writer import ChangeOp, Op, Tx, Writer

T = TypeVar("T")

_LEASED_VALUES = tuple(sorted(s.value for s in LEASED_STATUSES))
#: tasks a streamed list reads per query (a page of the default limit, 100, and the one
#: more that says whether a next page exists: one query), and the characters of input and
#: result past which a task is read on its own (so a batch holds at most about 3 MB of them)
LIST_BATCH = 101
LIST_ROW_CHARS = 32 * 1024
PURGE_CHUNK = 5000
#: ids a list_ids query carries at most (SQLite caps the number of parameters)
IDS_CHUNK = 500
#: a selection's range holding fewer tasks than this is read by its index and sorted; one
#: holding more, in id order and filtered (SQLiteStore._selection_index)
SELECTION_PROBE = 4096
#: a prefix's range of this many names or fewer is read one name at a time in id order
NAMES_AT_MOST = 16
#: a time range of this many tasks or fewer gives the id order's read its first and last id
ID_RANGE_AT_MOST = 200_000


@dataclass(frozen=True, slots=True)
class _Plan:
    """How a list with a selection is read (SQLiteStore._selection_index)."""

    #: the index (None: SQLite's choice)
    via: str | None = None
    #: the names a prefix's range holds, each read by the name index in id order
    names: tuple[str, ...] = ()
    #: the lowest and highest id a time range holds: the read in id order stays within
    ids: tuple[int, int] | None = None


NO_PLAN = _Plan()
#: above every task id: where a descending list starts (SQLite's largest integer)
MAX_ID = 2**63 - 1
#: a cancel that wins over a worker's last report ends its run
CANCELLED = AttemptEnd(AttemptOutcome.CANCELLED)


def _rate_room(
    tx: Tx, rates: Mapping[str, tuple[int, int]], room: dict[str, int]
) -> dict[str, int]:
    """Narrows `room` to what each rate-limited type has left in its current window (a
    fixed window of its length, counted in the store); the start of each window."""
    if not rates:
        return {}
    windows = {name: tx.now - tx.now % window for name, (_, window) in rates.items()}
    counted = {
        name: (int(start), int(count))
        for name, start, count in tx.conn.execute(q.rate_counts(len(rates)), list(rates))
    }
    for name, (starts, _) in rates.items():
        start, count = counted.get(name, (0, 0))
        left = starts - (count if start == windows[name] else 0)
        room[name] = min(room.get(name, left), left)
    return windows


def _count_starts(tx: Tx, windows: Mapping[str, int], claimed: Sequence[Task]) -> None:
    """The claimed tasks of rate-limited types counted into their windows."""
    taken: dict[str, int] = {}
    for task in claimed:
        if task.type in windows:
            taken[task.type] = taken.get(task.type, 0) + 1
    tx.conn.executemany(
        q.COUNT_STARTS, [(name, windows[name], count) for name, count in taken.items()]
    )


def _next_look(
    tx: Tx,
    free: Sequence[str],
    held: Sequence[str],
    damaged: Sequence[int],
    windows: Mapping[str, int],
    rates: Mapping[str, tuple[int, int]],
) -> int | None:
    """When a lease that found nothing should look again: the next waiting task of the
    `free` types comes due, or a `held` type's window opens on a task of it that waits
    (due, or coming due later: then the later of the two); None: nothing waits."""
    times: list[int] = []
    if free:
        (next_due,) = tx.conn.execute(
            q.next_due(len(free), len(damaged)), [*free, *damaged]
        ).fetchone()
        if next_due is not None:
            times.append(int(next_due))
    for name in held:
        opens = windows[name] + rates[name][1]
        if tx.conn.execute(q.next_leasable(1, len(damaged)), [name, *damaged]).fetchone():
            times.append(opens)
            continue
        (next_due,) = tx.conn.execute(q.next_due(1, len(damaged)), [name, *damaged]).fetchone()
        if next_due is not None:
            times.append(max(int(next_due), opens))
    return min(times) if times else None


class SQLiteStore:
    """Task state in one SQLite file. Only this package knows SQL."""

    def __init__(
        self,
        path: str | Path,
        *,
        readers: int = 2,
        trace: Callable[[str], None] | None = None,
    ) -> None:
        self.path = Path(path)
        #: called (in a connection's thread) with every SQL statement run, for diagnostics
        self._trace = trace
        self._lock = ProcessLock(self.path)
        self._writer = Writer(self.path, trace)
        self._readers: list[aiosqlite.Connection] = []
        self._next_reader = itertools.cycle(range(max(1, readers)))
        self._reader_count = max(1, readers)
        self._closed = False

    # --- lifecycle ---

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            await self._writer.open()
            for _ in range(self._reader_count):
                reader = await aiosqlite.connect(self.path, isolation_level=None)
                self._readers.append(reader)
                if self._trace is not None:
                    await reader.set_trace_callback(self._trace)
                await reader.create_function("sidetask_json", 1, is_json, deterministic=True)
                for pragma in q.READER_PRAGMAS:
                    await reader.execute(pragma)
        except BaseException:
            await self._close_readers()
            await self._writer.close()
            self._lock.release()
            raise

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._writer.close()
        await self._close_readers()
        self._lock.release()

    async def _close_readers(self) -> None:
        for conn in self._readers:
            await conn.close()
        self._readers.clear()

    def add_listener(self, listener: CommitListener) -> None:
        self._writer.add_listener(listener)

    def set_outbox(self, outbox: Outbox | None) -> None:
        self._writer.outbox = outbox

    async def limit_pages(self, pages: int | None) -> int:
        """Caps the database at `pages` pages (SQLite's max_page_count, on the writer), or
        lifts the cap with None; returns the cap in force. A fault-injection aid: with the
        cap at the current size, a write that needs a new page fails as on a full disk
        ("database or disk is full"), without filling a real disk. SQLite never sets the
        cap below the current size."""
        # Runs on the writer's thread between two transactions, never inside one.
        return await self._writer.limit_pages(pages)

    async def _write(self, op: Op[T]) -> T:
        return await self._writer.write(op)

    # --- writes ---

    async def insert(self, new: NewTask) -> tuple[Task, bool]:
        """A new task; with an Idempotency-Key already used in the graph, the task it made
        (a replay) when the request was the same, else Unprocessable. A task stored before
        requests were fingerprinted (schema 7) counts as the same request."""
        key = new.idempotency_key
        fingerprint = None if key is None else new.fingerprint()  # outside the transaction

        def op(tx: Tx) -> tuple[Task, bool]:
            if key is not None:
                row = tx.conn.execute(
                    q.SELECT_BY_IDEMPOTENCY_KEY, (new.graph.graphspace, new.graph.graph, key)
                ).fetchone()
                if row is not None:
                    task = row_to_task(row)
                    if row[-1] is not None and row[-1] != fingerprint:
                        raise Unprocessable(
                            f"Idempotency-Key '{key}' was used with a different request for "
                            f"task {task.id}"
                        )
                    return task, False
            row = tx.conn.execute(
                q.INSERT_TASK,
                (
                    new.graph.graphspace,
                    new.graph.graph,
                    new.name,
                    new.type,
                    new.callable,
                    tx.now,
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
                ),
            ).fetchone()
            task = row_to_task(row)
            if new.schedule is not None:
                row = tx.conn.execute(
                    q.SET_TASK_SCHEDULE, (new.schedule, new.schedule_fire_ms, task.id)
                ).fetchone()
                task = row_to_task(row)
            if new.callback is not None:
                tx.conn.execute(q.INSERT_CALLBACK, (task.id, new.callback))
            if new.dependencies:
                task = dependencies.insert_dependencies(tx, task, new.dependencies)
            tx.event(EventKind.CREATED, task)
            return task, True

        return await self._write(op)

    async def transition(self, change: Change) -> Task:
        return await self._write(ChangeOp(change))

    async def transition_many(self, changes: Sequence[Change]) -> list[Task | Exception]:
        """Several changes in one write; each applies or is refused on its own. Changes of
        one shape (target, field names, sources) share one UPDATE: the supervisor's steps
        move a whole batch at a time."""
        changes = list(changes)
        return await self._write(lambda tx: list[Task | Exception](tx.change_many(changes)))

    async def set_progress(
        self, progress: Mapping[int, int], totals: Mapping[int, int] | None = None
    ) -> None:
        """Coalesced progress of running jobs, and the totals they declared (a task not in
        `totals` keeps its own); a task no longer running is left alone."""
        items = [
            (task_id, value, (totals or {}).get(task_id)) for task_id, value in progress.items()
        ]

        def op(tx: Tx) -> None:
            for task_id, value, total in items:
                row = tx.conn.execute(
                    q.SET_PROGRESS, (value, total, tx.now, task_id, value, total)
                ).fetchone()
                if row is not None:
                    tx.event(EventKind.PROGRESS, row_to_task(row))

        await self._write(op)

    async def delete(
        self, graph: GraphRef, task_id: int, sources: frozenset[Status] | None
    ) -> Task:
        """Removes the task, only from one of `sources` (None: from any status); the caller
        decides which (service.policy.delete_sources). A damaged row is in none of them."""
        wanted = None if sources is None else sorted(s.value for s in sources)

        def op(tx: Tx) -> Task:
            task = tx.select_task(task_id)
            if task is None or task.graph != graph:
                raise NotFound(f"Can't find task with id '{task_id}'")
            if sources is None or wanted is None:
                tx.conn.execute(q.DELETE_TASK, (task_id,))
            else:
                if task.status not in sources:
                    raise delete_refused(task)
                # the compare-and-set in SQL too, as every status change is
                tx.conn.execute(q.delete_task_from(len(wanted)), (task_id, *wanted))
            tx.event(EventKind.DELETED, task)
            if task.dependants and not task.completed:  # those waiting for it end cancelled
                dependencies.follow(tx, [task], deleted=True)
            return task

        return await self._write(op)

    async def delete_many(
        self, graph: GraphRef, task_ids: Sequence[int], sources: frozenset[Status] | None
    ) -> list[Task | SidetaskError]:
        # queued at once: the writer commits them together
        results = await asyncio.gather(
            *(self.delete(graph, task_id, sources) for task_id in task_ids),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, SidetaskError):
                raise result
        return results  # type: ignore[return-value]

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
        """Takes up to `limit` waiting tasks that are due, highest priority first, and at most
        `type_room[t]` of a type `t` that has a limit: each, new or restoring (resumed,
        retried, recovered), goes `queued` on `server` (its task_server), the one step that
        happens when this process's own scheduler takes a task (SPEC 3). One process holds
        every task, so `type_room` already holds `type_caps`; and no other can run a type
        this one lacks, so `runs` narrows nothing (the supervisor fails such a task)."""
        on_server = None if server is None else {"server": server}

        def op(tx: Tx) -> list[Task]:
            tx.conn.execute(q.RELEASE_DUE, (now_ms,))
            # copied here: an op may run again after a rolled-back transaction
            room = dict(type_room)
            for name, _ in tx.conn.execute(q.PAUSED_TYPES):  # paused: none is claimed
                room[name] = 0
            windows = _rate_room(tx, rates, room)
            claimed: list[Task] = []
            #: waiting rows that read as `unknown` (damaged): never claimed
            damaged: list[int] = []
            # A type that runs out of room is excluded and the rest asked for again, so tasks
            # of other types behind it are still claimed: at most one query per limited type
            # (and one per batch of damaged rows found on the way).
            while len(claimed) < limit:
                excluded = sorted(name for name, left in room.items() if left <= 0)
                found = tx.conn.execute(
                    q.claim_waiting(len(excluded), len(damaged)),
                    [*excluded, *damaged, limit - len(claimed)],
                ).fetchall()
                again = False
                taken: list[tuple[int, str]] = []
                for task_id, _, type_name in found:
                    if type_name in room and room[type_name] <= 0:
                        again = True
                        break
                    if type_name in room:
                        room[type_name] -= 1
                    taken.append((task_id, type_name))
                # one UPDATE for all of them
                ids = [task_id for task_id, _ in taken]
                changes = [Change(i, Status.QUEUED, on_server) for i in ids]
                results: dict[int, Task | SidetaskError] = dict(
                    zip(ids, tx.change_many(changes) if changes else [], strict=True)
                )
                for task_id, type_name in taken:
                    result = results[task_id]
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
                _count_starts(tx, windows, claimed)
            return claimed

        rates = dict(type_rates or {})
        return await self._write(op)

    async def recheck_dependencies(self, task_ids: Sequence[int] | None = None) -> int:
        """Every task waiting for a dependency (or those of `task_ids`) looked at again
        (README, "Dependencies"): its count made true, and one whose dependency ended
        failed or cancelled ended, in bounded batches; how many changed. A dependency's
        end does this in its own transaction: this finds what a process stopped between
        a submission and its check left."""
        changed, after = 0, 0
        while True:
            after, count = await self._write(
                functools.partial(dependencies.recheck, after_id=after, ids=task_ids)
            )
            changed += count
            if after == 0:
                return changed

    async def recover(self, decide: Decision, keep_types: Iterable[str] = ()) -> Recovery:
        """SPEC 9: each task a dead process left mid-way (in an interruptible status) gets the
        change `decide` gives it (service.policy.after_interruption). Tasks of `keep_types`
        (external workers' types) that a worker holds under a lease were not running here and
        are left to their leases; one with no lease is recovered like the others. A damaged
        row (read as `unknown`) is left as it is, and counted."""
        kept = sorted(set(keep_types))

        def op(tx: Tx) -> Recovery:
            # the last process's firings' leases: it is gone (this one holds the file)
            tx.conn.execute(q.RELEASE_SCHEDULE_LEASES)
            rows = tx.conn.execute(
                q.interrupted(len(kept)), [*q.INTERRUPTIBLE_VALUES, *kept]
            ).fetchall()
            counts = dict.fromkeys(Status, 0)
            for row in rows:
                task = row_to_task(row)
                if task.status is Status.UNKNOWN:  # damaged: shown as it is, never run
                    counts[Status.UNKNOWN] += 1
                else:
                    counts[tx.change(decide(task)).status] += 1
            return Recovery(
                counts[Status.RESTORING],
                counts[Status.FAILED],
                counts[Status.CANCELLED],
                counts[Status.UNKNOWN],
            )

        return await self._write(op)

    # One process holds the file (service.store.lock), so it holds every task: no other
    # process to hear from, none to recover from while it runs.

    async def beat(self, rejoin: bool = False) -> bool:
        return True

    async def sweep(self, decide: Decision, keep_types: Iterable[str] = ()) -> Recovery:
        return Recovery(0, 0, 0)

    async def held_elsewhere(self, task_id: int) -> bool:
        return False

    @property
    def replica_id(self) -> str | None:
        return None

    def made_here(self, event_id: int) -> bool:
        return True

    async def set_process_group(self, task_id: int, group: int | None, token: str | None) -> None:
        """Stores (or clears) the process group a command job runs in; not an event."""

        def op(tx: Tx) -> None:
            tx.conn.execute(q.SET_PROCESS_GROUP, (group, None if group is None else token, task_id))

        await self._write(op)

    async def set_checkpoints(self, checkpoints: Mapping[int, str]) -> None:
        """Running jobs' checkpoints, each into its task's open attempt (one that has
        ended keeps what it had: its end wrote the last one); not an event."""
        items = [(value, task_id) for task_id, value in checkpoints.items()]

        def op(tx: Tx) -> None:
            tx.conn.executemany(q.SET_CHECKPOINT, items)

        await self._write(op)

    async def append_logs(self, lines: Mapping[int, Sequence[LogLine]], keep: int) -> None:
        """Jobs' new log lines, by task, each numbered with the task's current attempt; a
        task's oldest past `keep` are dropped (counted for the marker). One task.log event
        per task; a task that is gone is left alone."""
        batches = [(task_id, list(batch)[-keep:], len(batch)) for task_id, batch in lines.items()]

        def op(tx: Tx) -> None:
            next_id = int(tx.conn.execute(q.LAST_LOG_ID).fetchone()[0]) + 1
            for task_id, batch, total in batches:
                task = tx.select_task(task_id)
                if task is None or not batch:
                    continue
                attempt = tx.conn.execute(q.CURRENT_ATTEMPT, (task_id,)).fetchone()[0]
                if total > len(batch):
                    next_id += 1  # the marker's place (before the first line kept)
                stored = [
                    LogLine(line.time_ms, line.level, line.text, attempt, next_id + n)
                    for n, line in enumerate(batch)
                ]
                next_id += len(stored)
                tx.conn.executemany(
                    q.INSERT_LOG,
                    [(ln.id, task_id, ln.time_ms, ln.level, ln.attempt, ln.text) for ln in stored],
                )
                count, dropped = tx.conn.execute(q.COUNT_LOGS, (task_id, len(stored))).fetchone()
                dropped += total - len(stored)  # cut from the batch before it was written
                if count > keep:
                    tx.conn.execute(q.DROP_OLDEST_LOGS, (task_id, count - keep))
                    dropped += count - keep
                    count = keep
                if dropped:
                    tx.conn.execute(q.SET_LOG_COUNT, (count, dropped, task_id))
                tx.event(EventKind.LOG, task, log_event_data(task_id, stored))

        await self._write(op)

    async def purge(self, tasks_before_ms: int, events_before_ms: int) -> tuple[int, int]:
        """Completed tasks and events older than the retention, a bounded chunk per call."""

        def op(tx: Tx) -> tuple[int, int]:
            rows = tx.conn.execute(q.PURGEABLE_TASKS, (tasks_before_ms, PURGE_CHUNK)).fetchall()
            purged = 0
            for row in rows:
                task = row_to_task(row)
                if task.status is Status.UNKNOWN:  # damaged: kept in view, not purged
                    continue
                tx.conn.execute(q.DELETE_TASK, (task.id,))
                tx.event(EventKind.DELETED, task)
                purged += 1
            events = tx.conn.execute(q.PURGE_EVENTS, (PURGE_CHUNK, events_before_ms)).rowcount
            return purged, events

        return await self._write(op)

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
        """Claims the first due task of `types` for `worker`: `new` or `restoring` goes
        `scheduled` (task_server: the worker) under a new lease, until the worker confirms
        by its first report. When none is due: None, and the time the next waiting one of
        those types comes due. A paused type's tasks are not handed out. A type of
        `type_rates` at its limit is passed over, and the lease counts into its window as
        the scheduler's claim does (one limit for both); when only such types have due
        tasks, the time is when the first of their windows opens."""
        types_asked = sorted(set(types))
        rates_asked = {n: r for n, r in (type_rates or {}).items() if n in types_asked}

        def op(tx: Tx) -> tuple[Lease | None, int | None]:
            damaged: list[int] = []  # waiting rows that read as `unknown`: never handed out
            paused = {name for name, _ in tx.conn.execute(q.PAUSED_TYPES)}
            wanted = [name for name in types_asked if name not in paused]
            if not wanted:
                return None, None
            tx.conn.execute(q.RELEASE_DUE, (now_ms,))
            room: dict[str, int] = {}
            rates = {name: rates_asked[name] for name in wanted if name in rates_asked}
            windows = _rate_room(tx, rates, room)
            held = [name for name in wanted if room.get(name, 1) <= 0]
            free = [name for name in wanted if name not in held]
            while True:
                row = (
                    tx.conn.execute(
                        q.next_leasable(len(free), len(damaged)), [*free, *damaged]
                    ).fetchone()
                    if free
                    else None
                )
                if row is None:
                    return None, _next_look(tx, free, held, damaged, windows, rates)
                (task_id,) = row
                try:
                    task = tx.change(Change(task_id, Status.SCHEDULED, {"server": worker}))
                except TransitionRefused:
                    damaged.append(task_id)
                    continue
                break
            tx.conn.execute(q.SET_LEASE, (token, expires_ms, task_id))
            if windows:
                _count_starts(tx, windows, [task])
            return Lease(task, token, expires_ms), None

        return await self._write(op)

    async def report(
        self,
        graph: GraphRef,
        task_id: int,
        token: str,
        progress: int | None,
        expires_ms: int,
        checkpoint: str | None = None,
    ) -> Lease:
        """A lease holder's progress: the first report starts the task; each one extends the
        lease to `expires_ms`. A task cancelled meanwhile is returned as it is, unchanged."""

        def op(tx: Tx) -> Lease:
            row = tx.conn.execute(q.SELECT_LEASED, (task_id,)).fetchone()
            task, current_expiry = leased_task(row, graph, task_id, token)
            if task.status is Status.CANCELLED:
                return Lease(task, token, current_expiry or 0)
            check_live(task, current_expiry, tx.now)
            fields = {} if progress is None else {"progress": progress}
            if task.status is Status.SCHEDULED:
                task = tx.change(lease_start(task, fields))
            elif progress is not None and progress != task.progress:
                row = tx.conn.execute(q.REPORT_PROGRESS, (progress, tx.now, task_id)).fetchone()
                task = row_to_task(row)
                tx.event(EventKind.PROGRESS, task)
            if checkpoint is not None:  # the lease is the fence: its holder runs the attempt
                tx.conn.execute(q.SET_CHECKPOINT, (checkpoint, task_id))
            tx.conn.execute(q.EXTEND_LEASE, (expires_ms, task_id))
            return Lease(task, token, expires_ms)

        return await self._write(op)

    async def settle_lease(
        self, graph: GraphRef, task_id: int, token: str, progress: int | None, decide: Decision
    ) -> Task:
        """A lease holder's last report: `decide` gives the end (success, a retry, failed);
        a cancel requested meanwhile wins and the task ends `cancelled`. The lease ends."""

        def op(tx: Tx) -> Task:
            row = tx.conn.execute(q.SELECT_LEASED, (task_id,)).fetchone()
            task, current_expiry = leased_task(row, graph, task_id, token)
            check_live(task, current_expiry, tx.now)
            fields: dict[str, Any] = {} if progress is None else {"progress": progress}
            if task.status is Status.SCHEDULED:
                task = tx.change(lease_start(task, fields))
            if task.status is Status.CANCELLING:
                task = tx.change(Change(task_id, Status.CANCELLED, fields, ends_attempt=CANCELLED))
            else:
                change = decide(task)
                task = tx.change(
                    Change(
                        task_id,
                        change.target,
                        {**fields, **(change.fields or {})},
                        change.sources,
                        ends_attempt=change.ends_attempt,
                    )
                )
            tx.conn.execute(q.END_LEASE, (task_id,))
            return task

        return await self._write(op)

    async def expire_leases(
        self,
        now_ms: int,
        types: Sequence[str],
        decide: Decision,
        unleased: Decision | None = None,
    ) -> list[Task]:
        """Tasks of `types` whose lease ran out (the worker died or lost touch): `decide`
        gives each its change; the lease is gone, so a late report from it is refused. A
        task of those types in a worker's status with no lease at all (run in-process before
        its type became external) is expired too, by `unleased` (default: `decide`): no
        worker will ever report on it."""
        wanted = sorted(set(types))
        statuses = len(_LEASED_VALUES)

        def op(tx: Tx) -> list[Task]:
            expired = tx.conn.execute(
                q.expired_leases(statuses, len(wanted)), [now_ms, *_LEASED_VALUES, *wanted]
            ).fetchall()
            orphans = tx.conn.execute(
                q.unleased(statuses, len(wanted)), [*_LEASED_VALUES, *wanted]
            ).fetchall()
            changed = []
            for rows, decision in ((expired, decide), (orphans, unleased or decide)):
                for row in rows:
                    task = row_to_task(row)
                    if task.status is Status.UNKNOWN:  # damaged: its lease is left as it is
                        continue
                    changed.append(tx.change(decision(task)))
                    tx.conn.execute(q.DROP_LEASE, (task.id,))
            return changed

        return await self._write(op)

    async def renew_leases(self, types: Sequence[str], until_ms: int) -> int:
        """Every live lease on tasks of `types` lasts at least until `until_ms`: a restart of
        the service does not cost the workers that kept working their tasks."""
        wanted = sorted(set(types))

        def op(tx: Tx) -> int:
            return tx.conn.execute(
                q.renew_leases(len(_LEASED_VALUES), len(wanted)),
                [until_ms, *_LEASED_VALUES, *wanted],
            ).rowcount

        return await self._write(op)

    # --- webhooks' deliveries (service.webhooks) ---

    async def claim_deliveries(self, limit: int, lease_ms: int) -> list[DueDelivery]:
        """Up to `limit` due pending deliveries, claimed for `lease_ms`: their answers are
        recorded only under this claim, and once it has run out they come due again."""
        token = uuid.uuid4().hex

        def op(tx: Tx) -> list[DueDelivery]:
            rows = tx.conn.execute(
                q.CLAIM_DELIVERIES, (tx.now + lease_ms, token, tx.now, limit)
            ).fetchall()
            return [row_to_due_delivery(row, token) for row in rows]

        return await self._write(op)

    async def record_delivery(
        self,
        delivery: DueDelivery,
        answer: DeliveryAnswer,
        state: DeliveryState,
        next_ms: int | None,
    ) -> bool:
        """A try's answer and what follows it (pending again at `next_ms`, delivered,
        failed); False, and nothing written, when the claim it was made under is no
        longer this one's (it ran out and another took the delivery over)."""

        def op(tx: Tx) -> bool:
            row = tx.conn.execute(
                q.RECORD_DELIVERY, (state.value, next_ms, delivery.id, delivery.lease)
            ).fetchone()
            if row is None:
                return False
            tx.conn.execute(
                q.INSERT_DELIVERY_ANSWER,
                (
                    delivery.id,
                    int(row[0]),
                    answer.time_ms,
                    answer.code,
                    answer.error,
                    answer.duration_ms,
                ),
            )
            return True

        return await self._write(op)

    async def deliveries(self, task_id: int) -> list[Delivery]:
        if not 0 < task_id <= MAX_ID:
            return []
        rows = await self._fetch(q.SELECT_DELIVERIES, (task_id,))
        answers = await self._fetch(q.SELECT_DELIVERY_ANSWERS, (task_id,))
        return deliveries_of(rows, answers)

    async def next_delivery_ms(self) -> int | None:
        rows = await self._fetch(q.NEXT_DELIVERY, ())
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    # --- reads ---

    def _reader(self) -> aiosqlite.Connection:
        if not self._readers:
            raise ServiceUnavailable("The store is not open")
        return self._readers[next(self._next_reader)]

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        try:
            return list(await self._reader().execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise ServiceUnavailable("The store cannot read now", str(exc)) from exc

    async def _fetch_tasks(
        self, sql: str, params: Sequence[Any], *, descending: bool = False
    ) -> list[Task]:
        """The rows of a task query (`SELECT {TASK_COLUMNS} …`) as tasks, in id order
        (descending: newest first).

        SQLite hands them over as one JSON array: a reader thread that builds a Python
        row per result row takes the GIL back once per row, and under load each take waits
        for the event loop, so a list of 100 paid that wait 100 times. A row SQLite cannot
        put in JSON (a BLOB where text belongs: damaged) sends the query the usual way."""
        try:
            rows = await self._fetch(q.as_json_array(sql), params)
            decoded = orjson.loads(rows[0][0])
        except (ServiceUnavailable, orjson.JSONDecodeError):
            decoded = await self._fetch(sql, params)
        tasks = [row_to_task(row) for row in decoded]
        tasks.sort(key=lambda task: task.id, reverse=descending)
        return tasks

    async def process_groups(self) -> list[ProcessGroup]:
        """The process groups stored for command jobs (at start: what a crash may have left)."""
        rows = await self._fetch(q.PROCESS_GROUPS, ())
        return [ProcessGroup(int(r[0]), int(r[1]), r[2]) for r in rows]

    async def get(self, graph: GraphRef | None, task_id: int) -> Task | None:
        rows = await self._fetch(q.SELECT_TASK, (task_id,))
        if not rows:
            return None
        task = row_to_task(rows[0])
        if graph is not None and task.graph != graph:
            return None
        return task

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
        plan = await self._selection_index(graph, status, task_type, selection)
        sql, params, wanted = self._list_query(
            graph,
            status,
            after_id,
            task_type,
            descending,
            limited=limit is not None,
            selection=selection,
            plan=plan,
        )
        if limit is not None:
            params.append(limit)
        tasks = await self._fetch_tasks(sql, params, descending=descending)
        if wanted is None or wanted == {Status.UNKNOWN}:
            return tasks
        # A row shows under the status it reads as: one whose status is known but a field of
        # it is damaged reads as `unknown`, so it is listed there and not under its own. Such
        # rows are rare: they are left out here (not by a per-row check in SQL, which cost
        # every list a Python call per row), and the page filled up from further on.
        kept = [t for t in tasks if t.status in wanted]
        fetched, asked = tasks, limit
        while limit is not None and len(fetched) == asked and len(kept) < limit:
            asked = limit - len(kept)
            params[2], params[-1] = fetched[-1].id, asked
            fetched = await self._fetch_tasks(sql, params, descending=descending)
            kept.extend(t for t in fetched if t.status in wanted)
        return kept

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
        """The tasks `list_tasks` gives, in lists of at most LIST_BATCH small tasks read
        by one query; a task larger than LIST_ROW_CHARS (input and result) is read on its
        own when its turn comes and comes alone, so a list of large tasks holds one."""
        plan = await self._selection_index(graph, status, task_type, selection)
        sql, params, wanted = self._list_query(
            graph,
            status,
            after_id,
            task_type,
            descending,
            limited=True,
            selection=selection,
            plan=plan,
        )
        params.append(0)
        left = limit
        while left is None or left > 0:
            asked = LIST_BATCH if left is None else min(LIST_BATCH, left)
            params[-1] = asked
            batch = await self._fetch_bounded(sql, params, descending=descending)
            if batch:  # the next query goes on after this one's last row
                last = batch[-1]
                params[2] = last if isinstance(last, int) else last.id
            async for tasks in self._resolved(graph, batch, wanted):
                if left is not None:
                    tasks = tasks[:left]
                    left -= len(tasks)
                yield tasks
                if left == 0:
                    return
            if len(batch) < asked:
                return

    async def iter_ids(
        self, graph: GraphRef, ids: Sequence[int]
    ) -> AsyncGenerator[list[Task], None]:
        """The tasks `list_ids` gives, in lists as `iter_tasks` gives them."""
        unique = sorted(set(ids))
        for start in range(0, len(unique), LIST_BATCH):
            chunk = unique[start : start + LIST_BATCH]
            batch = await self._fetch_bounded(
                q.graph_tasks_by_id(len(chunk)), [graph.graphspace, graph.graph, *chunk]
            )
            async for tasks in self._resolved(graph, batch, None):
                yield tasks

    async def _resolved(
        self, graph: GraphRef, batch: list[Task | int], wanted: frozenset[Status] | None
    ) -> AsyncGenerator[list[Task], None]:
        """A batch as runs of its small tasks, and each large one (an id) read alone; a
        task deleted since, or that reads as another status (damaged), is left out."""
        run: list[Task] = []
        for item in batch:
            if isinstance(item, int):
                if run:
                    yield run
                    run = []
                task = await self.get(graph, item)
                if task is not None and (wanted is None or task.status in wanted):
                    yield [task]
            elif wanted is None or item.status in wanted:
                run.append(item)
        if run:
            yield run

    async def _fetch_bounded(
        self, sql: str, params: Sequence[Any], *, descending: bool = False
    ) -> list[Task | int]:
        """As `_fetch_tasks`, but a row whose input and result have more than LIST_ROW_CHARS
        characters comes back as its id alone, for the caller to read when it needs it."""
        try:
            rows = await self._fetch(q.as_bounded_json_array(sql), [LIST_ROW_CHARS, *params])
            decoded = orjson.loads(rows[0][0])
        except (ServiceUnavailable, orjson.JSONDecodeError):
            # a damaged row (a BLOB where text belongs): the batch the usual way, by id
            decoded = [row[0] for row in await self._fetch(q.ids_of(sql), params)]
        items: list[Task | int] = [
            row if isinstance(row, int) else row_to_task(row) for row in decoded
        ]
        items.sort(key=lambda item: item if isinstance(item, int) else item.id, reverse=descending)
        return items

    @staticmethod
    def _list_query(
        graph: GraphRef,
        status: Status | frozenset[Status] | None,
        after_id: int,
        task_type: str | None,
        descending: bool,
        *,
        limited: bool,
        selection: Selection = EVERY,
        plan: _Plan = NO_PLAN,
    ) -> tuple[str, list[Any], frozenset[Status] | None]:
        """A list's query (with a LIMIT parameter last when `limited`, for the caller to
        append): the SQL, its parameters (the third is the id it goes on from) and the
        statuses it keeps; `plan`: how it is read (`_selection_index`)."""
        wanted = frozenset({status}) if isinstance(status, Status) else status
        several = wanted is not None and len(wanted) > 1 and Status.UNKNOWN not in wanted
        # Descending, `after_id` is the id the page goes on below (0: from the newest).
        bound = MAX_ID if descending and after_id == 0 else after_id
        params: list[Any] = [graph.graphspace, graph.graph, bound]
        if task_type is not None:
            params.append(task_type)
        terms, values = selection.terms()
        if plan.names:  # the names in place of the prefix's range
            params.extend(plan.names)
            params.extend(values[sum(terms[:2]) :])
            terms = (False, False, *terms[2:])
        else:
            params.extend(values)
        if plan.ids is not None:
            low, high = plan.ids
            params[2] = min(bound, high + 1) if descending else max(bound, low - 1)
            params.append(low if descending else high)
        stored: list[str] = []
        unknown = False
        if wanted is not None:
            # a stored status, or any row that reads as `unknown` (damaged, or a status this
            # version does not know)
            stored = sorted(s.value for s in wanted if s is not Status.UNKNOWN)
            params.extend(stored)
            unknown = Status.UNKNOWN in wanted
            if unknown:
                params.extend(q.KNOWN_VALUES)
        sql = q.list_tasks(
            several,
            descending,
            task_type is not None,
            len(stored),
            unknown,
            limited,
            terms if any(terms) else (),
            plan.via,
            len(plan.names),
            plan.ids is not None,
        )
        return sql, params, wanted

    async def _selection_index(
        self,
        graph: GraphRef,
        status: Status | frozenset[Status] | None,
        task_type: str | None,
        selection: Selection,
    ) -> _Plan:
        """How a list with `selection` is read.

        A range of names, creation or update times is in its index in that order, not the
        id order a list is read in: read by it, a list sorts what the range holds, which
        is quick for a few thousand tasks and not for half a million; read in id order,
        it filters as it goes, which is quick while the range holds many of the tasks it
        passes and not for 100 among a million. So each term's range is counted in its
        index, up to SELECTION_PROBE: the smallest one under it is read by its index and
        sorted. When every one holds more: a prefix's range of at most NAMES_AT_MOST
        names (a name many tasks share: the usual case) is read a name at a time, each in
        id order from the name index, as a status is; otherwise the list is read in id
        order (by the status's or the type's index when there is one) and filtered,
        between the first and last id of a time range that holds at most
        ID_RANGE_AT_MOST tasks (tasks created on one day a month ago are not looked for
        among the newer ones)."""
        terms, values = selection.terms()
        if not any(terms):
            return NO_PLAN
        gs, g = graph.graphspace, graph.graph
        best, fewest = None, SELECTION_PROBE
        at = 0
        ranges: list[tuple[str, tuple[bool, ...], list[Any]]] = []
        for pair, index in enumerate(q.SELECTION_INDEXES):
            mine = tuple(on and t // 2 == pair for t, on in enumerate(terms))
            used = sum(mine)
            if not used:
                continue
            mine_values = values[at : at + used]
            at += used
            ranges.append((index, mine, mine_values))
            rows = await self._fetch(
                q.count_selected(index, mine), [gs, g, *mine_values, SELECTION_PROBE]
            )
            if int(rows[0][0]) < fewest:
                best, fewest = index, int(rows[0][0])
        if best is not None:
            return _Plan(via=best)
        name_range = selection.name_range
        if name_range is not None:
            names = await self._names_in(graph, *name_range)
            if names is not None:
                return _Plan(via="tasks_by_graph_name", names=tuple(names))
        wanted = frozenset({status}) if isinstance(status, Status) else status
        if wanted is not None and Status.UNKNOWN not in wanted:
            via = "tasks_by_graph_status"
        else:
            via = "tasks_by_graph_type" if task_type is not None else "tasks_by_graph"
        for index, mine, mine_values in ranges:
            if index == "tasks_by_graph_name":
                continue
            rows = await self._fetch(
                q.ids_selected(index, mine), [gs, g, *mine_values, ID_RANGE_AT_MOST + 1]
            )
            count, low, high = rows[0]
            if int(count) <= ID_RANGE_AT_MOST:
                return _Plan(via=via, ids=(int(low), int(high)))
        return _Plan(via=via)

    async def _names_in(self, graph: GraphRef, low: str, high: str | None) -> list[str] | None:
        """The names in [low, high), each found by one step of the name index, or None
        when there are more than NAMES_AT_MOST."""
        names: list[str] = []
        rows = await self._fetch(
            q.NEXT_NAME if high is not None else q.NEXT_NAME_UNBOUNDED,
            [graph.graphspace, graph.graph, low, high][: 4 if high is not None else 3],
        )
        # the first step takes the low end itself too
        exact = await self._fetch(q.NAME_EXISTS, [graph.graphspace, graph.graph, low])
        if exact:
            names.append(low)
        while rows and len(names) <= NAMES_AT_MOST:
            names.append(str(rows[0][0]))
            args = [graph.graphspace, graph.graph, names[-1], high]
            rows = await self._fetch(
                q.NEXT_NAME if high is not None else q.NEXT_NAME_UNBOUNDED,
                args if high is not None else args[:3],
            )
        return None if len(names) > NAMES_AT_MOST else names

    async def list_ids(self, graph: GraphRef, ids: Sequence[int]) -> list[Task]:
        unique = sorted(set(ids))
        tasks: list[Task] = []
        for start in range(0, len(unique), IDS_CHUNK):
            chunk = unique[start : start + IDS_CHUNK]
            rows = await self._fetch(
                q.graph_tasks_by_id(len(chunk)), [graph.graphspace, graph.graph, *chunk]
            )
            tasks.extend(row_to_task(row) for row in rows)
        return tasks

    async def events_after(
        self,
        after_id: int,
        graph: GraphRef | None,
        task_id: int | None,
        limit: int,
        max_bytes: int | None = None,
    ) -> list[Event]:
        """Up to `limit` events after `after_id`, in id order; with `max_bytes`, only as
        many as start within that many bytes of data (always the first one), so a page of
        large events is as small as a page of small ones."""
        params: list[Any] = [after_id]
        if task_id is not None:
            params.append(task_id)
        if graph is not None:
            params.extend((graph.graphspace, graph.graph))
        sql = q.events_after(task_id is not None, graph is not None, max_bytes is not None)
        if max_bytes is None:
            rows = await self._fetch(sql, [*params, limit])
        else:
            rows = await self._fetch(sql, [*params, *params, limit, max_bytes])
        return [row_to_event(row) for row in rows]

    async def attempts(self, task_id: int) -> list[Attempt]:
        if not 0 < task_id <= MAX_ID:
            return []
        return [row_to_attempt(row) for row in await self._fetch(q.SELECT_ATTEMPTS, (task_id,))]

    # --- job types paused as a whole ---

    async def pause_type(self, type_name: str) -> int:
        """Pauses `type_name`: no task of it is claimed (by this process or a worker) until
        it is resumed. The time it is paused since (its first pause's, if it was)."""

        def op(tx: Tx) -> int:
            tx.conn.execute(q.PAUSE_TYPE, (type_name, tx.now))
            return int(tx.conn.execute(q.PAUSED_SINCE, (type_name,)).fetchone()[0])

        return await self._write(op)

    async def resume_type(self, type_name: str) -> bool:
        """Resumes `type_name`; whether it was paused."""
        return await self._write(
            lambda tx: tx.conn.execute(q.RESUME_TYPE, (type_name,)).rowcount > 0
        )

    async def paused_types(self) -> dict[str, int]:
        """The paused types and since when (epoch ms)."""
        return {str(name): int(since) for name, since in await self._fetch(q.PAUSED_TYPES, ())}

    async def checkpoint(self, task_id: int) -> str | None:
        if not 0 < task_id <= MAX_ID:
            return None
        rows = await self._fetch(q.LAST_CHECKPOINT, (task_id,))
        return None if not rows else str(rows[0][0])

    async def logs(self, task_id: int, after: int, limit: int, level: int = 0) -> list[LogLine]:
        if not 0 < task_id <= MAX_ID:
            return []
        after = max(0, min(after, MAX_ID))
        rows = await self._fetch(q.SELECT_LOGS, (task_id, after, level, limit))
        lines = [row_to_log_line(row) for row in rows]
        state = await self._fetch(q.LOG_STATE, (task_id, task_id))
        if not state:
            return lines
        return log_page(lines, int(state[0][0]), state[0][1], after, level, limit)

    async def last_event_id(self) -> int:
        rows = await self._fetch(q.LAST_EVENT_ID, ())
        return int(rows[0][0])

    async def count_by_status(self) -> dict[tuple[str, str], int]:
        """Tasks per (status, type): what /metrics and the dashboard's counters show."""
        rows = await self._fetch(q.COUNT_BY_STATUS_TYPE, ())
        counts: dict[tuple[str, str], int] = {}
        for status, task_type, count in rows:
            name = stored_status(status).value
            counts[(name, task_type)] = counts.get((name, task_type), 0) + int(count)
        return counts

    async def count_statuses(self, graph: GraphRef) -> dict[Status, int]:
        """A graph's tasks per status, every status present (the dashboard's counters).
        Reads only the index tasks_by_graph_status."""
        rows = await self._fetch(q.COUNT_GRAPH_STATUSES, (graph.graphspace, graph.graph))
        counts = dict.fromkeys(Status, 0)
        for status, count in rows:
            # written by a newer version, or damaged: shown, not hidden
            counts[stored_status(status)] += int(count)
        return counts

    # --- schedules ---

    async def schedules(self, graph: GraphRef | None) -> list[Schedule]:
        if graph is None:
            rows = await self._fetch(q.SELECT_SCHEDULES, ())
        else:
            rows = await self._fetch(q.SELECT_GRAPH_SCHEDULES, (graph.graphspace, graph.graph))
        return [row_to_schedule(row) for row in rows]

    async def schedule(self, graph: GraphRef, name: str) -> Schedule | None:
        rows = await self._fetch(q.SELECT_SCHEDULE, (graph.graphspace, graph.graph, name))
        return row_to_schedule(rows[0]) if rows else None

    async def save_schedule(self, schedule: Schedule, replace: bool = False) -> Schedule:
        s = schedule
        where = (s.graph.graphspace, s.graph.graph, s.name)
        definition = s.definition.to_json().decode()

        def op(tx: Tx) -> Schedule:
            row = tx.conn.execute(
                q.INSERT_SCHEDULE,
                (*where, definition, int(s.paused), s.next_fire_ms, s.anchor_ms, s.source,
                 tx.now, tx.now),
            ).fetchone()  # fmt: skip
            if row is None and replace:
                row = tx.conn.execute(
                    q.REPLACE_SCHEDULE,
                    (definition, s.next_fire_ms, s.anchor_ms, s.source, tx.now, *where),
                ).fetchone()
            if row is None:
                raise Conflict(f"Schedule '{s.name}' already exists in graph '{s.graph.graph}'")
            return row_to_schedule(row)

        return await self._write(op)

    async def pause_schedule(
        self, graph: GraphRef, name: str, paused: bool, next_fire_ms: int | None
    ) -> Schedule:
        def op(tx: Tx) -> Schedule:
            row = tx.conn.execute(
                q.PAUSE_SCHEDULE,
                (int(paused), next_fire_ms, tx.now, graph.graphspace, graph.graph, name),
            ).fetchone()
            if row is None:
                raise NotFound(f"Can't find schedule with name '{name}'")
            return row_to_schedule(row)

        return await self._write(op)

    async def delete_schedule(self, graph: GraphRef, name: str) -> Schedule:
        def op(tx: Tx) -> Schedule:
            row = tx.conn.execute(
                q.DELETE_SCHEDULE, (graph.graphspace, graph.graph, name)
            ).fetchone()
            if row is None:
                raise NotFound(f"Can't find schedule with name '{name}'")
            return row_to_schedule(row)

        return await self._write(op)

    async def claim_schedules(
        self, now_ms: int, until_ms: int, owner: str, limit: int
    ) -> list[Schedule]:
        def op(tx: Tx) -> list[Schedule]:
            rows = tx.conn.execute(
                q.CLAIM_SCHEDULES, (owner, until_ms, now_ms, now_ms, limit)
            ).fetchall()
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

        def op(tx: Tx) -> bool:
            cursor = tx.conn.execute(
                q.ADVANCE_SCHEDULE,
                (next_fire_ms, fire_ms, task_id, tx.now, hold_until_ms,
                 g.graphspace, g.graph, schedule.name, owner),
            )  # fmt: skip
            return cursor.rowcount == 1

        return await self._write(op)

    async def next_schedule_due(self) -> int | None:
        rows = await self._fetch(q.NEXT_SCHEDULE_DUE, ())
        return None if not rows or rows[0][0] is None else int(rows[0][0])
