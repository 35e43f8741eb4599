"""`sidetask copy-db`: a single node's history (a SQLite file) moved into a PostgreSQL schema
for several replicas, task ids and event ids kept, so clients' task ids and streams'
Last-Event-IDs go on meaning the same.

The file is opened through the SQLite store (so it is migrated first, and refused while a
service has it open); the schema is migrated and must hold no task and no event yet. Rows
go in with COPY, in one transaction: a copy that fails leaves the schema empty. Then the id
sequences (tasks, events, log lines, deliveries) are moved past the copied ids.

What moves: tasks, events, each task's attempts, log lines and counts, dependencies,
callback URL and webhook deliveries (pending ones with their ids, tries, answers and due
times, so the new database's deliverers go on with them), every schedule (its definition,
next fire time, pause and last fire; a firing lease of the file's process is dropped), the
paused job types, and each rate-limited type's count in its current window."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg

from ..errors import SidetaskError
from .postgres import PostgresStore, connect, migrate

#: the columns both stores have, in this order
TASK_COLUMNS = (
    "id", "graphspace", "graph", "name", "type", "callable", "status", "progress",
    "create_ms", "update_ms", "result", "input", "retries", "max_retries", "priority",
    "timeout", "run_after_ms", "server", "description", "progress_total",
    "idempotency_key", "idempotency_fingerprint", "lease", "lease_expires_ms",
    "process_group", "process_token", "traceparent", "tracestate", "dependencies", "waiting_on",
    "dependants", "schedule", "schedule_fire_ms",
)  # fmt: skip
EVENT_COLUMNS = (
    "id", "task_id", "graphspace", "graph", "kind", "task_type", "status", "data", "create_ms",
)  # fmt: skip
#: rows read from the file per COPY batch
BATCH = 10_000


#: the columns of an attempt both schemas have
ATTEMPT_COLUMNS = (
    "task_id", "number", "server", "replica", "start_ms", "end_ms", "outcome", "error_type",
    "error_message", "traceback", "checkpoint",
)  # fmt: skip


#: a task's log (schema 10): its lines, and its count with the dropped ones
LOG_TABLES = (
    ("log_lines", ("id", "task_id", "time_ms", "level", "attempt", "text"), "id"),
    ("log_counts", ("task_id", "lines", "dropped"), "task_id"),
)


#: a webhook delivery's columns, its id, tries (attempts), due time and claim kept
DELIVERY_COLUMNS = (
    "id", "uid", "task_id", "hook", "url", "status", "body", "state", "attempts", "create_ms",
    "next_ms", "lease",
)  # fmt: skip
#: a schedule's columns but its firing lease (lease_owner, lease_until_ms)
SCHEDULE_COLUMNS = (
    "graphspace", "graph", "name", "definition", "paused", "next_fire_ms", "anchor_ms",
    "source", "create_ms", "update_ms", "last_fire_ms", "last_task_id",
)  # fmt: skip
#: the webhooks', schedules', paused types' and rate limits' tables, copied after the
#: tasks: each one's name, the columns both schemas have, the SELECT's filter (rows of a
#: task the file no longer holds stay behind) and its order
EXTRA_TABLES: tuple[tuple[str, tuple[str, ...], str, str], ...] = (
    ("callbacks", ("task_id", "url"), "task_id IN (SELECT id FROM tasks)", "task_id"),
    ("deliveries", DELIVERY_COLUMNS, "task_id IN (SELECT id FROM tasks)", "id"),
    (
        "delivery_answers",
        ("delivery_id", "number", "time_ms", "code", "error", "duration_ms"),
        "delivery_id IN (SELECT id FROM deliveries WHERE task_id IN (SELECT id FROM tasks))",
        "delivery_id, number",
    ),
    ("schedules", SCHEDULE_COLUMNS, "1", "graphspace, graph, name"),
    ("paused_types", ("type", "since_ms"), "1", "type"),
    ("type_rates", ("type", "window_ms", "count"), "1", "type"),
)


class CopyRefused(SidetaskError):
    status = 400


def _batches(conn: sqlite3.Connection, sql: str) -> Iterator[list[tuple[Any, ...]]]:
    cursor = conn.execute(sql)
    while rows := cursor.fetchmany(BATCH):
        yield rows


def _typed(table: str, row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A SQLite row as PostgreSQL's typed columns take it: event data as bytes, timeouts
    as floats; a value of the wrong type (a damaged row) is refused, with its id."""
    values = list(row)
    if table == "events":
        data = values[7]
        values[7] = data.encode() if isinstance(data, str) else bytes(data)
    else:
        if values[15] is not None:
            values[15] = float(values[15])
        for index in (0, 7, 8, 9, 12, 13, 14, 16, 19, 23, 24, 29, 30):
            if values[index] is not None and type(values[index]) is not int:
                raise CopyRefused(
                    f"Task {values[0]} in the file has {TASK_COLUMNS[index]} = "
                    f"{values[index]!r}, not a number: mend or delete it, then copy again"
                )
    return tuple(values)


