"""Stopping jobs, end to end through a real server on each store: a plain function's
thread (which Python cannot stop) keeps its slot and its task `cancelling` until it returns,
`ctx.cancelled` lets it stop early, a timeout waits for it too; a job type declared
`run_in = "process"` runs in a real child process that a cancel or a timeout terminates,
and that a crashed service stops at its next start; a cancel landing as a job ends."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient

from service import config
from service.config import ConfigError, JobSpec
from service.jobs.registry import build_registry
from service.model import Status
from service.store import Change
from service.web import create_app
from service.web.keys import STORE, SUPERVISOR
from tests import stop_jobs
from tests.conftest import get_task, make_settings, submit, wait_for, wait_status
from tests.stop_jobs import PROCESS_JOBS, THREAD_JOBS, lines, release
from tests.sup_jobs import JOBS
from tests.sup_util import alive, kill_all, max_overlap, rows, trail, wait_file, wait_gone


@pytest.fixture
def db(any_db: Path | str) -> Path | str:
    """Every test here runs on both stores."""
    return any_db


BASE = "/graphs/hugegraph"
Start = Callable[..., Any]


@pytest.fixture
def start(aiohttp_client: Any, tmp_path: Path, db: Path | str) -> Start:
    """A server on the test database with the helper jobs of both modules registered."""

    async def start(**overrides: Any) -> TestClient:
        jobs = {**JOBS, **THREAD_JOBS, **PROCESS_JOBS}
        settings = make_settings(tmp_path, db, jobs=jobs, **overrides)
        return await aiohttp_client(create_app(settings))  # type: ignore[no-any-return]

    return start


@pytest.fixture
def gate_name(request: pytest.FixtureRequest) -> Iterator[Callable[[str], str]]:
    """Names of thread gates unique to the test; every one is released when it ends, so no
    thread outlives its test for long."""
    names: list[str] = []

    def name(suffix: str) -> str:
        names.append(f"{request.node.nodeid}:{suffix}")
        return names[-1]

    yield name
    for made in names:
        release(made)


async def put(client: TestClient, task_id: int, action: str) -> tuple[int, dict[str, Any]]:
    response = await client.put(f"{BASE}/tasks/{task_id}", params={"action": action})
    return response.status, await response.json()


async def wait_line(log: Path, line: str) -> None:
    async def probe() -> bool:
        return line in lines(log)

    await wait_for(probe, what=f"{line!r} in {log.name}")


def most_at_once(log: Path) -> int:
    """The most runs ever between their `start` and `end` at once, from the jobs' own log."""
    active: set[tuple[str, str]] = set()
    most = 0
    for line in lines(log):
        what, task_id, run = line.split()
        if what == "start":
            active.add((task_id, run))
        elif what == "end":
            active.discard((task_id, run))
        most = max(most, len(active))
    return most


async def read_pid(path: Path) -> int:
    await wait_file(path)
    return int(path.read_text())


# --- a plain function's thread ---


async def test_a_cancelled_thread_keeps_its_task_cancelling_its_slot_and_no_retry_overlaps(
    start: Start, tmp_path: Path, db: Path, gate_name: Callable[[str], str]
) -> None:
    client = await start(concurrency=1, type_concurrency={"blind": 1})
    log = tmp_path / "runs.log"
    first_gate, second_gate = gate_name("first"), gate_name("second")
    first = await submit(client, BASE, "blind", {"gate": first_gate, "log": str(log)})
    await wait_line(log, f"start {first} 0")
    second = await submit(client, BASE, "blind", {"gate": second_gate, "log": str(log)})

    status, body = await put(client, first, "cancel")
    assert (status, body["task_status"]) == (202, "cancelling")
    # The thread runs on: the task is not cancelled yet, so it cannot be retried...
    status, body = await put(client, first, "retry")
    assert status == 400
    assert body["message"] == (
        f"Can't retry task '{first}' in status CANCELLING, "
        "only a failed or cancelled task can be retried"
    )
    assert (await get_task(client, BASE, first))["task_status"] == "cancelling"
    # ...and it holds its slot: the next task waits (not claimed while its type is full).
    assert (await get_task(client, BASE, second))["task_status"] == "new"
    assert lines(log) == [f"start {first} 0"]

    release(first_gate)
    task = await wait_status(client, BASE, first, "cancelled")
    assert task["task_progress"] == 2  # what the thread reported until it returned
    assert "task_result" not in task
    assert (await put(client, first, "retry"))[0] == 202
    release(second_gate)
    for task_id in (first, second):
        await wait_status(client, BASE, task_id, "success")

    assert most_at_once(log) == 1
    assert lines(log)[:2] == [f"start {first} 0", f"end {first} 0"]
    assert sorted(lines(log)[2:]) == sorted(
        [f"start {first} 1", f"end {first} 1", f"start {second} 0", f"end {second} 0"]
    )
    assert max_overlap(db) == 1
    statuses = trail(db, first)
    at = statuses.index("cancelling")
    assert statuses[at - 1 : at + 3] == ["running", "cancelling", "cancelled", "restoring"]
    assert statuses[-1] == "success"


