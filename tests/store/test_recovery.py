"""The store contract, start-up and retention: recovery of what a dead process left, as the
decision given says, and the purge of old completed tasks and old events."""

from __future__ import annotations

import pytest

from service import clock
from service.model import EventKind, Status, Task
from service.policy import after_interruption
from service.store import Backend, Change
from tests.store.conftest import GRAPH, Raw, new


def recover_as_policy_says(task: Task) -> Change:
    """What the supervisor passes to recover: the policy's change for an interrupted task."""
    outcome = after_interruption(task, clock.now_ms())
    return Change(task.id, outcome.target, outcome.fields)


async def test_recovery_restores_fails_or_cancels_what_a_dead_process_left(
    store: Backend, raw: Raw
) -> None:
    interrupted = ("scheduling", "scheduled", "queued", "running", "cancelling")
    with_retries = {}
    without = {}
    for status in interrupted:
        task, _ = await store.insert(new(max_retries=1))
        await raw.set(task.id, status=status, retries=0)
        with_retries[status] = task.id
        task, _ = await store.insert(new(max_retries=2))
        await raw.set(task.id, status=status, retries=2)
        without[status] = task.id
    untouched = {}
    for status in ("new", "pending", "restoring", "success", "failed", "cancelled", "archived"):
        task, _ = await store.insert(new(max_retries=1))
        await raw.set(task.id, status=status)
        untouched[status] = task.id

    recovery = await store.recover(recover_as_policy_says)

    assert (recovery.restored, recovery.failed, recovery.cancelled, recovery.unknown) == (
        4,
        4,
        2,
        0,
    )
    for status, task_id in with_retries.items():
        restored = await store.get(GRAPH, task_id)
        assert restored is not None
        if status == "cancelling":
            assert (restored.status, restored.retries) == (Status.CANCELLED, 0)
        else:
            assert (restored.status, restored.retries) == (Status.RESTORING, 1)
    for status, task_id in without.items():
        ended = await store.get(GRAPH, task_id)
        assert ended is not None
        if status == "cancelling":
            assert ended.status is Status.CANCELLED
        else:
            assert ended.status is Status.FAILED
            assert ended.result is not None and "interrupted" in ended.result
            assert ended.retries == 2
    for status, task_id in untouched.items():
        assert await raw.status(task_id) == status


async def test_recovery_asks_the_decision_for_each_interrupted_task_once(
    store: Backend, raw: Raw
) -> None:
    ids = []
    for status in ("running", "queued", "new"):
        task, _ = await store.insert(new())
        await raw.set(task.id, status=status)
        ids.append(task.id)
    asked: list[int] = []

    def decide(task: Task) -> Change:
        asked.append(task.id)
        return Change(task.id, Status.FAILED, {"result": "decided"})

    recovery = await store.recover(decide)
    assert sorted(asked) == sorted(ids[:2])
    assert (recovery.restored, recovery.failed, recovery.cancelled) == (0, 2, 0)
    assert (await store.get(GRAPH, ids[0])).result == "decided"  # type: ignore[union-attr]


async def test_recovery_leaves_leased_tasks_of_kept_types_and_damaged_rows(
    store: Backend, raw: Raw
) -> None:
    await store.insert(new(type="render"))
    now = clock.now_ms()
    lease, _ = await store.lease("w1", ["render"], now, "tok", now + 60_000)
    assert lease is not None
    unleased, _ = await store.insert(new(type="render", max_retries=1))
    await raw.set(unleased.id, status="running")
    damaged, _ = await store.insert(new())
    await raw.set(damaged.id, status="running")
    await raw.damage(damaged.id)

    recovery = await store.recover(recover_as_policy_says, keep_types=["render"])

    assert (recovery.restored, recovery.unknown) == (1, 1)
    assert await raw.status(lease.task.id) == "scheduled"  # its lease decides
    assert await raw.status(unleased.id) == "restoring"  # ran in-process: recovered
    assert await raw.status(damaged.id) == "running"  # shown as it is, never run


async def test_recovery_with_nothing_to_do_changes_nothing(store: Backend) -> None:
    await store.insert(new())
    before = await store.last_event_id()
    recovery = await store.recover(recover_as_policy_says)
    assert (recovery.restored, recovery.failed, recovery.cancelled, recovery.unknown) == (
        0,
        0,
        0,
        0,
    )
    assert await store.last_event_id() == before


async def test_purge_removes_old_completed_tasks_and_old_events(
    store: Backend, raw: Raw, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = clock.now_ms()
    monkeypatch.setattr(clock, "now_ms", lambda: start)
    old_done, _ = await store.insert(new())
    old_waiting, _ = await store.insert(new())
    await raw.set(old_done.id, status="success")
    monkeypatch.setattr(clock, "now_ms", lambda: start + 10_000)
    recent, _ = await store.insert(new())
    await raw.set(recent.id, status="failed", update_ms=start + 10_000)

    tasks, events = await store.purge(start + 5_000, start + 5_000)

    assert tasks == 1
    assert events == 2  # the created events of the two old tasks
    assert await store.get(GRAPH, old_done.id) is None
    assert await store.get(GRAPH, old_waiting.id) is not None  # not completed: kept
    assert await store.get(GRAPH, recent.id) is not None  # completed, but recently
    assert [(e.task_id, e.kind) for e in await store.events_after(0, None, None, 100)] == [
        (recent.id, EventKind.CREATED),
        (old_done.id, EventKind.DELETED),
    ]


async def test_purge_keeps_a_damaged_row_in_view(store: Backend, raw: Raw) -> None:
    task, _ = await store.insert(new())
    await raw.set(task.id, status="success", update_ms=1)
    await raw.damage(task.id)
    assert await store.purge(clock.now_ms(), 0) == (0, 0)
    stored = await store.get(GRAPH, task.id)
    assert stored is not None and stored.status is Status.UNKNOWN
