"""Helpers of the supervisor, store and recovery tests: reading the database as it is
stored (a SQLite file, or a PostgreSQL URL: the same SQL with `?` parameters, in the
schema `sidetask`), and waiting on conditions (never on fixed sleeps)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import re
import signal
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiohttp.test_utils import TestClient

from tests.conftest import wait_for


def _is_postgres(db: Path | str) -> bool:
    return isinstance(db, str) and db.startswith(("postgresql://", "postgres://"))


def _on_postgres(db: str, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """The query on a connection of its own, run to its end in a thread with its own event
    loop (so a synchronous helper works inside a test's loop too); `?` become `$n`."""
    numbered = iter(range(1, len(params) + 1))
    text = re.sub(r"\?", lambda _: f"${next(numbered)}", sql)

    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(db, server_settings={"search_path": "sidetask"})
        try:
            return [tuple(row) for row in await conn.fetch(text, *params)]
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result(timeout=30)


def rows(db: Path | str, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
    """A query on the database through a connection of its own, as an operator would."""
    if _is_postgres(db):
        assert isinstance(db, str)
        return _on_postgres(db, sql, tuple(params))
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        return list(conn.execute(sql, tuple(params)).fetchall())


def execute(db: Path | str, sql: str, params: Iterable[Any] = ()) -> None:
    """A write straight into the database (damage, or a row of a newer version)."""
    if _is_postgres(db):
        assert isinstance(db, str)
        _on_postgres(db, sql, tuple(params))
        return
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        conn.execute(sql, tuple(params))
        conn.commit()


def stored_status(db: Path | str, task_id: int) -> str:
    """The status a task's row holds in the file, as written (not as the service reads it)."""
    return str(rows(db, "SELECT status FROM tasks WHERE id = ?", (task_id,))[0][0])


def trail(db: Path | str, task_id: int) -> list[str]:
    """The statuses a task went through, from its stored events, in order."""
    return [
        status
        for (status,) in rows(
            db,
            "SELECT status FROM events WHERE task_id = ? AND kind IN ('task.created', 'task.status')"
            " ORDER BY id",
            (task_id,),
        )
    ]


def to_queued(db: Path | str) -> list[str]:
    """The steps a task takes on its way from `new` or `restoring` to `queued`, besides those
    two: none on SQLite (the one process claims and confirms in one commit); `scheduling`
    (a replica claimed it) then `scheduled` (handed to its executor) on PostgreSQL, SPEC 3."""
    return ["scheduling", "scheduled"] if _is_postgres(db) else []


def status_events(db: Path | str, task_id: int) -> list[dict[str, Any]]:
    """The task as each of its status events carried it."""
    return [
        orjson.loads(data)
        for (data,) in rows(
            db,
            "SELECT data FROM events WHERE task_id = ? AND kind IN ('task.created', 'task.status')"
            " ORDER BY id",
            (task_id,),
        )
    ]


def max_overlap(db: Path | str, task_ids: Iterable[int] | None = None) -> int:
    """The most of the given tasks ever `running`/`cancelling` at once, replayed from the
    event log (whose ids are the commit order)."""
    wanted = None if task_ids is None else set(task_ids)
    active: set[int] = set()
    most = 0
    for task_id, status in rows(
        db, "SELECT task_id, status FROM events WHERE kind = 'task.status' ORDER BY id"
    ):
        if wanted is not None and task_id not in wanted:
            continue
        if status in ("running", "cancelling"):
            active.add(task_id)
        else:
            active.discard(task_id)
        most = max(most, len(active))
    return most


def started_order(db: Path | str) -> list[int]:
    """Task ids in the order they started running."""
    return [
        task_id
        for (task_id,) in rows(
            db,
            "SELECT task_id FROM events WHERE kind = 'task.status' AND status = 'running' ORDER BY id",
        )
    ]


async def wait_file(path: Path, timeout: float = 10.0) -> Path:
    async def probe() -> Path | None:
        return path if path.exists() else None

    return await wait_for(probe, timeout, f"{path.name} to exist")


async def wait_rows(
    db: Path | str, sql: str, params: Iterable[Any] = (), timeout: float = 10.0
) -> list[tuple[Any, ...]]:
    """Waits until the query returns at least one row."""
    params = tuple(params)

    async def probe() -> list[tuple[Any, ...]] | None:
        return rows(db, sql, params) or None

    return await wait_for(probe, timeout, sql)


#: the `start` fixture of tests/web/conftest.py: a server on the test database
Start = Callable[..., Awaitable[TestClient]]


# --- processes a job started ---


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie waiting for its reaper does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state not in ("Z", "X")


async def wait_gone(pids: list[int]) -> None:
    async def probe() -> bool:
        return not any(alive(pid) for pid in pids)

    await wait_for(probe, 10, f"processes {pids} to end")


def kill_all(pids: list[int]) -> None:
    """Stops what a test started, should it fail before the service did."""
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
