"""A task's log lines end to end, through a real server on both stores: ctx.log from an
async job, a plain function's thread and a child process (run_in = "process"); a job's own
logging records and print output captured as its lines (two jobs at once each get their
own); a command's stdout and stderr lines readable while it still runs; GET
…/tasks/{id}/logs paged by after= and filtered by level=, 404 for a task that is not
there; task.log events on the task's stream, resumable with Last-Event-ID."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.jobs import JobContext
from service.web import create_app
from tests.conftest import make_settings, submit, wait_for, wait_status
from tests.sse import SSEReader

BASE = "/graphs/hugegraph"
CMD = str(Path(__file__).resolve().parent.parent / "jobs_helpers" / "cmd.py")
joblog = logging.getLogger("tests.joblog")
joblog.setLevel(logging.DEBUG)


def talk(ctx: JobContext) -> str:
    """Writes its lines each way a job can: ctx.log, logging, print (stdout and stderr)."""
    name = ctx.input["name"]
    ctx.log(f"{name}: starting", level="debug")
    for n in range(ctx.input.get("lines", 3)):
        ctx.log(f"{name}: line {n}")
    joblog.warning("%s: from logging", name)
    print(f"{name}: printed")
    print(f"{name}: to stderr", file=sys.stderr)
    ctx.log(f"{name}: done", level="error")
    return name


async def talk_async(ctx: JobContext) -> str:
    await asyncio.sleep(0)
    return talk(ctx)


async def talk_slowly(ctx: JobContext) -> str:
    """Logs a line each turn, so that two of them interleave."""
    name = ctx.input["name"]
    for n in range(20):
        joblog.info("%s %d", name, n)
        print(f"{name} printed {n}")
        await asyncio.sleep(0.005)
    return name


def talk_slowly_thread(ctx: JobContext) -> str:
    """The same from a plain function's thread."""
    name = ctx.input["name"]
    for n in range(20):
        joblog.info("%s %d", name, n)
        print(f"{name} printed {n}")
        time.sleep(0.005)
    return name


JOBS: dict[str, Any] = {
    "talk": f"{__name__}:talk",
    "talk_async": f"{__name__}:talk_async",
    "talk_child": {"call": f"{__name__}:talk", "run_in": "process"},
    "talk_slowly": f"{__name__}:talk_slowly",
    "talk_slowly_thread": f"{__name__}:talk_slowly_thread",
}


def commands(tmp_path: Path) -> dict[str, Any]:
    return {
        "steps": {
            "argv": [sys.executable, CMD, "progress", "{steps}", "{hold}"],
            "params": {"steps": "integer", "hold": "string"},
        },
        "exits": {"argv": [sys.executable, CMD, "exit", "{code}"], "params": {"code": "integer"}},
    }


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path, any_db: Path | str) -> TestClient:
    settings = make_settings(
        tmp_path, any_db, jobs=JOBS, commands=commands(tmp_path), max_log_lines=50
    )
    return await aiohttp_client(create_app(settings))  # type: ignore[no-any-return]


async def logs(client: TestClient, task_id: int, **query: Any) -> dict[str, Any]:
    response = await client.get(
        f"{BASE}/tasks/{task_id}/logs", params={k: str(v) for k, v in query.items()}
    )
    assert response.status == 200, await response.text()
    return dict(await response.json())


def texts(body: dict[str, Any]) -> list[str]:
    return [line["text"] for line in body["lines"]]


@pytest.mark.parametrize("job", ["talk", "talk_async", "talk_child"])
async def test_a_job_writes_lines_every_way(client: TestClient, job: str) -> None:
    task_id = await submit(client, BASE, job, {"name": job})
    await wait_status(client, BASE, task_id, "success", timeout=30)
    body = await logs(client, task_id)
    assert texts(body) == [
        f"{job}: starting",
        f"{job}: line 0",
        f"{job}: line 1",
        f"{job}: line 2",
        f"tests.joblog: {job}: from logging",
        f"{job}: printed",
        f"{job}: to stderr",
        f"{job}: done",
    ]
    levels = [line["level"] for line in body["lines"]]
    assert levels == ["debug", "info", "info", "info", "warning", "info", "warning", "error"]
    assert {line["attempt"] for line in body["lines"]} == {1}
    assert all(line["time"] > 0 for line in body["lines"])
    assert body["last"] == body["lines"][-1]["id"]
    # the level filter, and paging on from a line id
    assert texts(await logs(client, task_id, level="warning")) == [
        f"tests.joblog: {job}: from logging",
        f"{job}: to stderr",
        f"{job}: done",
    ]
    first = await logs(client, task_id, limit=3)
    rest = await logs(client, task_id, after=first["last"])
    assert texts(first) + texts(rest) == texts(body)


