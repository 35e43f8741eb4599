"""All twelve statuses of SPEC 3, each reached for real, seen over GET and stored in the
database, on both stores.

In one process on SQLite a task goes `new` -> `queued` -> `running` (SPEC 3); on PostgreSQL
through `scheduling` (a replica's claim) and `scheduled` (handed to its slots) first;
`scheduled` is also an external worker's lease it has not confirmed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.web import create_app
from tests.conftest import get_task, make_settings, submit, wait_status
from tests.sup_jobs import JOBS
from tests.sup_util import (
    execute,
    rows,
    status_events,
    stored_status,
    to_queued,
    trail,
    wait_file,
)

BASE = "/graphs/hugegraph"


@pytest.fixture
def db(any_db: Path | str) -> Path | str:
    return any_db


async def start(
    aiohttp_client: Any, tmp_path: Path, db: Path | str, **overrides: Any
) -> TestClient:
    settings = make_settings(tmp_path, db, jobs=JOBS, **overrides)
    return await aiohttp_client(create_app(settings))  # type: ignore[no-any-return]


async def observe(client: TestClient, db: Path | str, task_id: int, status: str) -> dict[str, Any]:
    """Waits until GET shows `status`, and checks the file holds the same."""
    task = await wait_status(client, BASE, task_id, status)
    assert stored_status(db, task_id) == status
    return task


async def put(client: TestClient, task_id: int, action: str) -> dict[str, Any]:
    response = await client.put(f"{BASE}/tasks/{task_id}", params={"action": action})
    assert response.status == 202, await response.text()
    return dict(await response.json())


async def test_new(aiohttp_client: Any, tmp_path: Path, db: Path | str) -> None:
    client = await start(aiohttp_client, tmp_path, db)
    task_id = await submit(client, BASE, "echo", {"x": 1}, delay=60)
    task = await observe(client, db, task_id, "new")
    assert task["task_create"] == task["task_update"]
    listed = await (await client.get(f"{BASE}/tasks", params={"status": "NEW"})).json()
    assert [t["id"] for t in listed["tasks"]] == [task_id]


async def test_new_queued_running_success_in_order(
    aiohttp_client: Any, tmp_path: Path, db: Path | str
) -> None:
    client = await start(aiohttp_client, tmp_path, db)
    task_id = await submit(client, BASE, "echo", {"x": 1})
    task = await observe(client, db, task_id, "success")
    assert task["task_result"] == '{"x":1}'
    assert trail(db, task_id) == ["new", *to_queued(db), "queued", "running", "success"]
    events = status_events(db, task_id)
    # taken by this process's scheduler, for its own executor
    assert "task_server" not in events[0] and events[1]["task_server"] == "sidetask"
    updates = [e["task_update"] for e in events]
    assert updates == sorted(updates)


async def test_queued_while_waiting_for_a_free_slot(
    aiohttp_client: Any, tmp_path: Path, db: Path | str
) -> None:
    client = await start(aiohttp_client, tmp_path, db, concurrency=1)
    gate = tmp_path / "gate"
    busy = await submit(client, BASE, "gate", {"path": str(gate)})
    await observe(client, db, busy, "running")
    waiting = await submit(client, BASE, "echo", {"waited": True})
    await observe(client, db, waiting, "queued")
    gate.touch()
    await observe(client, db, waiting, "success")


async def test_pending(aiohttp_client: Any, tmp_path: Path, db: Path | str) -> None:
    client = await start(aiohttp_client, tmp_path, db)
    task_id = await submit(client, BASE, "echo", {}, delay=60)
    assert (await put(client, task_id, "pause"))["task_status"] == "pending"
    await observe(client, db, task_id, "pending")


async def test_restoring_while_waiting_for_a_retry(
    aiohttp_client: Any, tmp_path: Path, db: Path | str
) -> None:
    client = await start(aiohttp_client, tmp_path, db, retry_backoff=60.0, retry_backoff_max=60.0)
    task_id = await submit(client, BASE, "fail", {"message": "first try"}, max_retries=1)
    task = await observe(client, db, task_id, "restoring")
    assert task["task_retries"] == 1
    assert "first try" in task["task_result"]  # why it is being retried


async def test_restoring_after_resume(aiohttp_client: Any, tmp_path: Path, db: Path | str) -> None:
    client = await start(aiohttp_client, tmp_path, db)
    task_id = await submit(client, BASE, "echo", {}, delay=60)
    await put(client, task_id, "pause")
    await put(client, task_id, "resume")
    await observe(client, db, task_id, "success")
    assert trail(db, task_id) == [
        "new", "pending", "restoring", *to_queued(db), "queued", "running", "success",
    ]  # fmt: skip


async def test_running(aiohttp_client: Any, tmp_path: Path, db: Path | str) -> None:
    client = await start(aiohttp_client, tmp_path, db)
    gate = tmp_path / "gate"
    task_id = await submit(client, BASE, "gate", {"path": str(gate)})
    await observe(client, db, task_id, "running")
    gate.touch()
    await observe(client, db, task_id, "success")


async def test_cancelling_then_cancelled(
    aiohttp_client: Any, tmp_path: Path, db: Path | str
) -> None:
    """A job that ignores cancellation for a while stays `cancelling` until it ends."""
    client = await start(aiohttp_client, tmp_path, db)
    release, seen = tmp_path / "release", tmp_path / "cancel-seen"
    task_id = await submit(
        client, BASE, "stubborn", {"path": str(release), "cancel_seen": str(seen)}
    )
    await observe(client, db, task_id, "running")
    body = await put(client, task_id, "cancel")
    assert (body["task_status"], body["cancelled"]) == ("cancelling", True)
    await wait_file(seen)  # the job got the cancel, and ignores it
    await observe(client, db, task_id, "cancelling")
    response = await client.put(f"{BASE}/tasks/{task_id}", params={"action": "cancel"})
    assert response.status == 400
    release.touch()
    task = await observe(client, db, task_id, "cancelled")
    assert "task_result" not in task  # its return value does not make it a success
    assert trail(db, task_id)[-3:] == ["running", "cancelling", "cancelled"]


async def test_failed(aiohttp_client: Any, tmp_path: Path, db: Path | str) -> None:
    client = await start(aiohttp_client, tmp_path, db)
    task_id = await submit(client, BASE, "fail", {"message": "it broke"})
    task = await observe(client, db, task_id, "failed")
    assert "it broke" in task["task_result"]
    assert task["task_retries"] == 0


async def test_unknown(aiohttp_client: Any, tmp_path: Path, db: Path | str) -> None:
    """A row whose status this version cannot interpret (written by a newer one): shown as
    `unknown`, found by ?status=unknown, never run, never changed by the service."""
    client = await start(aiohttp_client, tmp_path, db)
    task_id = await submit(client, BASE, "echo", {"x": 1}, delay=60)
    execute(
        db, "UPDATE tasks SET status = 'hibernating', run_after_ms = 0 WHERE id = ?", (task_id,)
    )
    execute(
        db,
        "INSERT INTO tasks (graphspace, graph, name, type, callable, status, create_ms, update_ms)"
        " VALUES ('DEFAULT', 'hugegraph', 'from the future', 'echo', 'service.jobs.echo.run',"
        " 'archived', 1, 1)",
    )
    (future_id,) = rows(db, "SELECT id FROM tasks WHERE name = 'from the future'")[0]

    for unknown_id in (task_id, future_id):
        assert (await get_task(client, BASE, unknown_id))["task_status"] == "unknown"
    for status in ("unknown", "UNKNOWN"):
        listed = await (await client.get(f"{BASE}/tasks", params={"status": status})).json()
        assert [t["id"] for t in listed["tasks"]] == [task_id, future_id]

    # the service runs other work, and leaves these alone
    other = await submit(client, BASE, "echo", {"other": True})
    await wait_status(client, BASE, other, "success")
    for action in ("cancel", "pause", "resume", "retry"):
        response = await client.put(f"{BASE}/tasks/{task_id}", params={"action": action})
        assert response.status == 400, action
    assert (await client.delete(f"{BASE}/tasks/{task_id}")).status == 400
    assert stored_status(db, task_id) == "hibernating"
    assert stored_status(db, future_id) == "archived"
    assert trail(db, task_id) == ["new"]  # nothing was ever written for it after creation

    assert (
        await client.delete(f"{BASE}/tasks/{future_id}", params={"force": "true"})
    ).status == 204


async def test_every_way_into_running_names_the_server_it_ran_on(
    aiohttp_client: Any, tmp_path: Path, db: Path | str
) -> None:
    """task_server names where a task ran, however it came to run: new, resumed from
    `pending`, retried, restored after a crash (a row as a crash leaves it)."""
    first = await start(aiohttp_client, tmp_path, db, server_name="first")
    resumed = await submit(first, BASE, "echo", {}, delay=60)
    await put(first, resumed, "pause")  # never scheduled: no server yet
    failed = await submit(first, BASE, "fail", {"message": "once"})
    assert (await observe(first, db, failed, "failed"))["task_server"] == "first"
    crashed = await submit(first, BASE, "echo", {}, delay=60)
    await first.close()
    # as a crash of another host's process leaves it: running there
    execute(
        db,
        "UPDATE tasks SET status = 'running', server = 'gone', max_retries = 1 WHERE id = ?",
        (crashed,),
    )

    second = await start(aiohttp_client, tmp_path, db, server_name="second")
    await put(second, resumed, "resume")
    await put(second, failed, "retry")
    for task_id in (resumed, failed, crashed):
        task = await wait_status(second, BASE, task_id, "success", "failed")
        assert task["task_server"] == "second", (task_id, trail(db, task_id))
        running = [e for e in status_events(db, task_id) if e["task_status"] == "running"]
        assert running[-1]["task_server"] == "second"
