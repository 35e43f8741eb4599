"""The store contract, liveness: what a process alone sees of heartbeats, sweeps and tasks
held elsewhere (nothing to do), and what a change fenced by the holder does on its own
tasks (applies). Several processes sharing one PostgreSQL database: tests/pg/."""

from __future__ import annotations

from service import clock
from service.model import Status
from service.store import Backend, Change, Recovery, SQLiteStore
from tests.store.conftest import GRAPH, Raw, heard_of, new


def restore(task: object) -> Change:
    assert hasattr(task, "id")
    return Change(task.id, Status.RESTORING)


async def test_a_process_alone_is_alive_and_holds_what_it_claims(store: Backend, raw: Raw) -> None:
    task, _ = await store.insert(new())
    (claimed,) = await store.claim(1, clock.now_ms(), {})
    assert await store.beat() is True
    assert await store.held_elsewhere(task.id) is False
    # nothing of a live process is swept: what it claimed stays as it is, and is its to start
    assert await store.sweep(restore) == Recovery(0, 0, 0)
    assert (await store.get(GRAPH, task.id)).status is raw.claimed  # type: ignore[union-attr]
    if claimed.status is Status.SCHEDULING:  # handed on, confirmed (SPEC 3)
        for target in (Status.SCHEDULED, Status.QUEUED):
            await store.transition(Change(claimed.id, target, fenced=True))
    started = await store.transition(Change(claimed.id, Status.RUNNING, fenced=True))
    assert started.status is Status.RUNNING
    assert await store.beat() is True


async def test_a_task_nobody_claimed_is_held_by_nobody(store: Backend) -> None:
    task, _ = await store.insert(new())
    assert await store.held_elsewhere(task.id) is False
    assert await store.held_elsewhere(task.id + 1000) is False  # no such task


async def test_a_process_alone_made_every_event_it_hears(store: Backend) -> None:
    """What the per-replica metrics count (made_here): alone, every event is this
    process's own; its identity among replicas is none on a store of one process."""
    heard: list[tuple[int, bool]] = []
    store.add_listener(lambda events: heard.extend((e.id, store.made_here(e.id)) for e in events))
    task, _ = await store.insert(new())
    await store.transition(Change(task.id, Status.SCHEDULING))
    await heard_of(lambda: len(heard), 2)
    assert [mine for _, mine in heard] == [True, True]
    assert (store.replica_id is None) is (isinstance(store, SQLiteStore))
