"""Liveness of processes sharing one PostgreSQL database, store by store: a process that
stops heartbeating is declared dead and the others recover what it held; when it comes
back, every fenced write of its old identity is refused, and it learns it from its next
heartbeat; one that exits loses its session's lock and is declared dead at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from service import clock
from service.errors import TransitionRefused
from service.model import Status, Task
from service.store import Change
from service.store.postgres import PostgresStore
from tests.store.conftest import GRAPH, new
from tests.sup_util import execute, rows


def restore(task: Task) -> Change:
    return Change(task.id, Status.RESTORING, {"retries": task.retries + 1})


async def hand_on(store: PostgresStore, task_id: int) -> None:
    for target in (Status.SCHEDULED, Status.QUEUED, Status.RUNNING):
        await store.transition(Change(task_id, target, fenced=True))


@pytest.fixture
async def pair(pg_dsn: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    a = PostgresStore(pg_dsn, replica_timeout=5.0)
    b = PostgresStore(pg_dsn, replica_timeout=5.0)
    await a.open()
    await b.open()
    yield a, b
    await a.close()
    await b.close()


async def test_a_silent_process_is_declared_dead_and_fenced_out(
    pair: tuple[PostgresStore, PostgresStore], pg_dsn: str
) -> None:
    a, b = pair
    task, _ = await a.insert(new())
    (claimed,) = await a.claim(1, clock.now_ms(), {})
    await hand_on(a, claimed.id)
    assert await b.held_elsewhere(task.id) is True
    assert await a.held_elsewhere(task.id) is False
    # B sees a live holder: nothing to recover
    assert (await b.sweep(restore)).restored == 0
    # A falls silent: its heartbeat is older than the timeout (as after a long pause)
    execute(pg_dsn, "UPDATE replicas SET heartbeat_ms = 0 WHERE id = ?", (a.replica_id,))
    recovery = await b.sweep(restore)
    assert recovery.restored == 1
    assert (await b.get(GRAPH, task.id)).status is Status.RESTORING  # type: ignore[union-attr]
    # B takes it and runs it
    (again,) = await b.claim(1, clock.now_ms(), {})
    await hand_on(b, again.id)
    # A comes back: its end of the old run is refused (B holds the task now) ...
    with pytest.raises(TransitionRefused) as refused:
        await a.transition(Change(task.id, Status.SUCCESS, {"result": '"stale"'}, fenced=True))
    assert refused.value.message == (
        f"Task '{task.id}' is no longer this process's: another took it over "
        "(this one was taken for dead); it stays RUNNING"
    )
    await a.set_progress({task.id: 99})  # ... and so is its progress
    current = await b.get(GRAPH, task.id)
    assert current is not None and (current.status, current.progress) == (Status.RUNNING, 0)
    # ... and its next heartbeat tells it, under a new identity
    old = a.replica_id
    assert await a.beat() is False
    assert a.replica_id != old and await a.beat() is True
    await b.transition(Change(task.id, Status.SUCCESS, {"result": '"ok"'}, fenced=True))
    done = await a.get(GRAPH, task.id)
    assert done is not None and (done.status, done.result, done.retries) == (
        Status.SUCCESS,
        '"ok"',
        1,
    )


async def test_a_process_that_exits_is_declared_dead_at_once(pg_dsn: str) -> None:
    """Its writer's session, and with it its life lock, ends with it: the next sweep finds
    it dead without waiting out replica_timeout (a minute here)."""
    a = PostgresStore(pg_dsn, replica_timeout=60.0)
    b = PostgresStore(pg_dsn, replica_timeout=60.0)
    await a.open()
    await b.open()
    try:
        await a.insert(new())
        (claimed,) = await a.claim(1, clock.now_ms(), {})
        await hand_on(a, claimed.id)
        # as if killed: its connections close, its row stays behind
        execute(pg_dsn, "CREATE TABLE kept AS SELECT * FROM replicas WHERE id = ?", (a.replica_id,))
        await a.close()
        execute(pg_dsn, "INSERT INTO replicas SELECT * FROM kept")
        assert rows(pg_dsn, "SELECT count(*) FROM replicas") == [(2,)]
        assert (await b.sweep(restore)).restored == 1
        assert rows(pg_dsn, "SELECT count(*) FROM replicas") == [(1,)]
    finally:
        await b.close()


async def test_a_replica_starting_while_another_sweeps_is_never_taken_for_dead(
    pg_dsn: str,
) -> None:
    """A new replica's row is seen only once its life lock is held: a sweep running while
    replicas start never declares one of them dead (and never recovers what it claims)."""
    sweeper = PostgresStore(pg_dsn, replica_timeout=60.0)
    await sweeper.open()
    sweeping = True

    async def sweep() -> None:
        while sweeping:
            await sweeper.sweep(restore)

    task = asyncio.create_task(sweep())
    try:
        for _ in range(30):
            newcomer = PostgresStore(pg_dsn, replica_timeout=60.0)
            await newcomer.open()
            try:
                assert await newcomer.beat() is True  # still its first identity
            finally:
                await newcomer.close()
    finally:
        sweeping = False
        await task
        await sweeper.close()
