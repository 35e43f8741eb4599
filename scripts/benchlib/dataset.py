"""A database with many stored tasks, built quickly.

The service creates the schema (a server is started once on the new file, so every
migration runs, and one real echo task is run through it); then the remaining tasks are
inserted with sqlite3 directly, in one transaction with executemany, each row a copy of
that real task with its status, times and result changed. Mix: 90% success, 5% failed,
4% cancelled, 1% pending (paused: never run), created over the last 12 hours (well
inside the retention, so no purge starts). Only tasks are inserted, not their events.
The indexes are built after the rows, so they are more compact than a file grown over
months would have.

`build_waiting` makes the backlog row's file the same way: one task submitted through the
service with a delay (so its row and its `task.created` event are the service's own),
then copied as many times as asked with ids of their own: tasks that wait, untouched by
the measurement, for as long as the delay.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .server import BenchServer

MIX = (("success", 0.90), ("failed", 0.05), ("cancelled", 0.04), ("pending", 0.01))
SPAN_MS = 12 * 3600 * 1000


def _template(db: Path, query: str = "", wait_for: str | None = "success") -> None:
    """Starts the service on `db` (migrations run), submits one echo task (with `query`,
    e.g. `?delay=86400`), waits until it is `wait_for` (None: only its 201), stops."""
    with BenchServer(db=db) as server:
        request = urllib.request.Request(
            f"{server.url}/graphs/hugegraph/jobs/echo{query}",
            data=b'{"bench":1}',
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            task_id = json.loads(response.read())["task_id"]
        if wait_for is None:
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with urllib.request.urlopen(
                f"{server.url}/graphs/hugegraph/tasks/{task_id}", timeout=10
            ) as response:
                if json.loads(response.read())["task_status"] == wait_for:
                    return
            time.sleep(0.02)
        raise RuntimeError(f"the template task did not become {wait_for}")


def _insert_rebuilding_indexes(
    conn: sqlite3.Connection, table: str, names: list[str], rows: Iterable[Sequence[Any]]
) -> None:
    """Inserts `rows` into `table` in one transaction, its indexes dropped first and made
    again from their own SQL after (quicker than updating them row by row, same schema)."""
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
        (table,),
    ).fetchall()
    conn.execute("BEGIN")
    for name, _ in indexes:
        conn.execute(f'DROP INDEX "{name}"')
    conn.executemany(
        f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})", rows
    )
    for _, sql in indexes:
        conn.execute(sql)
    conn.execute("COMMIT")


def _scratch(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")  # a scratch file: nothing to lose
    conn.execute("PRAGMA cache_size = -262144")
    return conn


def _row(conn: sqlite3.Connection, table: str, where: str) -> dict[str, Any]:
    columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
    values = conn.execute(f"SELECT * FROM {table} WHERE {where} ORDER BY id LIMIT 1").fetchone()
    return dict(zip(columns, values, strict=True))


def build_waiting(db: Path, count: int, delay_s: int = 86400) -> dict[str, Any]:
    """`count` echo tasks waiting for a delay of `delay_s` in a new database at `db`, each
    with the `task.created` event the service writes; how long it took."""
    started = time.monotonic()
    _template(db, f"?delay={delay_s}", wait_for=None)
    conn = _scratch(db)
    try:
        task = _row(conn, "tasks", "1")
        event = _row(conn, "events", "1")
        first = task["id"]
        if task["status"] != "new" or event["task_id"] != first:
            raise RuntimeError(f"the template is not one waiting task: {task}, {event}")
        data = event["data"]
        encode = (lambda text: text) if isinstance(data, str) else str.encode
        mark = encode(f'"id":{first},')
        if data.count(mark) != 1:
            raise RuntimeError(f"the template event's data does not name its task once: {data!r}")
        ids = range(first + 1, first + count)
        task_columns = list(task)
        _insert_rebuilding_indexes(
            conn,
            "tasks",
            task_columns,
            (tuple(i if c == "id" else task[c] for c in task_columns) for i in ids),
        )
        event_columns = [c for c in event if c != "id"]
        copies = {c: event[c] for c in event_columns if c not in ("task_id", "data")}
        _insert_rebuilding_indexes(
            conn,
            "events",
            event_columns,
            (
                tuple(
                    i
                    if c == "task_id"
                    else data.replace(mark, encode(f'"id":{i},'))
                    if c == "data"
                    else copies[c]
                    for c in event_columns
                )
                for i in ids
            ),
        )
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        waiting = conn.execute(
            "SELECT COUNT(*), MAX(id), MIN(run_after_ms) FROM tasks WHERE status = 'new'"
        ).fetchone()
        (events,) = conn.execute("SELECT COUNT(*) FROM events").fetchone()
    finally:
        conn.close()
    return {
        "tasks": waiting[0],
        "last_id": waiting[1],
        "events": events,
        "due_ms": waiting[2],
        "delay_s": delay_s,
        "seconds": time.monotonic() - started,
        "mb": db.stat().st_size / 2**20,
    }


def build(db: Path, count: int) -> dict[str, Any]:
    """`count` tasks in a new database at `db`; how long it took."""
    started = time.monotonic()
    _template(db)
    conn = _scratch(db)
    try:
        template = _row(conn, "tasks", "1")
        columns = list(template)
        # the columns every row shares with the template (its status and result set per
        # status) first, then the three times each row has of its own
        timed = ["create_ms", "update_ms", "run_after_ms"]
        fixed = [c for c in columns if c not in ("id", *timed)]
        prefixes = {}
        for status, _ in MIX:
            row = {**template, "status": status}
            if status == "failed":
                row["result"] = "RuntimeError: bench failure"
            elif status != "success":
                row["result"] = None
            prefixes[status] = tuple(row[c] for c in fixed)
        rng = random.Random(20261121)
        rest = count - 1
        drawn = rng.choices([s for s, _ in MIX], [w for _, w in MIX], k=rest)
        first_ms = int(time.time() * 1000) - SPAN_MS
        step = SPAN_MS / max(1, rest)
        rows = (
            prefixes[status] + (created, created + 1 + i % 37, created)
            for i, status in enumerate(drawn)
            for created in (first_ms + int(i * step),)
        )
        _insert_rebuilding_indexes(conn, "tasks", fixed + timed, rows)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (total,) = conn.execute("SELECT COUNT(*) FROM tasks").fetchone()
        (last_id,) = conn.execute("SELECT MAX(id) FROM tasks").fetchone()
        status_counts = dict(
            conn.execute("SELECT status, COUNT(*) FROM tasks GROUP BY status").fetchall()
        )
    finally:
        conn.close()
    return {
        "tasks": total,
        "last_id": last_id,
        "seconds": time.monotonic() - started,
        "mb": db.stat().st_size / 2**20,
        "statuses": status_counts,
    }
