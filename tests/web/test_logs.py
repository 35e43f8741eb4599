"""Logs of a real `sidetask serve`: one line per request and per task transition, as text or
as JSON objects with request and task ids; the request id comes back in X-Request-Id."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
from aiohttp import ClientSession

from service.logs import JsonFormatter
from tests.conftest import ROOT, TEST_CONFIG, free_port, wait_for

BASE = "/graphs/hugegraph"


def json_lines(output: str) -> list[dict[str, Any]]:
    """Every line of the output as a JSON object: a line that is not one fails the test."""
    return [orjson.loads(line) for line in output.splitlines() if line.strip()]


async def submit_echo(
    http: ClientSession, url: str, request_id: str | None = None
) -> tuple[int, str]:
    headers = {"X-Request-Id": request_id} if request_id else {}
    async with http.post(f"{url}{BASE}/jobs/echo", json={"x": 1}, headers=headers) as response:
        assert response.status == 201
        return int((await response.json())["task_id"]), response.headers["X-Request-Id"]


async def test_json_logs_carry_request_and_task_ids(
    server_factory: Any, http: ClientSession
) -> None:
    server = server_factory(env={"SIDETASK_LOG_FORMAT": "json"})
    await server.wait_ready()
    task_id, echoed = await submit_echo(http, server.url, "import-2026-11-21")
    assert echoed == "import-2026-11-21"
    async with http.get(f"{server.url}{BASE}/tasks/{task_id}") as response:
        made = response.headers["X-Request-Id"]  # none was sent: the server made one
    async with http.get(
        f"{server.url}/health", headers={"X-Request-Id": "bad id with spaces"}
    ) as response:
        replaced = response.headers["X-Request-Id"]
    assert made and replaced != "bad id with spaces"

    async def success_logged() -> list[dict[str, Any]] | None:
        lines = json_lines(server.output())
        return (
            lines
            if any(
                line.get("task_id") == task_id and line.get("status") == "success" for line in lines
            )
            else None
        )

    lines = await wait_for(success_logged, 10.0, "the task's success in the log")
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line)

    submitted = [line for line in lines if line.get("request_id") == "import-2026-11-21"]
    access = [line for line in submitted if line["logger"] == "sidetask.access"]
    assert len(access) == 1
    assert access[0]["method"] == "POST" and access[0]["status_code"] == 201
    assert access[0]["route"] == "/graphs/{graph}/jobs/{type}"
    assert access[0]["path"] == f"{BASE}/jobs/echo"

    transitions = [
        line["status"]
        for line in lines
        if line["logger"] == "sidetask.tasks" and line.get("task_id") == task_id
    ]
    assert transitions == ["new", "queued", "running", "success"]
    assert any(line.get("request_id") == made and line.get("status_code") == 200 for line in lines)
    assert any(
        line.get("request_id") == replaced and line.get("route") == "/health" for line in lines
    )


async def test_text_logs_tag_lines_with_ids(server_factory: Any, http: ClientSession) -> None:
    server = server_factory()
    await server.wait_ready()
    task_id, _ = await submit_echo(http, server.url, "text-7")

    async def logged() -> str | None:
        output = server.output()
        return (
            output
            if f"task {task_id} success (echo, DEFAULT/hugegraph) [task_id={task_id}]" in output
            else None
        )

    output = await wait_for(logged, 10.0, "the task's success in the log")
    access = [
        line
        for line in output.splitlines()
        if "sidetask.access" in line and "[request_id=text-7]" in line
    ]
    assert len(access) == 1 and f'"POST {BASE}/jobs/echo" 201' in access[0]
    assert not output.lstrip().startswith("{")


async def test_serve_log_format_option(tmp_path: Path, http: ClientSession) -> None:
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "serve", "--port", str(port), "--db", str(tmp_path / "t.db"),
        "--config", str(TEST_CONFIG), "--log-format", "json",
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("SIDETASK_")},
    )  # fmt: skip
    try:

        async def ready() -> bool:
            assert proc.returncode is None, (tmp_path / "serve.log").read_text()
            try:
                async with http.get(f"http://127.0.0.1:{port}/ready") as response:
                    return response.status == 200
            except OSError:
                return False

        await wait_for(ready, 15.0, "the server to be ready")
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        log.close()
    lines = json_lines((tmp_path / "serve.log").read_text())
    assert any("serving on" in line["message"] for line in lines)
    assert any(line.get("route") == "/ready" for line in lines)


async def test_an_unknown_log_format_is_refused() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDETASK_")}

    async def run(*args: str, extra: dict[str, str] | None = None) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", "serve", *args, cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**env, **(extra or {})},
        )  # fmt: skip
        async with asyncio.timeout(20):
            _, err = await proc.communicate()
        return proc.returncode or 0, err.decode()

    option, setting = await asyncio.gather(
        run("--log-format", "xml"), run("--port", "1", extra={"SIDETASK_LOG_FORMAT": "xml"})
    )
    assert option[0] == 2 and "invalid choice: 'xml'" in option[1]
    assert setting[0] == 2 and "log_format: expected one of text, json, got 'xml'" in setting[1]


def test_json_lines_keep_the_traceback() -> None:
    try:
        raise ValueError("broken")
    except ValueError:
        record = logging.getLogger("t").makeRecord(
            "t", logging.ERROR, __file__, 1, "failed %s", ("here",), sys.exc_info()
        )
    line = orjson.loads(JsonFormatter().format(record))
    assert line["message"] == "failed here" and line["level"] == "ERROR"
    assert "ValueError: broken" in line["exception"]
