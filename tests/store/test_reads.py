"""The store contract, reads: a task in its graph only, lists (status, several statuses,
type, pages, newest first), lists by id, streamed lists, events after an id, the counts, and
damaged rows read as `unknown`."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from service.model import EventKind, Status, Task
from service.store import Backend, Change
from tests.store.conftest import GRAPH, OTHER, Raw, new


async def flat(batches: AsyncGenerator[list[Task], None]) -> list[list[int]]:
    return [[task.id for task in batch] async for batch in batches]


async def test_a_task_is_visible_only_in_its_graph(store: Backend) -> None:
    task, _ = await store.insert(new(OTHER))
    assert await store.get(GRAPH, task.id) is None
    assert await store.get(OTHER, task.id) == task
    assert await store.get(None, task.id) == task  # any graph
    assert await store.get(None, 999) is None
    assert await store.list_tasks(GRAPH, None, None, 0) == []
    assert await store.list_ids(GRAPH, [task.id]) == []
    assert await flat(store.iter_ids(GRAPH, [task.id])) == []
    assert await store.count_statuses(GRAPH) == dict.fromkeys(Status, 0)


async def test_list_filters_by_status_pages_and_limits(store: Backend, raw: Raw) -> None:
    ids = [(await store.insert(new()))[0].id for _ in range(5)]
    await raw.set(ids[1], status="success")
    await raw.set(ids[3], status="success")
    assert [t.id for t in await store.list_tasks(GRAPH, Status.SUCCESS, None, 0)] == [
        ids[1],
        ids[3],
    ]
    assert [t.id for t in await store.list_tasks(GRAPH, None, 2, 0)] == ids[:2]
    assert [t.id for t in await store.list_tasks(GRAPH, None, 2, ids[1])] == ids[2:4]
    assert [t.id for t in await store.list_ids(GRAPH, [ids[4], ids[0], 999, ids[0]])] == [
        ids[0],
        ids[4],
    ]


async def test_a_list_of_several_statuses_and_of_a_type(store: Backend, raw: Raw) -> None:
    tasks = [(await store.insert(new(type="sleep" if i % 2 else "echo")))[0] for i in range(6)]
    statuses = ["new", "running", "success", "failed", "running", "new"]
    for task, status in zip(tasks, statuses, strict=True):
        await raw.set(task.id, status=status)
    ids = [t.id for t in tasks]
    group = frozenset({Status.RUNNING, Status.FAILED})
    assert [t.id for t in await store.list_tasks(GRAPH, group, None, 0)] == [ids[1], ids[3], ids[4]]
    assert [t.id for t in await store.list_tasks(GRAPH, group, 2, 0)] == [ids[1], ids[3]]
    sleeps = await store.list_tasks(GRAPH, None, None, 0, task_type="sleep")
    assert [t.id for t in sleeps] == [ids[1], ids[3], ids[5]]
    running_sleeps = await store.list_tasks(GRAPH, Status.RUNNING, None, 0, task_type="sleep")
    assert [t.id for t in running_sleeps] == [ids[1]]


async def test_a_list_newest_first_pages_downwards(store: Backend) -> None:
    ids = [(await store.insert(new()))[0].id for _ in range(5)]
    newest = await store.list_tasks(GRAPH, None, 2, 0, descending=True)
    assert [t.id for t in newest] == [ids[4], ids[3]]
    below = await store.list_tasks(GRAPH, None, 2, ids[3], descending=True)
    assert [t.id for t in below] == [ids[2], ids[1]]
    streamed = await flat(store.iter_tasks(GRAPH, Status.NEW, None, ids[2], descending=True))
    assert streamed == [[ids[1], ids[0]]]


async def test_a_streamed_list_gives_what_a_list_gives_in_batches(store: Backend) -> None:
    ids = [(await store.insert(new()))[0].id for _ in range(230)]
    listed = [t.id for t in await store.list_tasks(GRAPH, None, None, 0)]
    assert listed == ids
    batches = await flat(store.iter_tasks(GRAPH, None, None))
    assert [i for batch in batches for i in batch] == ids
    # bounded batches: a page of 100 and the one more that tells whether a page follows
    assert len(batches) >= 3 and all(len(batch) <= 101 for batch in batches)
    limited = await flat(store.iter_tasks(GRAPH, None, 150, ids[9]))
    assert [i for batch in limited for i in batch] == ids[10:160]
    by_id = await flat(store.iter_ids(GRAPH, list(reversed(ids[:120]))))
    assert [i for batch in by_id for i in batch] == ids[:120]


async def test_a_large_task_of_a_streamed_list_comes_alone(store: Backend) -> None:
    small, _ = await store.insert(new())
    large, _ = await store.insert(new(input='"' + "x" * 100_000 + '"'))
    after, _ = await store.insert(new())
    batches = await flat(store.iter_tasks(GRAPH, None, None))
    assert batches == [[small.id], [large.id], [after.id]]
    (alone,) = [batch for batch in [b async for b in store.iter_ids(GRAPH, [large.id])]]
    assert alone[0].input == large.input


async def test_a_row_that_cannot_be_interpreted_reads_as_unknown(store: Backend, raw: Raw) -> None:
    damaged, _ = await store.insert(new())
    newer, _ = await store.insert(new())
    fine, _ = await store.insert(new())
    await raw.damage(damaged.id)
    await raw.set(newer.id, status="archived")
    assert (await store.get(GRAPH, damaged.id)).status is Status.UNKNOWN  # type: ignore[union-attr]
    assert (await store.get(GRAPH, newer.id)).status is Status.UNKNOWN  # type: ignore[union-attr]
    listed = await store.list_tasks(GRAPH, Status.UNKNOWN, None, 0)
    # listed under the status it reads as, not under the one stored in it
    assert [t.id for t in listed] == [damaged.id, newer.id]
    assert damaged.id not in [t.id for t in await store.list_tasks(GRAPH, Status.NEW, None, 0)]
    assert fine.id not in [t.id for t in listed]
    streamed = await flat(store.iter_tasks(GRAPH, Status.UNKNOWN, None))
    assert [i for batch in streamed for i in batch] == [damaged.id, newer.id]
    # the counts come from the stored status alone (README, Faults and recovery)
    counts = await store.count_by_status()
    assert counts[("unknown", "echo")] == 1
    assert (await store.count_statuses(GRAPH))[Status.UNKNOWN] == 1


async def test_a_page_of_a_status_is_filled_past_damaged_rows(store: Backend, raw: Raw) -> None:
    tasks = [(await store.insert(new()))[0] for _ in range(6)]
    for task in tasks[1:4]:
        await raw.damage(task.id)
    # two `new` tasks asked for: the three damaged rows between them are passed over
    page = await store.list_tasks(GRAPH, Status.NEW, 2, 0)
    assert [t.id for t in page] == [tasks[0].id, tasks[4].id]
    page = await store.list_tasks(GRAPH, Status.NEW, 2, tasks[4].id)
    assert [t.id for t in page] == [tasks[5].id]


async def test_events_after_an_id_by_task_and_graph_in_id_order(store: Backend) -> None:
    a, _ = await store.insert(new())
    b, _ = await store.insert(new(OTHER))
    await store.transition(Change(a.id, Status.SCHEDULING))
    everything = await store.events_after(0, None, None, 100)
    ids = [e.id for e in everything]
    assert ids == sorted(ids) and len(ids) == 3
    assert await store.last_event_id() == ids[-1]
    assert [e.task_id for e in await store.events_after(0, GRAPH, None, 100)] == [a.id, a.id]
    assert [e.task_id for e in await store.events_after(0, OTHER, None, 100)] == [b.id]
    assert [e.kind for e in await store.events_after(0, None, a.id, 100)] == [
        EventKind.CREATED,
        EventKind.STATUS,
    ]
    assert await store.events_after(ids[0], None, None, 1) == [everything[1]]
    assert await store.events_after(ids[-1], None, None, 100) == []
    created = everything[0]
    assert (created.graph, created.task_type, created.status) == (GRAPH, "echo", Status.NEW)


async def test_events_after_with_a_byte_bound_start_within_it_and_at_least_one(
    store: Backend,
) -> None:
    for _ in range(5):
        await store.insert(new(input='"' + "y" * 1000 + '"'))
    events = await store.events_after(0, None, None, 100)
    size = len(events[0].data)
    assert await store.events_after(0, None, None, 100, max_bytes=1) == events[:1]
    # those that start within the bound: the third starts right at 2 * size, one byte more
    assert await store.events_after(0, None, None, 100, max_bytes=2 * size) == events[:2]
    assert await store.events_after(0, None, None, 100, max_bytes=2 * size + 1) == events[:3]
    assert await store.events_after(0, None, None, 4, max_bytes=10**9) == events[:4]


async def test_the_counts_by_status_and_type_and_per_graph(store: Backend, raw: Raw) -> None:
    for task_type in ("echo", "echo", "sleep"):
        await store.insert(new(type=task_type))
    done, _ = await store.insert(new(OTHER))
    await raw.set(done.id, status="success")
    assert await store.count_by_status() == {
        ("new", "echo"): 2,
        ("new", "sleep"): 1,
        ("success", "echo"): 1,
    }
    counts = await store.count_statuses(GRAPH)
    assert counts == {**dict.fromkeys(Status, 0), Status.NEW: 3}
    assert (await store.count_statuses(OTHER))[Status.SUCCESS] == 1
