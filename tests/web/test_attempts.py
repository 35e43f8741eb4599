"""Attempts, checkpoints and resumed progress end to end, through a real server on loopback
and on both stores: GET …/tasks/{id}/attempts shows each run with how it ended and a
failure's error; a job that checkpoints resumes where the failed run left off (an async job
and a plain function alike). A killed server's run, and `sidetask attempts`: in
test_attempts_processes.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from service.jobs import JobContext
from service.web import create_app
from tests.conftest import get_task, make_settings, submit, wait_status
from tests.sse import SSEReader

BASE = "/graphs/hugegraph"


def process(ctx: JobContext) -> dict[str, Any]:
    """Processes `items` one by one, checkpointing after each; its first run fails after
    `fail_after` of them. What it did in this run is its result."""
    items = ctx.input["items"]
    start = ctx.checkpoint_value["next"] if ctx.checkpoint_value else 0
    done = []
    for index in range(start, len(items)):
        if ctx.retries == 0 and index == ctx.input["fail_after"]:
            raise OSError(f"out of disk at item {index}")
        done.append(items[index])
        ctx.checkpoint({"next": index + 1})
        ctx.progress(index + 1, total=len(items))
    return {
        "resumed_at": start,
        "last_progress": ctx.last_progress,
        "last_total": ctx.last_progress_total,
        "done": done,
    }


async def process_async(ctx: JobContext) -> dict[str, Any]:
    return process(ctx)


def explode(depth: int) -> None:
    """Fails `depth` frames down (two functions in turn: Python folds a frame repeated)."""
    if depth:
        bounce(depth - 1)
    raise ValueError("no good")


def bounce(depth: int) -> None:
    explode(depth)


async def always_fails(ctx: JobContext) -> None:
    explode(ctx.input.get("depth", 0) if ctx.input else 0)


async def big_checkpoint(ctx: JobContext) -> str:
    try:
        ctx.checkpoint({"blob": "x" * 500})
    except ValueError as exc:
        return str(exc)
    return "stored"


async def not_json(ctx: JobContext) -> None:
    ctx.checkpoint({"when": object()})


async def forever(ctx: JobContext) -> None:
    """Reports 1 of 3, then runs until it is cancelled (or times out)."""
    ctx.progress(1, total=3)
    while True:
        await asyncio.sleep(0.05)


JOBS: dict[str, Any] = {
    "process": f"{__name__}:process",
    # the same function in a child process: its checkpoints cross the pipe
    "process_child": {"call": f"{__name__}:process", "run_in": "process"},
    "process_async": f"{__name__}:process_async",
    "always_fails": f"{__name__}:always_fails",
    "big_checkpoint": f"{__name__}:big_checkpoint",
    "not_json": f"{__name__}:not_json",
    "forever": f"{__name__}:forever",
}


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path, any_db: Path | str) -> TestClient:
    settings = make_settings(
        tmp_path, any_db, jobs=JOBS, max_checkpoint_bytes=100, max_traceback_chars=1500
    )
    return await aiohttp_client(create_app(settings))  # type: ignore[no-any-return]


async def attempts_of(client: TestClient, task_id: int, base: str = BASE) -> list[dict[str, Any]]:
    response = await client.get(f"{base}/tasks/{task_id}/attempts")
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["id"] == task_id
    return list(body["attempts"])


@pytest.mark.parametrize("job", ["process", "process_async", "process_child"])
async def test_a_retried_job_resumes_from_its_checkpoint(client: TestClient, job: str) -> None:
    items = ["a", "b", "c", "d", "e"]
    task_id = await submit(client, BASE, job, {"items": items, "fail_after": 3}, max_retries=1)
    task = await wait_status(client, BASE, task_id, "success", timeout=30)
    # the second run began where the first stopped, with its progress
    assert orjson.loads(task["task_result"]) == {
        "resumed_at": 3,
        "last_progress": 3,
        "last_total": 5,
        "done": ["d", "e"],
    }
    assert (task["task_progress"], task["task_progress_total"], task["task_retries"]) == (5, 5, 1)
    first, second = await attempts_of(client, task_id)
    assert (first["attempt"], first["outcome"], second["attempt"], second["outcome"]) == (
        1,
        "failed",
        2,
        "success",
    )
    assert first["error"]["type"] == "OSError"
    assert first["error"]["message"] == "out of disk at item 3"
    assert first["error"]["traceback"].startswith("Traceback (most recent call last):")
    assert "in process" in first["error"]["traceback"]
    assert first["error"]["traceback"].rstrip().endswith("OSError: out of disk at item 3")
    assert first["checkpointed"] and second["checkpointed"]
    assert "error" not in second
    for attempt in (first, second):
        assert attempt["server"] == "sidetask"  # server_name
        assert attempt["replica"].rsplit(":", 1)[1].isdigit()
        assert attempt["start"] <= attempt["end"]
    assert first["end"] <= second["start"]


async def test_a_failed_task_keeps_its_text_and_each_run_its_error(client: TestClient) -> None:
    task_id = await submit(client, BASE, "always_fails", {"depth": 200}, max_retries=2)
    task = await wait_status(client, BASE, task_id, "failed", timeout=30)
    assert task["task_result"] == "ValueError: no good"  # HugeGraph's text, as before
    attempts = await attempts_of(client, task_id)
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [
        (1, "failed"),
        (2, "failed"),
        (3, "failed"),
    ]
    for attempt in attempts:
        error = attempt["error"]
        assert (error["type"], error["message"]) == ("ValueError", "no good")
        # 200 frames deep: the last 1500 characters (max_traceback_chars), where the error is
        traceback = error["traceback"]
        assert traceback.startswith("…(") and " characters cut)…\n" in traceback
        assert len(traceback.split("\n", 1)[1]) == 1500
        assert traceback.rstrip().endswith("ValueError: no good")


async def test_a_checkpoint_too_big_or_not_json_is_refused_to_the_job(client: TestClient) -> None:
    task_id = await submit(client, BASE, "big_checkpoint", {})
    task = await wait_status(client, BASE, task_id, "success")
    message = orjson.loads(task["task_result"])
    assert message.startswith("the checkpoint is 511 bytes of JSON, over the limit of 100 bytes")
    assert "(max_checkpoint_bytes)" in message
    (attempt,) = await attempts_of(client, task_id)
    assert attempt["checkpointed"] is False

    task_id = await submit(client, BASE, "not_json", {})
    task = await wait_status(client, BASE, task_id, "failed")
    assert task["task_result"].startswith("ValueError: a checkpoint must be a JSON value")


async def test_a_cancelled_run_and_a_timed_out_one(client: TestClient) -> None:
    cancelled = await submit(client, BASE, "forever", {})
    await wait_status(client, BASE, cancelled, "running")
    response = await client.put(f"{BASE}/tasks/{cancelled}", params={"action": "cancel"})
    assert response.status == 202
    await wait_status(client, BASE, cancelled, "cancelled")
    (attempt,) = await attempts_of(client, cancelled)
    assert attempt["outcome"] == "cancelled" and "error" not in attempt

    timed_out = await submit(client, BASE, "forever", {}, timeout=0.2)
    task = await wait_status(client, BASE, timed_out, "failed")
    (attempt,) = await attempts_of(client, timed_out)
    assert attempt["outcome"] == "timed_out"
    assert attempt["error"]["message"] == task["task_result"]


async def test_a_running_attempt_shows_running_and_a_waiting_task_none(
    client: TestClient,
) -> None:
    waiting = await submit(client, BASE, "forever", {}, delay=3600)
    assert await attempts_of(client, waiting) == []
    running = await submit(client, BASE, "forever", {})
    await wait_status(client, BASE, running, "running")
    (attempt,) = await attempts_of(client, running)
    assert (attempt["outcome"], attempt["end"]) == ("running", None)
    await client.put(f"{BASE}/tasks/{running}", params={"action": "cancel"})
    await wait_status(client, BASE, running, "cancelled")


async def test_attempts_of_a_missing_or_another_graphs_task_are_a_404(
    client: TestClient,
) -> None:
    task_id = await submit(client, BASE, "always_fails", {})
    await wait_status(client, BASE, task_id, "failed")
    for url in (
        f"{BASE}/tasks/999999/attempts",
        f"/graphspaces/gs1/graphs/other/tasks/{task_id}/attempts",
        f"/graphs/nope/tasks/{task_id}/attempts",
    ):
        response = await client.get(url)
        assert response.status == 404, url
        body = await response.json()
        assert list(body) == ["exception", "message", "cause"]
    response = await client.get(f"{BASE}/tasks/abc/attempts")
    assert response.status == 400
    # the same task under its graph's other prefix
    assert len(await attempts_of(client, task_id, "/graphspaces/DEFAULT/graphs/hugegraph")) == 1
    # deleted with the task
    response = await client.delete(f"{BASE}/tasks/{task_id}")
    assert response.status == 204
    assert (await client.get(f"{BASE}/tasks/{task_id}/attempts")).status == 404


async def test_a_progress_event_carries_the_declared_total(client: TestClient) -> None:
    task_id = await submit(client, BASE, "forever", {})
    response = await client.get(f"{BASE}/tasks/{task_id}/events")
    reader = SSEReader(response)
    while (event := await reader.next()) is not None and event.event != "task.progress":
        pass
    response.close()
    assert event is not None
    body = event.json
    assert (body["task_progress"], body["task_progress_total"]) == (1, 3)
    # after HugeGraph's keys (SPEC 2): the event's data is the task as GET shows it, less
    # its input
    keys = list(body)
    assert keys.index("task_progress_total") > keys.index("task_callable")
    task = await get_task(client, BASE, task_id)
    assert (task["task_progress"], task["task_progress_total"]) == (1, 3)
    await client.put(f"{BASE}/tasks/{task_id}", params={"action": "cancel"})
    await wait_status(client, BASE, task_id, "cancelled")


async def test_an_external_workers_runs_are_attempts_too(
    aiohttp_client: Any, tmp_path: Path, any_db: Path | str
) -> None:
    """A worker's run starts with its first report (or its end, if it sends no progress)
    and ends with its complete or fail; a lease that runs out ends it `lost`."""
    from tests.web.test_workers import answer_of, claim, report

    settings = make_settings(tmp_path, any_db, external_types=("resize",), lease_duration=0.5)
    client = await aiohttp_client(create_app(settings))
    task_id = await submit(client, BASE, "resize", {"image": "cat.png"}, max_retries=2)

    work = await claim(client, "resizer-1")
    assert await attempts_of(client, task_id) == []  # claimed, not started
    await answer_of(await report(client, work, body={"progress": 10}))
    (running,) = await attempts_of(client, task_id)
    assert (running["server"], running["outcome"]) == ("resizer-1", "running")
    await answer_of(await report(client, work, "/fail", {"error": "OSError: out of disk"}))

    work = await claim(client, "resizer-2")
    await answer_of(await report(client, work, body={"progress": 5}))
    # this one stops reporting: its lease runs out and the task is given back
    await wait_status(client, BASE, task_id, "restoring", "new", timeout=30)

    work = await claim(client, "resizer-3")
    await answer_of(await report(client, work, "/complete", {"result": "ok"}))
    await wait_status(client, BASE, task_id, "success")
    first, second, third = await attempts_of(client, task_id)
    assert [(a["server"], a["outcome"]) for a in (first, second, third)] == [
        ("resizer-1", "failed"),
        ("resizer-2", "lost"),
        ("resizer-3", "success"),
    ]
    assert first["error"] == {"type": None, "message": "OSError: out of disk", "traceback": None}
    assert "stopped reporting" in second["error"]["message"]
