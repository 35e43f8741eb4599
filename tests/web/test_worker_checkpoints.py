"""External workers' checkpoints, on both stores: a worker reports `checkpoint` with its
progress (or with its failure), the attempt keeps it, and the claim of the task's next
attempt (a retry, or after the lease ran out) gives it back with the last progress; the
Python worker exposes it as `task.checkpoint_value` and `task.checkpoint(value)`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.web import create_app
from service.worker import Worker, WorkerTask
from tests.conftest import make_settings, submit, wait_status
from tests.web.test_workers import BASE, answer_of, claim, report


@pytest.fixture
def db(any_db: Path | str) -> Path | str:
    return any_db


async def client_for(aiohttp_client: Any, tmp_path: Path, db: Path | str, **overrides: Any) -> Any:
    options = {
        "external_types": ("resize",),
        "lease_duration": 10.0,
        "retry_backoff": 0.01,
        "max_checkpoint_bytes": 200,
        **overrides,
    }
    return await aiohttp_client(create_app(make_settings(tmp_path, db, **options)))


async def attempts(client: Any, task_id: int) -> list[dict[str, Any]]:
    response = await client.get(f"{BASE}/tasks/{task_id}/attempts")
    return list((await answer_of(response))["attempts"])


async def test_a_retried_claim_gets_the_last_checkpoint_and_progress(
    aiohttp_client: Any, tmp_path: Path, db: Path | str
) -> None:
    client = await client_for(aiohttp_client, tmp_path, db)
    task_id = await submit(client, BASE, "resize", {"images": 5}, max_retries=2)
    first = await claim(client)
    assert (first["checkpoint"], first["progress"], first["retries"]) == (None, 0, 0)
    await answer_of(await report(client, first, body={"progress": 2, "checkpoint": {"next": 2}}))
    # the failure carries the last one, which wins over the report's
    await answer_of(
        await report(client, first, "/fail", {"error": "disk full", "checkpoint": {"next": 3}})
    )
    second = await claim(client, "w2")
    assert (second["id"], second["retries"]) == (task_id, 1)
    assert (second["checkpoint"], second["progress"]) == ({"next": 3}, 2)
    # a heartbeat without a checkpoint keeps the earlier one: a failure now without one
    # leaves the next claim the same value
    await answer_of(await report(client, second))
    await answer_of(await report(client, second, "/fail", {"error": "disk still full"}))
    third = await claim(client, "w3")
    assert third["checkpoint"] == {"next": 3}
    await answer_of(await report(client, third, "/complete", {"result": "ok"}))
    await wait_status(client, BASE, task_id, "success")
    runs = await attempts(client, task_id)
    assert [(a["server"], a["checkpointed"]) for a in runs] == [
        ("w1", True),
        ("w2", False),
        ("w3", False),
    ]


async def test_a_claim_after_an_expired_lease_resumes_from_the_checkpoint(
    aiohttp_client: Any, tmp_path: Path, db: Path | str
) -> None:
    client = await client_for(aiohttp_client, tmp_path, db, lease_duration=1.0)
    task_id = await submit(client, BASE, "resize", {}, max_retries=1)
    work = await claim(client, "dies-1")
    await answer_of(await report(client, work, body={"progress": 7, "checkpoint": [1, "two"]}))
    await wait_status(client, BASE, task_id, "restoring")  # its lease ran out
    again = await claim(client, "w2")
    assert (again["id"], again["checkpoint"], again["progress"]) == (task_id, [1, "two"], 7)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/progress", {"checkpoint": {"blob": "x" * 300}}),
        ("/fail", {"error": "no", "checkpoint": {"blob": "x" * 300}}),
    ],
)
async def test_a_checkpoint_over_the_bound_is_a_413(
    aiohttp_client: Any, tmp_path: Path, db: Path | str, path: str, body: Any
) -> None:
    client = await client_for(aiohttp_client, tmp_path, db)
    await submit(client, BASE, "resize", {})
    work = await claim(client)
    answer = await answer_of(await report(client, work, path, body), 413)
    assert answer["message"].startswith("The checkpoint is 311 bytes of JSON, over the limit")
    assert "(max_checkpoint_bytes)" in answer["message"]
    # nothing was written: the lease holds, and the task runs on
    await answer_of(await report(client, work, body={"progress": 1}))


async def resumable(task: WorkerTask) -> dict[str, Any]:
    """Four items, a checkpoint after each; the first run fails at the third."""
    start = task.checkpoint_value["next"] if task.checkpoint_value else 0
    for index in range(start, 4):
        if task.retries == 0 and index == 2:
            raise OSError("out of disk")
        task.checkpoint({"next": index + 1})
        task.progress(index + 1)
        await asyncio.sleep(0)
    return {"resumed_at": start, "last_progress": task.last_progress}


async def test_the_python_worker_resumes_from_its_checkpoint(
    aiohttp_client: Any, tmp_path: Path, db: Path | str
) -> None:
    client = await client_for(aiohttp_client, tmp_path, db)
    task_id = await submit(client, BASE, "resize", {}, max_retries=1)
    worker = Worker(str(client.make_url("")), "py-1", {"resize": resumable}, wait=1.0)
    ran = await asyncio.wait_for(worker.run(burst=True), 60)
    assert ran == 2
    task = await wait_status(client, BASE, task_id, "success")
    result = orjson.loads(task["task_result"])
    # the failed run's last checkpoint went with its failure; its progress with its reports
    assert result["resumed_at"] == 2
    assert result["last_progress"] in (1, 2)
    runs = await attempts(client, task_id)
    assert [a["outcome"] for a in runs] == ["failed", "success"]
    assert runs[0]["checkpointed"]


def test_a_checkpoint_that_is_not_json_is_refused_to_the_worker_function() -> None:
    loop = asyncio.new_event_loop()
    try:
        task = WorkerTask({"id": 1, "type": "t", "task_url": "/t", "lease": "l"}, loop)
        with pytest.raises(ValueError, match="a checkpoint must be a JSON value"):
            task.checkpoint({"when": object()})
        assert task.checkpoint_value is None
    finally:
        loop.close()