async def test_a_cancelled_thread_holds_its_type_limit_while_other_types_run(
    start: Start, tmp_path: Path, db: Path, gate_name: Callable[[str], str]
) -> None:
    client = await start(concurrency=2, type_concurrency={"blind": 1})
    log = tmp_path / "runs.log"
    first_gate, second_gate = gate_name("first"), gate_name("second")
    first = await submit(client, BASE, "blind", {"gate": first_gate, "log": str(log)})
    await wait_line(log, f"start {first} 0")
    second = await submit(client, BASE, "blind", {"gate": second_gate, "log": str(log)})
    assert (await put(client, first, "cancel"))[0] == 202

    # The free slot runs other work; the blind type's one slot is still the cancelled thread's.
    other = await submit(client, BASE, "echo", {"meanwhile": True})
    await wait_status(client, BASE, other, "success")
    assert (await get_task(client, BASE, first))["task_status"] == "cancelling"
    assert (await get_task(client, BASE, second))["task_status"] == "new"

    release(first_gate)
    await wait_status(client, BASE, first, "cancelled")
    await wait_line(log, f"start {second} 0")
    release(second_gate)
    await wait_status(client, BASE, second, "success")
    assert lines(log) == [
        f"start {first} 0",
        f"end {first} 0",
        f"start {second} 0",
        f"end {second} 0",
    ]
    assert max_overlap(db, [first, second]) == 1


async def test_a_thread_that_looks_at_ctx_cancelled_ends_cancelled(
    start: Start, tmp_path: Path, db: Path
) -> None:
    client = await start()
    log = tmp_path / "runs.log"
    task_id = await submit(client, BASE, "looking", {"log": str(log)})
    await wait_line(log, f"start {task_id} 0")
    assert (await put(client, task_id, "cancel"))[0] == 202
    # The job loops for a minute unless it sees the flag; the wait is far shorter.
    task = await wait_status(client, BASE, task_id, "cancelled")
    assert lines(log) == [f"start {task_id} 0", f"end {task_id} 0"]
    assert "task_result" not in task  # JobCancelled is a cancel, not a failure
    assert task["task_progress"] >= 1
    assert trail(db, task_id)[-2:] == ["cancelling", "cancelled"]


async def test_a_thread_over_its_timeout_stays_running_until_it_returns_then_fails(
    start: Start, tmp_path: Path, db: Path, gate_name: Callable[[str], str]
) -> None:
    client = await start(concurrency=1)
    log, gate = tmp_path / "runs.log", gate_name("late")
    task_id = await submit(
        client, BASE, "waits_for_flag", {"gate": gate, "log": str(log)}, timeout=0.2, max_retries=0
    )
    other = await submit(client, BASE, "echo", {"after": True})
    await wait_line(log, f"flag {task_id} 0")  # the timeout set ctx.cancelled
    assert (await get_task(client, BASE, task_id))["task_status"] == "running"
    assert (await get_task(client, BASE, other))["task_status"] == "queued"  # its slot is held

    release(gate)
    task = await wait_status(client, BASE, task_id, "failed")
    assert task["task_result"] == f"Task '{task_id}' timed out after 0.2 s"
    assert lines(log) == [f"start {task_id} 0", f"flag {task_id} 0", f"end {task_id} 0"]
    await wait_status(client, BASE, other, "success")
    assert max_overlap(db) == 1


