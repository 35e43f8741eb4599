"""Checks on a database as it is stored (a SQLite file or a PostgreSQL URL, in the schema
`sidetask` or another): every status change allowed by the table, every created task's
record whole."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import re
import sqlite3
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import asyncpg

from service.model import TRANSITIONS, Status
from tests.sup_util import rows

DEFAULT_SCHEMA = "sidetask"


def query(
    db: Path | str, sql: str, params: Iterable[Any] = (), schema: str = DEFAULT_SCHEMA
) -> list[tuple[Any, ...]]:
    """tests.sup_util.rows, in `schema` on PostgreSQL (the same SQL, `?` parameters)."""
    if schema == DEFAULT_SCHEMA or not isinstance(db, str):
        return rows(db, sql, params)
    values = tuple(params)
    numbered = iter(range(1, len(values) + 1))
    text = re.sub(r"\?", lambda _: f"${next(numbered)}", sql)

    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(db, server_settings={"search_path": schema})
        try:
            return [tuple(row) for row in await conn.fetch(text, *values)]
        finally:
            await conn.close()

    # in a thread with a loop of its own: callable from inside a running loop too
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result(timeout=60)


def trails(db: Path | str, schema: str = DEFAULT_SCHEMA) -> dict[int, list[str]]:
    """Every task's statuses in commit order, from its stored created and status events."""
    found: dict[int, list[str]] = defaultdict(list)
    for task_id, status in query(
        db,
        "SELECT task_id, status FROM events WHERE kind IN ('task.created', 'task.status')"
        " ORDER BY id",
        schema=schema,
    ):
        found[int(task_id)].append(str(status))
    return dict(found)


def illegal_steps(trail: list[str]) -> list[tuple[str, str]]:
    """The consecutive pairs of a trail that the transition table does not allow; a trail
    that does not start `new` counts its first status as one."""
    wrong: list[tuple[str, str]] = []
    if trail and trail[0] != Status.NEW:
        wrong.append(("", trail[0]))
    for source, target in itertools.pairwise(trail):
        try:
            allowed = Status(source) in TRANSITIONS[Status(target)]
        except ValueError:
            allowed = False
        if not allowed:
            wrong.append((source, target))
    return wrong


def all_illegal_steps(
    db: Path | str, schema: str = DEFAULT_SCHEMA
) -> dict[int, list[tuple[str, str]]]:
    """Tasks whose stored trail has a step the table does not allow, with those steps."""
    found = {task_id: illegal_steps(trail) for task_id, trail in trails(db, schema).items()}
    return {task_id: steps for task_id, steps in found.items() if steps}


def integrity(db: Path | str) -> str:
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
