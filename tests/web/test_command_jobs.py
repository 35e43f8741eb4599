"""Command jobs: declared argument lists run as real processes, with their progress, output,
exit code, cancel, timeout, and the process groups a crashed service left behind."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession

from service import config
from service.config import ConfigError
from service.jobs.command import TAIL_BYTES, process_token, stop_orphan
from service.jobs.registry import build_registry
from service.web import create_app
from tests.conftest import (
    get_task,
    make_settings,
    submit,
    wait_for,
    wait_status,
)
from tests.sup_util import alive, kill_all, wait_gone

CMD = str(Path(__file__).resolve().parent.parent / "jobs_helpers" / "cmd.py")
BASE = "/graphs/hugegraph"


def commands(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """The command jobs these tests declare."""
    return {
        "args": {
            "argv": [
                sys.executable,
                CMD,
                "args",
                "{graph}",
                "--batch",
                "{batch}",
                "--ratio={ratio}",
                "{dry}",
            ],
            "params": {"graph": "string", "batch": "integer", "ratio": "number", "dry": "boolean"},
            "env": {"CMD_GREETING": "hello {graph}"},
            "cwd": str(tmp_path),
        },
        "steps": {
            "argv": [sys.executable, CMD, "progress", "{steps}", "{hold}"],
            "params": {"steps": "integer", "hold": "string"},
        },
        "exits": {"argv": [sys.executable, CMD, "exit", "{code}"], "params": {"code": "integer"}},
        "stubborn": {
            "argv": [sys.executable, CMD, "stubborn", "{pids}"],
            "params": {"pids": "string"},
        },
        "forever": {
            "argv": [sys.executable, CMD, "forever", "{pids}"],
            "params": {"pids": "string"},
        },
        "flood": {
            "argv": [sys.executable, CMD, "flood", "{bytes}"],
            "params": {"bytes": "integer"},
        },
        "slow": {
            "argv": [sys.executable, CMD, "forever", "{pids}"],
            "params": {"pids": "string"},
            "timeout": 0.5,
        },
        **extra,
    }


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path, any_db: Path | str) -> Any:
    """A server on each store running the test commands."""
    settings = make_settings(tmp_path, any_db, commands=commands(tmp_path), kill_grace=0.3)
    return await aiohttp_client(create_app(settings))


def pids_in(path: Path) -> list[int] | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return [int(line) for line in text.split()] or None


async def read_pids(path: Path) -> list[int]:
    async def probe() -> list[int] | None:
        return pids_in(path)

    return await wait_for(probe, 10, f"pids in {path}")


# --- running ---


async def test_input_fills_the_placeholders_as_whole_arguments(client: Any, tmp_path: Path) -> None:
    hostile = "g; rm -rf / $(reboot) `id` 'q' \"d\" *"
    task_id = await submit(
        client, BASE, "args", {"graph": hostile, "batch": 500, "ratio": 0.25, "dry": True}
    )
    task = await wait_status(client, BASE, task_id, "success")
    assert task["task_callable"] == "service.jobs.command.run"
    result = orjson.loads(task["task_result"])
    assert result["exit_code"] == 0
    assert result["output"].splitlines() == [
        f"arg={hostile}",  # one argument, as sent: nothing went through a shell
        "arg=--batch",
        "arg=500",
        "arg=--ratio=0.25",
        "arg=true",
        f"cwd={tmp_path}",
        f"greeting=hello {hostile}",
    ]


async def test_progress_lines_become_task_progress_and_the_rest_is_output(
    client: Any, tmp_path: Path
) -> None:
    hold = tmp_path / "hold"
    task_id = await submit(client, BASE, "steps", {"steps": 3, "hold": str(hold)})

    async def progressed() -> dict[str, Any] | None:
        task = await get_task(client, BASE, task_id)
        return task if task["task_progress"] == 3 else None

    running = await wait_for(progressed, what="progress 3")
    assert running["task_status"] == "running"
    hold.touch()
    task = await wait_status(client, BASE, task_id, "success")
    assert task["task_progress"] == 3
    assert orjson.loads(task["task_result"]) == {
        "exit_code": 0,
        "output": "did step 1\ndid step 2\ndid step 3\n",
        "output_truncated": False,
    }


async def test_only_the_last_64_kib_of_output_is_kept(client: Any) -> None:
    task_id = await submit(client, BASE, "flood", {"bytes": 4 * TAIL_BYTES})
    task = await wait_status(client, BASE, task_id, "success")
    result = orjson.loads(task["task_result"])
    assert result["output_truncated"] is True
    assert len(result["output"].encode()) == TAIL_BYTES
    assert result["output"].endswith("\nlast line\n")


async def test_a_non_zero_exit_fails_with_the_code_and_the_output(client: Any) -> None:
    task_id = await submit(client, BASE, "exits", {"code": 3})
    task = await wait_status(client, BASE, task_id, "failed")
    assert "Command 'exits' exited with code 3" in task["task_result"]
    assert "about to fail" in task["task_result"]
    assert "something went wrong" in task["task_result"]


async def test_a_failed_command_is_retried(client: Any) -> None:
    task_id = await submit(client, BASE, "exits", {"code": 1}, max_retries=2)
    task = await wait_status(client, BASE, task_id, "failed")
    assert task["task_retries"] == 2
    assert "exited with code 1" in task["task_result"]


async def test_a_command_that_cannot_start_fails_saying_why(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    missing = str(tmp_path / "no-such-program")
    settings = make_settings(tmp_path, commands={"missing": {"argv": [missing]}})
    client = await aiohttp_client(create_app(settings))
    task_id = await submit(client, BASE, "missing")
    task = await wait_status(client, BASE, task_id, "failed")
    assert "Command 'missing' could not start" in task["task_result"]


# --- validation at submit ---


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (None, "needs the parameter(s) steps, hold; declared: steps (integer), hold (string)"),
        ({"steps": 2}, "needs the parameter(s) hold"),
        (
            {"steps": "2", "hold": "h"},
            "The parameter 'steps' must be an integer, but got string '2'",
        ),
        ({"steps": 2.5, "hold": "h"}, "The parameter 'steps' must be an integer"),
        ({"steps": True, "hold": "h"}, "The parameter 'steps' must be an integer, but got boolean"),
        ({"steps": 2, "hold": 7}, "The parameter 'hold' must be a string, but got number 7"),
        ({"steps": 2, "hold": "h", "extra": 1}, "has no parameter(s) extra"),
        ({"steps": 2, "hold": "a\u0000b"}, "must not contain a NUL character"),
    ],
)
async def test_a_bad_input_is_a_400_at_submit(client: Any, body: Any, message: str) -> None:
    response = await client.post(f"{BASE}/jobs/steps", json=body)
    assert response.status == 400
    error = await response.json()
    assert error["exception"] == "IllegalArgumentException"
    assert message in error["message"]
    listed = await client.get(f"{BASE}/tasks")
    assert (await listed.json())["tasks"] == []


# --- cancel and timeout ---


async def test_cancel_stops_the_whole_process_group_even_when_it_ignores_sigterm(
    client: Any, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pids"
    task_id = await submit(client, BASE, "stubborn", {"pids": str(pid_file)})
    pids = await read_pids(pid_file)
    try:
        assert len(pids) == 2 and all(alive(pid) for pid in pids)
        await wait_for(
            lambda: _progress_is(client, task_id, 1), what="the command's first progress"
        )
        response = await client.put(f"{BASE}/tasks/{task_id}?action=cancel")
        assert response.status == 202
        assert (await response.json())["task_status"] == "cancelling"
        task = await wait_status(client, BASE, task_id, "cancelled")
        assert task["task_progress"] == 1
        await wait_gone(pids)  # SIGTERM ignored by both: SIGKILL after the grace got them
    finally:
        kill_all(pids)


async def _progress_is(client: Any, task_id: int, value: int) -> bool:
    return bool((await get_task(client, BASE, task_id))["task_progress"] == value)


async def test_a_command_over_its_timeout_is_stopped_and_fails(client: Any, tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    task_id = await submit(client, BASE, "slow", {"pids": str(pid_file)})
    pids = await read_pids(pid_file)
    try:
        task = await wait_status(client, BASE, task_id, "failed")
        assert "Command 'slow' timed out after 0.5 s and was stopped" in task["task_result"]
        await wait_gone(pids)
    finally:
        kill_all(pids)


async def test_a_task_timeout_stops_the_command_too(client: Any, tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    task_id = await submit(client, BASE, "forever", {"pids": str(pid_file)}, timeout=0.5)
    pids = await read_pids(pid_file)
    try:
        task = await wait_status(client, BASE, task_id, "failed")
        assert f"Task '{task_id}' timed out" in task["task_result"]
        await wait_gone(pids)
    finally:
        kill_all(pids)


# --- restart recovery ---


async def test_processes_a_crashed_service_left_are_stopped_and_the_task_restored(
    server_factory: Any, tmp_path: Path, http: ClientSession, any_db: Path | str
) -> None:
    pid_file = tmp_path / "pids"
    conf = tmp_path / "commands.toml"
    conf.write_text(
        "default_max_retries = 1\nretry_backoff = 0.05\nprogress_interval = 0.02\nkill_grace = 0.3\n"
        + f'[commands.forever]\nargv = [{_toml(sys.executable)}, {_toml(CMD)}, "forever", "{{pids}}"]\n'
        + 'params = { pids = "string" }\n'
    )
    server = server_factory(any_db, config_file=conf)
    await server.wait_ready()
    response = await http.post(f"{server.url}{BASE}/jobs/forever", json={"pids": str(pid_file)})
    assert response.status == 201, await response.text()
    task_id = (await response.json())["task_id"]
    first = await read_pids(pid_file)
    pids = list(first)
    try:
        server.kill()  # SIGKILL: no drain, the command's process group lives on
        assert alive(first[0])

        restarted = server_factory(any_db, config_file=conf)
        await restarted.wait_ready()
        await wait_gone(first)  # stopped by the new service before the task ran again

        async def rerun() -> list[int] | None:
            found = await read_pids(pid_file)
            return found if len(found) == 2 else None

        pids = await wait_for(rerun, what="the restored task to run the command again")
        async with http.get(f"{restarted.url}{BASE}/tasks/{task_id}") as answer:
            task = await answer.json()
        assert task["task_status"] == "running"
        assert task["task_retries"] == 1
        async with http.put(f"{restarted.url}{BASE}/tasks/{task_id}?action=cancel") as answer:
            assert answer.status == 202

        async def cancelled() -> bool:
            async with http.get(f"{restarted.url}{BASE}/tasks/{task_id}") as answer:
                return bool((await answer.json())["task_status"] == "cancelled")

        await wait_for(cancelled, what="the cancel")
        await wait_gone(pids)
    finally:
        kill_all(pids)


def _toml(text: str) -> str:
    return orjson.dumps(text).decode()


# --- configuration ---


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ({"argv": ["prog", "{x}"]}, "placeholder(s) x not declared in params"),
        (
            {"argv": ["{prog}"], "params": {"prog": "string"}},
            "the program ('{prog}') must be fixed",
        ),
        ({"argv": ["prog", "{x"], "params": {"x": "string"}}, "has a lone '{'"),
        ({"argv": ["prog"], "env": {"A": "{y}"}}, "placeholder(s) y not declared"),
    ],
)
def test_a_bad_declaration_is_a_configuration_error(
    tmp_path: Path, command: Any, message: str
) -> None:
    settings = make_settings(tmp_path, commands={"bad": command})
    with pytest.raises(ConfigError) as raised:
        build_registry(settings)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ({"argv": []}, "commands.bad.argv: expected a non-empty list"),
        ({"argv": ["p"], "params": {"x": "float"}}, "commands.bad.params"),
        ({"argv": ["p"], "timeout": 0}, "commands.bad.timeout"),
        ({"argv": ["p"], "shell": True}, "unknown key(s) shell"),
    ],
)
def test_a_malformed_declaration_is_refused_at_load(
    tmp_path: Path, command: Any, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        make_settings(tmp_path, commands={"bad": command})
    assert message in str(raised.value)


def test_commands_are_declared_in_toml(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text(
        '[commands.reindex]\nargv = ["python", "scripts/reindex.py", "{graph}", "--batch", "{batch}"]\n'
        'params = { graph = "string", batch = "integer" }\ntimeout = 60\n'
    )
    settings = config.load(conf, env={})
    registry = build_registry(settings)
    reindex = registry.get("reindex")
    assert reindex is not None and reindex.validate is not None
    reindex.validate({"graph": "g", "batch": 5})
    with pytest.raises(ValueError, match="needs the parameter"):
        reindex.validate({"graph": "g"})


def test_a_command_may_not_take_the_name_of_another_job_type(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, commands={"echo": {"argv": ["echo"]}})
    with pytest.raises(ConfigError, match="a job type 'echo' already exists"):
        build_registry(settings)


async def test_a_stored_group_is_stopped_only_if_it_is_still_the_same_one(tmp_path: Path) -> None:
    """At start, a stored group id whose leader is now a later process is left alone."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, CMD, "forever", str(tmp_path / "pids"), start_new_session=True
    )
    try:
        await read_pids(tmp_path / "pids")
        token = process_token(proc.pid)
        assert token is not None
        boot, _, started = token.rpartition(":")
        later = f"{boot}:{int(started) + 1}"  # as if the id now belonged to a process started later
        assert await stop_orphan(proc.pid, later, grace=0.3) is False
        assert alive(proc.pid)
        assert await stop_orphan(proc.pid, f"another-boot:{started}", grace=0.3) is False
        assert alive(proc.pid)
        assert await stop_orphan(proc.pid, token, grace=0.3) is True
        assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGTERM
    finally:
        if proc.returncode is None:
            proc.kill()
            await asyncio.wait_for(proc.wait(), 10)