async def test_a_thread_over_its_timeout_is_retried_only_once_it_returned(
    start: Start, tmp_path: Path, gate_name: Callable[[str], str]
) -> None:
    client = await start(retry_backoff=0.01)
    log, gate = tmp_path / "runs.log", gate_name("late")
    task_id = await submit(
        client, BASE, "waits_for_flag", {"gate": gate, "log": str(log)}, timeout=0.2, max_retries=1
    )
    await wait_line(log, f"flag {task_id} 0")
    assert (await get_task(client, BASE, task_id))["task_status"] == "running"
    release(gate)  # the second run too: it ends at its own timeout, the gate open
    task = await wait_status(client, BASE, task_id, "failed")
    assert task["task_retries"] == 1
    assert most_at_once(log) == 1
    assert [line.split()[0] for line in lines(log)] == ["start", "flag", "end"] * 2


async def test_a_thread_that_stops_at_its_deadline_by_itself_fails_saying_it_timed_out(
    start: Start, tmp_path: Path
) -> None:
    client = await start()
    log = tmp_path / "runs.log"
    task_id = await submit(client, BASE, "looking", {"log": str(log)}, timeout=0.2, max_retries=0)
    # JobCancelled from ctx.raise_if_cancelled() at the deadline is the timeout, not a cancel
    task = await wait_status(client, BASE, task_id, "failed", "cancelled")
    assert task["task_status"] == "failed"
    assert task["task_result"] == f"Task '{task_id}' timed out after 0.2 s"
    assert lines(log) == [f"start {task_id} 0", f"end {task_id} 0"]


@pytest.mark.parametrize("how", ["cancel", "timeout"])
async def test_an_async_job_sees_ctx_cancelled_as_its_cancel_arrives(
    start: Start, tmp_path: Path, how: str
) -> None:
    client = await start()
    log = tmp_path / "runs.log"
    timeout = {"timeout": 0.2, "max_retries": 0} if how == "timeout" else {}
    task_id = await submit(client, BASE, "async_flag", {"log": str(log)}, **timeout)
    await wait_line(log, f"start {task_id} 0")
    if how == "cancel":
        assert (await put(client, task_id, "cancel"))[0] == 202
    task = await wait_status(client, BASE, task_id, "cancelled", "failed")
    assert task["task_status"] == ("cancelled" if how == "cancel" else "failed")
    assert lines(log) == [f"start {task_id} 0", f"flag {task_id} 0"]


async def test_a_job_raising_cancelled_error_unasked_fails(start: Start) -> None:
    client = await start()
    task_id = await submit(client, BASE, "raises_cancelled", max_retries=0)
    task = await wait_status(client, BASE, task_id, "failed", "cancelled")
    assert task["task_status"] == "failed"
    assert task["task_result"] == "CancelledError: an inner operation was cancelled"


async def test_a_drain_does_not_wait_for_a_cancelled_thread_that_never_returns(
    start: Start, tmp_path: Path, db: Path, gate_name: Callable[[str], str]
) -> None:
    client = await start()
    log, gate = tmp_path / "runs.log", gate_name("never")
    task_id = await submit(client, BASE, "blind", {"gate": gate, "log": str(log)})
    await wait_line(log, f"start {task_id} 0")
    assert (await put(client, task_id, "cancel"))[0] == 202
    await asyncio.wait_for(client.app[SUPERVISOR].drain(grace=0.1), 15)
    # left behind, as `cancelling`: the next start records it cancelled
    assert rows(db, "SELECT status FROM tasks WHERE id = ?", (task_id,)) == [("cancelling",)]
    assert lines(log) == [f"start {task_id} 0"]


# --- a cancel that lands as a job ends ---


