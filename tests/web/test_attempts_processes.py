"""Attempts with real processes, on both stores: a `python -m service serve` killed mid-job,
whose restored run finds the checkpoint and the progress the killed one left, and the
attempts list showing the interrupted run by the process that ran it; `sidetask attempts`
as a command."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import orjson
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from service.jobs import JobContext
from service.web import create_app
from tests.conftest import ServerProcess, make_settings, wait_for
from tests.sup_util import rows
from tests.web.test_attempts import JOBS
from tests.web.test_cli import sidetask, submitted_id
from tests.web.test_recovery import Factory, get, post_job, started, wait_exit, wait_task

BASE = "/graphs/hugegraph"


async def resumable(ctx: JobContext) -> dict[str, Any]:
    """Counts to `n`, checkpointing after each step; its first run stops after `stop_at`
    steps and waits there (to be killed), touching `waiting`."""
    n = ctx.input["n"]
    start = ctx.checkpoint_value["next"] if ctx.checkpoint_value else 0
    for step in range(start, n):
        if ctx.retries == 0 and step == ctx.input["stop_at"]:
            Path(ctx.input["waiting"]).touch()
            while True:
                await asyncio.sleep(0.05)
        ctx.checkpoint({"next": step + 1})
        ctx.progress(step + 1, total=n)
    return {"resumed_at": start, "last_progress": ctx.last_progress}


ENV = {"SIDETASK_JOBS": orjson.dumps({**JOBS, "resumable": f"{__name__}:resumable"}).decode()}


async def test_a_killed_run_is_interrupted_and_the_restored_one_resumes(
    server_factory: Factory, http: ClientSession, tmp_path: Path, any_db: Path | str
) -> None:
    first: ServerProcess = server_factory(db=any_db, env=ENV)
    await first.wait_ready()
    waiting = tmp_path / "waiting"
    task_id = await post_job(
        http, first, "resumable", {"n": 6, "stop_at": 4, "waiting": str(waiting)}, max_retries=1
    )

    async def durable() -> bool:
        # the checkpoint and the progress stored, not only given to the service
        found = rows(
            any_db,
            "SELECT a.checkpoint, t.progress FROM attempts a JOIN tasks t ON t.id = a.task_id"
            " WHERE a.task_id = ?",
            (task_id,),
        )
        return found == [('{"next":4}', 4)] and waiting.exists()

    await wait_for(durable, 15, "the first run's checkpoint to be stored")
    first.kill()

    second = await started(server_factory, any_db, **ENV)
    task = await wait_task(http, second, task_id, "success", timeout=30)
    assert orjson.loads(task["task_result"]) == {"resumed_at": 4, "last_progress": 4}
    assert (task["task_progress"], task["task_progress_total"], task["task_retries"]) == (6, 6, 1)
    async with http.get(f"{second.url}{BASE}/tasks/{task_id}/attempts") as response:
        assert response.status == 200
        killed, restored = (await response.json())["attempts"]
    assert (killed["attempt"], killed["outcome"], restored["attempt"], restored["outcome"]) == (
        1,
        "interrupted",
        2,
        "success",
    )
    # each by the process that ran it
    assert killed["replica"].endswith(f":{first.proc.pid}")
    assert restored["replica"].endswith(f":{second.proc.pid}")
    assert killed["checkpointed"] and "error" not in killed
    # the interrupted run ended when the restart found it, before the next began
    assert killed["start"] <= killed["end"] <= restored["start"] <= restored["end"]
    assert (await get(http, second, task_id))["task_status"] == "success"


async def test_a_drain_that_gives_up_on_a_run_hands_it_back_to_resume(
    server_factory: Factory, http: ClientSession, tmp_path: Path, any_db: Path | str
) -> None:
    """A drain whose grace runs out: on PostgreSQL the run is handed back to the other
    replicas at once (`handed_back`); on SQLite it is restored at the next start
    (`interrupted`). Either way the next run resumes from the checkpoint."""
    first = server_factory(db=any_db, env={**ENV, "SIDETASK_DRAIN_GRACE": "0.2"})
    await first.wait_ready()
    waiting = tmp_path / "waiting"
    task_id = await post_job(
        http, first, "resumable", {"n": 4, "stop_at": 2, "waiting": str(waiting)}, max_retries=1
    )

    async def durable() -> bool:
        found = rows(any_db, "SELECT checkpoint FROM attempts WHERE task_id = ?", (task_id,))
        return found == [('{"next":2}',)] and waiting.exists()

    await wait_for(durable, 15, "the first run's checkpoint to be stored")
    first.proc.send_signal(signal.SIGTERM)
    assert await wait_exit(first) == 0
    shared = isinstance(any_db, str)  # PostgreSQL: a store several processes share
    stored = rows(any_db, "SELECT status FROM tasks WHERE id = ?", (task_id,))
    # handed back at once, or left running for the next start's restore
    assert stored == ([("restoring",)] if shared else [("running",)])

    second = await started(server_factory, any_db, **ENV)
    task = await wait_task(http, second, task_id, "success", timeout=30)
    assert orjson.loads(task["task_result"]) == {"resumed_at": 2, "last_progress": 2}
    async with http.get(f"{second.url}{BASE}/tasks/{task_id}/attempts") as response:
        given_up, resumed = (await response.json())["attempts"]
    assert given_up["outcome"] == ("handed_back" if shared else "interrupted")
    assert given_up["replica"].endswith(f":{first.proc.pid}")
    assert resumed["outcome"] == "success"


async def test_the_command_shows_each_attempt_and_its_traceback(
    tmp_path: Path, any_db: Path | str
) -> None:
    settings = make_settings(tmp_path, any_db, jobs=JOBS)
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        url = str(server.make_url("")).rstrip("/")
        ran = await sidetask("submit", "always_fails", "--max-retries", "1", "--url", url)
        assert ran.code == 0, ran.err
        task_id = submitted_id(ran)

        async def failed() -> bool:
            listed = await sidetask("get", str(task_id), "--json", "--url", url)
            return orjson.loads(listed.out)["task_status"] == "failed"

        await wait_for(failed, what="the task to fail")
        table = await sidetask("attempts", str(task_id), "--url", url)
        assert table.code == 0, table.err
        header = next(line for line in table.out.splitlines() if "OUTCOME" in line)
        assert header.split() == [
            "#",
            "OUTCOME",
            "SERVER",
            "REPLICA",
            "STARTED",
            "SECONDS",
            "ERROR",
        ]
        rows = [line for line in table.out.splitlines() if "ValueError: no good" in line]
        assert len(rows) == 2 and rows[0].split()[:2] == ["1", "failed"]
        assert "Traceback" not in table.out

        full = await sidetask("attempts", str(task_id), "--traceback", "--url", url)
        assert full.out.count("Traceback (most recent call last):") == 2
        assert "attempt 2" in full.out

        as_json = await sidetask("attempts", str(task_id), "--json", "--url", url)
        runs = orjson.loads(as_json.out)
        assert [r["outcome"] for r in runs] == ["failed", "failed"]
        assert runs[0]["error"]["type"] == "ValueError"

        missing = await sidetask("attempts", "999999", "--url", url)
        assert missing.code != 0 and "Can't find task with id '999999'" in missing.err
    finally:
        await server.close()
