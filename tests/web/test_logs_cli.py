"""`sidetask logs ID [-f]`, run for real against a real server on loopback: the stored
lines, a level filter, a follow that prints a line as the job writes it and ends with the
task, and an unknown task's error."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestServer

from service.client import Client
from service.jobs import JobContext
from service.web import create_app
from tests.conftest import ROOT, make_settings
from tests.web.test_cli import STEP, command_env, sidetask, wait_task


async def hold(ctx: JobContext) -> str:
    """A line, then waits until the file `hold` exists, then another."""
    ctx.log("before the wait")
    ctx.log("careful", level="warning")
    while not Path(ctx.input["hold"]).exists():
        await asyncio.sleep(0.01)
    ctx.log("after the wait", level="error")
    return "held"


@pytest.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    settings = make_settings(tmp_path, jobs={"hold": f"{__name__}:hold"}, sse_retry_ms=20)
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


async def test_follow_prints_lines_as_they_come_until_the_task_ends(
    url: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    async with Client(url) as api:
        task_id = await api.submit("hold", {"hold": str(gate)})
        follower = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", "logs", str(task_id), "-f", "--json", "--url", url,
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=command_env(),
        )  # fmt: skip
        assert follower.stdout is not None
        try:
            async with asyncio.timeout(STEP):
                first = orjson.loads(await follower.stdout.readline())
                second = orjson.loads(await follower.stdout.readline())
            # printed while the job still waits
            assert (first["text"], first["level"], first["attempt"]) == (
                "before the wait",
                "info",
                1,
            )
            assert second["text"] == "careful"
            assert (await api.get(task_id)).status == "running"
            gate.write_text("")
            async with asyncio.timeout(STEP):
                rest, _ = await follower.communicate()
            assert follower.returncode == 0
        finally:
            if follower.returncode is None:
                follower.kill()
                await follower.wait()
        (third,) = [orjson.loads(line) for line in rest.splitlines()]
        assert (third["text"], third["level"]) == ("after the wait", "error")
        assert first["id"] < second["id"] < third["id"]
        await wait_task(api, task_id, "success")

        shown = await sidetask("logs", str(task_id), "--url", url)
        assert shown.code == 0, shown.err
        lines = shown.out.splitlines()
        assert len(lines) == 3
        assert "info" in lines[0] and lines[0].endswith("#1 before the wait")
        assert lines[2].endswith("#1 after the wait")
        filtered = await sidetask(
            "logs", str(task_id), "--level", "warning", "--json", "--url", url
        )
        texts: list[Any] = [orjson.loads(line)["text"] for line in filtered.out.splitlines()]
        assert texts == ["careful", "after the wait"]
        assert [ln.text for ln in await api.logs(task_id, level="error")] == ["after the wait"]

    missing = await sidetask("logs", "999999", "--url", url)
    assert missing.code != 0
    assert "Can't find task with id '999999'" in missing.err