async def test_a_cancel_landing_as_a_job_ends_keeps_its_final_progress_without_an_error(
    start: Start, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = await start()
    store = client.app[STORE]
    original = store.transition
    held, go = asyncio.Event(), asyncio.Event()

    async def transition(change: Change) -> Any:
        if change.target is Status.SUCCESS:  # the job's own end: held until the cancel is in
            held.set()
            await go.wait()
        return await original(change)

    store.transition = transition  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, logger="sidetask")
    task_id = await submit(client, BASE, "sleep", {"steps": 3, "interval": 0})
    await asyncio.wait_for(held.wait(), 10)
    status, body = await put(client, task_id, "cancel")
    assert (status, body["task_status"]) == (202, "cancelling")
    go.set()
    task = await wait_status(client, BASE, task_id, "cancelled")
    assert task["task_progress"] == 3  # all three steps ran: their progress is kept
    assert trail(db, task_id)[-3:] == ["running", "cancelling", "cancelled"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


# --- a job in a child process ---


async def test_a_process_job_returns_its_result_and_reports_progress(start: Start) -> None:
    client = await start(kill_grace=0.7)
    task_id = await submit(client, BASE, "proc_result", {"steps": 5, "word": "héllo"})
    task = await wait_status(client, BASE, task_id, "success")
    result = orjson.loads(task["task_result"])
    assert result["pid"] != os.getpid()  # it ran in a process of its own
    assert result["input"] == {"steps": 5, "word": "héllo"}
    assert (result["retries"], result["graph"], result["task_id"]) == (
        0,
        "DEFAULT/hugegraph",
        task_id,
    )
    assert result["kill_grace"] == 0.7  # the service's settings
    assert result["task_env"] == str(task_id)
    assert task["task_progress"] == 5
    assert task["task_callable"] == "tests.stop_jobs.proc_result"


async def test_a_process_job_declares_its_progress_total_too(start: Start) -> None:
    client = await start()
    task_id = await submit(client, BASE, "proc_result", {"steps": 4, "total": 8})
    task = await wait_status(client, BASE, task_id, "success")
    assert (task["task_progress"], task["task_progress_total"]) == (4, 8)


async def test_progress_of_a_running_process_job_arrives(start: Start, tmp_path: Path) -> None:
    client = await start(kill_grace=0.3)
    pid_file, gate = tmp_path / "pid", tmp_path / "gate"
    task_id = await submit(
        client, BASE, "proc_hold", {"pid_file": str(pid_file), "path": str(gate)}
    )
    pid = await read_pid(pid_file)
    try:

        async def progressed() -> bool:
            return bool((await get_task(client, BASE, task_id))["task_progress"] == 2)

        await wait_for(progressed, what="the child's progress")
        assert (await get_task(client, BASE, task_id))["task_status"] == "running"
        gate.touch()
        task = await wait_status(client, BASE, task_id, "success")
        assert orjson.loads(task["task_result"]) == {"pid": pid}
        await wait_gone([pid])
    finally:
        kill_all([pid])


@pytest.mark.parametrize(
    ("how", "message", "retries"),
    [
        ("value", "ValueError: bad value in run 2", 1),
        ("permanent", "the input names no such graph", 0),
        ("unserialisable", "The job's result is not JSON-serialisable: ", 0),
        ("deep", "The job's result is nested too deeply; at most 254 levels are allowed", 0),
    ],
)
async def test_a_process_job_fails_with_the_same_text_as_in_the_service(
    start: Start, how: str, message: str, retries: int
) -> None:
    client = await start(retry_backoff=0.01)
    in_process = await submit(client, BASE, "thread_fail", {"how": how}, max_retries=1)
    in_child = await submit(client, BASE, "proc_fail", {"how": how}, max_retries=1)
    expected = await wait_status(client, BASE, in_process, "failed")
    task = await wait_status(client, BASE, in_child, "failed")
    assert task["task_result"].startswith(message)
    assert task["task_result"] == expected["task_result"]
    assert task["task_retries"] == expected["task_retries"] == retries


async def test_an_input_nested_as_deep_as_allowed_reaches_the_child_and_back(
    start: Start,
) -> None:
    client = await start()
    deep: Any = []
    for _ in range(252):
        deep = [deep]
    deep = {"deep": deep}  # 254 levels, the most a submission may have
    task_id = await submit(client, BASE, "proc_echo", deep)
    task = await wait_status(client, BASE, task_id, "success", "failed")
    assert orjson.loads(task["task_result"]) == deep


async def test_a_process_job_that_dies_fails_saying_how(start: Start) -> None:
    client = await start()
    task_id = await submit(client, BASE, "proc_fail", {"how": "exit"}, max_retries=0)
    task = await wait_status(client, BASE, task_id, "failed")
    assert task["task_result"] == "The job's process exited with code 3 before the job returned"


async def test_cancel_terminates_a_process_job_and_lets_it_clean_up(
    start: Start, tmp_path: Path, db: Path
) -> None:
    client = await start(kill_grace=5)
    pid_file, cleanup = tmp_path / "pid", tmp_path / "cleanup"
    task_id = await submit(
        client,
        BASE,
        "proc_hold",
        {"pid_file": str(pid_file), "path": str(tmp_path / "never"), "cleanup": str(cleanup)},
    )
    pid = await read_pid(pid_file)
    try:
        assert alive(pid)
        status, body = await put(client, task_id, "cancel")
        assert (status, body["task_status"]) == (202, "cancelling")
        await wait_status(client, BASE, task_id, "cancelled")
        assert not alive(pid)  # the task ends only once its process is gone
        assert cleanup.read_text() == "cleaned up"  # SIGTERM: ctx.cancelled, its finally ran
        assert trail(db, task_id)[-2:] == ["cancelling", "cancelled"]
    finally:
        kill_all([pid])


async def test_cancel_kills_a_process_job_that_ignores_sigterm(
    start: Start, tmp_path: Path
) -> None:
    client = await start(kill_grace=0.2)
    pid_file = tmp_path / "pid"
    task_id = await submit(
        client,
        BASE,
        "proc_hold",
        {"pid_file": str(pid_file), "path": str(tmp_path / "never"), "ignore_term": True},
    )
    pid = await read_pid(pid_file)
    try:
        assert (await put(client, task_id, "cancel"))[0] == 202
        await wait_status(client, BASE, task_id, "cancelled")
        assert not alive(pid)  # SIGKILL after kill_grace
    finally:
        kill_all([pid])


async def test_cancel_interrupts_an_async_process_job_at_its_await(
    start: Start, tmp_path: Path
) -> None:
    client = await start()
    pid_file, cleanup = tmp_path / "pid", tmp_path / "cleanup"
    task_id = await submit(
        client,
        BASE,
        "proc_async",
        {"pid_file": str(pid_file), "path": str(tmp_path / "never"), "cleanup": str(cleanup)},
    )
    pid = await read_pid(pid_file)
    try:
        assert (await put(client, task_id, "cancel"))[0] == 202
        await wait_status(client, BASE, task_id, "cancelled")
        assert not alive(pid)
        assert cleanup.read_text() == "cleaned up"
    finally:
        kill_all([pid])


async def test_a_timeout_terminates_a_process_job(start: Start, tmp_path: Path) -> None:
    client = await start(kill_grace=0.2)
    pid_file = tmp_path / "pid"
    task_id = await submit(
        client,
        BASE,
        "proc_hold",
        {"pid_file": str(pid_file), "path": str(tmp_path / "never"), "ignore_term": True},
        timeout=0.5,
        max_retries=0,
    )
    pid = await read_pid(pid_file)
    try:
        task = await wait_status(client, BASE, task_id, "failed")
        assert task["task_result"] == f"Task '{task_id}' timed out after 0.5 s"
        assert not alive(pid)
    finally:
        kill_all([pid])


async def test_a_process_job_a_crashed_service_left_is_stopped_at_the_next_start(
    server_factory: Any, tmp_path: Path, http: ClientSession, db: Path | str
) -> None:
    """On PostgreSQL the restarted service is a new replica on the same machine: it stops
    the dead one's process group (same `process_host`) before the task runs again."""
    pid_file, log = tmp_path / "pid", tmp_path / "runs.log"
    conf = tmp_path / "jobs.toml"
    conf.write_text(
        "default_max_retries = 1\nretry_backoff = 0.05\nkill_grace = 0.3\n"
        '[jobs.proc_hold]\ncall = "tests.stop_jobs:proc_hold"\nrun_in = "process"\n'
    )
    server = server_factory(db, config_file=conf)
    await server.wait_ready()
    body = {"pid_file": str(pid_file), "path": str(tmp_path / "never"), "log": str(log)}
    response = await http.post(f"{server.url}{BASE}/jobs/proc_hold", json=body)
    assert response.status == 201, await response.text()
    task_id = (await response.json())["task_id"]
    first = await read_pid(pid_file)
    pids = [first]
    try:
        server.kill()  # SIGKILL: no drain; the child, in a session of its own, lives on
        assert alive(first)

        restarted = server_factory(db, config_file=conf)
        await restarted.wait_ready()
        await wait_gone([first])  # stopped by the new service before the task ran again

        async def rerun() -> int | None:
            pid = int(pid_file.read_text())
            return pid if pid != first else None

        pids.append(await wait_for(rerun, what="the restored task to run again"))
        async with http.get(f"{restarted.url}{BASE}/tasks/{task_id}") as answer:
            task = await answer.json()
        assert (task["task_status"], task["task_retries"]) == ("running", 1)
        # the first run never ended, and the second started only once it was stopped
        assert lines(log) == [f"start {task_id} 0", f"start {task_id} 1"]
        async with http.put(f"{restarted.url}{BASE}/tasks/{task_id}?action=cancel") as answer:
            assert answer.status == 202

        async def cancelled() -> bool:
            async with http.get(f"{restarted.url}{BASE}/tasks/{task_id}") as answer:
                return bool((await answer.json())["task_status"] == "cancelled")

        await wait_for(cancelled, what="the cancel")
        assert not alive(pids[1])
    finally:
        for pid in pids:
            kill_all([pid])


# --- declaring where a job runs ---


def test_both_forms_of_a_job_type_are_read_from_toml(tmp_path: Path) -> None:
    conf = tmp_path / "jobs.toml"
    # with a table of its own beside, the short form is written in the [jobs] table
    conf.write_text(
        "[jobs]\n"
        'short = "tests.stop_jobs:blind"\n'
        'here = { call = "tests.stop_jobs:blind" }\n'
        "[jobs.reindex]\n"
        'call = "tests.stop_jobs:proc_result"\n'
        'run_in = "process"\n'
    )
    settings = config.load(conf, env={})
    assert settings.jobs == {
        "short": "tests.stop_jobs:blind",
        "here": JobSpec("tests.stop_jobs:blind", "service"),
        "reindex": JobSpec("tests.stop_jobs:proc_result", "process"),
    }
    registry = build_registry(settings)
    assert registry.get("reindex").callable_path == "tests.stop_jobs.proc_result"  # type: ignore[union-attr]
    assert registry.get("short").function is stop_jobs.blind  # type: ignore[union-attr]
    assert registry.get("here").function is stop_jobs.blind  # type: ignore[union-attr]


def test_a_process_job_is_declared_through_the_environment_too() -> None:
    env = {
        "SIDETASK_JOBS": orjson.dumps(
            {"x": {"call": "tests.stop_jobs:proc_result", "run_in": "process"}}
        ).decode()
    }
    assert config.load(env=env).jobs == {"x": JobSpec("tests.stop_jobs:proc_result", "process")}


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        (
            {"call": "tests.stop_jobs:blind", "run_in": "thread"},
            "jobs.x.run_in: expected one of service, process, got 'thread'",
        ),
        (
            {"call": "tests.stop_jobs:blind", "where": "process"},
            "jobs.x: unknown key(s) where; expected call, run_in",
        ),
        ({"run_in": "process"}, "jobs.x.call: expected 'module:callable', got None"),
        (
            {"call": "no_colon", "run_in": "process"},
            "jobs.x.call: 'no_colon' is not of the form 'module:callable'",
        ),
        (3, "jobs.x: expected 'module:callable' or a table with call and run_in, got 3"),
    ],
)
def test_a_bad_declaration_is_refused_at_load(declared: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.load(env={"SIDETASK_JOBS": orjson.dumps({"x": declared}).decode()})
    assert str(caught.value).startswith(message)


def test_a_process_job_whose_module_cannot_be_imported_is_refused_at_start(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, jobs={"x": {"call": "tests.no_such_module:run", "run_in": "process"}}
    )
    with pytest.raises(ConfigError) as caught:
        build_registry(settings)
    assert str(caught.value).startswith(
        "jobs.x.call: 'tests.no_such_module:run': cannot import tests.no_such_module"
    )
