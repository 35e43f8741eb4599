"""The store contract, attempts and checkpoints: each run of a task is an attempt, opened by
the status change that starts it and closed by the one that ends it, in their transactions;
a running job's checkpoint goes into its open attempt, and the last one stored is what a
later run is given. Deleted with the task."""

from __future__ import annotations

import asyncio
from pathlib import Path

from service import clock
from service.errors import TransitionRefused
from service.model import Attempt, AttemptEnd, AttemptOutcome, Status, Task
from service.policy import after_interruption
from service.store import Backend, Change, SQLiteStore
from service.store.changes import replica_name
from service.store.copy import copy_db
from service.store.postgres import PostgresStore
from tests.store.conftest import GRAPH, Raw, new

OUT = AttemptOutcome


async def claim_and_start(store: Backend, task_id: int, server: str = "server-1") -> Task:
    """The supervisor's steps from waiting to running for the one waiting task: claimed,
    handed on (on a store several processes share), and started, which opens an attempt."""
    (claimed,) = await store.claim(1, clock.now_ms(), {}, server=server)
    assert claimed.id == task_id
    if claimed.status is Status.SCHEDULING:
        for target in (Status.SCHEDULED, Status.QUEUED):
            await store.transition(Change(task_id, target, fenced=True))
    return await store.transition(Change(task_id, Status.RUNNING, fenced=True, starts_attempt=True))


def end(task_id: int, target: Status, outcome: AttemptEnd, **fields: object) -> Change:
    return Change(task_id, target, fields, fenced=True, ends_attempt=outcome)


async def test_a_run_is_an_attempt_from_its_start_to_its_end(store: Backend) -> None:
    task, _ = await store.insert(new())
    assert await store.attempts(task.id) == []  # never run
    started = await claim_and_start(store, task.id)
    assert await store.attempts(task.id) == [
        Attempt(task.id, 1, "server-1", replica_name(), started.update_ms)
    ]
    done = await store.transition(
        end(task.id, Status.SUCCESS, AttemptEnd(OUT.SUCCESS), result="42")
    )
    (attempt,) = await store.attempts(task.id)
    assert (attempt.end_ms, attempt.outcome, attempt.error_type) == (
        done.update_ms,
        OUT.SUCCESS,
        None,
    )
    assert attempt.to_api() == {
        "attempt": 1,
        "server": "server-1",
        "replica": replica_name(),
        "start": started.update_ms,
        "end": done.update_ms,
        "outcome": "success",
        "checkpointed": False,
    }


async def test_each_run_is_numbered_and_keeps_how_it_ended(store: Backend, raw: Raw) -> None:
    task, _ = await store.insert(new(max_retries=3))
    await claim_and_start(store, task.id)
    error = AttemptEnd(OUT.FAILED, "OSError", "out of disk", "Traceback …\nOSError: out of disk\n")
    failed = await store.transition(
        end(task.id, Status.RESTORING, error, result="OSError: out of disk", retries=1)
    )
    assert failed.result == "OSError: out of disk"  # the task's result stays the text
    await claim_and_start(store, task.id, server="server-2")
    # the process running it dies: the next start's recovery ends the run `interrupted`
    store = await raw.reopen()

    def decide(task: Task) -> Change:
        outcome = after_interruption(task, clock.now_ms())
        return Change(task.id, outcome.target, outcome.fields, ends_attempt=outcome.attempt)

    recovery = await store.recover(decide)
    assert recovery.restored == 1
    await claim_and_start(store, task.id)
    first, second, third = await store.attempts(task.id)
    assert [(a.number, a.server, a.outcome) for a in (first, second, third)] == [
        (1, "server-1", OUT.FAILED),
        (2, "server-2", OUT.INTERRUPTED),
        (3, "server-1", None),  # running
    ]
    assert (first.error_type, first.error_message, first.traceback) == (
        "OSError",
        "out of disk",
        "Traceback …\nOSError: out of disk\n",
    )
    assert first.to_api()["error"] == {
        "type": "OSError",
        "message": "out of disk",
        "traceback": "Traceback …\nOSError: out of disk\n",
    }
    assert second.error_type is None and second.end_ms is not None
    assert third.end_ms is None and third.to_api()["outcome"] == "running"
    assert first.start_ms <= first.end_ms <= second.start_ms  # type: ignore[operator]


async def test_a_refused_end_leaves_the_attempt_open(store: Backend, raw: Raw) -> None:
    task, _ = await store.insert(new())
    await claim_and_start(store, task.id)
    await raw.set(task.id, status="cancelling")  # a cancel landed: success is refused
    try:
        await store.transition(end(task.id, Status.SUCCESS, AttemptEnd(OUT.SUCCESS)))
    except TransitionRefused:
        pass
    else:
        raise AssertionError("a success from cancelling was applied")
    (attempt,) = await store.attempts(task.id)
    assert (attempt.end_ms, attempt.outcome) == (None, None)
    await store.transition(end(task.id, Status.CANCELLED, AttemptEnd(OUT.CANCELLED)))
    (attempt,) = await store.attempts(task.id)
    assert attempt.outcome is OUT.CANCELLED


