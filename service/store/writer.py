"""The SQLite writer: one connection on its own thread, group commit (every write waiting
when a transaction ends goes into the next one, run as it comes and redone with a
savepoint per write only when one raises), and the events each write appends, stored in
its transaction and announced after the commit."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import itertools
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson

from .. import clock
from ..errors import ServiceUnavailable, SidetaskError
from ..model import Event, EventKind, Outbox, Status, Task
from . import dependencies
from . import queries as q
from .base import Change, CommitListener
from .changes import (
    answer,
    attempt_rows,
    changeable,
    delivery_rows,
    fail,
    refusal,
    replica_name,
    sources_of,
)
from .rows import row_to_task
from .schema import MIGRATIONS

log = logging.getLogger("sidetask.store")

T = TypeVar("T")

#: the most writes one transaction carries; the rest wait for the next one
MAX_BATCH = 4096
#: the most changes one UPDATE carries (SQLite caps a statement's parameters)
CHANGE_CHUNK = 500


def sql_error(exc: sqlite3.Error) -> SidetaskError:
    """A database fault as the error a client sees: retry later, nothing was written."""
    text = str(exc)
    if "full" in text:
        return ServiceUnavailable("The store cannot write: the disk or database is full", text)
    if "locked" in text or "busy" in text:
        return ServiceUnavailable("The store cannot write: the database is locked", text)
    return ServiceUnavailable("The store cannot write now", text)


def _as_client_error(exc: Exception) -> Exception:
    return sql_error(exc) if isinstance(exc, sqlite3.Error) else exc


class Tx:
    """The writer thread's view of one transaction: SQL on the connection plus the events
    each change appends, so an event exists exactly when its change is committed.

    Event ids come from a counter the writer keeps (one writer per file, so nobody else
    takes ids): a batch's rows go in with one executemany at its end (when the batch is
    redone write by write, each write's rows at its end, inside its savepoint). An id whose
    write or transaction rolled back is never used again, so ids only grow."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        next_event_id: Iterator[int],
        replica: str | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self.conn = conn
        self.now = clock.now_ms()
        self.events: list[Event] = []
        self._next_event_id = next_event_id
        #: this process as its attempts name it (changes.replica_name)
        self.replica = replica
        #: the tasks a running dependency follow has still to look at (service.store.
        #: dependencies); None when none runs
        self.following: list[tuple[Task, bool]] | None = None
        #: which status changes write webhook deliveries (None: none do)
        self.outbox = outbox
        self._outbox_statuses = frozenset() if outbox is None else outbox.statuses
        #: by event id, the tasks whose status event may write deliveries: written with
        #: the events (write_events), so a write rolled back to its savepoint, whose events
        #: go, writes none
        self._outgoing: dict[int, Task] = {}

    def event(self, kind: EventKind, task: Task, data: dict[str, Any] | None = None) -> None:
        """An event of the task; `data` (a task.log event's) instead of the task's."""
        deleted = kind is EventKind.DELETED
        if data is not None:
            body: dict[str, Any] = data
        elif deleted:
            body = {"id": task.id}
        else:
            body = task.to_api()
            if kind is not EventKind.CREATED:
                # SPEC 7: only task.created carries the input (it never changes), so a
                # large input is not stored, replayed and sent again with every step.
                body.pop("task_input", None)
        encoded = orjson.dumps(body)
        event_id = next(self._next_event_id)
        if kind is EventKind.STATUS and task.status in self._outbox_statuses:
            self._outgoing[event_id] = task
        self.events.append(
            Event(
                event_id,
                kind,
                task.id,
                task.graph,
                task.type,
                None if deleted else task.status,
                encoded,
            )
        )

    def write_events(self, start: int = 0) -> None:
        """Inserts the events appended since index `start`, with one executemany."""
        if len(self.events) > start:
            now = self.now
            self.conn.executemany(
                q.INSERT_EVENT,
                [
                    (
                        e.id,
                        e.task_id,
                        e.graph.graphspace,
                        e.graph.graph,
                        e.kind.value,
                        e.task_type,
                        None if e.status is None else e.status.value,
                        e.data,
                        now,
                    )
                    for e in self.events[start:]
                ],
            )
            if self._outgoing:
                self.write_deliveries(start)

    def write_deliveries(self, start: int) -> None:
        """The outbox rows of the status events appended since index `start`, in this
        transaction: a change and its deliveries are committed together or not at all."""
        assert self.outbox is not None
        tasks = [self._outgoing.pop(e.id) for e in self.events[start:] if e.id in self._outgoing]
        callbacks: dict[int, str] = {}
        wanted = [t.id for t in tasks if t.status in self.outbox.callback_statuses]
        for at in range(0, len(wanted), CHANGE_CHUNK):
            chunk = wanted[at : at + CHANGE_CHUNK]
            callbacks.update(self.conn.execute(q.callbacks_of(len(chunk)), chunk).fetchall())
        rows = delivery_rows(self.outbox, tasks, callbacks)
        if rows:
            self.conn.executemany(q.INSERT_DELIVERY, [(*row, self.now, self.now) for row in rows])

    def select_task(self, task_id: int) -> Task | None:
        row = self.conn.execute(q.SELECT_TASK, (task_id,)).fetchone()
        return None if row is None else row_to_task(row)

    def change(self, change: Change) -> Task:
        """Compare-and-set: the update applies only from an allowed status, else it raises
        and leaves the row as it was."""
        sql, params = _update(change, self.now, [change.task_id])
        self.conn.execute("SAVEPOINT change")
        try:
            row = self.conn.execute(sql, params).fetchone()
            task = None if row is None else row_to_task(row)
            if task is None or task.status is Status.UNKNOWN:
                # Refused, or a damaged row (its status is one the table allows, but nothing
                # else of it can be trusted): undo, and say why.
                self.conn.execute("ROLLBACK TO change")
                raise self._refusal(change)
        finally:
            self.conn.execute("RELEASE change")
        if change.starts_attempt or change.ends_attempt is not None:
            self.write_attempts([(change, task)])
        self.event(EventKind.STATUS, task)
        if task.dependants:  # what its new status does to the tasks waiting for it
            dependencies.follow(self, [task])
        return task

    def write_attempts(self, applied: Sequence[tuple[Change, Task]]) -> None:
        """The attempts the applied changes start or end, in their transaction: a start
        numbers the task's next attempt, an end closes its open one."""
        starts, ends = attempt_rows(applied)
        if starts:
            self.conn.executemany(
                q.START_ATTEMPT,
                [(task.id, task.id, task.server, self.replica, self.now) for task in starts],
            )
        if ends:
            self.conn.executemany(
                q.END_ATTEMPT,
                [
                    (
                        self.now,
                        end.outcome.value,
                        end.error_type,
                        end.error_message,
                        end.traceback,
                        end.checkpoint,
                        task.id,
                    )
                    for task, end in ends
                ],
            )

    def change_many(self, changes: Sequence[Change]) -> list[Task | SidetaskError]:
        """Several changes, each applied or refused on its own as `change` would, in as few
        statements as their shapes allow: one per target, field names and sources (and
        per chunk of CHANGE_CHUNK), whatever the fields' values. A task changed twice in
        `changes` is changed in their order."""
        results: list[Task | SidetaskError] = []
        segment: list[Change] = []
        ids: set[int] = set()
        for change in changes:
            if change.task_id in ids:
                results.extend(self._change_segment(segment))  # the first change first
                segment, ids = [], set()
            segment.append(change)
            ids.add(change.task_id)
        results.extend(self._change_segment(segment))
        return results

    def _change_segment(self, changes: Sequence[Change]) -> list[Task | SidetaskError]:
        """Changes of distinct tasks (so their order does not matter), grouped by shape."""
        results: list[Task | SidetaskError | None] = [None] * len(changes)
        groups: dict[Any, list[int]] = {}
        for index, change in enumerate(changes):
            shape = (change.target, tuple(change.fields or ()), change.sources)
            groups.setdefault(shape, []).append(index)
        for indexes in groups.values():
            for at in range(0, len(indexes), CHANGE_CHUNK):
                chunk = indexes[at : at + CHANGE_CHUNK]
                applied = self._change_set([changes[i] for i in chunk])
                for i, result in zip(chunk, applied, strict=True):
                    results[i] = result
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    def _change_set(self, changes: Sequence[Change]) -> list[Task | SidetaskError]:
        """Changes of one shape as one UPDATE."""
        if len(changes) == 1:
            return [self._try(changes[0])]
        first = changes[0]
        if first.fields and any(c.fields != first.fields for c in changes):
            sql, params = _update_rows(changes, self.now)
        else:
            sql, params = _update(first, self.now, [c.task_id for c in changes])
        self.conn.execute("SAVEPOINT changes")
        try:
            rows = self.conn.execute(sql, params).fetchall()
            tasks = {task.id: task for task in map(row_to_task, rows)}
            if any(task.status is Status.UNKNOWN for task in tasks.values()):
                # a damaged row among them (rare): undo, and take them one at a time
                self.conn.execute("ROLLBACK TO changes")
                tasks = {}
                damaged = True
            else:
                damaged = False
        finally:
            self.conn.execute("RELEASE changes")
        if damaged:
            return [self._try(c) for c in changes]
        results: list[Task | SidetaskError] = []
        attempts: list[tuple[Change, Task]] = []
        for change in changes:
            task = tasks.get(change.task_id)
            if task is None:
                results.append(self._refusal(change))
            else:
                self.event(EventKind.STATUS, task)
                results.append(task)
                if change.starts_attempt or change.ends_attempt is not None:
                    attempts.append((change, task))
        if attempts:
            self.write_attempts(attempts)
        # what their new statuses do to the tasks waiting for them
        dependencies.follow(self, [t for t in results if isinstance(t, Task) and t.dependants])
        return results

    def _try(self, change: Change) -> Task | SidetaskError:
        try:
            return self.change(change)
        except SidetaskError as exc:
            return exc

    def _refusal(self, change: Change) -> SidetaskError:
        return refusal(change, self.select_task(change.task_id))