def _typed_extra(table: str, row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row of EXTRA_TABLES as PostgreSQL's columns take it: a delivery's body as bytes,
    a schedule's pause as a boolean."""
    if table == "deliveries":
        body = row[6]
        return (*row[:6], body.encode() if isinstance(body, str) else bytes(body), *row[7:])
    if table == "schedules":
        return (*row[:4], bool(row[4]), *row[5:])
    return row


async def _copy_extra(conn: sqlite3.Connection, pg: Any, schema: str) -> None:
    for table, columns, where, order in EXTRA_TABLES:
        sql = f"SELECT {', '.join(columns)} FROM {table} WHERE {where} ORDER BY {order}"
        for rows in _batches(conn, sql):
            records = [_typed_extra(table, row) for row in rows]
            try:
                await pg.copy_records_to_table(
                    table, records=records, columns=columns, schema_name=schema
                )
            except (asyncpg.PostgresError, asyncpg.DataError) as exc:
                raise CopyRefused(
                    f"A row of {table} ({', '.join(map(str, records[0][:3]))} ...) cannot be "
                    f"copied: {exc}; nothing was copied"
                ) from exc
    # the next delivery ids come after every one the file gave out
    (last_delivery,) = conn.execute(
        "SELECT MAX(COALESCE((SELECT MAX(id) FROM deliveries), 0),"
        " COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'deliveries'), 0))"
    ).fetchone()
    if last_delivery:
        await pg.execute(
            "SELECT setval(pg_get_serial_sequence('deliveries', 'id'), $1)", last_delivery
        )


async def copy_db(source: str | Path, target: str, schema: str = "sidetask") -> tuple[int, int]:
    """Copies every task and event of the SQLite file `source` into `schema` of the
    PostgreSQL database `target`; returns how many tasks and events it copied."""
    from .sqlite import SQLiteStore

    PostgresStore(target, schema=schema)  # checks the schema's name
    path = Path(source)
    if not await asyncio.to_thread(path.is_file):  # opening it would make an empty one
        raise CopyRefused(f"No SQLite database at {path}")
    store = SQLiteStore(path)
    await store.open()  # migrated, and locked: no service may write it meanwhile
    try:
        pg = await connect(target, schema)
        try:
            await migrate(pg, schema)
            return await _copy(path, pg, schema)
        finally:
            await pg.close()
    finally:
        await store.close()


async def _copy(path: Path, pg: Any, schema: str) -> tuple[int, int]:
    if await pg.fetchval("SELECT EXISTS (SELECT 1 FROM tasks) OR EXISTS (SELECT 1 FROM events)"):
        raise CopyRefused(
            "The PostgreSQL schema already holds tasks or events: copy into an empty one "
            "(another db_schema, or a new database)"
        )
    host = socket.gethostname()  # the file's command process groups ran on this machine
    counts = {"tasks": 0, "events": 0}
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        async with pg.transaction():
            for table, columns in (("tasks", TASK_COLUMNS), ("events", EVENT_COLUMNS)):
                sql = f"SELECT {', '.join(columns)} FROM {table} ORDER BY id"
                for rows in _batches(conn, sql):
                    records = [_typed(table, row) for row in rows]
                    if table == "tasks":
                        records = [(*r, None if r[24] is None else host) for r in records]
                    try:
                        await pg.copy_records_to_table(
                            table,
                            records=records,
                            columns=[*columns, "process_host"] if table == "tasks" else columns,
                            schema_name=schema,
                        )
                    except (asyncpg.PostgresError, asyncpg.DataError) as exc:
                        raise CopyRefused(
                            f"A row of {table} (ids {records[0][0]} to {records[-1][0]}) "
                            f"cannot be copied: {exc}; nothing was copied"
                        ) from exc
                    counts[table] += len(records)
            # each task's attempts with it (schema 9); `owner` stays NULL: no process
            # of the new database started them
            sql = (
                f"SELECT {', '.join(ATTEMPT_COLUMNS)} FROM attempts"
                " WHERE task_id IN (SELECT id FROM tasks) ORDER BY task_id, number"
            )
            for rows in _batches(conn, sql):
                try:
                    await pg.copy_records_to_table(
                        "attempts", records=rows, columns=ATTEMPT_COLUMNS, schema_name=schema
                    )
                except (asyncpg.PostgresError, asyncpg.DataError) as exc:
                    raise CopyRefused(
                        f"An attempt of task {rows[0][0]} cannot be copied: {exc}; nothing "
                        "was copied"
                    ) from exc
            # each task's log with it (schema 10), its line ids kept (after= goes on)
            for log_table, log_columns, order in LOG_TABLES:
                sql = (
                    f"SELECT {', '.join(log_columns)} FROM {log_table}"
                    f" WHERE task_id IN (SELECT id FROM tasks) ORDER BY {order}"
                )
                for rows in _batches(conn, sql):
                    try:
                        await pg.copy_records_to_table(
                            log_table, records=rows, columns=log_columns, schema_name=schema
                        )
                    except (asyncpg.PostgresError, asyncpg.DataError) as exc:
                        raise CopyRefused(
                            f"A log line of task {rows[0][1 if log_table == 'log_lines' else 0]} "
                            f"cannot be copied: {exc}; nothing was copied"
                        ) from exc
            # the tasks' dependencies (README, "Dependencies"): each edge of a task copied
            sql = (
                "SELECT task_id, depends_on FROM dependencies"
                " WHERE task_id IN (SELECT id FROM tasks) ORDER BY depends_on, task_id"
            )
            for rows in _batches(conn, sql):
                await pg.copy_records_to_table(
                    "dependencies",
                    records=rows,
                    columns=("task_id", "depends_on"),
                    schema_name=schema,
                )
            # webhooks' callbacks and deliveries, schedules, paused types, rate windows
            await _copy_extra(conn, pg, schema)
            (last_line,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM log_lines").fetchone()
            if last_line:
                await pg.execute(
                    "SELECT setval(pg_get_serial_sequence('log_lines', 'id'), $1)", last_line
                )
            # the next ids come after the copied ones (and after ids SQLite gave out and
            # deleted: a purged task's id is never used again)
            (last_task,) = conn.execute(
                "SELECT MAX(COALESCE((SELECT MAX(id) FROM tasks), 0),"
                " COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'tasks'), 0))"
            ).fetchone()
            (last_event,) = conn.execute(
                "SELECT MAX(COALESCE((SELECT MAX(id) FROM events), 0),"
                " COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0))"
            ).fetchone()
            if last_task:
                await pg.execute(
                    "SELECT setval(pg_get_serial_sequence('tasks', 'id'), $1)", last_task
                )
            if last_event:
                await pg.execute("SELECT setval('events_id_seq', $1)", last_event)
    return counts["tasks"], counts["events"]
