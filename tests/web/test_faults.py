"""Store faults, through a real server on loopback and a real SQLite file: a full disk
(SQLite's max_page_count set to the file's size on the service's writer) and a database
locked by another connection (a real second sqlite3 connection in `BEGIN EXCLUSIVE`).

While the fault lasts, writes answer 503 with a message that says why and leave nothing
behind; reads, /health and /ready keep answering 200 (README, "Faults and recovery", says
why /ready stays 200); a job that ends meanwhile stays `running` until its end can be
written. When the fault clears, the service carries on by itself, without a restart.

Also rows this version cannot interpret (a damaged field, a newer version's status): shown
as `unknown`, never run, never changed, and no obstacle to the recovery at start."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.errors import ServiceUnavailable
from service.model import GraphRef, NewTask, Status
from service.store import Change, SQLiteStore
from service.web.keys import STORE
from tests.chaos_helpers.checks import all_illegal_steps, integrity
from tests.conftest import get_task, submit, wait_status
from tests.sup_util import Start, execute, rows, trail, wait_file

BASE = "/graphs/hugegraph"
GRAPH = GraphRef("DEFAULT", "hugegraph")
# the fixtures `db` and `start` come from tests/web/conftest.py


def sqlite_store(client: TestClient) -> SQLiteStore:
    store = client.app[STORE]
    assert isinstance(store, SQLiteStore)
    return store


async def post(client: TestClient, body: Any, **query: Any) -> tuple[int, dict[str, Any]]:
    response = await client.post(
        f"{BASE}/jobs/echo", json=body, params={k: str(v) for k, v in query.items()}
    )
    return response.status, dict(await response.json())


async def status_of(client: TestClient, path: str) -> int:
    response = await client.get(path)
    await response.read()
    return response.status


async def assert_reads_work(client: TestClient, *task_ids: int) -> None:
    assert await status_of(client, "/health") == 200
    assert await status_of(client, "/ready") == 200
    listed = await (await client.get(f"{BASE}/tasks", params={"limit": "-1"})).json()
    assert {t["id"] for t in listed["tasks"]} >= set(task_ids)
    for task_id in task_ids:
        await get_task(client, BASE, task_id)


def stored_markers(db: Path) -> list[str]:
    """The `marker` of every stored echo task's input."""
    return [
        str(marker)
        for (marker,) in rows(
            db, "SELECT json_extract(input, '$.marker') FROM tasks WHERE type = 'echo' ORDER BY id"
        )
        if marker is not None
    ]


def assert_nothing_half_written(db: Path) -> None:
    """Every stored task has its created event and no step the table forbids; every created
    task is stored or has its deleted event; the file is sound."""
    assert integrity(db) == "ok"
    tasks = [i for (i,) in rows(db, "SELECT id FROM tasks ORDER BY id")]
    created = [i for (i,) in rows(db, "SELECT task_id FROM events WHERE kind = 'task.created'")]
    deleted = {i for (i,) in rows(db, "SELECT task_id FROM events WHERE kind = 'task.deleted'")}
    assert sorted(set(created) - deleted) == tasks
    assert len(created) == len(set(created))
    assert all_illegal_steps(db) == {}


async def submit_burst(client: TestClient, prefix: str, count: int, size: int) -> dict[str, int]:
    """`count` submissions at once, each with a unique marker; the answer's status by marker."""
    markers = [f"{prefix}-{n}" for n in range(count)]
    answers = await asyncio.gather(
        *(post(client, {"marker": marker, "pad": "x" * size}) for marker in markers)
    )
    return {marker: status for marker, (status, _) in zip(markers, answers, strict=True)}


# --- a full disk ---


async def test_a_full_disk_refuses_writes_with_503_keeps_reads_and_recovers_by_itself(
    start: Start, db: Path, tmp_path: Path
) -> None:
    client = await start()
    store = sqlite_store(client)
    gate, done = tmp_path / "gate", tmp_path / "done"
    # a job whose end (a 40 KB result) needs new pages to be written
    running = await submit(
        client, BASE, "gate", {"path": str(gate), "done": str(done), "result": "r" * 40_000}
    )
    await wait_status(client, BASE, running, "running")
    waiting = await submit(client, BASE, "echo", {"marker": "waiting"}, delay=3600)

    pages = await store.limit_pages(1)  # SQLite keeps the file's current size as the cap
    assert pages >= 1
    status, body = await post(client, {"marker": "big", "pad": "x" * 100_000})
    assert status == 503
    assert body["exception"] == "ServiceUnavailableException"
    assert "full" in body["message"]
    answers = await submit_burst(client, "burst", 10, 20_000)
    assert set(answers.values()) == {503}, answers

    await assert_reads_work(client, running, waiting)
    gate.touch()
    await wait_file(done)  # the job has ended; its end cannot be written yet
    assert (await get_task(client, BASE, running))["task_status"] == "running"
    await assert_reads_work(client, running, waiting)

    assert await store.limit_pages(None) > pages  # the disk has room again
    task = await wait_status(client, BASE, running, "success")
    assert task["task_result"] == '"' + "r" * 40_000 + '"'
    after = await submit(client, BASE, "echo", {"marker": "after"})
    assert (await wait_status(client, BASE, after, "success"))[
        "task_result"
    ] == '{"marker":"after"}'
    response = await client.put(f"{BASE}/tasks/{waiting}", params={"action": "cancel"})
    assert response.status == 202

    assert stored_markers(db) == ["waiting", "after"]
    assert trail(db, running)[-2:] == ["running", "success"]
    assert_nothing_half_written(db)