def _update(change: Change, now: int, task_ids: Sequence[int]) -> tuple[str, list[Any]]:
    """The compare-and-set UPDATE of `change`, applied to `task_ids`: the transition table
    is enforced in SQL (`status IN (…)`), whatever the caller checked before."""
    fields = change.fields or {}
    sources = sources_of(change)
    sql = q.change_status(changeable(fields), len(task_ids), len(sources))
    return sql, [change.target.value, now, *fields.values(), *task_ids, *sources]


def _update_rows(changes: Sequence[Change], now: int) -> tuple[str, list[Any]]:
    """Changes of one shape whose fields' values differ (job ends, each with its result)
    as one UPDATE … FROM (VALUES …)."""
    first = changes[0]
    names = changeable(first.fields or {})
    sources = sources_of(first)
    params: list[Any] = [first.target.value, now]
    for change in changes:
        fields = change.fields or {}
        params.append(change.task_id)
        params.extend(fields[name] for name in names)
    params.extend(sources)
    return q.change_status_rows(names, len(changes), len(sources)), params


#: a write: run in the writer's thread, inside the transaction, on its Tx
Op = Callable[[Tx], T]


class ChangeOp:
    """A write that is one status change: the writer puts a run of them into as few
    UPDATEs as it can (a batch of job ends becomes one statement)."""

    __slots__ = ("change",)

    def __init__(self, change: Change) -> None:
        self.change = change

    def __call__(self, tx: Tx) -> Task:
        return tx.change(self.change)


