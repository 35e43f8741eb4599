"""The supervisor end to end through a real server on loopback and a real SQLite file:
order, concurrency limits, timeouts, delays, retries, cancellation, pause/resume/retry,
force-delete, progress coalescing, plain (thread) jobs, group commit and retention."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service import clock
from service.model import Event, GraphRef, NewTask, Status, Task
from service.store import Change, open_store
from service.web.keys import STORE, SUPERVISOR
from tests.conftest import get_task, submit, wait_for, wait_status
from tests.sup_util import (
    Start,
    execute,
    max_overlap,
    rows,
    started_order,
    status_events,
    stored_status,
    to_queued,
    trail,
    wait_file,
)


@pytest.fixture
def db(any_db: Path | str) -> Path | str:
    """Every test here runs on both stores."""
    return any_db


BASE = "/graphs/hugegraph"
GRAPH = GraphRef("DEFAULT", "hugegraph")
# the fixtures `db` and `start` come from tests/web/conftest.py


async def preload(db: Path | str, *tasks: NewTask) -> list[int]:
    """Tasks already in the database when the service starts (a backlog)."""
    store = open_store(str(db))
    await store.open()
    try:
        return [(await store.insert(task))[0].id for task in tasks]
    finally:
        await store.close()


def backlog(type_name: str, name: str, priority: int = 0, input: str | None = None) -> NewTask:
    return NewTask(GRAPH, type_name, f"tests.sup_jobs.{type_name}", name, input, priority=priority)


async def running_ids(client: TestClient) -> list[int]:
    response = await client.get(f"{BASE}/tasks", params={"status": "running"})
    assert response.status == 200
    return [task["id"] for task in (await response.json())["tasks"]]


async def wait_running(client: TestClient, count: int) -> list[int]:
    async def probe() -> list[int] | None:
        ids = await running_ids(client)
        return ids if len(ids) == count else None

    return await wait_for(probe, what=f"{count} task(s) running")


async def put(client: TestClient, task_id: int, action: str) -> tuple[int, dict[str, Any]]:
    response = await client.put(f"{BASE}/tasks/{task_id}", params={"action": action})
    return response.status, await response.json()


# --- order and limits ---


async def test_tasks_start_by_priority_then_id(start: Start, db: Path) -> None:
    priorities = [0, 5, 0, 10, 5, -1, 10]
    ids = await preload(db, *(backlog("echo", f"t{i}", p) for i, p in enumerate(priorities)))
    client = await start(concurrency=1)
    for task_id in ids:
        await wait_status(client, BASE, task_id, "success")
    expected = [
        i for _, i in sorted(zip(priorities, ids, strict=True), key=lambda x: (-x[0], x[1]))
    ]
    assert started_order(db) == expected


async def test_no_more_than_concurrency_jobs_run_at_once(
    start: Start, tmp_path: Path, db: Path
) -> None:
    client = await start(concurrency=2)
    gates = [tmp_path / f"gate{i}" for i in range(5)]
    ids = [await submit(client, BASE, "gate", {"path": str(g)}) for g in gates]
    running = await wait_running(client, 2)
    waiting = [await get_task(client, BASE, i) for i in ids if i not in running]
    assert {t["task_status"] for t in waiting} <= {"new", "scheduling", "scheduled", "queued"}
    # a task waiting for a free slot is `queued` (confirmed by this process's executor)
    assert any(t["task_status"] == "queued" for t in waiting)
    for gate in gates:
        gate.touch()
    for task_id in ids:
        await wait_status(client, BASE, task_id, "success")
    assert max_overlap(db, ids) == 2


async def test_a_type_limit_holds_and_leaves_the_free_slots_to_other_types(
    start: Start, tmp_path: Path, db: Path
) -> None:
    """A backlog of a limited type does not keep other types from free slots."""
    gate = tmp_path / "gate"
    # more than the supervisor prefetches (twice its concurrency)
    gated = await preload(
        db, *(backlog("gate", f"g{i}", input=f'{{"path": "{gate}"}}') for i in range(6))
    )
    client = await start(concurrency=2, type_concurrency={"gate": 1})
    await wait_running(client, 1)
    echo = await submit(client, BASE, "echo", {"x": 1})
    assert (await wait_status(client, BASE, echo, "success"))["task_result"] == '{"x":1}'
    assert len(await running_ids(client)) == 1
    gate.touch()
    for task_id in gated:
        await wait_status(client, BASE, task_id, "success")
    assert max_overlap(db, gated) == 1


# --- timeouts and delays ---


async def test_a_task_over_its_timeout_fails_saying_it_timed_out(start: Start) -> None:
    client = await start()
    task_id = await submit(client, BASE, "sleep", {"steps": 1, "interval": 30}, timeout=0.1)
    task = await wait_status(client, BASE, task_id, "failed")
    assert "timed out" in task["task_result"]
    assert task["task_timeout"] == 0.1


async def test_a_timeout_error_of_the_job_itself_fails_the_task(start: Start) -> None:
    """A job's own TimeoutError (no task timeout set) is a failure like any other: the task
    ends `failed` with the error, and its slot is free again."""
    client = await start(concurrency=1)
    task_id = await submit(client, BASE, "raises_timeout")
    task = await wait_status(client, BASE, task_id, "failed")
    assert "the upstream call took too long" in task["task_result"]
    after = await submit(client, BASE, "echo", {"next": True})
    await wait_status(client, BASE, after, "success")


async def test_a_delayed_task_stays_new_until_its_time(start: Start, db: Path) -> None:
    client = await start()
    task_id = await submit(client, BASE, "echo", {"late": True}, delay=0.3)
    created = await get_task(client, BASE, task_id)
    assert created["task_status"] == "new"
    await wait_status(client, BASE, task_id, "success")
    running = next(e for e in status_events(db, task_id) if e["task_status"] == "running")
    assert running["task_update"] >= created["task_create"] + 300


async def test_delays_that_end_at_different_times_all_run(start: Start) -> None:
    client = await start()
    ids = [
        await submit(client, BASE, "echo", {"n": n}, delay=d) for n, d in enumerate((0.4, 0.1, 0.2))
    ]
    for task_id in ids:
        await wait_status(client, BASE, task_id, "success", timeout=5)


# --- retries ---


async def test_a_failing_task_is_retried_then_fails(start: Start, db: Path) -> None:
    client = await start()
    task_id = await submit(client, BASE, "fail", {"message": "boom"}, max_retries=2)
    task = await wait_status(client, BASE, task_id, "failed")
    assert task["task_retries"] == 2
    assert "boom" in task["task_result"]
    run = [*to_queued(db), "queued", "running"]
    assert trail(db, task_id) == [
        "new",
        *run,
        "restoring",
        *run,
        "restoring",
        *run,
        "failed",
    ]
    assert [
        e["task_retries"] for e in status_events(db, task_id) if e["task_status"] == "restoring"
    ] == [1, 2]


async def test_a_task_that_recovers_within_its_retries_succeeds(start: Start) -> None:
    client = await start()
    task_id = await submit(client, BASE, "fail_first", {"failures": 2}, max_retries=3)
    task = await wait_status(client, BASE, task_id, "success")
    assert (task["task_retries"], task["task_result"]) == (2, "2")


async def test_retry_delays_grow_exponentially_with_jitter_up_to_the_cap(
    start: Start, db: Path
) -> None:
    """retry_backoff 10 s, cap 25 s: the n-th retry waits between half and all of
    min(25, 10 * 2**(n-1)) s. Pause and resume skip each wait."""
    client = await start(retry_backoff=10.0, retry_backoff_max=25.0)
    ids = [
        await submit(client, BASE, "fail", {"message": f"m{i}"}, max_retries=3) for i in range(3)
    ]
    waits: dict[int, list[int]] = {}
    for retry, base_ms in ((1, 10_000), (2, 20_000), (3, 25_000)):
        for task_id in ids:
            task = await wait_status(client, BASE, task_id, "restoring")
            assert task["task_retries"] == retry
            ((run_after, updated),) = rows(
                db, "SELECT run_after_ms, update_ms FROM tasks WHERE id = ?", (task_id,)
            )
            wait = run_after - updated
            assert base_ms // 2 - 100 <= wait <= base_ms, (retry, wait)
            waits.setdefault(retry, []).append(wait)
            # a task waiting for its retry can be paused, and resumed to run at once
            assert (await put(client, task_id, "pause"))[0] == 202
            assert (await put(client, task_id, "resume"))[0] == 202
    for task_id in ids:
        task = await wait_status(client, BASE, task_id, "failed")
        assert task["task_retries"] == 3
    assert len(set(waits[1])) > 1  # jitter: the same retry does not wait the same everywhere


# --- cancellation ---


async def test_cancelling_a_running_job_interrupts_it(start: Start, db: Path) -> None:
    client = await start()
    task_id = await submit(client, BASE, "sleep", {"steps": 1000, "interval": 0.01})
    await wait_status(client, BASE, task_id, "running")
    status, body = await put(client, task_id, "cancel")
    assert status == 202 and body["cancelled"] is True
    assert body["task_status"] in ("cancelling", "cancelled")
    task = await wait_status(client, BASE, task_id, "cancelled")
    assert task["task_progress"] < 1000
    assert trail(db, task_id)[-2:] == ["cancelling", "cancelled"]


async def test_a_job_that_swallows_the_cancel_still_ends_cancelled(
    start: Start, tmp_path: Path
) -> None:
    client = await start()
    task_id = await submit(client, BASE, "swallow", {"path": str(tmp_path / "never")})
    await wait_status(client, BASE, task_id, "running")
    assert (await put(client, task_id, "cancel"))[0] == 202
    task = await wait_status(client, BASE, task_id, "cancelled", "success")
    assert task["task_status"] == "cancelled"
    assert "task_result" not in task


async def test_a_plain_job_cancelled_ends_cancelled_once_its_thread_returns(
    start: Start, tmp_path: Path
) -> None:
    client = await start()
    gate = tmp_path / "gate"
    task_id = await submit(client, BASE, "sync_gate", {"path": str(gate)})
    await wait_status(client, BASE, task_id, "running")
    try:
        status, body = await put(client, task_id, "cancel")
        assert (status, body["task_status"]) == (202, "cancelling")
        # the thread cannot be interrupted: the task is cancelled when it returns
        assert (await get_task(client, BASE, task_id))["task_status"] == "cancelling"
    finally:
        gate.touch()
    task = await wait_status(client, BASE, task_id, "cancelled")
    assert "task_result" not in task  # what it returned after the cancel is not kept


async def test_a_task_cancelled_before_it_starts_never_runs(
    start: Start, tmp_path: Path, db: Path
) -> None:
    client = await start()
    started = tmp_path / "started"
    task_id = await submit(
        client, BASE, "gate", {"path": str(tmp_path / "gate"), "started": str(started)}, delay=30
    )
    status, body = await put(client, task_id, "cancel")
    assert (status, body["task_status"], body["cancelled"]) == (202, "cancelled", True)
    status, body = await put(client, task_id, "cancel")
    assert status == 400
    assert body["message"] == f"Can't cancel task '{task_id}' which is completed or cancelling"
    assert trail(db, task_id) == ["new", "cancelled"]
    assert not started.exists()


# --- pause, resume, retry ---


async def test_pause_holds_a_task_and_resume_runs_it(start: Start, db: Path) -> None:
    client = await start()
    task_id = await submit(client, BASE, "echo", {"p": 1}, delay=30)
    status, body = await put(client, task_id, "pause")
    assert (status, body["task_status"], body["cancelled"]) == (202, "pending", False)
    assert (await get_task(client, BASE, task_id))["task_status"] == "pending"
    status, body = await put(client, task_id, "pause")
    assert status == 400
    status, body = await put(client, task_id, "resume")
    assert status == 202 and body["task_status"] in ("restoring", "queued", "running", "success")
    await wait_status(client, BASE, task_id, "success")
    assert trail(db, task_id) == [
        "new", "pending", "restoring", *to_queued(db), "queued", "running", "success",
    ]  # fmt: skip
    status, body = await put(client, task_id, "resume")
    assert status == 400 and "only a pending task can be resumed" in body["message"]


async def test_a_running_task_cannot_be_paused(start: Start, tmp_path: Path) -> None:
    client = await start()
    gate = tmp_path / "gate"
    task_id = await submit(client, BASE, "gate", {"path": str(gate)})
    await wait_status(client, BASE, task_id, "running")
    status, body = await put(client, task_id, "pause")
    assert status == 400 and "RUNNING" in body["message"]
    gate.touch()
    await wait_status(client, BASE, task_id, "success")


async def test_retry_runs_a_failed_or_cancelled_task_again(start: Start, db: Path) -> None:
    client = await start()
    failed = await submit(client, BASE, "fail", {"message": "once"})
    await wait_status(client, BASE, failed, "failed")
    status, body = await put(client, failed, "retry")
    assert status == 202 and body["task_retries"] == 1
    task = await wait_status(client, BASE, failed, "failed")
    assert task["task_retries"] == 1
    steps = ["failed", "restoring", *to_queued(db), "queued", "running", "failed"]
    assert trail(db, failed)[-len(steps) :] == steps

    cancelled = await submit(client, BASE, "echo", {"c": 1}, delay=30)
    await put(client, cancelled, "cancel")
    status, body = await put(client, cancelled, "retry")
    assert status == 202
    task = await wait_status(client, BASE, cancelled, "success")
    assert (task["task_retries"], task["task_result"]) == (1, '{"c":1}')

    status, body = await put(client, cancelled, "retry")
    assert status == 400 and "only a failed or cancelled task can be retried" in body["message"]


# --- force-delete ---


async def test_a_force_deleted_running_task_runs_on_and_does_not_come_back(
    start: Start, tmp_path: Path, db: Path
) -> None:
    client = await start(concurrency=1)
    gate, done = tmp_path / "gate", tmp_path / "done"
    task_id = await submit(
        client, BASE, "gate", {"path": str(gate), "done": str(done), "progress": 7}
    )
    await wait_status(client, BASE, task_id, "running")
    response = await client.delete(f"{BASE}/tasks/{task_id}", params={"force": "true"})
    assert response.status == 204
    assert (await client.get(f"{BASE}/tasks/{task_id}")).status == 404
    gate.touch()
    await wait_file(done)  # the job ran on after the delete, and reported progress
    # With one slot, the next task runs only after the deleted one's end was handled.
    after = await submit(client, BASE, "echo", {"after": True})
    await wait_status(client, BASE, after, "success")
    assert (await client.get(f"{BASE}/tasks/{task_id}")).status == 404
    assert rows(db, "SELECT COUNT(*) FROM tasks WHERE id = ?", (task_id,)) == [(0,)]
    listed = await (await client.get(f"{BASE}/tasks", params={"limit": "-1"})).json()
    assert task_id not in [t["id"] for t in listed["tasks"]]
    kinds = [
        k for (k,) in rows(db, "SELECT kind FROM events WHERE task_id = ? ORDER BY id", (task_id,))
    ]
    assert kinds[-1] == "task.deleted"


# --- progress ---


async def test_progress_in_a_tight_loop_costs_few_writes_and_keeps_the_latest(
    start: Start, tmp_path: Path, db: Path
) -> None:
    client = await start()
    gate, reported = tmp_path / "gate", tmp_path / "reported"
    task_id = await submit(
        client, BASE, "burst", {"count": 100_000, "path": str(gate), "reported": str(reported)}
    )
    await wait_file(reported)

    # while the job still runs, the latest value is written
    async def latest() -> dict[str, Any] | None:
        task = await get_task(client, BASE, task_id)
        return task if task["task_progress"] == 100_000 else None

    assert (await wait_for(latest, what="progress 100000"))["task_status"] == "running"
    gate.touch()
    task = await wait_status(client, BASE, task_id, "success")
    assert (task["task_progress"], task["task_result"]) == (100_000, "100000")
    (writes,) = rows(
        db, "SELECT COUNT(*) FROM events WHERE task_id = ? AND kind = 'task.progress'", (task_id,)
    )[0]
    assert 1 <= writes <= 200


async def test_progress_of_a_plain_job_is_coalesced_too(start: Start, db: Path) -> None:
    client = await start()
    task_id = await submit(client, BASE, "sync_burst", {"count": 100_000})
    task = await wait_status(client, BASE, task_id, "success")
    assert task["task_progress"] == 100_000
    (writes,) = rows(
        db, "SELECT COUNT(*) FROM events WHERE task_id = ? AND kind = 'task.progress'", (task_id,)
    )[0]
    assert writes <= 200


async def test_the_final_progress_is_stored_with_a_cancel(start: Start, tmp_path: Path) -> None:
    client = await start()
    gate, reported = tmp_path / "gate", tmp_path / "reported"
    task_id = await submit(
        client, BASE, "burst", {"count": 5000, "path": str(gate), "reported": str(reported)}
    )
    await wait_file(reported)
    await put(client, task_id, "cancel")
    task = await wait_status(client, BASE, task_id, "cancelled")
    assert task["task_progress"] == 5000


# --- plain functions ---


async def test_a_plain_job_runs_in_a_worker_thread_without_blocking_the_loop(
    start: Start, tmp_path: Path
) -> None:
    client = await start()
    gate, started = tmp_path / "gate", tmp_path / "started"
    task_id = await submit(client, BASE, "sync_gate", {"path": str(gate), "started": str(started)})
    try:
        await wait_file(started)
        # the job blocks its thread; the service still answers and runs other jobs
        other = await submit(client, BASE, "echo", {"meanwhile": True})
        await wait_status(client, BASE, other, "success")
        assert (await get_task(client, BASE, task_id))["task_status"] == "running"
    finally:
        gate.touch()
    task = await wait_status(client, BASE, task_id, "success")
    assert task["task_result"] == '{"main_thread":false}'


# --- group commit ---


@pytest.mark.parametrize("any_db", ["sqlite"], indirect=True)
async def test_concurrent_submissions_share_transactions(start: Start) -> None:
    """200 submissions at once: each 201 is a committed task, written in far fewer
    transactions than tasks (each transaction announces its events once). SQLite only:
    PostgreSQL's listeners get events from its event pump, in batches of what is committed
    by then, not one call per transaction, so a listener cannot count transactions there."""
    client = await start()
    transactions: list[Sequence[Event]] = []
    client.app[STORE].add_listener(transactions.append)

    async def one(n: int) -> int:
        # delayed, so the only writes meanwhile are the submissions themselves
        return await submit(client, BASE, "echo", {"n": n}, delay=3600)

    ids = await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(200))), 60)
    assert len(set(ids)) == 200
    inserts = [t for t in transactions if any(e.kind == "task.created" for e in t)]
    assert sum(1 for t in inserts for e in t if e.kind == "task.created") == 200
    assert len(inserts) <= 50


# --- retention ---


async def test_purge_removes_completed_tasks_and_events_past_their_retention(
    start: Start, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await start(task_retention=60.0, event_retention=120.0)
    done = [await submit(client, BASE, "echo", {"n": n}) for n in range(3)]
    waiting = await submit(client, BASE, "echo", {"later": True}, delay=3600)
    for task_id in done:
        await wait_status(client, BASE, task_id, "success")
    supervisor = client.app[SUPERVISOR]
    assert await supervisor.purge() == (0, 0)  # nothing is old yet

    now = clock.now_ms()
    monkeypatch.setattr(clock, "now_ms", lambda: now + 90_000)
    tasks, events = await supervisor.purge()
    assert (tasks, events) == (3, 0)
    for task_id in done:
        assert (await client.get(f"{BASE}/tasks/{task_id}")).status == 404
    assert (await get_task(client, BASE, waiting))["task_status"] == "new"

    monkeypatch.setattr(clock, "now_ms", lambda: now + 200_000)
    tasks, events = await supervisor.purge()
    assert tasks == 0 and events > 0
    # what is left is younger than the event retention: the deletions of 90 s ago
    assert {k for (k,) in rows(db, "SELECT kind FROM events")} == {"task.deleted"}


async def test_the_purge_runs_on_its_own_by_settings(start: Start) -> None:
    client = await start(task_retention=0.0, purge_interval=0.05)
    task_id = await submit(client, BASE, "echo", {})

    async def gone() -> bool:
        return (await client.get(f"{BASE}/tasks/{task_id}")).status == 404

    await wait_for(gone, what="the completed task to be purged")


# --- job types that went away ---


async def test_a_task_whose_type_is_no_longer_registered_fails_saying_so(
    start: Start, db: Path
) -> None:
    """Tasks stored by a service whose configuration had a job type this one lacks: on
    SQLite they fail saying so; on PostgreSQL another replica may have the type, so they
    wait where they are, unclaimed, and take no slot from the others (README, "Several
    replicas")."""
    fresh, restoring = await preload(db, backlog("retired", "a"), backlog("retired", "b"))
    execute(db, "UPDATE tasks SET status = 'restoring', retries = 1 WHERE id = ?", (restoring,))
    client = await start(concurrency=1)
    if isinstance(db, Path):
        for task_id in (fresh, restoring):
            task = await wait_status(client, BASE, task_id, "failed")
            assert "Job type 'retired' is not registered" in task["task_result"]
    echo = await submit(client, BASE, "echo", {})
    await wait_status(client, BASE, echo, "success")
    if not isinstance(db, Path):
        assert [stored_status(db, fresh), stored_status(db, restoring)] == ["new", "restoring"]


# --- drain ---


async def test_a_drain_during_a_claim_hands_the_claimed_task_back(
    start: Start, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM while the scheduler is claiming: the claim completes, nothing new starts, and
    the task goes back to `restoring` with no retry spent (not left `queued` to be counted
    as interrupted at the next start)."""
    client = await start()
    store, supervisor = client.app[STORE], client.app[SUPERVISOR]
    claiming = asyncio.Event()
    real = store.claim

    async def claim_once_draining(*args: Any, **kwargs: Any) -> list[Task]:
        claiming.set()

        async def draining() -> bool:
            return not supervisor.started

        await wait_for(draining, what="the drain to begin")
        return await real(*args, **kwargs)

    monkeypatch.setattr(store, "claim", claim_once_draining)
    task_id = await submit(client, BASE, "echo", {"late": True})
    await asyncio.wait_for(claiming.wait(), 10)
    await asyncio.wait_for(supervisor.drain(grace=5), 15)
    assert rows(db, "SELECT status, retries FROM tasks WHERE id = ?", (task_id,)) == [
        ("restoring", 0)
    ]
    assert trail(db, task_id) == ["new", *to_queued(db), "queued", "restoring"]


async def test_plain_jobs_up_to_the_concurrency_all_run_at_once(
    start: Start, tmp_path: Path
) -> None:
    """Each running plain job has a thread: none waits for a shared pool smaller than the
    concurrency (asyncio's default pool has at most 32 threads)."""
    client = await start(concurrency=40)
    gate = tmp_path / "gate"
    marks = [tmp_path / f"started{i}" for i in range(40)]
    ids = [
        await submit(client, BASE, "sync_gate", {"path": str(gate), "started": str(m)})
        for m in marks
    ]
    try:
        for mark in marks:
            await wait_file(mark)
    finally:
        gate.touch()
    for task_id in ids:
        await wait_status(client, BASE, task_id, "success")


async def test_a_cancelled_plain_job_holds_its_slot_until_its_thread_returns(
    start: Start, tmp_path: Path
) -> None:
    """A plain job cannot be interrupted; cancelled, it runs on in its thread and keeps the
    slot it holds, so the next task starts only once it has returned."""
    client = await start(concurrency=1)
    never, started, gate = tmp_path / "never", tmp_path / "started", tmp_path / "gate"
    stuck = await submit(client, BASE, "sync_gate", {"path": str(never)})
    await wait_status(client, BASE, stuck, "running")
    try:
        await put(client, stuck, "cancel")
        following = await submit(
            client, BASE, "sync_gate", {"path": str(gate), "started": str(started)}
        )
        await wait_status(client, BASE, following, "queued")
        assert (await get_task(client, BASE, stuck))["task_status"] == "cancelling"
        assert not started.exists()
    finally:
        never.touch()
    await wait_status(client, BASE, stuck, "cancelled")
    await wait_file(started)
    gate.touch()
    await wait_status(client, BASE, following, "success")


async def test_a_task_whose_stored_input_is_damaged_is_unknown_and_holds_no_slot(
    start: Start, db: Path
) -> None:
    """Input that is not JSON cannot be what was submitted: the task shows as `unknown`
    (SPEC 3), is never run, and does not stand in the way of the tasks behind it."""
    (damaged,) = await preload(db, backlog("echo", "damaged"))
    execute(db, "UPDATE tasks SET input = ? WHERE id = ?", ('{"unterminated', damaged))
    client = await start(concurrency=1)
    after = await submit(client, BASE, "echo", {"next": 1})
    await wait_status(client, BASE, after, "success")
    task = await get_task(client, BASE, damaged)
    assert (task["task_status"], task["task_input"]) == ("unknown", '{"unterminated')
    assert rows(db, "SELECT status FROM tasks WHERE id = ?", (damaged,)) == [("new",)]


async def test_a_cancel_racing_the_end_of_its_job_is_answered_202(
    start: Start, tmp_path: Path, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job ends just as a cancel arrives: the cancel interrupts nothing and writes
    nothing more than `cancelling`; the end's write, refused because the task is
    `cancelling`, records `cancelled`, once and without an error."""
    client = await start()
    store = client.app[STORE]
    real = store.transition
    gate = tmp_path / "gate"
    task_id = await submit(client, BASE, "gate", {"path": str(gate)})
    await wait_status(client, BASE, task_id, "running")
    ending, cancel_decided = asyncio.Event(), asyncio.Event()
    cancelled_writes = 0

    async def interleaved(change: Change) -> Task:
        nonlocal cancelled_writes
        if change.task_id == task_id and change.target is Status.SUCCESS:
            ending.set()  # the job has ended; its write waits for the cancel to be decided
            await asyncio.wait_for(cancel_decided.wait(), 10)
        if change.task_id == task_id and change.target is Status.CANCELLED:
            cancelled_writes += 1
        return await real(change)

    monkeypatch.setattr(store, "transition", interleaved)
    gate.touch()
    await asyncio.wait_for(ending.wait(), 10)
    response = await client.put(f"{BASE}/tasks/{task_id}", params={"action": "cancel"})
    assert response.status == 202, await response.text()
    body = await response.json()
    assert (body["cancelled"], body["task_status"]) == (True, "cancelling")
    cancel_decided.set()
    task = await wait_status(client, BASE, task_id, "cancelled", "success")
    assert task["task_status"] == "cancelled"
    assert trail(db, task_id)[-3:] == ["running", "cancelling", "cancelled"]
    assert cancelled_writes == 1