async def test_two_jobs_at_once_each_get_their_own_lines(client: TestClient) -> None:
    names = ("a", "b", "c", "d")
    kinds = ("talk_slowly", "talk_slowly", "talk_slowly_thread", "talk_slowly_thread")
    ids = [
        await submit(client, BASE, kind, {"name": name})
        for kind, name in zip(kinds, names, strict=True)
    ]
    for task_id in ids:
        await wait_status(client, BASE, task_id, "success", timeout=30)
    for task_id, name in zip(ids, names, strict=True):
        lines = texts(await logs(client, task_id))
        assert sorted(lines) == sorted(
            [f"tests.joblog: {name} {n}" for n in range(20)]
            + [f"{name} printed {n}" for n in range(20)]
        )


async def test_a_commands_output_is_readable_while_it_runs(
    client: TestClient, tmp_path: Path
) -> None:
    hold = tmp_path / "hold"
    task_id = await submit(client, BASE, "steps", {"steps": 2, "hold": str(hold)})

    async def both_steps() -> list[str] | None:
        lines = texts(await logs(client, task_id))
        return lines if len(lines) >= 2 else None

    assert await wait_for(both_steps, timeout=20, what="the command's lines") == [
        "did step 1",
        "did step 2",
    ]  # the progress lines are progress, not log lines
    assert (await client.get(f"{BASE}/tasks/{task_id}")).status == 200
    task = await wait_status(client, BASE, task_id, "running")
    assert task["task_status"] == "running"  # it waits on the file still
    hold.write_text("")
    await wait_status(client, BASE, task_id, "success", timeout=20)
    failing = await submit(client, BASE, "exits", {"code": 3})
    await wait_status(client, BASE, failing, "failed", timeout=20)
    body = await logs(client, failing)
    assert [(ln["level"], ln["text"]) for ln in body["lines"]] == [
        ("info", "about to fail"),
        ("warning", "something went wrong"),
    ]


async def test_a_log_past_its_bound_keeps_the_last_lines_and_a_marker(
    client: TestClient,
) -> None:
    task_id = await submit(client, BASE, "talk_async", {"name": "many", "lines": 200})
    await wait_status(client, BASE, task_id, "success", timeout=30)
    body = await logs(client, task_id)
    marker, *kept = body["lines"]
    assert marker["level"] == "warning" and "lines dropped" in marker["text"]
    assert len(kept) == 50  # max_log_lines
    assert kept[-1]["text"] == "many: done"


async def test_the_route_refuses_what_it_cannot_answer(client: TestClient) -> None:
    missing = await client.get(f"{BASE}/tasks/999/logs")
    assert missing.status == 404
    assert "Can't find task with id '999'" in (await missing.json())["message"]
    task_id = await submit(client, BASE, "talk", {"name": "x"})
    bad = await client.get(f"{BASE}/tasks/{task_id}/logs?level=loud")
    assert bad.status == 400
    assert "Invalid level 'loud'" in (await bad.json())["message"]
    bad = await client.get(f"{BASE}/tasks/{task_id}/logs?limit=0")
    assert bad.status == 400


async def test_lines_come_as_task_log_events_and_resume(client: TestClient) -> None:
    task_id = await submit(client, BASE, "talk_async", {"name": "ev"})
    async with asyncio.timeout(30):
        response = await client.get(f"{BASE}/tasks/{task_id}/events")
        reader = SSEReader(response)
        events = await reader.collect(timeout=30)
    log_events = [e for e in events if e.event == "task.log"]
    assert log_events, [e.event for e in events]
    carried = [line["text"] for e in log_events for line in e.json["lines"]]
    assert carried == texts(await logs(client, task_id))
    assert all(e.json["id"] == task_id for e in log_events)
    # the last event is the completed status: the lines came before it
    assert events[-1].event == "task.status"
    # resumed after the first log event: the others again, and nothing before
    first = log_events[0]
    async with asyncio.timeout(30):
        again = await client.get(
            f"{BASE}/tasks/{task_id}/events", headers={"Last-Event-ID": str(first.id)}
        )
        replayed = await SSEReader(again).collect(timeout=30)
    assert [e.id for e in replayed] == [e.id for e in events if e.id and e.id > (first.id or 0)]
    # the graph's stream has them too
    async with asyncio.timeout(30):
        graph = await client.get(f"{BASE}/events", headers={"Last-Event-ID": "0"})
        seen = await SSEReader(graph).until(
            lambda e: e.event == "task.status" and e.json.get("id") == task_id
            and e.json.get("task_status") == "success"
        )  # fmt: skip
        graph.close()
    on_graph = [e.id for e in seen if e.event == "task.log" and e.json["id"] == task_id]
    assert on_graph == [e.id for e in log_events]
