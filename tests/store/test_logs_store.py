"""The store contract, log lines: appended in batches (numbered with the task's current
attempt, one task.log event per task), paged by id and level, bounded per task with one
marker line for the oldest dropped, deleted with the task. On both stores."""

from __future__ import annotations

from pathlib import Path

from service import clock
from service.model import LOG_LEVEL_INDEX, EventKind, LogLine, Status
from service.store import Backend, Change, SQLiteStore
from service.store.copy import copy_db
from service.store.postgres import PostgresStore
from tests.store.conftest import GRAPH, new
from tests.store.test_attempts import claim_and_start

INFO, WARNING = LOG_LEVEL_INDEX["info"], LOG_LEVEL_INDEX["warning"]


def lines(*texts: str, level: int = INFO) -> list[LogLine]:
    return [LogLine(clock.now_ms(), level, text) for text in texts]


async def test_lines_are_appended_paged_and_filtered(store: Backend) -> None:
    task, _ = await store.insert(new())
    await claim_and_start(store, task.id)
    before = await store.last_event_id()
    await store.append_logs({task.id: lines("one", "two")}, keep=100)
    await store.append_logs({task.id: lines("careful", level=WARNING) + lines("three")}, keep=100)
    stored = await store.logs(task.id, 0, 100)
    assert [(ln.text, ln.attempt) for ln in stored] == [
        ("one", 1),
        ("two", 1),
        ("careful", 1),
        ("three", 1),
    ]
    ids = [ln.id for ln in stored]
    assert ids == sorted(ids) and len(set(ids)) == 4
    page = await store.logs(task.id, ids[1], 1)
    assert [ln.text for ln in page] == ["careful"]
    assert [ln.text for ln in await store.logs(task.id, 0, 100, WARNING)] == ["careful"]
    # one task.log event per batch, carrying its lines
    events = await store.events_after(before, None, task.id, 100)
    logs = [e for e in events if e.kind is EventKind.LOG]
    assert len(logs) == 2
    assert b'"text":"careful"' in logs[1].data
    # a task that is not there: nothing written, nothing read
    await store.append_logs({task.id + 1000: lines("lost")}, keep=100)
    assert await store.logs(task.id + 1000, 0, 10) == []


async def test_a_log_past_its_bound_drops_the_oldest_with_one_marker(store: Backend) -> None:
    task, _ = await store.insert(new())
    await claim_and_start(store, task.id)
    for start in range(0, 30, 6):
        await store.append_logs({task.id: lines(*(f"l{n}" for n in range(start, start + 6)))}, 10)
    page = await store.logs(task.id, 0, 100)
    marker, *kept = page
    assert [ln.text for ln in kept] == [f"l{n}" for n in range(20, 30)]
    assert marker.text == "… 20 earlier lines dropped (max_log_lines)"
    assert marker.level == WARNING and marker.id < kept[0].id
    # paging on from the marker gives the lines after it, without it again
    assert [ln.text for ln in await store.logs(task.id, marker.id, 3)] == ["l20", "l21", "l22"]
    # a batch larger than the bound is cut before it is written
    await store.append_logs({task.id: lines(*(f"m{n}" for n in range(25)))}, 10)
    marker, *kept = await store.logs(task.id, 0, 100)
    assert [ln.text for ln in kept] == [f"m{n}" for n in range(15, 25)]
    assert marker.text == "… 45 earlier lines dropped (max_log_lines)"


async def test_lines_go_with_their_task(store: Backend) -> None:
    task, _ = await store.insert(new())
    await claim_and_start(store, task.id)
    await store.append_logs({task.id: lines("a", "b")}, keep=100)
    await store.transition(Change(task.id, Status.SUCCESS, {"result": "1"}, fenced=True))
    await store.delete(GRAPH, task.id, None)
    assert await store.logs(task.id, 0, 100) == []
    # and with the retention purge of completed tasks
    old, _ = await store.insert(new())
    await claim_and_start(store, old.id)
    await store.append_logs({old.id: lines("c")}, keep=100)
    await store.transition(Change(old.id, Status.SUCCESS, {"result": "1"}, fenced=True))
    assert len(await store.logs(old.id, 0, 100)) == 1
    later = clock.now_ms() + 1000
    while (await store.purge(later, 0))[0]:
        pass
    assert await store.get(None, old.id) is None
    assert await store.logs(old.id, 0, 100) == []


async def test_copy_db_takes_each_tasks_log_along(tmp_path: Path, pg_dsn: str) -> None:
    """`sidetask copy-db`: a SQLite history moved to PostgreSQL keeps its logs, line ids,
    marker and all; the next lines come after them."""
    source = SQLiteStore(tmp_path / "old.db")
    await source.open()
    try:
        task, _ = await source.insert(new())
        await claim_and_start(source, task.id)
        await source.append_logs({task.id: lines(*(f"l{n}" for n in range(8)))}, keep=5)
        expected = await source.logs(task.id, 0, 100)
    finally:
        await source.close()
    await copy_db(tmp_path / "old.db", pg_dsn)
    target = PostgresStore(pg_dsn)
    await target.open()
    try:
        assert await target.logs(task.id, 0, 100) == expected
        await target.append_logs({task.id: lines("after the copy")}, keep=5)
        marker, *kept = await target.logs(task.id, 0, 100)
        assert [ln.text for ln in kept] == ["l4", "l5", "l6", "l7", "after the copy"]
        assert kept[-1].id > expected[-1].id
        assert marker.text == "… 4 earlier lines dropped (max_log_lines)"
    finally:
        await target.close()
