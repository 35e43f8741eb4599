"""A list by several statuses at once (`status=new,queued`): what the dashboard's counter
groups (waiting, running, …) filter by."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from service.config import Settings
from service.model import GraphRef, NewTask, Status
from service.store.sqlite import SQLiteStore
from tests.conftest import BASES, submit, wait_status

BASE = BASES[0]
LATER = 3600
GRAPH = GraphRef("DEFAULT", "hugegraph")


async def _ids(client: TestClient, **query: str) -> list[int]:
    response = await client.get(f"{BASE}/tasks", params=query)
    assert response.status == 200, await response.text()
    return [t["id"] for t in (await response.json())["tasks"]]


async def test_a_list_by_several_statuses(client: TestClient) -> None:
    waiting = [await submit(client, BASE, "echo", {}, delay=LATER) for _ in range(3)]
    paused = await submit(client, BASE, "echo", {}, delay=LATER)
    assert (await client.put(f"{BASE}/tasks/{paused}", params={"action": "pause"})).status == 202
    failed = await submit(client, BASE, "fail", {"message": "no"})
    done = await submit(client, BASE, "echo", {})
    await wait_status(client, BASE, failed, "failed")
    await wait_status(client, BASE, done, "success")

    assert await _ids(client, status="new,pending") == [*waiting, paused]
    # any case, any order of the names; one name is HugeGraph's own filter
    assert await _ids(client, status="FAILED,New") == [*waiting, failed]
    assert await _ids(client, status="pending") == [paused]
    # newest first, paged, and with a type
    first = await client.get(
        f"{BASE}/tasks",
        params={"status": "new,pending,failed", "order": "desc", "limit": "2", "page": ""},
    )
    body = await first.json()
    assert [t["id"] for t in body["tasks"]] == [failed, paused]
    rest = await _ids(client, status="new,pending,failed", order="desc", page=body["page"])
    assert rest == waiting[::-1]
    assert await _ids(client, status="new,failed", type="fail") == [failed]


async def test_a_group_with_unknown_lists_the_rows_this_version_cannot_read(
    client: TestClient, settings: Settings
) -> None:
    damaged = await submit(client, BASE, "echo", {}, delay=LATER)
    waiting = await submit(client, BASE, "echo", {}, delay=LATER)
    with sqlite3.connect(settings.db) as conn:
        conn.execute("UPDATE tasks SET status = 'hibernating' WHERE id = ?", (damaged,))
    assert await _ids(client, status="new,unknown") == [damaged, waiting]
    assert await _ids(client, status="new") == [waiting]
    assert await _ids(client, status="unknown,success") == [damaged]


async def test_a_bad_name_in_the_list_is_a_400_naming_it(client: TestClient) -> None:
    for text, bad in (("new,sleeping", "sleeping"), ("new,", ""), (",new", "")):
        response = await client.get(f"{BASE}/tasks", params={"status": text})
        assert response.status == 400, text
        body = await response.json()
        assert body["message"].startswith(
            f"Invalid status '{bad}', valid statuses are: UNKNOWN, NEW"
        ), body


def _steps(db: str, sql: str) -> tuple[int, list[Any]]:
    """How many SQLite VM steps (in hundreds) a query takes, and its rows: a measure of
    the work done that no machine's speed changes."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.create_function("sidetask_json", 1, lambda text: 1, deterministic=True)
        steps = 0

        def count() -> int:
            nonlocal steps
            steps += 1
            return 0

        conn.set_progress_handler(count, 100)
        found = conn.execute(sql).fetchall()
    return steps, found


async def test_a_group_reads_its_statuses_by_the_status_index_and_stops_at_the_limit(
    tmp_path: Path,
) -> None:
    """20,000 completed tasks: a page of a group none of them is in reads next to nothing,
    and a page of a group they are all in reads about a page, not all 20,000."""
    db = str(tmp_path / "store.db")
    statements: list[str] = []
    store = SQLiteStore(Path(db), trace=statements.append)
    await store.open()
    try:
        await store.insert(NewTask(graph=GRAPH, type="echo", callable="x", name="x", input=None))
        with sqlite3.connect(db) as conn:
            conn.executemany(
                "INSERT INTO tasks (graphspace, graph, name, type, callable, status, create_ms,"
                " update_ms, max_retries, priority, run_after_ms, progress)"
                " VALUES (?, ?, 'x', 'echo', 'x', ?, 1, 1, 0, 0, 0, 0)",
                [
                    (GRAPH.graphspace, GRAPH.graph, "success" if i % 2 else "failed")
                    for i in range(20_000)
                ],
            )
        running = frozenset({Status.RUNNING, Status.CANCELLING})
        done = frozenset({Status.SUCCESS, Status.FAILED})
        for group in (running, done):
            statements.clear()
            tasks = await store.list_tasks(GRAPH, group, 51, 0, descending=True)
            assert len(tasks) == (0 if group is running else 51)
            assert [t.id for t in tasks] == sorted((t.id for t in tasks), reverse=True)
            # the statement as it ran, its values written in (the store's trace)
            (sql,) = [s for s in statements if s.startswith("SELECT") and " LIMIT " in s]
            with contextlib.closing(sqlite3.connect(db)) as conn:
                plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
            assert any("tasks_by_graph_status" in step for step in plan), plan
            steps, found = _steps(db, sql)
            assert found  # (the page's rows, as the store reads them: one JSON array)
            # a walk of every task is some 20,000 rows of several steps each: over 1,000 here
            assert steps < 100, (steps, plan)
    finally:
        await store.close()
