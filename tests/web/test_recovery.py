"""Restart recovery (SPEC 9) with real `python -m service serve` processes on one database,
on both stores (`any_db`: a SQLite file, a PostgreSQL database): SIGKILL mid-run and start
again, SIGTERM/SIGINT drains; and on SQLite, the refusal of a second process on the same
file, by any of its names."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession

from tests.conftest import ROOT, ServerProcess, wait_for
from tests.sup_jobs import JOBS
from tests.sup_util import execute, rows, status_events, trail, wait_file

BASE = "/graphs/hugegraph"
ENV = {"SIDETASK_JOBS": orjson.dumps(JOBS).decode()}
Factory = Callable[..., ServerProcess]


def claimed(db: Path | str) -> list[str]:
    """A task's steps from its claim to a slot (SPEC 3): one process takes it `queued`; a
    replica on PostgreSQL claims it, hands it to its slots, which confirm it."""
    return ["queued"] if isinstance(db, Path) else ["scheduling", "scheduled", "queued"]


async def started(factory: Factory, db: Path | str, **env: str) -> ServerProcess:
    server = factory(db=db, env={**ENV, **env})
    await server.wait_ready()
    return server


async def post_job(
    http: ClientSession, server: ServerProcess, job_type: str, body: Any, **query: Any
) -> int:
    async with http.post(
        f"{server.url}{BASE}/jobs/{job_type}",
        json=body,
        params={k: str(v) for k, v in query.items()},
    ) as response:
        assert response.status == 201, await response.text()
        return int((await response.json())["task_id"])


async def get(http: ClientSession, server: ServerProcess, task_id: int) -> dict[str, Any]:
    async with http.get(f"{server.url}{BASE}/tasks/{task_id}") as response:
        assert response.status == 200, await response.text()
        return dict(await response.json())


async def wait_task(
    http: ClientSession, server: ServerProcess, task_id: int, *statuses: str, timeout: float = 15.0
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        task = await get(http, server, task_id)
        return task if task["task_status"] in statuses else None

    return await wait_for(probe, timeout, f"task {task_id} to reach {statuses}")


async def wait_exit(server: ServerProcess, timeout: float = 30.0) -> int:
    async def probe() -> bool:
        return server.proc.poll() is not None

    await wait_for(probe, timeout, "the server to exit")
    return int(server.proc.returncode)


async def wait_log(server: ServerProcess, text: str, timeout: float = 15.0) -> None:
    async def probe() -> bool:
        return text in server.output()

    await wait_for(probe, timeout, f"{text!r} in the server's log")


# --- SIGKILL ---


async def test_a_killed_run_is_restored_and_succeeds_when_retries_are_left(
    server_factory: Factory, http: ClientSession, tmp_path: Path, any_db: Path | str
) -> None:
    db = any_db
    first = await started(server_factory, db)
    began = tmp_path / "began"
    task_id = await post_job(
        http,
        first,
        "gate_first_run",
        {"path": str(tmp_path / "never"), "started": str(began)},
        max_retries=1,
    )
    await wait_task(http, first, task_id, "running")
    await wait_file(began)
    first.kill()
    assert first.proc.returncode == -signal.SIGKILL
    assert rows(db, "SELECT status, retries FROM tasks WHERE id = ?", (task_id,)) == [
        ("running", 0)
    ]

    second = await started(server_factory, db)
    task = await wait_task(http, second, task_id, "success")
    assert (task["task_retries"], task["task_result"]) == (1, '"run 2"')
    assert trail(db, task_id) == [
        "new",
        *claimed(db),
        "running",  # the killed run
        "restoring",
        *claimed(db),
        "running",
        "success",  # after the restart
    ]
    restoring = next(e for e in status_events(db, task_id) if e["task_status"] == "restoring")
    assert restoring["task_retries"] == 1


async def test_a_killed_run_with_no_retries_left_fails_saying_it_was_interrupted(
    server_factory: Factory, http: ClientSession, tmp_path: Path, any_db: Path | str
) -> None:
    db = any_db
    first = await started(server_factory, db)
    task_id = await post_job(http, first, "gate", {"path": str(tmp_path / "never")})
    await wait_task(http, first, task_id, "running")
    first.kill()

    second = await started(server_factory, db)
    task = await wait_task(http, second, task_id, "failed")
    assert "interrupted" in task["task_result"]
    assert task["task_retries"] == 0
    assert trail(db, task_id)[-2:] == ["running", "failed"]


async def test_a_killed_cancelling_task_ends_cancelled(
    server_factory: Factory, http: ClientSession, tmp_path: Path, any_db: Path | str
) -> None:
    db = any_db
    first = await started(server_factory, db)
    seen = tmp_path / "cancel-seen"
    task_id = await post_job(
        http,
        first,
        "stubborn",
        {"path": str(tmp_path / "never"), "cancel_seen": str(seen)},
        max_retries=3,
    )
    await wait_task(http, first, task_id, "running")
    async with http.put(
        f"{first.url}{BASE}/tasks/{task_id}", params={"action": "cancel"}
    ) as response:
        assert response.status == 202
    await wait_file(seen)
    assert (await get(http, first, task_id))["task_status"] == "cancelling"
    first.kill()

    second = await started(server_factory, db)
    task = await wait_task(http, second, task_id, "cancelled")
    assert task["task_retries"] == 0  # it was not run again
    assert trail(db, task_id)[-2:] == ["cancelling", "cancelled"]


async def test_tasks_waiting_in_the_killed_process_are_restored_and_others_left_alone(
    server_factory: Factory, http: ClientSession, tmp_path: Path, any_db: Path | str
) -> None:
    """A queued task and a pending one, and a row of a newer version, across a SIGKILL."""
    db = any_db
    first = await started(server_factory, db, SIDETASK_CONCURRENCY="1")
    busy = await post_job(http, first, "gate", {"path": str(tmp_path / "never")}, max_retries=1)
    await wait_task(http, first, busy, "running")
    queued = await post_job(http, first, "echo", {"q": 1}, max_retries=1)
    await wait_task(http, first, queued, "queued")
    paused = await post_job(http, first, "echo", {"p": 1}, delay=60)
    async with http.put(
        f"{first.url}{BASE}/tasks/{paused}", params={"action": "pause"}
    ) as response:
        assert response.status == 202
    execute(
        db,
        "INSERT INTO tasks (graphspace, graph, name, type, callable, status, create_ms, update_ms)"
        " VALUES ('DEFAULT', 'hugegraph', 'newer', 'echo', 'service.jobs.echo.run', 'archived', 1, 1)",
    )
    first.kill()

    second = await started(server_factory, db)  # room for the restored gate and the echo
    task = await wait_task(http, second, queued, "success")
    assert (task["task_retries"], task["task_result"]) == (1, '{"q":1}')
    assert "restoring" in trail(db, queued)
    assert (await get(http, second, paused))["task_status"] == "pending"
    assert rows(db, "SELECT status FROM tasks WHERE name = 'newer'") == [("archived",)]
    # the gate never opens: the restored run is running again
    assert (await wait_task(http, second, busy, "running"))["task_retries"] == 1


# --- SIGTERM / SIGINT ---


async def test_sigterm_drains_within_the_grace_and_leaves_the_rest_for_the_next_start(
    server_factory: Factory, http: ClientSession, tmp_path: Path, any_db: Path | str
) -> None:
    """drain_grace is 2 s (config/test.toml): the job released during the drain ends
    `success`; the one that never ends is left `running`, and restored at the next start."""
    db = any_db
    first = await started(server_factory, db)
    gate = tmp_path / "gate"
    quick = await post_job(http, first, "gate", {"path": str(gate)})
    slow = await post_job(
        http, first, "gate_first_run", {"path": str(tmp_path / "never")}, max_retries=1
    )
    await wait_task(http, first, quick, "running")
    await wait_task(http, first, slow, "running")

    first.proc.send_signal(signal.SIGTERM)
    await wait_log(first, "draining: 2 running job(s)")
    gate.touch()
    assert await wait_exit(first) == 0
    assert "Traceback" not in first.output()
    # one process: left `running`, for the next start; several (PostgreSQL): handed back
    # to the others at once (tests/pg/test_replicas.py)
    left = "running" if isinstance(db, Path) else "restoring"
    assert rows(db, "SELECT id, status FROM tasks ORDER BY id") == [
        (quick, "success"),
        (slow, left),
    ]

    second = await started(server_factory, db)
    task = await wait_task(http, second, slow, "success")
    assert (task["task_retries"], task["task_result"]) == (1, '"run 2"')
    assert (await get(http, second, quick))["task_retries"] == 0


async def test_sigint_drains_too(
    server_factory: Factory, http: ClientSession, tmp_path: Path, any_db: Path | str
) -> None:
    db = any_db
    server = await started(server_factory, db)
    gate = tmp_path / "gate"
    task_id = await post_job(http, server, "gate", {"path": str(gate)})
    await wait_task(http, server, task_id, "running")
    server.proc.send_signal(signal.SIGINT)
    await wait_log(server, "draining: 1 running job(s)")
    gate.touch()
    assert await wait_exit(server) == 0
    assert rows(db, "SELECT status FROM tasks WHERE id = ?", (task_id,)) == [("success",)]


async def test_a_drain_hands_back_queued_tasks_without_spending_a_retry(
    server_factory: Factory, http: ClientSession, tmp_path: Path, any_db: Path | str
) -> None:
    db = any_db
    first = await started(server_factory, db, SIDETASK_CONCURRENCY="1")
    gate = tmp_path / "gate"
    busy = await post_job(http, first, "gate", {"path": str(gate)})
    await wait_task(http, first, busy, "running")
    waiting = await post_job(http, first, "echo", {"w": 1})
    await wait_task(http, first, waiting, "queued")
    first.proc.send_signal(signal.SIGTERM)
    await wait_log(first, "draining: 1 running job(s)")
    gate.touch()
    assert await wait_exit(first) == 0
    assert rows(db, "SELECT status, retries FROM tasks WHERE id = ?", (waiting,)) == [
        ("restoring", 0)
    ]

    second = await started(server_factory, db)
    task = await wait_task(http, second, waiting, "success")
    assert task["task_retries"] == 0


# --- one process per database ---


async def test_a_second_process_on_the_same_database_refuses_to_start(
    server_factory: Factory, http: ClientSession, tmp_path: Path
) -> None:
    """SQLite: one process per file. (Several on one PostgreSQL database share its work:
    tests/pg/test_replicas.py.)"""
    db = tmp_path / "sidetask.db"
    first = await started(server_factory, db)
    second = server_factory(db=db, env=ENV)
    code = await wait_exit(second)
    assert code != 0
    output = second.output()
    assert "in use by another sidetask process" in output
    assert f"pid {first.proc.pid}" in output
    assert "Traceback" not in output
    # the first one is untouched
    task_id = await post_job(http, first, "echo", {"still": "here"})
    assert (await wait_task(http, first, task_id, "success"))["task_result"] == '{"still":"here"}'


def _other_name(db: Path, how: str) -> Path:
    """Another name of the database file: a symbolic link, a hard link, or a relative path
    (the server runs in the repository's directory)."""
    if how == "symlink":
        link = db.parent / "elsewhere" / "link.db"
        link.parent.mkdir()
        link.symlink_to(db)
        return link
    if how == "hardlink":
        link = db.with_name("hard.db")
        link.hardlink_to(db)
        return link
    return Path(os.path.relpath(db, ROOT))


@pytest.mark.parametrize("how", ["symlink", "hardlink", "relative"])
async def test_a_second_process_on_another_name_of_the_file_refuses_and_nothing_runs_twice(
    server_factory: Factory, http: ClientSession, tmp_path: Path, how: str
) -> None:
    db = tmp_path / "sidetask.db"
    first = await started(server_factory, db)
    gate = tmp_path / "gate"
    task_id = await post_job(
        http, first, "gate", {"path": str(gate), "result": "once"}, max_retries=1
    )
    await wait_task(http, first, task_id, "running")

    second = server_factory(db=_other_name(db, how), env=ENV)
    assert await wait_exit(second) != 0
    output = second.output()
    assert "in use by another sidetask process" in output
    assert f"pid {first.proc.pid}" in output
    assert "Traceback" not in output

    gate.touch()
    task = await wait_task(http, first, task_id, "success")
    assert (task["task_result"], task["task_retries"]) == ('"once"', 0)
    # no recovery in the second process took the running task for an interrupted one
    assert trail(db, task_id) == ["new", "queued", "running", "success"]


async def test_the_guard_leaves_no_file_a_cleaner_could_remove(
    server_factory: Factory, http: ClientSession, tmp_path: Path
) -> None:
    """The lock is on the database file itself: with every other file of the service next to
    it removed (as a temp cleaner would), a second process still refuses."""
    db = tmp_path / "sidetask.db"
    first = await started(server_factory, db)
    database = {db.name, f"{db.name}-wal", f"{db.name}-shm"}
    for path in tmp_path.iterdir():
        if path.name not in database and not path.name.endswith(".log"):
            path.unlink()
    assert {p.name for p in tmp_path.iterdir() if not p.name.endswith(".log")} == database
    second = server_factory(db=db, env=ENV)
    assert await wait_exit(second) != 0
    assert f"pid {first.proc.pid}" in second.output()
    task_id = await post_job(http, first, "echo", {"still": "here"})
    assert (await wait_task(http, first, task_id, "success"))["task_result"] == '{"still":"here"}'


async def test_two_processes_creating_the_file_at_once_one_serves(
    server_factory: Factory, http: ClientSession, tmp_path: Path
) -> None:
    db = tmp_path / "new" / "sidetask.db"
    db.parent.mkdir()  # for the servers' logs; the database file does not exist yet
    both = [server_factory(db=db, env=ENV), server_factory(db=db, env=ENV)]

    async def settled() -> bool:
        # one has exited (refused), the other answers /ready
        exited = [s for s in both if s.proc.poll() is not None]
        if len(exited) == 2:
            raise AssertionError(f"both exited: {[s.output() for s in both]}")
        if len(exited) != 1:
            return False
        alive = next(s for s in both if s.proc.poll() is None)
        try:
            async with http.get(f"{alive.url}/ready") as response:
                return response.status == 200
        except OSError:
            return False

    await wait_for(settled, 20.0, "one server to refuse and the other to be ready")
    refused = next(s for s in both if s.proc.poll() is not None)
    alive = next(s for s in both if s.proc.poll() is None)
    assert refused.proc.returncode != 0
    assert f"pid {alive.proc.pid}" in refused.output()
    task_id = await post_job(http, alive, "echo", {"n": 1})
    assert (await wait_task(http, alive, task_id, "success"))["task_result"] == '{"n":1}'


async def test_sigterm_does_not_wait_forever_for_a_plain_job(
    server_factory: Factory, http: ClientSession, tmp_path: Path, any_db: Path | str
) -> None:
    """A plain (thread) job cannot be interrupted: past the grace it is left running, the
    process exits anyway, and the task is restored at the next start."""
    db = any_db
    first = await started(server_factory, db)
    gate = tmp_path / "gate"
    task_id = await post_job(http, first, "sync_gate", {"path": str(gate)}, max_retries=1)
    await wait_task(http, first, task_id, "running")
    try:
        first.proc.send_signal(signal.SIGTERM)
        await wait_log(first, "draining: 1 running job(s)")
        assert await wait_exit(first, timeout=20) == 0
        assert rows(db, "SELECT status FROM tasks WHERE id = ?", (task_id,)) == [("running",)]
    finally:
        gate.touch()  # lets the thread end, should the process still be there

    second = await started(server_factory, db)
    task = await wait_task(http, second, task_id, "success")
    assert task["task_retries"] == 1


async def test_every_submission_answered_201_is_on_disk(
    server_factory: Factory, http: ClientSession, tmp_path: Path, any_db: Path | str
) -> None:
    """SIGKILL right after the last 201: every task answered is in the file."""
    db = any_db
    server = await started(server_factory, db)
    ids = [await post_job(http, server, "echo", {"n": n}, delay=3600) for n in range(25)]
    server.kill()
    assert [i for (i,) in rows(db, "SELECT id FROM tasks ORDER BY id")] == ids
