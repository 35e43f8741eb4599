"""The store contract, claims: due tasks by priority then age, restoring ones straight to
`queued` (or, on a store several processes share, `scheduling`) on the claiming server, the room left per type, and rows that are never claimed."""

from __future__ import annotations

from service import clock
from service.model import Status
from service.store import Backend
from tests.store.conftest import GRAPH, Raw, new


async def test_claim_takes_the_highest_priority_first_then_the_oldest(
    store: Backend, raw: Raw
) -> None:
    priorities = [0, 5, 0, 10, 5, -1]
    ids = [(await store.insert(new(priority=p)))[0].id for p in priorities]
    expected = [
        i for _, i in sorted(zip(priorities, ids, strict=True), key=lambda x: (-x[0], x[1]))
    ]
    first = await store.claim(4, clock.now_ms(), {})
    rest = await store.claim(10, clock.now_ms(), {})
    assert [t.id for t in first + rest] == expected
    assert {t.status for t in first + rest} == {raw.claimed}
    assert await store.claim(10, clock.now_ms(), {}) == []


async def test_claim_queues_new_and_restoring_tasks_on_the_server(store: Backend, raw: Raw) -> None:
    task, _ = await store.insert(new())
    await raw.set(task.id, status="restoring")
    fresh, _ = await store.insert(new())
    claimed = await store.claim(10, clock.now_ms(), {}, server="server-1")
    assert [(t.id, t.status, t.server) for t in claimed] == [
        (task.id, raw.claimed, "server-1"),
        (fresh.id, raw.claimed, "server-1"),  # one step, as HugeGraph's local scheduler
    ]
    assert await store.get(GRAPH, task.id) == claimed[0]


async def test_claim_leaves_tasks_of_other_statuses(store: Backend, raw: Raw) -> None:
    statuses = [s for s in Status if s not in (Status.NEW, Status.RESTORING)]
    for status in statuses:
        task, _ = await store.insert(new())
        await raw.set(task.id, status=status.value)
    task, _ = await store.insert(new())
    await raw.set(task.id, status="from-a-newer-version")
    assert await store.claim(100, clock.now_ms(), {}) == []


async def test_claim_respects_the_room_left_for_each_type(store: Backend) -> None:
    """A type with no room left is not claimed; one with room for two gets two, and the other
    types fill the rest in priority order."""
    for i in range(4):
        await store.insert(new(type="gremlin", name=f"g{i}", priority=10))
    for i in range(3):
        await store.insert(new(type="sleep", name=f"s{i}", priority=5))
    for i in range(3):
        await store.insert(new(type="echo", name=f"e{i}"))
    claimed = await store.claim(6, clock.now_ms(), {"gremlin": 2, "sleep": 0})
    assert [t.name for t in claimed] == ["g0", "g1", "e0", "e1", "e2"]
    # what was passed over waits for the next claim
    later = await store.claim(10, clock.now_ms(), {"gremlin": 1})
    assert [t.name for t in later] == ["g2", "s0", "s1", "s2"]


async def test_claim_takes_no_more_than_its_limit(store: Backend) -> None:
    for _ in range(5):
        await store.insert(new())
    assert len(await store.claim(3, clock.now_ms(), {})) == 3
    assert len(await store.claim(3, clock.now_ms(), {})) == 2


async def test_claim_passes_over_a_damaged_row_and_takes_those_behind_it(
    store: Backend, raw: Raw
) -> None:
    tasks = [(await store.insert(new(type="gremlin")))[0] for _ in range(4)]
    await raw.damage(tasks[0].id)
    await raw.damage(tasks[2].id)
    claimed = await store.claim(2, clock.now_ms(), {"gremlin": 2})
    assert [t.id for t in claimed] == [tasks[1].id, tasks[3].id]
    assert await raw.status(tasks[0].id) == "new"
    assert await store.claim(10, clock.now_ms(), {}) == []


async def test_a_claim_is_a_status_event(store: Backend, raw: Raw) -> None:
    task, _ = await store.insert(new())
    (claimed,) = await store.claim(1, clock.now_ms(), {})
    events = await store.events_after(0, GRAPH, task.id, 10)
    assert [(e.kind.value, e.status) for e in events] == [
        ("task.created", Status.NEW),
        ("task.status", raw.claimed),
    ]
    assert claimed.update_ms >= task.update_ms


async def test_a_delayed_task_is_claimed_once_due_and_in_priority_order_with_the_rest(
    store: Backend, raw: Raw
) -> None:
    now = clock.now_ms()
    later, _ = await store.insert(new(delay_ms=60_000, priority=5))
    soon, _ = await store.insert(new())
    # a row written before schema 8, due since its creation: its due time is in the past
    old, _ = await store.insert(new())
    await raw.set(old.id, run_after_ms=now - 1_000)
    assert [t.id for t in await store.claim(10, now, {})] == [soon.id, old.id]
    assert await store.claim(10, now + 59_000, {}) == []
    (due,) = await store.claim(10, now + 61_000, {})
    assert (due.id, due.status) == (later.id, raw.claimed)
