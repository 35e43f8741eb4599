"""A failed command job's attempts (GET …/tasks/{id}/attempts), with real subprocesses: each
says how the command ended (its exit code, or the signal that killed it) and holds the tail
of its stderr as its traceback, bounded by max_traceback_chars; the task's result keeps its
text."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from service.web import create_app
from tests.conftest import make_settings, submit, wait_status
from tests.web.test_attempts import attempts_of

BASE = "/graphs/hugegraph"
FAILED = "service.jobs.command.CommandFailed"


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


COMMANDS: dict[str, Any] = {
    "exits": {
        "argv": [
            *python(
                "import sys; print('to stdout'); "
                "sys.stderr.write('first problem\\nsecond problem\\n'); sys.exit(int(sys.argv[1]))"
            ),
            "{code}",
        ],
        "params": {"code": "integer"},
    },
    "killed": {
        "argv": python(
            "import os, signal, sys; sys.stderr.write('dying now\\n'); sys.stderr.flush(); "
            "os.kill(os.getpid(), signal.SIGKILL)"
        )
    },
    "chatty": {
        "argv": python(
            "import sys\nfor i in range(3000): sys.stderr.write('error line %d\\n' % i)\nsys.exit(1)"
        )
    },
    "quiet": {"argv": python("import sys; sys.exit(2)")},
    "slow": {
        "argv": python(
            "import sys, time; sys.stderr.write('starting\\n'); sys.stderr.flush(); time.sleep(60)"
        ),
        "timeout": 0.5,
    },
}


async def start(aiohttp_client: Any, tmp_path: Path, **overrides: Any) -> Any:
    settings = make_settings(tmp_path, commands=COMMANDS, kill_grace=0.2, **overrides)
    return await aiohttp_client(create_app(settings))


async def test_an_exit_code_and_stderr_show_in_each_attempt(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, tmp_path, retry_backoff=0.01)
    task_id = await submit(client, BASE, "exits", {"code": 3}, max_retries=1)
    task = await wait_status(client, BASE, task_id, "failed", timeout=30)
    # the result keeps HugeGraph's text: the error, with the output's tail
    assert task["task_result"].startswith("CommandFailed: Command 'exits' exited with code 3")
    attempts = await attempts_of(client, task_id)
    assert [a["outcome"] for a in attempts] == ["failed", "failed"]
    for attempt in attempts:
        assert attempt["error"] == {
            "type": FAILED,
            "message": "Command 'exits' exited with code 3",
            "traceback": "first problem\nsecond problem\n",  # stderr alone, not stdout
        }


async def test_a_signal_that_killed_the_command_is_named(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, tmp_path)
    task_id = await submit(client, BASE, "killed", max_retries=0)
    await wait_status(client, BASE, task_id, "failed", timeout=30)
    (attempt,) = await attempts_of(client, task_id)
    assert attempt["error"]["message"] == "Command 'killed' was killed by SIGKILL"
    assert attempt["error"]["traceback"] == "dying now\n"


async def test_the_stderr_tail_is_bounded_by_max_traceback_chars(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, tmp_path, max_traceback_chars=200)
    task_id = await submit(client, BASE, "chatty", max_retries=0)
    await wait_status(client, BASE, task_id, "failed", timeout=30)
    (attempt,) = await attempts_of(client, task_id)
    traceback = attempt["error"]["traceback"]
    assert len(traceback) <= 200
    assert traceback.startswith("…(earlier stderr cut)…\n")
    assert traceback.endswith("error line 2998\nerror line 2999\n")  # the last lines kept


@pytest.mark.parametrize(("command", "limit"), [("quiet", 16384), ("exits", 0)])
async def test_no_stderr_or_no_tracebacks_kept_leave_it_out(
    aiohttp_client: Any, tmp_path: Path, command: str, limit: int
) -> None:
    client = await start(aiohttp_client, tmp_path, max_traceback_chars=limit)
    body = {"code": 4} if command == "exits" else None
    task_id = await submit(client, BASE, command, body, max_retries=0)
    await wait_status(client, BASE, task_id, "failed", timeout=30)
    (attempt,) = await attempts_of(client, task_id)
    code = 4 if command == "exits" else 2
    assert attempt["error"] == {
        "type": FAILED,
        "message": f"Command '{command}' exited with code {code}",
        "traceback": None,
    }


async def test_a_command_over_its_timeout_says_so_with_its_stderr(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, tmp_path)
    task_id = await submit(client, BASE, "slow", max_retries=0)
    await wait_status(client, BASE, task_id, "failed", timeout=30)
    (attempt,) = await attempts_of(client, task_id)
    assert attempt["error"] == {
        "type": "service.jobs.command.CommandTimedOut",
        "message": "Command 'slow' timed out after 0.5 s and was stopped",
        "traceback": "starting\n",
    }