async def test_runs_started_and_ended_together_get_their_own_attempts(store: Backend) -> None:
    tasks = [(await store.insert(new()))[0] for _ in range(5)]
    claimed = await store.claim(10, clock.now_ms(), {}, server="server-1")
    ids = [t.id for t in claimed]
    assert ids == [t.id for t in tasks]
    if claimed[0].status is Status.SCHEDULING:
        for target in (Status.SCHEDULED, Status.QUEUED):
            await store.transition_many([Change(i, target, fenced=True) for i in ids])
    started = await store.transition_many(
        [Change(i, Status.RUNNING, fenced=True, starts_attempt=True) for i in ids]
    )
    assert all(isinstance(t, Task) for t in started)
    # ends that share a transaction, each with its own result and outcome
    outcomes = [
        AttemptEnd(OUT.SUCCESS) if i % 2 else AttemptEnd(OUT.FAILED, "ValueError", f"bad {i}")
        for i in ids
    ]
    await asyncio.gather(
        *(
            store.transition(end(i, Status.SUCCESS if i % 2 else Status.FAILED, o, result=f"{i}"))
            for i, o in zip(ids, outcomes, strict=True)
        )
    )
    for task_id, outcome in zip(ids, outcomes, strict=True):
        (attempt,) = await store.attempts(task_id)
        assert (attempt.number, attempt.outcome, attempt.error_message) == (
            1,
            outcome.outcome,
            outcome.error_message,
        )


async def test_a_checkpoint_goes_into_the_open_attempt_and_outlives_it(
    store: Backend,
) -> None:
    task, _ = await store.insert(new(max_retries=2))
    other, _ = await store.insert(new(delay_ms=3_600_000))  # waiting: it has no run
    assert await store.checkpoint(task.id) is None
    await claim_and_start(store, task.id)
    await store.set_checkpoints({task.id: '{"done":3}', other.id: '{"done":9}'})
    assert await store.checkpoint(task.id) == '{"done":3}'
    assert await store.checkpoint(other.id) is None  # no run open: nothing stored
    await store.set_checkpoints({task.id: '{"done":5}'})
    # the run's end carries the job's last checkpoint with it
    await store.transition(
        end(task.id, Status.RESTORING, AttemptEnd(OUT.FAILED, checkpoint='{"done":7}'), retries=1)
    )
    assert await store.checkpoint(task.id) == '{"done":7}'
    # an ended run's checkpoint is not written again (a late flush)
    await store.set_checkpoints({task.id: '{"done":1}'})
    assert await store.checkpoint(task.id) == '{"done":7}'
    # the next run stores none: the last one stored is still the task's
    await claim_and_start(store, task.id)
    assert await store.checkpoint(task.id) == '{"done":7}'
    await store.transition(end(task.id, Status.SUCCESS, AttemptEnd(OUT.SUCCESS)))
    assert [a.checkpointed for a in await store.attempts(task.id)] == [True, False]
    assert await store.checkpoint(task.id) == '{"done":7}'


async def test_attempts_and_checkpoints_go_with_their_task(store: Backend) -> None:
    deleted, _ = await store.insert(new())
    purged, _ = await store.insert(new())
    kept, _ = await store.insert(new())
    for task in (deleted, purged, kept):
        await claim_and_start(store, task.id)
        await store.set_checkpoints({task.id: "[1]"})
    for task in (deleted, purged):  # `kept` runs on: the purge leaves it
        await store.transition(end(task.id, Status.SUCCESS, AttemptEnd(OUT.SUCCESS)))
    await store.delete(GRAPH, deleted.id, None)
    assert await store.attempts(deleted.id) == []
    assert await store.checkpoint(deleted.id) is None
    tasks, _ = await store.purge(clock.now_ms() + 1, 0)
    assert tasks == 1
    assert await store.attempts(purged.id) == []
    assert await store.checkpoint(purged.id) is None
    assert [a.outcome for a in await store.attempts(kept.id)] == [None]
    assert await store.checkpoint(kept.id) == "[1]"


async def test_no_attempts_for_a_task_that_is_not_there(store: Backend) -> None:
    assert await store.attempts(12345) == []
    assert await store.attempts(2**70) == []
    assert await store.checkpoint(-1) is None


async def test_copy_db_takes_each_tasks_attempts_and_checkpoint_along(
    tmp_path: Path, pg_dsn: str
) -> None:
    """`sidetask copy-db`: a SQLite history moved to PostgreSQL keeps its runs."""
    source = SQLiteStore(tmp_path / "old.db")
    await source.open()
    try:
        task, _ = await source.insert(new(max_retries=1))
        await claim_and_start(source, task.id)
        await source.set_checkpoints({task.id: '{"next":3}'})
        error = AttemptEnd(OUT.FAILED, "OSError", "out of disk", "Traceback …")
        await source.transition(end(task.id, Status.RESTORING, error, retries=1))
        expected = await source.attempts(task.id)
    finally:
        await source.close()
    # the task, and its events: created, queued, running, restoring
    assert await copy_db(tmp_path / "old.db", pg_dsn) == (1, 4)
    target = PostgresStore(pg_dsn)
    await target.open()
    try:
        assert await target.attempts(task.id) == expected
        assert await target.checkpoint(task.id) == '{"next":3}'
    finally:
        await target.close()
