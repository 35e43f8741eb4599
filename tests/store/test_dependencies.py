"""The store's part of task dependencies (README, "Dependencies"), on every backend: a
submission's dependencies checked and counted; a waiting task never claimed; a success
counting its dependants down in its own transaction (the claim that follows takes them);
a failure or cancel ending the waiting ones as HugeGraph does, transitively; a retry
putting them back; recheck_dependencies making counts true and ending what a stopped
process left; a chain of 300 in one transaction."""

from __future__ import annotations

import pytest

from service import clock
from service.errors import BadRequest
from service.model import Status, Task
from service.store import Backend, Change
from tests.store.conftest import GRAPH, OTHER, Raw, new


async def run(store: Backend, raw: Raw, task: Task, target: Status, **fields: object) -> Task:
    """Takes `task` to `target` through a claim and a start, as the supervisor does."""
    claimed = await store.claim(50, clock.now_ms(), {})
    assert task.id in [t.id for t in claimed], (task.id, claimed)
    await start(store, raw, task)
    return await store.transition(Change(task.id, target, fields or None, fenced=True))


async def start(store: Backend, raw: Raw, task: Task) -> None:
    """A claimed task to `running` (on a shared store: handed on and confirmed first)."""
    if raw.claimed is not Status.QUEUED:
        await store.transition(Change(task.id, Status.SCHEDULED, fenced=True))
        await store.transition(Change(task.id, Status.QUEUED, fenced=True))
    await store.transition(Change(task.id, Status.RUNNING, fenced=True, starts_attempt=True))


async def claimable(store: Backend) -> list[int]:
    return [t.id for t in await store.claim(50, clock.now_ms(), {})]


async def test_a_submission_is_checked_and_counted(store: Backend) -> None:
    first, _ = await store.insert(new())
    other, _ = await store.insert(new(OTHER))
    waiting, _ = await store.insert(new(dependencies=(first.id,)))
    assert (waiting.dependencies, waiting.waiting_on) == ((first.id,), 1)
    assert (await store.get(GRAPH, first.id)).dependants == 1  # type: ignore[union-attr]
    for wrong in ((other.id,), (first.id, 10_000), (waiting.id + 1,)):
        with pytest.raises(BadRequest, match="Can't find dependency task with id"):
            await store.insert(new(dependencies=wrong))
    assert waiting.to_api()["task_dependencies"] == [first.id]


async def test_a_success_counts_down_and_the_next_claim_takes_it(store: Backend, raw: Raw) -> None:
    first, _ = await store.insert(new())
    second, _ = await store.insert(new())
    both, _ = await store.insert(new(dependencies=(first.id, second.id)))
    assert await claimable(store) == [first.id, second.id]  # never the waiting one
    for task in (first, second):
        await start(store, raw, task)
    await store.transition(Change(first.id, Status.SUCCESS, {"result": "1"}, fenced=True))
    assert (await store.get(GRAPH, both.id)).waiting_on == 1  # type: ignore[union-attr]
    assert await claimable(store) == []
    await store.transition(Change(second.id, Status.SUCCESS, {"result": "2"}, fenced=True))
    assert (await store.get(GRAPH, both.id)).waiting_on == 0  # type: ignore[union-attr]
    assert await claimable(store) == [both.id]


async def test_a_failure_ends_a_chain_of_300_and_a_retry_puts_it_back(
    store: Backend, raw: Raw
) -> None:
    head, _ = await store.insert(new())
    chain = [head]
    for _ in range(300):
        task, _ = await store.insert(new(dependencies=(chain[-1].id,)))
        chain.append(task)
    await run(store, raw, head, Status.FAILED, result="boom")
    ended = await store.list_ids(GRAPH, [t.id for t in chain[1:]])
    assert {t.status for t in ended} == {Status.FAILED}
    assert [t.result for t in ended] == [
        f"Failed due to dependent task '{t.id}' failed" for t in chain[:-1]
    ]
    await store.transition(Change(head.id, Status.RESTORING, {"run_after_ms": 0}))
    back = await store.list_ids(GRAPH, [t.id for t in chain[1:]])
    assert {t.status for t in back} == {Status.RESTORING}
    assert {t.waiting_on for t in back} == {1}
    assert await claimable(store) == [head.id]


async def test_a_cancel_ends_the_waiting_ones_cancelled(store: Backend) -> None:
    first, _ = await store.insert(new())
    waiting, _ = await store.insert(new(dependencies=(first.id,)))
    paused, _ = await store.insert(new(dependencies=(first.id,)))
    await store.transition(Change(paused.id, Status.PENDING))
    await store.transition(Change(first.id, Status.CANCELLED))
    for task_id in (waiting.id, paused.id):
        task = await store.get(GRAPH, task_id)
        assert task is not None and task.status is Status.CANCELLED
        assert task.result == f"Cancelled due to dependent task '{first.id}' cancelled"


async def test_recheck_makes_counts_true_and_ends_what_was_left(store: Backend, raw: Raw) -> None:
    failed, _ = await store.insert(new())
    await store.transition(Change(failed.id, Status.CANCELLED))
    late, _ = await store.insert(new(dependencies=(failed.id,)))
    assert late.waiting_on == 1 and late.status is Status.NEW  # the supervisor checks it next
    first, _ = await store.insert(new())
    stale, _ = await store.insert(new(dependencies=(first.id,)))
    await raw.set(stale.id, waiting_on=3)
    assert await store.recheck_dependencies([late.id]) == 1
    ended = await store.get(GRAPH, late.id)
    assert ended is not None and ended.status is Status.CANCELLED
    assert await store.recheck_dependencies() == 1
    assert (await store.get(GRAPH, stale.id)).waiting_on == 1  # type: ignore[union-attr]
    assert await store.recheck_dependencies() == 0


async def test_an_external_worker_leases_no_waiting_task(store: Backend, raw: Raw) -> None:
    first, _ = await store.insert(new())
    waiting, _ = await store.insert(new(type="ext", dependencies=(first.id,)))
    now = clock.now_ms()
    lease, _ = await store.lease("w1", ["ext"], now, "t1", now + 60_000)
    assert lease is None
    await run(store, raw, first, Status.SUCCESS, result="1")
    lease, _ = await store.lease("w1", ["ext"], now, "t2", now + 60_000)
    assert lease is not None and lease.task.id == waiting.id
