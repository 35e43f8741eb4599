"""The SQLite store: one writer connection doing group commits, a few reader connections (WAL)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import sqlite3
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import orjson

from .. import clock
from ..errors import (
    Conflict,
    NotFound,
    ServiceUnavailable,
    SidetaskError,
    TransitionRefused,
    Unprocessable,
)
from ..model import (
    COMPLETED_STATUSES,
    INTERRUPTIBLE_STATUSES,
    LEASED_STATUSES,
    Event,
    EventKind,
    GraphRef,
    NewTask,
    Status,
    Task,
    allowed_sources,
)
from .base import Change, CommitListener, Decision, Lease, ProcessGroup, Recovery
from .lock import ProcessLock
from .schema import MIGRATIONS

log = logging.getLogger("sidetask.store")

T = TypeVar("T")

#: the task columns, in the order every SELECT and RETURNING lists them
TASK_COLUMNS = (
    "id, graphspace, graph, name, type, callable, status, progress, create_ms, update_ms, "
    "result, input, retries, max_retries, priority, timeout, run_after_ms, server, description, "
    "progress_total"
)
EVENT_COLUMNS = "id, kind, task_id, graphspace, graph, task_type, status, data"
#: the completed statuses as SQL, as the partial index tasks_completed_by_update lists them
COMPLETED_SQL = "(" + ", ".join(f"'{s.value}'" for s in sorted(COMPLETED_STATUSES)) + ")"
#: fields a status change may set besides status and update_ms
CHANGEABLE_FIELDS = frozenset(
    {"progress", "progress_total", "result", "retries", "run_after_ms", "server", "description"}
)
#: the most writes one transaction carries; the rest wait for the next one
MAX_BATCH = 4096
#: tasks a streamed list reads per query, and the characters of input and result past
#: which a task is read on its own (so a batch holds at most about 3 MB of them)
LIST_BATCH = 100
LIST_ROW_CHARS = 32 * 1024
PURGE_CHUNK = 5000


def row_to_task(row: Sequence[Any]) -> Task:
    """A stored row as a Task; a row that cannot be interpreted shows as `unknown`: a status
    this version does not know, or a damaged field (a NULL where a value belongs, text where
    a number belongs, an input that is not JSON). Such a task is never run nor changed."""
    status = _STATUSES.get(row[6], Status.UNKNOWN)
    try:
        task = Task(
            id=int(row[0]),
            graph=_graph_ref(_text(row[1]), _text(row[2])),
            name=_text(row[3]),
            type=_text(row[4]),
            callable=_text(row[5]),
            status=status,
            progress=_integer(row[7]),
            create_ms=_integer(row[8]),
            update_ms=_integer(row[9]),
            result=_optional_text(row[10]),
            input=_json_text(row[11]),
            retries=_integer(row[12]),
            max_retries=_integer(row[13]),
            priority=_integer(row[14]),
            timeout=None if row[15] is None else _number(row[15]),
            run_after_ms=_integer(row[16]),
            server=_optional_text(row[17]),
            description=_optional_text(row[18]),
            progress_total=None if row[19] is None else _integer(row[19]),
        )
    except (TypeError, ValueError):
        # A damaged field: show what can be shown, as `unknown`, so nothing is hidden.
        return Task(
            id=int(row[0]),
            graph=GraphRef(str(row[1]), str(row[2])),
            name=_text_or_empty(row[3]),
            type=_text_or_empty(row[4]),
            callable=_text_or_empty(row[5]),
            status=Status.UNKNOWN,
            create_ms=_int_or_zero(row[8]),
            update_ms=_int_or_zero(row[9]),
            input=_text_or_none(row[11]),
        )
    return task


_STATUSES: dict[Any, Status] = {status.value: status for status in Status}


@functools.lru_cache(maxsize=1024)
def _graph_ref(graphspace: str, graph: str) -> GraphRef:
    # rows name a handful of graphs: one GraphRef each, not one per row
    return GraphRef(graphspace, graph)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {value!r}")
    return value


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _integer(value: Any) -> int:
    # SQLite stores an integral number in an INTEGER column as an integer: anything else
    # (text, 1.5, NULL) was written by something that is not sidetask.
    if type(value) is not int:
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _number(value: Any) -> float:
    if type(value) not in (int, float):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def _json_text(value: Any) -> str | None:
    """The stored input: JSON text, as the service wrote it, or NULL."""
    if value is None:
        return None
    orjson.loads(_text(value))  # JSONDecodeError is a ValueError
    return str(value)


def _is_json(value: str) -> int:
    """SQL function `sidetask_json(text)` of the reader connections: 1 when the text is
    JSON to orjson (the parser row_to_task uses), else 0."""
    try:
        orjson.loads(value)
    except (TypeError, ValueError):
        return 0
    return 1


#: above every task id: where a descending list starts (SQLite's largest integer)
MAX_ID = 2**63 - 1

#: true in SQL for exactly the rows row_to_task reads as `unknown` (kept in step with it);
#: {known} is the list of known status values. Only the reader connections have sidetask_json.
UNINTERPRETABLE = (
    "(status IS NULL OR status NOT IN ({known})"
    " OR typeof(graphspace) != 'text' OR typeof(graph) != 'text' OR typeof(name) != 'text'"
    " OR typeof(type) != 'text' OR typeof(callable) != 'text'"
    " OR typeof(progress) != 'integer' OR typeof(create_ms) != 'integer'"
    " OR typeof(update_ms) != 'integer' OR typeof(retries) != 'integer'"
    " OR typeof(max_retries) != 'integer' OR typeof(priority) != 'integer'"
    " OR typeof(run_after_ms) != 'integer' OR typeof(timeout) NOT IN ('real', 'integer', 'null')"
    " OR typeof(result) NOT IN ('text', 'null') OR typeof(server) NOT IN ('text', 'null')"
    " OR typeof(description) NOT IN ('text', 'null')"
    " OR typeof(progress_total) NOT IN ('integer', 'null')"
    " OR (input IS NOT NULL AND (typeof(input) != 'text' OR NOT sidetask_json(input))))"
)


def _text_or_empty(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int_or_zero(value: Any) -> int:
    return value if type(value) is int else 0


def row_to_event(row: Sequence[Any]) -> Event:
    status = None
    if row[6] is not None:
        try:
            status = Status(row[6])
        except ValueError:
            status = Status.UNKNOWN
    return Event(
        id=row[0],
        kind=EventKind(row[1]),
        task_id=row[2],
        graph=GraphRef(row[3], row[4]),
        task_type=row[5],
        status=status,
        data=bytes(row[7]),
    )


def _sql_error(exc: sqlite3.Error) -> SidetaskError:
    """A database fault as the error a client sees: retry later, nothing was written."""
    text = str(exc)
    if "full" in text:
        return ServiceUnavailable("The store cannot write: the disk or database is full", text)
    if "locked" in text or "busy" in text:
        return ServiceUnavailable("The store cannot write: the database is locked", text)
    return ServiceUnavailable("The store cannot write now", text)


class _Tx:
    """The writer thread's view of one transaction: SQL on the connection plus the events
    each change appends, so an event exists exactly when its change is committed.

    Event ids come from a counter the store keeps (one writer per file, so nobody else
    takes ids): the rows of one write go in with one executemany at its end, inside its
    savepoint. An id whose write or transaction rolled back is never used again, so ids
    only grow."""

    def __init__(self, conn: sqlite3.Connection, next_event_id: Iterator[int]) -> None:
        self.conn = conn
        self.now = clock.now_ms()
        self.events: list[Event] = []
        self._next_event_id = next_event_id

    def event(self, kind: EventKind, task: Task) -> None:
        deleted = kind is EventKind.DELETED
        if deleted:
            body: dict[str, Any] = {"id": task.id}
        else:
            body = task.to_api()
            if kind is not EventKind.CREATED:
                # SPEC 7: only task.created carries the input (it never changes), so a
                # large input is not stored, replayed and sent again with every step.
                body.pop("task_input", None)
        data = orjson.dumps(body)
        self.events.append(
            Event(
                next(self._next_event_id),
                kind,
                task.id,
                task.graph,
                task.type,
                None if deleted else task.status,
                data,
            )
        )

    def write_events(self, start: int = 0) -> None:
        """Inserts the events appended since index `start`, with one executemany."""
        if len(self.events) > start:
            now = self.now
            self.conn.executemany(
                "INSERT INTO events (id, task_id, graphspace, graph, kind, task_type, status, data,"
                " create_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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

    def select_task(self, task_id: int) -> Task | None:
        row = self.conn.execute(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,)
        ).fetchone()
        return None if row is None else row_to_task(row)

    def change(self, change: Change) -> Task:
        """Compare-and-set: the update applies only from an allowed status, else it raises
        and leaves the row as it was."""
        sql, params = _update_sql(change, self.now, [change.task_id])
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
        self.event(EventKind.STATUS, task)
        return task

    def change_many(self, changes: Sequence[Change]) -> list[Task | SidetaskError]:
        """Changes with the same target, fields and sources as one UPDATE; each change
        applies or is refused on its own, as `change` would."""
        if len(changes) == 1:
            return [self._try(changes[0])]
        first = changes[0]
        sql, params = _update_sql(first, self.now, [c.task_id for c in changes])
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
        for change in changes:
            task = tasks.get(change.task_id)
            if task is None:
                results.append(self._refusal(change))
            else:
                self.event(EventKind.STATUS, task)
                results.append(task)
        return results

    def _try(self, change: Change) -> Task | SidetaskError:
        try:
            return self.change(change)
        except SidetaskError as exc:
            return exc

    def _refusal(self, change: Change) -> SidetaskError:
        current = self.select_task(change.task_id)
        if current is None:
            return NotFound(f"Can't find task with id '{change.task_id}'")
        return TransitionRefused(
            f"Task '{change.task_id}' in status {current.status.name} can't become "
            f"{change.target.name}"
        )


def _update_sql(change: Change, now: int, task_ids: Sequence[int]) -> tuple[str, list[Any]]:
    """The compare-and-set UPDATE of `change`, applied to `task_ids`: the transition table
    is enforced in SQL (`status IN (…)`), whatever the caller checked before."""
    sources = allowed_sources(change.target)
    if change.sources is not None:
        sources = sources & change.sources
    fields = dict(change.fields or {})
    bad = set(fields) - CHANGEABLE_FIELDS
    if bad:
        raise ValueError(f"not changeable: {sorted(bad)}")
    assignments = "".join(f", {name} = ?" for name in fields)
    ids = "id = ?" if len(task_ids) == 1 else f"id IN ({', '.join('?' * len(task_ids))})"
    sql = (
        f"UPDATE tasks SET status = ?, update_ms = ?{assignments}"
        f" WHERE {ids} AND status IN ({', '.join('?' * len(sources)) or 'NULL'}) RETURNING {TASK_COLUMNS}"
    )
    params: list[Any] = [change.target.value, now, *fields.values(), *task_ids]
    params.extend(s.value for s in sorted(sources))
    return sql, params


Op = Callable[[_Tx], T]


class _Aborted(Exception):
    """A write whose error made SQLite roll back the whole transaction (a full disk does
    that): none of the batch is written. The write at `index` failed; the others are run
    again in the next transaction."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(str(error))
        self.index = index
        self.error = error


