"""The store contract's fixtures: `store`, one per backend, and `raw`, the backend's own way
to put a row in a state no API call makes (what a crash, an older or newer version, or an
operator leaves behind).

A backend is one entry of BACKENDS: a Raw class that opens its store on a fresh database
(SQLite: a file in tmp_path; PostgreSQL: a database of its own on the test run's server,
tests/pgserver.py)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import pytest

from service.model import GraphRef, NewTask, Status
from service.store import Backend, SQLiteStore
from service.store.postgres import PostgresStore
from tests.conftest import wait_for

GRAPH = GraphRef("DEFAULT", "hugegraph")
OTHER = GraphRef("gs1", "other")


def new(graph: GraphRef = GRAPH, **fields: object) -> NewTask:
    """A task to insert: an echo in GRAPH unless `fields` say otherwise."""
    values: dict[str, object] = {
        "graph": graph,
        "type": "echo",
        "callable": "service.jobs.echo.run",
        "name": "t",
        "input": None,
    }
    values.update(fields)
    return NewTask(**values)  # type: ignore[arg-type]


async def heard_of(count: Callable[[], int], at_least: int, timeout: float = 10.0) -> None:
    """Waits until a listener has heard `at_least` events: a store shared by several
    processes hands them out from its event pump, after the write has returned."""

    async def heard() -> bool:
        return count() >= at_least

    await wait_for(heard, timeout, f"{at_least} events to be heard")


class Raw(Protocol):
    """What a backend offers the contract besides the store: writes straight into its
    database, bypassing the store (and its transition table)."""

    store: Backend
    #: the status a claim leaves a task in (SPEC 3): `queued` in one process; `scheduling`
    #: on a store several share (claimed by one, which hands it on)
    claimed: Status

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def reopen(self) -> Backend:
        """The store closed, and a new one opened on the same database."""
        ...

    async def set(self, task_id: int, **columns: Any) -> None:
        """Writes `columns` of a task's row as given (a status as its stored value)."""
        ...

    async def status(self, task_id: int) -> str:
        """The status a task's row holds, as stored (not as the store reads it)."""
        ...

    async def damage(self, task_id: int) -> None:
        """Makes the row one the store cannot interpret (it must read as `unknown`)."""
        ...


class SQLiteRaw:
    claimed = Status.QUEUED

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self.db = tmp_path / "store.db"
        self.store: Backend = SQLiteStore(self.db)

    async def open(self) -> None:
        await self.store.open()

    async def close(self) -> None:
        await self.store.close()

    async def reopen(self) -> Backend:
        await self.store.close()
        self.store = SQLiteStore(self.db)
        await self.store.open()
        return self.store

    def _execute(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        with contextlib.closing(sqlite3.connect(self.db, timeout=10)) as conn:
            found = conn.execute(sql, params).fetchall()
            conn.commit()
            return found

    async def set(self, task_id: int, **columns: Any) -> None:
        assignments = ", ".join(f"{name} = ?" for name in columns)
        self._execute(f"UPDATE tasks SET {assignments} WHERE id = ?", (*columns.values(), task_id))

    async def status(self, task_id: int) -> str:
        return str(self._execute("SELECT status FROM tasks WHERE id = ?", (task_id,))[0][0])

    async def damage(self, task_id: int) -> None:
        # text in an INTEGER column: written by something that is not sidetask
        await self.set(task_id, progress="lots")


class PostgresRaw:
    claimed = Status.SCHEDULING

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self.dsn: str = request.getfixturevalue("pg_dsn")
        self.store: Backend = PostgresStore(self.dsn)

    async def open(self) -> None:
        await self.store.open()

    async def close(self) -> None:
        await self.store.close()

    async def reopen(self) -> Backend:
        await self.store.close()
        self.store = PostgresStore(self.dsn)
        await self.store.open()
        return self.store

    async def _fetch(self, sql: str, *params: Any) -> list[Any]:
        conn = await asyncpg.connect(self.dsn, server_settings={"search_path": "sidetask"})
        try:
            return list(await conn.fetch(sql, *params))
        finally:
            await conn.close()

    async def set(self, task_id: int, **columns: Any) -> None:
        assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(columns, start=1))
        await self._fetch(
            f"UPDATE tasks SET {assignments} WHERE id = ${len(columns) + 1}",
            *columns.values(),
            task_id,
        )

    async def status(self, task_id: int) -> str:
        return str((await self._fetch("SELECT status FROM tasks WHERE id = $1", task_id))[0][0])

    async def damage(self, task_id: int) -> None:
        # typed columns hold no text where a number belongs: an input that is not JSON,
        # written by something that is not sidetask
        await self.set(task_id, input="{not json")


#: every backend the contract runs on; adding one is one entry here
BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Raw]] = {
    "sqlite": SQLiteRaw,
    "postgres": PostgresRaw,
}


@pytest.fixture(params=sorted(BACKENDS))
async def raw(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Raw]:
    backend = BACKENDS[request.param](request, tmp_path)
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture
def store(raw: Raw) -> Backend:
    """The store under test, on a fresh database, for each backend of BACKENDS."""
    return raw.store
