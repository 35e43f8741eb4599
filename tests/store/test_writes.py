"""The store contract, writes: inserts and Idempotency-Keys, compare-and-set status changes
(every refusal), progress, deletes, process groups, listeners and the order of events."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from service.errors import NotFound, SidetaskError, TransitionRefused, Unprocessable
from service.model import (
    COMPLETED_STATUSES,
    Event,
    EventKind,
    Status,
    Task,
    can_transition,
)
from service.store import Backend, Change
from tests.store.conftest import GRAPH, OTHER, Raw, heard_of, new


async def all_events(store: Backend, task_id: int | None = None) -> list[Event]:
    return await store.events_after(0, None, task_id, 10_000)


# --- inserts ---


async def test_insert_stores_a_new_task_and_its_created_event(store: Backend) -> None:
    task, created = await store.insert(new(input='{"a":1}', priority=3, max_retries=2))
    assert created
    assert (task.status, task.input, task.priority, task.max_retries) == (
        Status.NEW,
        '{"a":1}',
        3,
        2,
    )
    assert task.create_ms == task.update_ms > 0
    assert await store.get(GRAPH, task.id) == task
    assert [(e.kind, e.status, e.task_id) for e in await all_events(store, task.id)] == [
        (EventKind.CREATED, Status.NEW, task.id)
    ]


async def test_reopening_keeps_the_tasks_and_events(raw: Raw) -> None:
    task, _ = await raw.store.insert(new())
    events = await all_events(raw.store)
    store = await raw.reopen()
    assert await store.get(GRAPH, task.id) == task
    assert await all_events(store) == events


async def test_ids_increase_and_are_never_reused(store: Backend) -> None:
    first, _ = await store.insert(new())
    await store.delete(GRAPH, first.id, None)
    second, _ = await store.insert(new())
    assert second.id > first.id


async def test_event_ids_increase_and_are_never_reused_across_a_purge_and_a_restart(
    raw: Raw,
) -> None:
    task, _ = await raw.store.insert(new())
    await raw.store.delete(GRAPH, task.id, None)
    (_, deleted) = await all_events(raw.store)
    assert await raw.store.purge(0, 2**62) == (0, 2)  # every event is older than that
    assert await all_events(raw.store) == []
    store = await raw.reopen()
    again, _ = await store.insert(new())
    (created,) = await all_events(store)
    assert created.id > deleted.id
    assert await store.last_event_id() == created.id
    assert again.id > task.id


async def test_an_idempotency_key_returns_the_first_task_within_a_graph(store: Backend) -> None:
    first, created = await store.insert(new(idempotency_key="k", input='{"a":1,"b":[2]}'))
    # the same request: the members of an object in another order are the same input
    again, created_again = await store.insert(new(idempotency_key="k", input='{"b":[2],"a":1}'))
    elsewhere, created_elsewhere = await store.insert(new(OTHER, idempotency_key="k"))
    assert created and not created_again and created_elsewhere
    assert again == first
    assert elsewhere.id != first.id
    # a replay writes nothing: no second created event
    assert len(await all_events(store, first.id)) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"input": '{"a":2,"b":[2]}'},
        {"input": None},
        {"name": "other"},
        {"type": "sleep", "callable": "service.jobs.sleep.run"},
        {"priority": 5},
        {"max_retries": 2},
        {"timeout": 60.0},
        {"delay_ms": 1000},
    ],
    ids=lambda change: "+".join(change),
)
async def test_an_idempotency_key_used_with_another_request_is_refused(
    store: Backend, change: dict[str, Any]
) -> None:
    first, _ = await store.insert(new(idempotency_key="k", input='{"a":1,"b":[2]}'))
    with pytest.raises(Unprocessable) as refused:
        await store.insert(new(idempotency_key="k", **{"input": '{"a":1,"b":[2]}', **change}))
    assert refused.value.message == (
        f"Idempotency-Key 'k' was used with a different request for task {first.id}"
    )
    assert [t.id for t in await store.list_tasks(GRAPH, None, None, 0)] == [first.id]


async def test_concurrent_inserts_with_one_key_make_one_task(store: Backend) -> None:
    results = await asyncio.gather(*(store.insert(new(idempotency_key="once")) for _ in range(20)))
    assert len({task.id for task, _ in results}) == 1
    assert sum(created for _, created in results) == 1


async def test_a_delay_sets_when_the_task_may_run(store: Backend) -> None:
    task, _ = await store.insert(new(delay_ms=5000))
    assert task.run_after_ms == task.create_ms + 5000
    assert await store.claim(10, task.create_ms + 4999, {}) == []
    (claimed,) = await store.claim(10, task.create_ms + 5000, {})
    assert claimed.id == task.id


# --- compare-and-set transitions ---


async def test_every_change_applies_exactly_when_the_table_allows_it(
    store: Backend, raw: Raw
) -> None:
    pairs = [(source, target) for source in Status for target in Status]
    tasks = await asyncio.gather(*(store.insert(new()) for _ in pairs))
    ids = [task.id for task, _ in tasks]
    for (source, _), task_id in zip(pairs, ids, strict=True):
        await raw.set(task_id, status=source.value)
    before = len(await all_events(store))

    results = await store.transition_many(
        [Change(task_id, target) for (_, target), task_id in zip(pairs, ids, strict=True)]
    )

    allowed = 0
    for (source, target), task_id, result in zip(pairs, ids, results, strict=True):
        if can_transition(source, target):
            allowed += 1
            assert isinstance(result, Task) and result.status is target, (source, target)
            assert await raw.status(task_id) == target.value
        else:
            assert isinstance(result, TransitionRefused), (source, target, result)
            assert source.name in result.message and target.name in result.message
            assert await raw.status(task_id) == source.value
    # one status event per applied change, none for a refused one
    assert len(await all_events(store)) == before + allowed
    assert allowed > 20


async def test_a_refused_transition_raises_and_changes_nothing(store: Backend) -> None:
    task, _ = await store.insert(new())
    with pytest.raises(TransitionRefused) as refused:
        await store.transition(Change(task.id, Status.SUCCESS, {"result": '"sneaky"'}))
    assert refused.value.message == f"Task '{task.id}' in status NEW can't become SUCCESS"
    assert await store.get(GRAPH, task.id) == task
    assert len(await all_events(store, task.id)) == 1


async def test_a_change_can_be_narrowed_to_the_status_it_was_decided_on(store: Backend) -> None:
    task, _ = await store.insert(new())
    await store.transition(Change(task.id, Status.SCHEDULING))
    # the table allows new|scheduling -> pending, but the caller decided on `new`
    with pytest.raises(TransitionRefused):
        await store.transition(Change(task.id, Status.PENDING, sources=frozenset({Status.NEW})))
    paused = await store.transition(
        Change(task.id, Status.PENDING, sources=frozenset({Status.SCHEDULING}))
    )
    assert paused.status is Status.PENDING


async def test_a_change_to_a_missing_task_is_not_found(store: Backend) -> None:
    with pytest.raises(NotFound, match="Can't find task with id '999'"):
        await store.transition(Change(999, Status.SCHEDULING))
    (result,) = await store.transition_many([Change(999, Status.SCHEDULING)])
    assert isinstance(result, NotFound)


async def test_a_change_sets_only_the_fields_it_may(store: Backend) -> None:
    task, _ = await store.insert(new())
    with pytest.raises(ValueError, match="not changeable"):
        await store.transition(Change(task.id, Status.SCHEDULING, {"type": "fail"}))
    assert (await store.get(GRAPH, task.id)) == task


async def test_a_change_writes_its_fields_with_the_status(store: Backend) -> None:
    task, _ = await store.insert(new())
    await store.transition(Change(task.id, Status.SCHEDULING))
    changed = await store.transition(
        Change(task.id, Status.PENDING, {"description": "paused", "retries": 1})
    )
    assert (changed.status, changed.description, changed.retries) == (
        Status.PENDING,
        "paused",
        1,
    )
    assert changed.update_ms >= task.update_ms
    assert await store.get(GRAPH, task.id) == changed


async def test_a_change_to_a_damaged_row_is_refused(store: Backend, raw: Raw) -> None:
    task, _ = await store.insert(new())
    await raw.damage(task.id)
    with pytest.raises(TransitionRefused):
        await store.transition(Change(task.id, Status.SCHEDULING))
    others = [(await store.insert(new()))[0] for _ in range(2)]
    results = await store.transition_many(
        [Change(t.id, Status.SCHEDULING) for t in (others[0], task, others[1])]
    )
    assert isinstance(results[1], TransitionRefused)
    assert [r.status for r in (results[0], results[2]) if isinstance(r, Task)] == [
        Status.SCHEDULING,
        Status.SCHEDULING,
    ]
    assert await raw.status(task.id) == "new"


async def test_each_change_of_a_batch_applies_or_is_refused_on_its_own(store: Backend) -> None:
    a, _ = await store.insert(new())
    b, _ = await store.insert(new())
    results = await store.transition_many(
        [
            Change(a.id, Status.SCHEDULING),
            Change(b.id, Status.RUNNING),  # refused: new -> running
            Change(b.id, Status.SCHEDULING),
            Change(a.id, Status.SCHEDULED, {"server": "s1"}),
        ]
    )
    assert isinstance(results[1], TransitionRefused)
    statuses = [r.status for r in results if isinstance(r, Task)]
    assert statuses == [Status.SCHEDULING, Status.SCHEDULING, Status.SCHEDULED]
    assert (await store.get(GRAPH, a.id)).server == "s1"  # type: ignore[union-attr]


async def test_a_refused_write_does_not_undo_the_others_of_its_transaction(
    store: Backend,
) -> None:
    """Writes sharing a transaction each apply or fail on their own."""
    task, _ = await store.insert(new())
    good = store.insert(new(name="good"))
    bad = store.transition(Change(task.id, Status.RUNNING))
    also_good = store.transition(Change(task.id, Status.SCHEDULING))
    results = await asyncio.gather(good, bad, also_good, return_exceptions=True)
    assert isinstance(results[0], tuple) and results[0][1] is True
    assert isinstance(results[1], TransitionRefused)
    assert isinstance(results[2], Task) and results[2].status is Status.SCHEDULING
    assert len(await store.list_tasks(GRAPH, None, None, 0)) == 2


# --- progress ---


async def test_progress_is_written_only_for_running_tasks(store: Backend, raw: Raw) -> None:
    running, _ = await store.insert(new())
    cancelling, _ = await store.insert(new())
    waiting, _ = await store.insert(new())
    await raw.set(running.id, status="running")
    await raw.set(cancelling.id, status="cancelling")
    await store.set_progress({running.id: 5, cancelling.id: 6, waiting.id: 7, 12345: 1})
    assert (await store.get(GRAPH, running.id)).progress == 5  # type: ignore[union-attr]
    assert (await store.get(GRAPH, cancelling.id)).progress == 6  # type: ignore[union-attr]
    assert (await store.get(GRAPH, waiting.id)).progress == 0  # type: ignore[union-attr]
    # the same value again is not a change: no second event
    await store.set_progress({running.id: 5})
    progress = [e for e in await all_events(store) if e.kind is EventKind.PROGRESS]
    assert [e.task_id for e in progress] == [running.id, cancelling.id]
    assert len(await store.list_tasks(GRAPH, None, None, 0)) == 3


async def test_progress_carries_a_declared_total_and_keeps_it(store: Backend, raw: Raw) -> None:
    task, _ = await store.insert(new())
    await raw.set(task.id, status="running")
    await store.set_progress({task.id: 1}, {task.id: 10})
    assert (await store.get(GRAPH, task.id)).progress_total == 10  # type: ignore[union-attr]
    await store.set_progress({task.id: 2})  # no total given: the declared one stays
    stored = await store.get(GRAPH, task.id)
    assert stored is not None and (stored.progress, stored.progress_total) == (2, 10)
    # a new total alone is a change too
    await store.set_progress({task.id: 2}, {task.id: 20})
    assert (await store.get(GRAPH, task.id)).progress_total == 20  # type: ignore[union-attr]
    assert len([e for e in await all_events(store) if e.kind is EventKind.PROGRESS]) == 3


# --- deletes ---


async def test_delete_removes_tasks_in_the_statuses_it_is_given(store: Backend, raw: Raw) -> None:
    done, _ = await store.insert(new())
    await raw.set(done.id, status="success")
    waiting, _ = await store.insert(new())
    await store.delete(GRAPH, done.id, COMPLETED_STATUSES)
    with pytest.raises(TransitionRefused):
        await store.delete(GRAPH, waiting.id, COMPLETED_STATUSES)
    assert await raw.status(waiting.id) == "new"
    with pytest.raises(NotFound):
        await store.delete(OTHER, waiting.id, None)
    with pytest.raises(NotFound):
        await store.delete(GRAPH, 999, None)
    deleted = await store.delete(GRAPH, waiting.id, None)
    assert deleted.id == waiting.id
    assert await store.list_tasks(GRAPH, None, None, 0) == []
    gone = [e for e in await all_events(store) if e.kind is EventKind.DELETED]
    assert [(e.task_id, e.status, e.data) for e in gone] == [
        (done.id, None, f'{{"id":{done.id}}}'.encode()),
        (waiting.id, None, f'{{"id":{waiting.id}}}'.encode()),
    ]


async def test_a_damaged_row_is_deleted_only_from_any_status(store: Backend, raw: Raw) -> None:
    task, _ = await store.insert(new())
    await raw.damage(task.id)
    with pytest.raises(TransitionRefused):
        await store.delete(GRAPH, task.id, frozenset(Status) - {Status.UNKNOWN})
    await store.delete(GRAPH, task.id, None)
    assert await store.get(GRAPH, task.id) is None


# --- process groups ---


async def test_a_process_group_is_stored_read_and_cleared(store: Backend) -> None:
    a, _ = await store.insert(new())
    b, _ = await store.insert(new())
    before = await store.last_event_id()
    await store.set_process_group(a.id, 4242, "boot-1")
    await store.set_process_group(b.id, 4343, None)
    groups = sorted(await store.process_groups(), key=lambda g: g.task_id)
    assert [(g.task_id, g.group, g.token) for g in groups] == [
        (a.id, 4242, "boot-1"),
        (b.id, 4343, None),
    ]
    await store.set_process_group(a.id, None, "ignored")
    assert [g.task_id for g in await store.process_groups()] == [b.id]
    assert await store.last_event_id() == before  # not an event


# --- listeners, event order, lifecycle ---


async def test_listeners_hear_of_committed_events_in_id_order(store: Backend) -> None:
    heard: list[Sequence[Event]] = []
    store.add_listener(heard.append)
    task, _ = await store.insert(new())
    await store.transition(Change(task.id, Status.SCHEDULING))
    with pytest.raises(TransitionRefused):
        await store.transition(Change(task.id, Status.SUCCESS))
    await heard_of(lambda: sum(map(len, heard)), 2)
    flat = [e for events in heard for e in events]
    assert [(e.kind, e.status) for e in flat] == [
        (EventKind.CREATED, Status.NEW),
        (EventKind.STATUS, Status.SCHEDULING),
    ]
    # what was heard is what is stored
    assert await all_events(store) == flat


async def test_event_ids_increase_in_commit_order_under_concurrent_writes(store: Backend) -> None:
    heard: list[Event] = []
    store.add_listener(heard.extend)
    inserted = await asyncio.gather(*(store.insert(new(name=f"t{i}")) for i in range(50)))
    await store.transition_many([Change(t.id, Status.SCHEDULING) for t, _ in inserted])
    await heard_of(lambda: len(heard), 100)
    ids = [e.id for e in heard]
    assert ids == sorted(ids) and len(set(ids)) == len(ids) == 100
    stored = await all_events(store)
    assert [e.id for e in stored] == ids
    assert await store.last_event_id() == ids[-1]
    # each task's events in the order its changes were made
    for task, _ in inserted:
        assert [e.kind for e in await all_events(store, task.id)] == [
            EventKind.CREATED,
            EventKind.STATUS,
        ]


async def test_a_listener_that_fails_does_not_fail_the_write(store: Backend) -> None:
    heard: list[Event] = []

    def broken(events: Sequence[Event]) -> None:
        raise RuntimeError("listener broke")

    store.add_listener(broken)
    store.add_listener(heard.extend)
    task, created = await store.insert(new())
    await heard_of(lambda: len(heard), 1)
    assert created and [e.task_id for e in heard] == [task.id]


async def test_a_write_after_close_is_refused(store: Backend) -> None:
    await store.close()
    with pytest.raises(SidetaskError, match="closed"):
        await store.insert(new())


async def test_delete_many_deletes_what_it_may_and_says_why_not_for_the_rest(
    store: Backend, raw: Raw
) -> None:
    done, _ = await store.insert(new())
    await raw.set(done.id, status="success")
    waiting, _ = await store.insert(new())
    elsewhere, _ = await store.insert(new(OTHER))
    damaged, _ = await store.insert(new())
    await raw.damage(damaged.id)
    dependant, _ = await store.insert(new(dependencies=(waiting.id,)))
    before = await store.last_event_id()
    ids = [done.id, waiting.id, elsewhere.id, 999, damaged.id]
    results = await store.delete_many(GRAPH, ids, COMPLETED_STATUSES)
    assert isinstance(results[0], Task) and results[0].id == done.id
    assert isinstance(results[1], TransitionRefused)
    assert isinstance(results[2], NotFound) and isinstance(results[3], NotFound)
    assert isinstance(results[4], TransitionRefused)  # a damaged row: from any status only
    assert (await raw.status(waiting.id), await raw.status(elsewhere.id)) == ("new", "new")
    gone = [e.task_id for e in await all_events(store) if e.id > before]
    assert gone == [done.id]
    # from any status: the waiting one and the damaged one go, and the task waiting for
    # the first ends cancelled, as a single delete leaves it
    results = await store.delete_many(GRAPH, [damaged.id, waiting.id], None)
    assert [r.id for r in results if isinstance(r, Task)] == [damaged.id, waiting.id]
    gone = [e.task_id for e in await all_events(store) if e.kind is EventKind.DELETED]
    assert gone == [done.id, damaged.id, waiting.id]  # each, in the order asked
    assert await store.get(GRAPH, waiting.id) is None and await store.get(GRAPH, damaged.id) is None
    ended = await store.get(GRAPH, dependant.id)
    assert ended is not None and ended.status is Status.CANCELLED
    assert ended.result == f"Cancelled due to dependent task '{waiting.id}' deleted"