class _Aborted(Exception):
    """A write whose error made SQLite roll back the whole transaction (a full disk does
    that): none of the batch is written. The write at `index` failed; the others are run
    again in the next transaction."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(str(error))
        self.index = index
        self.error = error


def _roll_back(conn: sqlite3.Connection) -> None:
    """Ends a failed transaction, if SQLite has not already: the error that got here is the
    one to report, not one of the rollback's."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute(q.ROLLBACK)


def _resolve(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.cancelled():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _name_native_thread(name: str) -> None:
    """Gives the OS thread the name (`/proc/PID/task/TID/comm`, top -H, py-spy), so the
    writer's CPU can be told from the event loop's; Linux keeps 15 bytes of it."""
    try:
        libc = ctypes.CDLL(None)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):  # not Linux: the name is only a convenience
        pass


class _Thread:
    """The writer's own thread: calls run on it one at a time, in order, and each answer is
    handed to the event loop by one call_soon_threadsafe (a hop costs one queue put and one
    callback, and a batch of writes takes one hop)."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[asyncio.Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._serve, name=name)
        self._thread.start()

    def _serve(self) -> None:
        _name_native_thread(self._thread.name)
        while (call := self._calls.get()) is not None:
            future, fn = call
            try:
                result = fn()
            except BaseException as exc:  # handed to the caller, whatever it is
                future.get_loop().call_soon_threadsafe(_resolve, future, False, exc)
            else:
                future.get_loop().call_soon_threadsafe(_resolve, future, True, result)

    async def call(self, fn: Callable[[], T]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._calls.put((future, fn))
        return await future

    def stop(self) -> None:
        """The thread ends once the calls queued before this one have run."""
        self._calls.put(None)


class Writer:
    """The one connection that writes a SQLite file, on a thread of its own. `write` queues
    an op; a loop on the event loop hands every op waiting to the thread as one transaction
    (one hop per batch, not per statement) and resolves each op's future after the commit."""

    def __init__(self, path: Path, trace: Callable[[str], None] | None = None) -> None:
        self.path = path
        self._trace = trace
        self._thread: _Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._pending: list[tuple[Op[Any], asyncio.Future[Any]]] = []
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._listeners: list[CommitListener] = []
        self._closed = False
        self._max_pages = 0
        self._event_ids: Iterator[int] = itertools.count(1)
        self._replica = replica_name()
        #: which status changes write webhook deliveries (SQLiteStore.set_outbox)
        self.outbox: Outbox | None = None

    def add_listener(self, listener: CommitListener) -> None:
        self._listeners.append(listener)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(connection)` on the writer's thread, between two transactions."""
        if self._thread is None or self._conn is None:
            raise ServiceUnavailable("The store is not open")
        conn = self._conn
        return await self._thread.call(lambda: fn(conn))

    # --- lifecycle ---

    async def open(self) -> None:
        """Connects, migrates the schema and starts the commit loop."""
        self._thread = _Thread("sidetask-writer")
        try:
            self._conn = await self._thread.call(self._connect)
        except BaseException:
            await self.close_connection()
            raise
        self._loop_task = asyncio.create_task(self._run_writes(), name="sidetask-store-writer")

    def _connect(self) -> sqlite3.Connection:
        # In the writer's thread: the connection is used by this thread only.
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            if self._trace is not None:
                conn.set_trace_callback(self._trace)
            for pragma in q.WRITER_PRAGMAS:
                conn.execute(pragma)
            row = conn.execute(q.MAX_PAGE_COUNT).fetchone()
            self._max_pages = int(row[0]) if row else 0  # SQLite's own cap, for limit_pages(None)
            self._migrate(conn)
            # Ids after every id ever handed out, deleted (purged) ones included.
            row = conn.execute(q.LAST_EVENT_ID_EVER).fetchone()
            self._event_ids = itertools.count((int(row[0]) if row else 0) + 1)
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        row = conn.execute(q.USER_VERSION).fetchone()
        version = int(row[0]) if row else 0
        if version > len(MIGRATIONS):
            raise SidetaskError(
                f"Database {self.path} has schema version {version}, newer than this "
                f"sidetask knows ({len(MIGRATIONS)}); upgrade sidetask"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            log.info("applying schema migration %d to %s", number, self.path)
            # executescript commits first; the script and its version bump share a transaction
            conn.executescript(q.migration(script, number))

    async def close(self) -> None:
        """Refuses new writes, commits those queued, and closes the connection."""
        if self._closed:
            return
        self._closed = True
        if self._loop_task is not None:
            self._wakeup.set()
            await self._loop_task
        await self.close_connection()

    async def close_connection(self) -> None:
        thread, conn = self._thread, self._conn
        self._thread = self._conn = None
        if thread is None:
            return
        if conn is not None:
            await thread.call(conn.close)
        thread.stop()  # idle: it ends at once

    async def limit_pages(self, pages: int | None) -> int:
        """Caps the database at `pages` pages (max_page_count), or lifts the cap with None;
        returns the cap in force."""
        sql = q.set_max_page_count(self._max_pages if pages is None else pages)

        def cap(conn: sqlite3.Connection) -> int:
            row = conn.execute(sql).fetchone()
            return int(row[0]) if row else 0

        return await self.run(cap)

    # --- group commit ---

    async def write(self, op: Op[T]) -> T:
        if self._closed:
            raise ServiceUnavailable("The store is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((op, future))
        self._wakeup.set()
        # A caller that gives up (a dropped request) cancels only its wait: the op stays
        # queued (or in the transaction it is in), is written all the same, and its answer
        # is dropped (the commit loop skips a future already done).
        return await future

    async def _run_writes(self) -> None:
        """Every write waiting when the previous transaction ended goes into the next one."""
        assert self._thread is not None
        thread = self._thread
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
                ops = [op for op, _ in batch]
                try:
                    # the whole batch in one hop to the writer's thread
                    outcomes, events = await thread.call(functools.partial(self._commit_batch, ops))
                except _Aborted as aborted:
                    # Only the write that failed fails; the rest go first into the next
                    # transaction. Each round drops one write, so this ends.
                    error = aborted.error
                    log.error("write failed, its transaction rolled back: %s", error)
                    _, future = batch.pop(aborted.index)
                    if not future.done():
                        future.set_exception(_as_client_error(error))
                    self._pending[:0] = batch
                    continue
                except Exception as exc:  # the commit itself failed: nothing of it was written
                    error = _as_client_error(exc)
                    log.error("write transaction failed: %s", exc)
                    fail(batch, error)
                    continue
                answer(batch, outcomes)
                if events:
                    for listener in self._listeners:
                        try:
                            listener(events)
                        except Exception:
                            log.exception("commit listener failed")
            if self._closed:
                return

    def _commit_batch(self, ops: list[Op[Any]]) -> tuple[list[tuple[bool, Any]], list[Event]]:
        """Runs in the writer's thread: the batch as one transaction. First as it comes,
        with no savepoints (a savepoint per write cost more than the writes it guarded);
        if any write raises, that attempt is rolled back and the batch is run again with a
        savepoint per write, so the failing one leaves nothing behind and the others
        commit."""
        conn = self._conn
        assert conn is not None
        if conn.in_transaction:  # a failure that left one open must not block every later write
            conn.execute(q.ROLLBACK)
        tx = Tx(conn, self._event_ids, self._replica, self.outbox)
        conn.execute(q.BEGIN)
        try:
            outcomes = self._run_plainly(tx, ops)
            tx.write_events()
            conn.execute(q.COMMIT)
        except Exception:
            _roll_back(conn)
            return self._commit_carefully(ops)
        except BaseException:
            _roll_back(conn)
            raise
        return outcomes, tx.events

    @staticmethod
    def _run_plainly(tx: Tx, ops: list[Op[Any]]) -> list[tuple[bool, Any]]:
        """The writes of a batch, in order; a run of single status changes in a row goes
        into as few UPDATEs as their shapes allow (Tx.change_many), each still applied
        or refused on its own. Any write that raises ends the attempt."""
        outcomes: list[tuple[bool, Any]] = []
        run: list[Change] = []

        def flush() -> None:
            for result in tx.change_many(run):
                outcomes.append((not isinstance(result, SidetaskError), result))
            run.clear()

        for op in ops:
            if isinstance(op, ChangeOp):
                run.append(op.change)
                continue
            if run:
                flush()
            outcomes.append((True, op(tx)))
        if run:
            flush()
        return outcomes

    def _commit_carefully(self, ops: list[Op[Any]]) -> tuple[list[tuple[bool, Any]], list[Event]]:
        """The batch again, one savepoint per write, so a refused write leaves nothing
        behind while the others commit."""
        conn = self._conn
        assert conn is not None
        if conn.in_transaction:  # a failure that left one open must not block every later write
            conn.execute(q.ROLLBACK)
        tx = Tx(conn, self._event_ids, self._replica, self.outbox)
        outcomes: list[tuple[bool, Any]] = []
        conn.execute(q.BEGIN)
        try:
            for index, op in enumerate(ops):
                mark = len(tx.events)
                conn.execute("SAVEPOINT op")
                try:
                    value = op(tx)
                    # in the op's savepoint: a full disk here fails this write, not the batch
                    tx.write_events(mark)
                except Exception as exc:
                    if not conn.in_transaction:
                        # SQLite undid the whole transaction, not only this statement (as
                        # it does on SQLITE_FULL): the savepoint is gone with the rest.
                        raise _Aborted(index, exc) from exc
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    del tx.events[mark:]
                    outcomes.append((False, _as_client_error(exc)))
                else:
                    conn.execute("RELEASE op")
                    outcomes.append((True, value))
            conn.execute(q.COMMIT)
        except BaseException:
            _roll_back(conn)
            raise
        return outcomes, tx.events
