"""`sidetask copy-db` takes the tasks' dependencies along (README, "Dependencies"): the
row's ids and counts, and the edges, so a dependency's success on PostgreSQL lets its
dependant go on as it would have in the file."""

from __future__ import annotations

from pathlib import Path

from service import clock
from service.model import Status
from service.store import Change, SQLiteStore
from service.store.postgres import PostgresStore
from tests.pg.test_copy_db import copy_db
from tests.store.conftest import GRAPH, new


async def test_dependencies_move_with_their_tasks(tmp_path: Path, pg_dsn: str) -> None:
    path = tmp_path / "sidetask.db"
    store = SQLiteStore(path)
    await store.open()
    first, _ = await store.insert(new())
    waiting, _ = await store.insert(new(dependencies=(first.id,)))
    tasks = await store.list_tasks(GRAPH, None, None)
    await store.close()

    result = copy_db(path, pg_dsn)
    assert result.returncode == 0, result.stderr
    pg = PostgresStore(pg_dsn)
    await pg.open()
    try:
        assert await pg.list_tasks(GRAPH, None, None) == tasks
        assert [t.id for t in await pg.claim(10, clock.now_ms(), {})] == [first.id]
        for target in (Status.SCHEDULED, Status.QUEUED, Status.RUNNING):
            await pg.transition(Change(first.id, target, fenced=True))
        await pg.transition(Change(first.id, Status.SUCCESS, {"result": "1"}, fenced=True))
        # the edge came along: the success counted the dependant down
        assert [t.id for t in await pg.claim(10, clock.now_ms(), {})] == [waiting.id]
    finally:
        await pg.close()
