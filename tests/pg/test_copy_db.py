"""`sidetask copy-db`: a SQLite history moved into PostgreSQL with task and event ids kept;
the next ids come after every id the file ever gave out; an Idempotency-Key still replays;
a schema that holds tasks, a missing file and a damaged row are refused with nothing
copied."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from service import clock
from service.model import Status
from service.store import Change, SQLiteStore
from service.store.postgres import PostgresStore
from tests.conftest import ROOT
from tests.store.conftest import GRAPH, new
from tests.sup_util import execute


def copy_db(source: Path, target: str, *more: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", "copy-db", "--from", str(source), "--to", target, *more],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def a_history(path: Path) -> SQLiteStore:
    """Tasks in several statuses, a keyed one, a delayed one, and a purged id (a gap)."""
    store = SQLiteStore(path)
    await store.open()
    done, _ = await store.insert(new(input='{"n": 1}'))
    await store.claim(10, clock.now_ms(), {})
    await store.transition(Change(done.id, Status.RUNNING))
    await store.transition(Change(done.id, Status.SUCCESS, {"result": '"ok"', "progress": 100}))
    await store.insert(new(idempotency_key="order-7", input='{"order": 7}'))
    await store.insert(new(delay_ms=3_600_000))
    gone, _ = await store.insert(new())
    await store.transition(Change(gone.id, Status.CANCELLED))
    await store.delete(GRAPH, gone.id, None)  # its id is never given again
    return store


async def test_a_history_moves_with_its_ids_and_goes_on_after_them(
    tmp_path: Path, pg_dsn: str
) -> None:
    path = tmp_path / "sidetask.db"
    store = await a_history(path)
    tasks = await store.list_tasks(GRAPH, None, None)
    events = await store.events_after(0, None, None, 1000)
    await store.close()

    result = copy_db(path, pg_dsn)
    assert result.returncode == 0, result.stderr
    assert f"copied {len(tasks)} task(s) and {len(events)} event(s)" in result.stdout
    assert "Traceback" not in result.stderr

    pg = PostgresStore(pg_dsn)
    await pg.open()
    try:
        assert await pg.list_tasks(GRAPH, None, None) == tasks
        assert await pg.events_after(0, None, None, 1000) == events
        # new ids after every id the file gave out, the deleted one included
        fresh, created = await pg.insert(new())
        assert created and fresh.id == tasks[-1].id + 2
        assert await pg.last_event_id() > events[-1].id
        replay, created = await pg.insert(new(idempotency_key="order-7", input='{"order": 7}'))
        assert not created and replay.id == tasks[1].id
        # the delayed task is still delayed; the rest runs
        claimed = await pg.claim(10, clock.now_ms(), {})
        assert [t.id for t in claimed] == [tasks[1].id, fresh.id]
    finally:
        await pg.close()


async def test_a_schema_that_holds_tasks_is_refused_and_left_as_it_is(
    tmp_path: Path, pg_dsn: str
) -> None:
    path = tmp_path / "sidetask.db"
    await (await a_history(path)).close()
    assert copy_db(path, pg_dsn).returncode == 0
    again = copy_db(path, pg_dsn)
    assert again.returncode == 3  # an error the database answered
    assert "already holds tasks or events" in again.stderr
    assert "Traceback" not in again.stderr
    # another schema of the same database takes it
    assert copy_db(path, pg_dsn, "--schema", "second").returncode == 0


@pytest.mark.parametrize("case", ["missing", "damaged", "not-postgres"])
async def test_nothing_is_copied_from_a_missing_file_or_a_damaged_row(
    tmp_path: Path, pg_dsn: str, case: str
) -> None:
    path = tmp_path / "sidetask.db"
    if case != "missing":
        await (await a_history(path)).close()
    if case == "damaged":
        execute(path, "UPDATE tasks SET progress = 'lots' WHERE id = 2")
    result = copy_db(path, "sqlite:///elsewhere.db" if case == "not-postgres" else pg_dsn)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    expected = {
        "missing": f"No SQLite database at {path}",
        "damaged": "Task 2 in the file has progress = 'lots', not a number",
        "not-postgres": "--to must be a PostgreSQL URL",
    }[case]
    assert expected in result.stderr
    assert not path.exists() if case == "missing" else path.exists()
    pg = PostgresStore(pg_dsn)
    await pg.open()
    try:
        assert await pg.list_tasks(GRAPH, None, None) == []  # nothing half-copied
    finally:
        await pg.close()