async def test_on_a_full_disk_a_refused_write_takes_no_other_write_of_its_transaction_down(
    start: Start, db: Path
) -> None:
    """SQLite undoes a whole transaction on SQLITE_FULL: the writes that shared it with the
    one that did not fit are written in the next, and only that one fails."""
    client = await start()
    store = sqlite_store(client)
    first = await submit(client, BASE, "echo", {"marker": "first"}, delay=3600)
    second = await submit(client, BASE, "echo", {"marker": "second"}, delay=3600)
    # free pages inside the capped file: room for small writes, not for a big one
    spare = await submit(client, BASE, "echo", {"marker": "spare", "pad": "s" * 60_000}, delay=3600)
    assert (await client.delete(f"{BASE}/tasks/{spare}", params={"force": "true"})).status == 204
    await store.limit_pages(1)

    big = NewTask(GRAPH, "echo", "service.jobs.echo.run", "big", '{"pad":"' + "b" * 200_000 + '"}')
    small = NewTask(GRAPH, "echo", "service.jobs.echo.run", "small", '{"marker":"small"}')
    # one transaction: all four writes are queued before the writer takes the next batch
    outcomes = await asyncio.gather(
        store.transition(Change(first, Status.PENDING)),
        store.insert(big),
        store.insert(small),
        store.transition(Change(second, Status.CANCELLED)),
        return_exceptions=True,
    )
    paused, refused, (created, _), cancelled = outcomes  # type: ignore[misc]
    assert isinstance(refused, ServiceUnavailable)
    assert "full" in refused.message
    assert [paused.status, created.status, cancelled.status] == ["pending", "new", "cancelled"]

    await store.limit_pages(None)
    assert [
        t["task_status"] for t in [await get_task(client, BASE, i) for i in (first, second)]
    ] == [
        "pending",
        "cancelled",
    ]
    assert (await get_task(client, BASE, created.id))["task_name"] == "small"
    assert [n for (n,) in rows(db, "SELECT name FROM tasks ORDER BY id")] == [
        "echo",
        "echo",
        "small",
    ]
    assert_nothing_half_written(db)


# --- a database locked by another connection ---