class SQLiteStore:
    """Task state in one SQLite file. Only this module and its siblings know SQL."""

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
        self._writer: aiosqlite.Connection | None = None
        self._readers: list[aiosqlite.Connection] = []
        self._next_reader = itertools.cycle(range(max(1, readers)))
        self._reader_count = max(1, readers)
        self._pending: list[tuple[Op[Any], asyncio.Future[Any]]] = []
        self._wakeup = asyncio.Event()
        self._write_loop: asyncio.Task[None] | None = None
        self._listeners: list[CommitListener] = []
        self._closed = False
        self._max_pages = 0
        self._event_ids: Iterator[int] = itertools.count(1)

    # --- lifecycle ---

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            self._writer = await aiosqlite.connect(self.path, isolation_level=None)
            if self._trace is not None:
                await self._writer.set_trace_callback(self._trace)
            await self._writer.execute("PRAGMA journal_mode = WAL")
            # FULL: a commit is on disk before the 201 goes out; group commit pays for it.
            await self._writer.execute("PRAGMA synchronous = FULL")
            await self._writer.execute("PRAGMA busy_timeout = 2000")
            async with self._writer.execute("PRAGMA max_page_count") as cursor:
                row = await cursor.fetchone()
            self._max_pages = int(row[0]) if row else 0  # SQLite's own cap, for limit_pages(None)
            await self._migrate(self._writer)
            # Ids after every id ever handed out, deleted (purged) ones included.
            async with self._writer.execute(
                "SELECT MAX(COALESCE((SELECT MAX(id) FROM events), 0),"
                " COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0))"
            ) as cursor:
                row = await cursor.fetchone()
            self._event_ids = itertools.count((int(row[0]) if row else 0) + 1)
            for _ in range(self._reader_count):
                reader = await aiosqlite.connect(self.path, isolation_level=None)
                if self._trace is not None:
                    await reader.set_trace_callback(self._trace)
                await reader.execute("PRAGMA query_only = ON")
                await reader.create_function("sidetask_json", 1, _is_json, deterministic=True)
                await reader.execute("PRAGMA busy_timeout = 2000")
                self._readers.append(reader)
        except BaseException:
            await self._close_connections()
            self._lock.release()
            raise
        self._write_loop = asyncio.create_task(self._run_writes(), name="sidetask-store-writer")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._write_loop is not None:
            self._wakeup.set()
            await self._write_loop
        await self._close_connections()
        self._lock.release()

    async def _close_connections(self) -> None:
        for conn in [*self._readers, self._writer]:
            if conn is not None:
                await conn.close()
        self._readers.clear()
        self._writer = None

    async def _migrate(self, conn: aiosqlite.Connection) -> None:
        async with conn.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        version = int(row[0]) if row else 0
        if version > len(MIGRATIONS):
            raise SidetaskError(
                f"Database {self.path} has schema version {version}, newer than this "
                f"sidetask knows ({len(MIGRATIONS)}); upgrade sidetask"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            log.info("applying schema migration %d to %s", number, self.path)
            # executescript commits first; the script and its version bump share a transaction
            await conn.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")

    def add_listener(self, listener: CommitListener) -> None:
        self._listeners.append(listener)

    async def limit_pages(self, pages: int | None) -> int:
        """Caps the database at `pages` pages (SQLite's max_page_count, on the writer), or
        lifts the cap with None; returns the cap in force. A fault-injection aid: with the
        cap at the current size, a write that needs a new page fails as on a full disk
        ("database or disk is full"), without filling a real disk. SQLite never sets the
        cap below the current size."""
        if self._writer is None:
            raise ServiceUnavailable("The store is not open")
        # Runs on the writer's thread between two transactions, never inside one.
        cursor = await self._writer.execute(
            f"PRAGMA max_page_count = {self._max_pages if pages is None else int(pages)}"
        )
        row = await cursor.fetchone()
        await cursor.close()
        return int(row[0]) if row else 0

    # --- group commit ---

    async def _write(self, op: Op[T]) -> T:
        if self._closed:
            raise ServiceUnavailable("The store is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((op, future))
        self._wakeup.set()
        # A caller that gives up (a dropped request) does not undo a write that may already be
        # in a transaction: the shield keeps the future alive to the end of that transaction.
        return await asyncio.shield(future)

    async def _run_writes(self) -> None:
        """Every write waiting when the previous transaction ended goes into the next one."""
        assert self._writer is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
                ops = [op for op, _ in batch]
                try:
                    # aiosqlite's _execute runs a callable on the connection's own thread: the
                    # whole batch in one hop, where its public API costs one hop per statement.
                    outcomes, events = await self._writer._execute(  # type: ignore[no-untyped-call]
                        self._commit_batch, ops
                    )
                except _Aborted as aborted:
                    # Only the write that failed fails; the rest go first into the next
                    # transaction. Each round drops one write, so this ends.
                    error = aborted.error
                    log.error("write failed, its transaction rolled back: %s", error)
                    _, future = batch.pop(aborted.index)
                    if not future.done():
                        future.set_exception(
                            _sql_error(error) if isinstance(error, sqlite3.Error) else error
                        )
                    self._pending[:0] = batch
                    continue
                except Exception as exc:  # the commit itself failed: nothing of it was written
                    error = _sql_error(exc) if isinstance(exc, sqlite3.Error) else exc
                    log.error("write transaction failed: %s", exc)
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
                if events:
                    for listener in self._listeners:
                        try:
                            listener(events)
                        except Exception:
                            log.exception("commit listener failed")
            if self._closed:
                return

    def _commit_batch(self, ops: list[Op[Any]]) -> tuple[list[tuple[bool, Any]], list[Event]]:
        """Runs in the writer's thread: one transaction, one savepoint per write so a refused
        write leaves nothing behind while the others commit."""
        assert self._writer is not None
        conn = self._writer._conn
        if conn.in_transaction:  # a failure that left one open must not block every later write
            conn.execute("ROLLBACK")
        tx = _Tx(conn, self._event_ids)
        outcomes: list[tuple[bool, Any]] = []
        conn.execute("BEGIN IMMEDIATE")
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
                    outcomes.append((False, _sql_error(exc) if isinstance(exc, sqlite3.Error) else exc))
                else:
                    conn.execute("RELEASE op")
                    outcomes.append((True, value))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                # The error that got here is the one to report, not one of the rollback's.
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        return outcomes, tx.events

    # --- writes ---

    async def insert(self, new: NewTask) -> tuple[Task, bool]:
        """A new task; with an Idempotency-Key already used in the graph, the task it made
        (a replay) when the request was the same, else Unprocessable. A task stored before
        requests were fingerprinted (schema 7) counts as the same request."""
        key = new.idempotency_key
        fingerprint = None if key is None else new.fingerprint()  # outside the transaction

        def op(tx: _Tx) -> tuple[Task, bool]:
            if key is not None:
                row = tx.conn.execute(
                    f"SELECT {TASK_COLUMNS}, idempotency_fingerprint FROM tasks"
                    " WHERE graphspace = ? AND graph = ? AND idempotency_key = ?",
                    (new.graph.graphspace, new.graph.graph, key),
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
                "INSERT INTO tasks (graphspace, graph, name, type, callable, status, create_ms,"
                " update_ms, input, max_retries, priority, timeout, run_after_ms, idempotency_key,"
                " idempotency_fingerprint)"
                f" VALUES (?, ?, ?, ?, ?, 'new', ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {TASK_COLUMNS}",
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
                    tx.now + new.delay_ms,
                    key,
                    fingerprint,
                ),
            ).fetchone()
            task = row_to_task(row)
            tx.event(EventKind.CREATED, task)
            return task, True

        return await self._write(op)

    async def transition(self, change: Change) -> Task:
        return await self._write(lambda tx: tx.change(change))

    async def transition_many(self, changes: Sequence[Change]) -> list[Task | Exception]:
        """Several changes in one write; each applies or is refused on its own."""

        # Changes of one shape (target, fields, sources) share one UPDATE: the supervisor's
        # steps move a whole claimed batch at a time.
        groups: dict[Any, list[int]] = {}
        for index, change in enumerate(changes):
            shape = (change.target, tuple((change.fields or {}).items()), change.sources)
            groups.setdefault(shape, []).append(index)

        def op(tx: _Tx) -> list[Task | Exception]:
            results: list[Task | Exception] = [RuntimeError("unset")] * len(changes)
            for indexes in groups.values():
                for index, result in zip(
                    indexes, tx.change_many([changes[i] for i in indexes]), strict=True
                ):
                    results[index] = result
            return results

        return await self._write(op)

    async def set_progress(
        self, progress: Mapping[int, int], totals: Mapping[int, int] | None = None
    ) -> None:
        """Coalesced progress of running jobs, and the totals they declared (a task not in
        `totals` keeps its own); a task no longer running is left alone."""
        items = [(task_id, value, (totals or {}).get(task_id)) for task_id, value in progress.items()]

        def op(tx: _Tx) -> None:
            for task_id, value, total in items:
                row = tx.conn.execute(
                    "UPDATE tasks SET progress = ?, progress_total = coalesce(?, progress_total),"
                    " update_ms = ? WHERE id = ? AND status IN ('running', 'cancelling')"
                    " AND (progress != ? OR coalesce(?, progress_total) IS NOT progress_total)"
                    f" RETURNING {TASK_COLUMNS}",
                    (value, total, tx.now, task_id, value, total),
                ).fetchone()
                if row is not None:
                    tx.event(EventKind.PROGRESS, row_to_task(row))

        await self._write(op)

    async def delete(
        self, graph: GraphRef, task_id: int, sources: frozenset[Status] | None
    ) -> Task:
        """Removes the task, only from one of `sources` (None: from any status); the caller
        decides which (service.policy.delete_sources). A damaged row is in none of them."""

        def op(tx: _Tx) -> Task:
            task = tx.select_task(task_id)
            if task is None or task.graph != graph:
                raise NotFound(f"Can't find task with id '{task_id}'")
            sql = "DELETE FROM tasks WHERE id = ?"
            params: list[Any] = [task_id]
            if sources is not None:
                if task.status not in sources:
                    raise TransitionRefused(
                        f"Task '{task_id}' in status {task.status.name} can't be deleted"
                    )
                # the compare-and-set in SQL too, as every status change is
                wanted = sorted(s.value for s in sources)
                sql += f" AND status IN ({', '.join('?' * len(wanted))})"
                params.extend(wanted)
            tx.conn.execute(sql, params)
            tx.event(EventKind.DELETED, task)
            return task

        return await self._write(op)

    async def claim(
        self, limit: int, now_ms: int, type_room: Mapping[str, int], server: str | None = None
    ) -> list[Task]:
        """Takes up to `limit` waiting tasks that are due, highest priority first, and at most
        `type_room[t]` of a type `t` that has a limit: a new task goes `scheduling`, a restoring
        one (resumed, retried, recovered) straight to `queued`, on `server` (its task_server:
        a new one gets it when scheduled; a restoring one skips that step, and may have been
        paused before any server took it, or run elsewhere before)."""
        on_server = None if server is None else {"server": server}

        def op(tx: _Tx) -> list[Task]:
            # copied here: an op may run again after a rolled-back transaction
            room = dict(type_room)
            claimed: list[Task] = []
            #: waiting rows that read as `unknown` (damaged): never claimed
            damaged: list[int] = []
            # A type that runs out of room is excluded and the rest asked for again, so tasks
            # of other types behind it are still claimed: at most one query per limited type
            # (and one per batch of damaged rows found on the way).
            while len(claimed) < limit:
                excluded = sorted(name for name, left in room.items() if left <= 0)
                # The partial index holds only waiting tasks, in claim order: the scan stops
                # after `limit` due ones instead of sorting every waiting task.
                sql = (
                    "SELECT id, status, type FROM tasks INDEXED BY tasks_waiting"
                    " WHERE status IN ('new', 'restoring') AND run_after_ms <= ?"
                )
                params: list[Any] = [now_ms]
                if excluded:
                    sql += f" AND type NOT IN ({', '.join('?' * len(excluded))})"
                    params.extend(excluded)
                if damaged:
                    sql += f" AND id NOT IN ({', '.join('?' * len(damaged))})"
                    params.extend(damaged)
                sql += " ORDER BY priority DESC, id LIMIT ?"
                params.append(limit - len(claimed))
                found = tx.conn.execute(sql, params).fetchall()
                again = False
                taken: list[tuple[int, str]] = []
                for task_id, _, type_name in found:
                    if type_name in room and room[type_name] <= 0:
                        again = True
                        break
                    if type_name in room:
                        room[type_name] -= 1
                    taken.append((task_id, type_name))
                # one UPDATE for the new ones, one for the restoring ones
                statuses = {task_id: status for task_id, status, _ in found}
                results: dict[int, Task | SidetaskError] = {}
                steps = (
                    (Status.SCHEDULING, Status.NEW, None),
                    (Status.QUEUED, Status.RESTORING, on_server),
                )
                for target, was, fields in steps:
                    ids = [task_id for task_id, _ in taken if statuses[task_id] == was]
                    if ids:
                        changes = [Change(i, target, fields) for i in ids]
                        results.update(zip(ids, tx.change_many(changes), strict=True))
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
            return claimed

        return await self._write(op)

    async def recover(self, decide: Decision, keep_types: Iterable[str] = ()) -> Recovery:
        """SPEC 9: each task a dead process left mid-way (in an interruptible status) gets the
        change `decide` gives it (service.policy.after_interruption). Tasks of `keep_types`
        (external workers' types) that a worker holds under a lease were not running here and
        are left to their leases; one with no lease is recovered like the others. A damaged
        row (read as `unknown`) is left as it is, and counted."""
        kept = sorted(set(keep_types))

        def op(tx: _Tx) -> Recovery:
            statuses = sorted(s.value for s in INTERRUPTIBLE_STATUSES)
            sql = f"SELECT {TASK_COLUMNS} FROM tasks WHERE status IN ({', '.join('?' * len(statuses))})"
            if kept:
                sql += (
                    f" AND (type NOT IN ({', '.join('?' * len(kept))})"
                    " OR lease_expires_ms IS NULL)"
                )
            rows = tx.conn.execute(sql + " ORDER BY id", [*statuses, *kept]).fetchall()
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

    async def set_process_group(self, task_id: int, group: int | None, token: str | None) -> None:
        """Stores (or clears) the process group a command job runs in; not an event."""

        def op(tx: _Tx) -> None:
            tx.conn.execute(
                "UPDATE tasks SET process_group = ?, process_token = ? WHERE id = ?",
                (group, None if group is None else token, task_id),
            )

        await self._write(op)

    # --- external workers' leases ---

    async def lease(
        self, worker: str, types: Sequence[str], now_ms: int, token: str, expires_ms: int
    ) -> tuple[Lease | None, int | None]:
        """Claims the first due task of `types` for `worker`: `new` or `restoring` goes
        `scheduling` -> `scheduled` (task_server: the worker) under a new lease. When none is
        due: None, and the time the next waiting one of those types comes due."""
        wanted = sorted(set(types))
        marks = ", ".join("?" * len(wanted))

        def op(tx: _Tx) -> tuple[Lease | None, int | None]:
            damaged: list[int] = []  # waiting rows that read as `unknown`: never handed out
            while True:
                skip = f" AND id NOT IN ({', '.join('?' * len(damaged))})" if damaged else ""
                row = tx.conn.execute(
                    "SELECT id FROM tasks INDEXED BY tasks_waiting"
                    f" WHERE status IN ('new', 'restoring') AND run_after_ms <= ? AND type IN ({marks})"
                    f"{skip} ORDER BY priority DESC, id LIMIT 1",
                    [now_ms, *wanted, *damaged],
                ).fetchone()
                if row is None:
                    (next_due,) = tx.conn.execute(
                        "SELECT MIN(run_after_ms) FROM tasks INDEXED BY tasks_waiting"
                        f" WHERE status IN ('new', 'restoring') AND type IN ({marks}){skip}",
                        [*wanted, *damaged],
                    ).fetchone()
                    return None, None if next_due is None else int(next_due)
                (task_id,) = row
                try:
                    tx.change(Change(task_id, Status.SCHEDULING))
                except TransitionRefused:
                    damaged.append(task_id)
                    continue
                break
            task = tx.change(Change(task_id, Status.SCHEDULED, {"server": worker}))
            tx.conn.execute(
                "UPDATE tasks SET lease = ?, lease_expires_ms = ? WHERE id = ?",
                (token, expires_ms, task_id),
            )
            return Lease(task, token, expires_ms), None

        return await self._write(op)

    def _leased(self, tx: _Tx, graph: GraphRef, task_id: int, token: str) -> tuple[Task, int | None]:
        """The task `token` holds (and its lease's expiry), or the error that says why not."""
        row = tx.conn.execute(
            f"SELECT {TASK_COLUMNS}, lease, lease_expires_ms FROM tasks WHERE id = ?", (task_id,)
        ).fetchone()
        if row is None or row_to_task(row).graph != graph:
            raise NotFound(f"Can't find task with id '{task_id}'")
        task = row_to_task(row)
        if row[-2] is None or row[-2] != token:
            raise Conflict(
                f"Task '{task_id}' is not held by this lease: it was never claimed with it, "
                "or its lease expired and the task was given back"
            )
        return task, row[-1]

    @staticmethod
    def _check_live(task: Task, expires_ms: int | None, now_ms: int) -> None:
        if task.status not in LEASED_STATUSES:
            raise Conflict(
                f"Task '{task.id}' is {task.status.name}, it is no longer held by a worker"
            )
        if expires_ms is None or expires_ms <= now_ms:
            raise Conflict(f"The lease on task '{task.id}' has expired; the task will be given back")

    @staticmethod
    def _start_leased(tx: _Tx, task: Task, fields: Mapping[str, Any]) -> Task:
        """A worker's first report: it confirmed (`queued`) and runs it (`running`)."""
        only = frozenset({Status.SCHEDULED})
        tx.change(Change(task.id, Status.QUEUED, None, only))
        return tx.change(Change(task.id, Status.RUNNING, fields, frozenset({Status.QUEUED})))

    async def report(
        self, graph: GraphRef, task_id: int, token: str, progress: int | None, expires_ms: int
    ) -> Lease:
        """A lease holder's progress: the first report starts the task; each one extends the
        lease to `expires_ms`. A task cancelled meanwhile is returned as it is, unchanged."""

        def op(tx: _Tx) -> Lease:
            task, current_expiry = self._leased(tx, graph, task_id, token)
            if task.status is Status.CANCELLED:
                return Lease(task, token, current_expiry or 0)
            self._check_live(task, current_expiry, tx.now)
            fields = {} if progress is None else {"progress": progress}
            if task.status is Status.SCHEDULED:
                task = self._start_leased(tx, task, fields)
            elif progress is not None and progress != task.progress:
                row = tx.conn.execute(
                    f"UPDATE tasks SET progress = ?, update_ms = ? WHERE id = ? RETURNING {TASK_COLUMNS}",
                    (progress, tx.now, task_id),
                ).fetchone()
                task = row_to_task(row)
                tx.event(EventKind.PROGRESS, task)
            tx.conn.execute(
                "UPDATE tasks SET lease_expires_ms = ? WHERE id = ?", (expires_ms, task_id)
            )
            return Lease(task, token, expires_ms)

        return await self._write(op)

    async def settle_lease(
        self, graph: GraphRef, task_id: int, token: str, progress: int | None, decide: Decision
    ) -> Task:
        """A lease holder's last report: `decide` gives the end (success, a retry, failed);
        a cancel requested meanwhile wins and the task ends `cancelled`. The lease ends."""

        def op(tx: _Tx) -> Task:
            task, current_expiry = self._leased(tx, graph, task_id, token)
            self._check_live(task, current_expiry, tx.now)
            fields: dict[str, Any] = {} if progress is None else {"progress": progress}
            if task.status is Status.SCHEDULED:
                task = self._start_leased(tx, task, fields)
            if task.status is Status.CANCELLING:
                task = tx.change(Change(task_id, Status.CANCELLED, fields))
            else:
                change = decide(task)
                task = tx.change(
                    Change(task_id, change.target, {**fields, **(change.fields or {})}, change.sources)
                )
            tx.conn.execute("UPDATE tasks SET lease_expires_ms = NULL WHERE id = ?", (task_id,))
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
        leased = sorted(s.value for s in LEASED_STATUSES)
        in_leased = f"status IN ({', '.join('?' * len(leased))})"
        of_types = f"type IN ({', '.join('?' * len(wanted))})"

        def op(tx: _Tx) -> list[Task]:
            expired = tx.conn.execute(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE lease_expires_ms <= ?"
                f" AND {in_leased} AND {of_types} ORDER BY lease_expires_ms",
                [now_ms, *leased, *wanted],
            ).fetchall()
            # read through tasks_by_status_type: the tasks of these types in these statuses
            orphans = tx.conn.execute(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE {in_leased} AND {of_types}"
                " AND lease_expires_ms IS NULL ORDER BY id",
                [*leased, *wanted],
            ).fetchall()
            changed = []
            for rows, decision in ((expired, decide), (orphans, unleased or decide)):
                for row in rows:
                    task = row_to_task(row)
                    if task.status is Status.UNKNOWN:  # damaged: its lease is left as it is
                        continue
                    changed.append(tx.change(decision(task)))
                    tx.conn.execute(
                        "UPDATE tasks SET lease = NULL, lease_expires_ms = NULL WHERE id = ?",
                        (task.id,),
                    )
            return changed

        return await self._write(op)

    async def renew_leases(self, types: Sequence[str], until_ms: int) -> int:
        """Every live lease on tasks of `types` lasts at least until `until_ms`: a restart of
        the service does not cost the workers that kept working their tasks."""
        wanted = sorted(set(types))
        leased = sorted(s.value for s in LEASED_STATUSES)

        def op(tx: _Tx) -> int:
            return tx.conn.execute(
                "UPDATE tasks SET lease_expires_ms = MAX(lease_expires_ms, ?)"
                f" WHERE lease_expires_ms IS NOT NULL AND status IN ({', '.join('?' * len(leased))})"
                f" AND type IN ({', '.join('?' * len(wanted))})",
                [until_ms, *leased, *wanted],
            ).rowcount

        return await self._write(op)

    async def purge(self, tasks_before_ms: int, events_before_ms: int) -> tuple[int, int]:
        """Completed tasks and events older than the retention, a bounded chunk per call."""
        def op(tx: _Tx) -> tuple[int, int]:
            # The partial index of completed tasks by age: the IN list must read as the
            # index's does, and INDEXED BY keeps the planner off tasks_by_status_type, which
            # would walk every completed task when none is old enough.
            rows = tx.conn.execute(
                f"SELECT {TASK_COLUMNS} FROM tasks INDEXED BY tasks_completed_by_update"
                f" WHERE status IN {COMPLETED_SQL} AND update_ms < ?"
                " LIMIT ?",
                (tasks_before_ms, PURGE_CHUNK),
            ).fetchall()
            purged = 0
            for row in rows:
                task = row_to_task(row)
                if task.status is Status.UNKNOWN:  # damaged: kept in view, not purged
                    continue
                tx.conn.execute("DELETE FROM tasks WHERE id = ?", (task.id,))
                tx.event(EventKind.DELETED, task)
                purged += 1
            # Event ids grow with time, so the oldest events are the first ids.
            events = tx.conn.execute(
                "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT ?)"
                " AND create_ms < ?",
                (PURGE_CHUNK, events_before_ms),
            ).rowcount
            return purged, events

        return await self._write(op)

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
        wrapped = f"SELECT json_group_array(json_array({TASK_COLUMNS})) FROM ({sql})"
        try:
            rows = await self._fetch(wrapped, params)
            decoded = orjson.loads(rows[0][0])
        except (ServiceUnavailable, orjson.JSONDecodeError):
            decoded = await self._fetch(sql, params)
        tasks = [row_to_task(row) for row in decoded]
        tasks.sort(key=lambda task: task.id, reverse=descending)
        return tasks

    async def process_groups(self) -> list[ProcessGroup]:
        """The process groups stored for command jobs (at start: what a crash may have left)."""
        rows = await self._fetch(
            "SELECT id, process_group, process_token FROM tasks WHERE process_group IS NOT NULL", ()
        )
        return [ProcessGroup(int(r[0]), int(r[1]), r[2]) for r in rows]

    async def get(self, graph: GraphRef | None, task_id: int) -> Task | None:
        rows = await self._fetch(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,))
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
    ) -> list[Task]:
        sql, params, wanted = self._list_query(graph, status, after_id, task_type, descending)
        if limit is not None:
            sql += " LIMIT ?"
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
    ) -> AsyncGenerator[list[Task], None]:
        """The tasks `list_tasks` gives, in lists of at most LIST_BATCH small tasks read
        by one query; a task larger than LIST_ROW_CHARS (input and result) is read on its
        own when its turn comes and comes alone, so a list of large tasks holds one."""
        sql, params, wanted = self._list_query(graph, status, after_id, task_type, descending)
        sql += " LIMIT ?"
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
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE graphspace = ? AND graph = ?"
                f" AND id IN ({', '.join('?' * len(chunk))}) ORDER BY id",
                [graph.graphspace, graph.graph, *chunk],
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
        wrapped = (
            "SELECT json_group_array(CASE WHEN COALESCE(length(input), 0)"
            f" + COALESCE(length(result), 0) > ? THEN id ELSE json_array({TASK_COLUMNS}) END)"
            f" FROM ({sql})"
        )
        try:
            rows = await self._fetch(wrapped, [LIST_ROW_CHARS, *params])
            decoded = orjson.loads(rows[0][0])
        except (ServiceUnavailable, orjson.JSONDecodeError):
            # a damaged row (a BLOB where text belongs): the batch the usual way, by id
            decoded = [row[0] for row in await self._fetch(f"SELECT id FROM ({sql})", params)]
        items: list[Task | int] = [
            row if isinstance(row, int) else row_to_task(row) for row in decoded
        ]
        items.sort(key=lambda item: item if isinstance(item, int) else item.id, reverse=descending)
        return items

    def _list_query(
        self,
        graph: GraphRef,
        status: Status | frozenset[Status] | None,
        after_id: int,
        task_type: str | None,
        descending: bool,
    ) -> tuple[str, list[Any], frozenset[Status] | None]:
        """A list's query without its LIMIT: the SQL, its parameters (the third is the id
        it goes on from) and the statuses it keeps."""
        wanted = frozenset({status}) if isinstance(status, Status) else status
        # Several stored statuses (a dashboard's group): left to itself, SQLite walks the
        # graph's tasks in id order looking for them, every one of 200,000 when none is in
        # them (130 ms); by the status index it reads each status's range, up to the limit
        # each (0.1 ms). One status finds that index by itself; unknown cannot use it.
        several = wanted is not None and len(wanted) > 1 and Status.UNKNOWN not in wanted
        source = "tasks INDEXED BY tasks_by_graph_status" if several else "tasks"
        # Descending, `after_id` is the id the page goes on below (0: from the newest); the
        # same indexes serve both orders, read backwards.
        if descending:
            sql = f"SELECT {TASK_COLUMNS} FROM {source} WHERE graphspace = ? AND graph = ? AND id < ?"
            bound = MAX_ID if after_id == 0 else after_id
        else:
            sql = f"SELECT {TASK_COLUMNS} FROM {source} WHERE graphspace = ? AND graph = ? AND id > ?"
            bound = after_id
        params: list[Any] = [graph.graphspace, graph.graph, bound]
        if task_type is not None:
            sql += " AND type = ?"
            params.append(task_type)
        if wanted is not None:
            # a stored status, or any row that reads as `unknown` (damaged, or a status this
            # version does not know)
            terms = []
            stored = sorted(s.value for s in wanted if s is not Status.UNKNOWN)
            if len(stored) == 1:
                terms.append("status = ?")
            elif stored:
                terms.append(f"status IN ({', '.join('?' * len(stored))})")
            params.extend(stored)
            if Status.UNKNOWN in wanted:
                known = [s.value for s in Status if s is not Status.UNKNOWN]
                terms.append(UNINTERPRETABLE.format(known=", ".join("?" * len(known))))
                params.extend(known)
            sql += " AND " + (terms[0] if len(terms) == 1 else f"({' OR '.join(terms)})")
        sql += " ORDER BY id DESC" if descending else " ORDER BY id"
        return sql, params, wanted

    async def list_ids(self, graph: GraphRef, ids: Sequence[int]) -> list[Task]:
        unique = sorted(set(ids))
        tasks: list[Task] = []
        # SQLite caps the number of parameters; a long id list is read in chunks.
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            rows = await self._fetch(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE graphspace = ? AND graph = ?"
                f" AND id IN ({', '.join('?' * len(chunk))}) ORDER BY id",
                [graph.graphspace, graph.graph, *chunk],
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
        where = "id > ?"
        params: list[Any] = [after_id]
        if task_id is not None:
            where += " AND task_id = ?"
            params.append(task_id)
        if graph is not None:
            where += " AND graphspace = ? AND graph = ?"
            params.extend((graph.graphspace, graph.graph))
        if max_bytes is None:
            sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE {where} ORDER BY id LIMIT ?"
            return [row_to_event(row) for row in await self._fetch(sql, [*params, limit])]
        # The page's last id: a running sum of the sizes, which SQLite reads from each row's
        # header (length() of a BLOB does not load it); the scan stops at `limit` rows.
        sizes = (
            "SELECT id, length(data) AS size, SUM(length(data)) OVER"
            f" (ORDER BY id ROWS UNBOUNDED PRECEDING) AS upto FROM events WHERE {where}"
            " ORDER BY id LIMIT ?"
        )
        sql = (
            f"SELECT {EVENT_COLUMNS} FROM events WHERE {where} AND id <="
            f" (SELECT MAX(id) FROM ({sizes}) WHERE upto - size < ?) ORDER BY id"
        )
        rows = await self._fetch(sql, [*params, *params, limit, max_bytes])
        return [row_to_event(row) for row in rows]

    async def last_event_id(self) -> int:
        rows = await self._fetch("SELECT COALESCE(MAX(id), 0) FROM events", ())
        return int(rows[0][0])

    async def count_by_status(self) -> dict[tuple[str, str], int]:
        """Tasks per (status, type): what /metrics and the dashboard's counters show."""
        rows = await self._fetch(
            "SELECT status, type, COUNT(*) FROM tasks GROUP BY status, type", ()
        )
        counts: dict[tuple[str, str], int] = {}
        for status, task_type, count in rows:
            try:
                name = Status(status).value
            except ValueError:
                name = Status.UNKNOWN.value
            counts[(name, task_type)] = counts.get((name, task_type), 0) + int(count)
        return counts

    async def count_statuses(self, graph: GraphRef) -> dict[Status, int]:
        """A graph's tasks per status, every status present (the dashboard's counters).
        Reads only the index tasks_by_graph_status."""
        rows = await self._fetch(
            "SELECT status, COUNT(*) FROM tasks WHERE graphspace = ? AND graph = ? GROUP BY status",
            (graph.graphspace, graph.graph),
        )
        counts = dict.fromkeys(Status, 0)
        for status, count in rows:
            try:
                key = Status(status)
            except ValueError:  # written by a newer version, or damaged: shown, not hidden
                key = Status.UNKNOWN
            counts[key] += int(count)
        return counts
