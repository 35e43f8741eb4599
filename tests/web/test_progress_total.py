"""task_progress_total: the progress value that means done, declared by a job
(ctx.progress(n, total=…)), by a command's `progress: N/M` lines or its declared `total`,
stored with the task, sent with it, and shown by `sidetask watch` as N/M."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestServer

from service.config import ConfigError
from service.jobs import JobContext
from service.jobs.registry import build_registry
from service.web import create_app
from tests.conftest import get_task, make_settings, submit, wait_for, wait_status
from tests.web.test_cli import sidetask
from tests.web.test_command_jobs import CMD

BASE = "/graphs/hugegraph"
#: the eleven keys of HugeGraph's task, in its order (task_result once there is one)
SEED_KEYS = [
    "task_name", "task_progress", "task_create", "task_status", "task_update", "task_result",
    "task_retries", "id", "task_type", "task_callable", "task_input",
]  # fmt: skip


async def counts_to(ctx: JobContext) -> int:
    """Reports 1 … n of n, the total declared with each report."""
    n = ctx.input["n"]
    for done in range(1, n + 1):
        ctx.progress(done, total=n)
    return n


def counts_in_a_thread(ctx: JobContext) -> int:
    """A plain function: its reports cross from its thread; the total is declared once."""
    ctx.progress(0, total=60)
    ctx.progress(54)
    return 54


async def counts_without_a_total(ctx: JobContext) -> int:
    ctx.progress(7)
    return 7


async def refuses_a_zero_total(ctx: JobContext) -> None:
    ctx.progress(1, total=0)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


COMMANDS: dict[str, Any] = {
    # `progress: N/M` lines; one whose total is 0 is no progress line, but output
    "fraction": {
        "argv": python("print('progress: 54/60'); print('progress: 3/0'); print('progress: 55')")
    },
    "declared": {"argv": python("print('progress: 7')"), "total": 60},
    "counted": {
        "argv": [sys.executable, CMD, "progress", "{steps}", "{hold}"],
        "params": {"steps": "integer", "hold": "string"},
        "total": "{steps}",
    },
}
JOBS = {
    "counts_to": f"{__name__}:counts_to",
    "in_a_thread": f"{__name__}:counts_in_a_thread",
    "no_total": f"{__name__}:counts_without_a_total",
    "zero_total": f"{__name__}:refuses_a_zero_total",
}


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path) -> Any:
    settings = make_settings(tmp_path, jobs=JOBS, commands=COMMANDS)
    return await aiohttp_client(create_app(settings))


async def test_a_job_declares_its_total_with_its_progress(client: Any) -> None:
    task_id = await submit(client, BASE, "counts_to", {"n": 5})
    task = await wait_status(client, BASE, task_id, "success")
    assert (task["task_progress"], task["task_progress_total"]) == (5, 5)
    # an extra key after HugeGraph's eleven (SPEC 2)
    assert list(task)[:11] == SEED_KEYS and list(task)[11] == "task_progress_total"
    listed = await (await client.get(f"{BASE}/tasks", params={"ids": str(task_id)})).json()
    assert listed["tasks"][0]["task_progress_total"] == 5


async def test_a_plain_function_declares_it_from_its_thread(client: Any) -> None:
    task_id = await submit(client, BASE, "in_a_thread", {})
    task = await wait_status(client, BASE, task_id, "success")
    assert (task["task_progress"], task["task_progress_total"]) == (54, 60)


async def test_without_a_declared_total_the_key_is_absent(client: Any) -> None:
    task_id = await submit(client, BASE, "no_total", {})
    task = await wait_status(client, BASE, task_id, "success")
    assert task["task_progress"] == 7 and "task_progress_total" not in task


async def test_a_total_below_one_fails_the_job_saying_so(client: Any) -> None:
    task_id = await submit(client, BASE, "zero_total", {})
    task = await wait_status(client, BASE, task_id, "failed")
    assert "a progress total must be at least 1, got 0" in task["task_result"]
    assert "task_progress_total" not in task


async def test_a_command_reports_n_of_m_on_its_stdout(client: Any) -> None:
    task_id = await submit(client, BASE, "fraction", {})
    task = await wait_status(client, BASE, task_id, "success")
    # `progress: 55` after `progress: 54/60`: the total stays
    assert (task["task_progress"], task["task_progress_total"]) == (55, 60)
    assert orjson.loads(task["task_result"])["output"] == "progress: 3/0\n"


async def test_a_command_declares_its_total_as_a_number_or_a_parameter(
    client: Any, tmp_path: Path
) -> None:
    declared = await submit(client, BASE, "declared", {})
    task = await wait_status(client, BASE, declared, "success")
    assert (task["task_progress"], task["task_progress_total"]) == (7, 60)

    hold = tmp_path / "hold"
    counted = await submit(client, BASE, "counted", {"steps": 3, "hold": str(hold)})

    async def totalled() -> dict[str, Any] | None:
        task = await get_task(client, BASE, counted)
        return task if "task_progress_total" in task else None

    # declared at the start; the command still runs, waiting for `hold`
    running = await wait_for(totalled, what="the declared total")
    assert running["task_status"] == "running" and running["task_progress_total"] == 3
    hold.touch()
    task = await wait_status(client, BASE, counted, "success")
    assert (task["task_progress"], task["task_progress_total"]) == (3, 3)


@pytest.mark.parametrize(
    ("total", "message"),
    [
        ("{nope}", "commands.bad.total: 'nope' is not an integer parameter declared in params"),
        ("{name}", "commands.bad.total: 'name' is not an integer parameter declared in params"),
        ("of {steps}", "must be an integer or one placeholder"),
    ],
)
def test_a_total_that_is_no_integer_parameter_is_a_configuration_error(
    tmp_path: Path, total: str, message: str
) -> None:
    command = {
        "argv": ["prog", "{steps}", "{name}"],
        "params": {"steps": "integer", "name": "string"},
    }
    settings = make_settings(tmp_path, commands={"bad": {**command, "total": total}})
    with pytest.raises(ConfigError) as raised:
        build_registry(settings)
    assert message in str(raised.value)


@pytest.mark.parametrize("total", [0, -3, 1.5, True])
def test_a_total_below_one_or_not_an_integer_is_refused_at_load(tmp_path: Path, total: Any) -> None:
    with pytest.raises(
        ConfigError, match=r"commands\.bad\.total: expected an integer of at least 1"
    ):
        make_settings(tmp_path, commands={"bad": {"argv": ["prog"], "total": total}})


async def test_sidetask_watch_shows_n_of_the_declared_total(tmp_path: Path) -> None:
    server = TestServer(
        create_app(make_settings(tmp_path, jobs=JOBS, commands=COMMANDS)), host="127.0.0.1"
    )
    await server.start_server()
    try:
        url = str(server.make_url("")).rstrip("/")
        ran = await sidetask("submit", "in_a_thread", "--input", "{}", "--watch", "--url", url)
        assert ran.code == 0, ran.err
        assert "progress 54/60" in ran.out, ran.out
    finally:
        await server.close()