@contextlib.contextmanager
def exclusive_lock(db: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holding the database's write lock, as another program might."""
    with contextlib.closing(sqlite3.connect(db, isolation_level=None, timeout=10)) as other:
        other.execute("BEGIN EXCLUSIVE")
        try:
            yield other
        finally:
            if other.in_transaction:
                other.execute("ROLLBACK")


async def test_a_locked_database_refuses_writes_with_503_keeps_reads_and_recovers_when_released(
    start: Start, db: Path, tmp_path: Path
) -> None:
    client = await start()
    gate, done = tmp_path / "gate", tmp_path / "done"
    running = await submit(client, BASE, "gate", {"path": str(gate), "done": str(done)})
    await wait_status(client, BASE, running, "running")
    waiting = await submit(client, BASE, "echo", {"marker": "waiting"}, delay=3600)

    with exclusive_lock(db):
        status, body = await post(client, {"marker": "refused"})
        assert status == 503
        assert body["exception"] == "ServiceUnavailableException"
        assert "locked" in body["message"]
        answers = await submit_burst(client, "burst", 5, 10)
        assert set(answers.values()) == {503}, answers
        response = await client.put(f"{BASE}/tasks/{waiting}", params={"action": "pause"})
        assert response.status == 503

        await assert_reads_work(client, running, waiting)
        gate.touch()
        await wait_file(done)  # the job has ended; its end waits for the lock
        assert (await get_task(client, BASE, running))["task_status"] == "running"

    await wait_status(client, BASE, running, "success")
    after = await submit(client, BASE, "echo", {"marker": "after"})
    await wait_status(client, BASE, after, "success")
    response = await client.put(f"{BASE}/tasks/{waiting}", params={"action": "pause"})
    assert response.status == 202
    assert stored_markers(db) == ["waiting", "after"]
    assert_nothing_half_written(db)


# --- rows this version cannot interpret ---


def loosen_tasks_table(db: Path) -> None:
    """Rebuilds `tasks` without its NOT NULL constraints (SQLite's documented way to change a
    table's definition), so that a NULL can be stored where sidetask never writes one."""
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        (table_sql,) = conn.execute(
            "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'tasks'"
        ).fetchone()
        indexes = [
            sql
            for (sql,) in conn.execute(
                "SELECT sql FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'tasks'"
                " AND sql IS NOT NULL"
            )
        ]
        loose = table_sql.replace("NOT NULL", "").replace(
            "CREATE TABLE tasks", "CREATE TABLE tasks_loose", 1
        )
        conn.executescript(
            f"BEGIN; {loose}; INSERT INTO tasks_loose SELECT * FROM tasks; DROP TABLE tasks;"
            f" ALTER TABLE tasks_loose RENAME TO tasks; {'; '.join(indexes)}; COMMIT;"
        )


DAMAGE = {
    "progress that is text": "progress = 'half'",
    "progress that is not an integer": "progress = 1.5",
    "priority that is text": "priority = 'high'",
    "input that is not JSON": "input = '{\"unterminated'",
    "timeout that is text": "timeout = 'soon'",
    "a newer version's status": "status = 'hibernating'",
    "NULL retries": "retries = NULL",
    "NULL name": "name = NULL",
    "NULL status": "status = NULL",
}


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
async def test_a_row_that_cannot_be_interpreted_is_unknown_never_run_and_survives_recovery(
    start: Start, db: Path, damage: str
) -> None:
    """A waiting task and one a crash left `running`, both damaged the same way, in the file
    when the service starts: the start (and its recovery) goes through, both show as
    `unknown`, neither is run nor changed, and work behind them runs."""
    store = SQLiteStore(db)
    await store.open()
    try:
        waiting, _ = await store.insert(
            NewTask(GRAPH, "echo", "service.jobs.echo.run", "waiting", '{"w":1}', priority=5)
        )
        interrupted, _ = await store.insert(
            NewTask(GRAPH, "echo", "service.jobs.echo.run", "interrupted", '{"i":1}', max_retries=3)
        )
        await store.transition(Change(interrupted.id, Status.SCHEDULING))
        await store.transition(Change(interrupted.id, Status.SCHEDULED))
        await store.transition(Change(interrupted.id, Status.QUEUED))
        await store.transition(Change(interrupted.id, Status.RUNNING))
    finally:
        await store.close()
    if "NULL" in damage:
        loosen_tasks_table(db)
    ids = (waiting.id, interrupted.id)
    before = rows(db, "SELECT * FROM tasks ORDER BY id")
    execute(db, f"UPDATE tasks SET {DAMAGE[damage]} WHERE id IN (?, ?)", ids)
    damaged = rows(db, "SELECT * FROM tasks ORDER BY id")
    assert damaged != before

    client = await start(concurrency=1)
    for task_id in ids:
        assert (await get_task(client, BASE, task_id))["task_status"] == "unknown"
    listed = await (await client.get(f"{BASE}/tasks", params={"status": "unknown"})).json()
    assert [t["id"] for t in listed["tasks"]] == list(ids)
    for status in ("new", "running"):  # not under the status stored in the row
        listed = await (await client.get(f"{BASE}/tasks", params={"status": status})).json()
        assert listed["tasks"] == []

    other = await submit(client, BASE, "echo", {"other": True})
    await wait_status(client, BASE, other, "success")
    for task_id in ids:
        for action in ("cancel", "pause", "resume", "retry"):
            response = await client.put(f"{BASE}/tasks/{task_id}", params={"action": action})
            assert response.status == 400, action
        assert (await client.delete(f"{BASE}/tasks/{task_id}")).status == 400
    assert rows(db, "SELECT * FROM tasks WHERE id IN (?, ?) ORDER BY id", ids) == damaged
    assert trail(db, waiting.id) == ["new"]
    assert trail(db, interrupted.id)[-1] == "running"

    for task_id in ids:
        response = await client.delete(f"{BASE}/tasks/{task_id}", params={"force": "true"})
        assert response.status == 204


async def test_a_worker_is_never_handed_a_row_that_cannot_be_interpreted(
    start: Start, db: Path
) -> None:
    """External workers' claims pass over a damaged waiting task, as the scheduler does."""
    client = await start(external_types=["resize"])
    damaged = await submit(client, BASE, "resize", {"image": "a.png"}, priority=9)
    execute(db, "UPDATE tasks SET progress = 'half' WHERE id = ?", (damaged,))
    good = await submit(client, BASE, "resize", {"image": "b.png"})

    response = await client.post("/workers/w1/claim", params={"types": "resize", "wait": "0"})
    assert response.status == 200, await response.text()
    assert (await response.json())["id"] == good
    response = await client.post("/workers/w1/claim", params={"types": "resize", "wait": "0"})
    assert response.status == 204
    assert (await get_task(client, BASE, damaged))["task_status"] == "unknown"
    assert trail(db, damaged) == ["new"]
