"""The store contract, schedules (ScheduleStore): a schedule saved once per name, replaced,
paused, deleted; the firing loop's claim under a lease, its move to the next fire time by
the lease's holder only, and when the loop next has something to do."""

from __future__ import annotations

import pytest

from service.errors import Conflict, NotFound
from service.model import Status
from service.schedules import Schedule, parse_definition
from service.store import Backend, Change
from tests.store.conftest import GRAPH, OTHER

NOW = 1_800_000_000_000
EVERY_MINUTE = parse_definition({"type": "echo", "every": 60, "input": {"n": 1}})


def schedule(
    name: str = "tick", next_fire_ms: int | None = NOW + 60_000, **fields: object
) -> Schedule:
    values: dict[str, object] = {
        "graph": GRAPH,
        "name": name,
        "definition": EVERY_MINUTE,
        "next_fire_ms": next_fire_ms,
        "anchor_ms": NOW,
    }
    values.update(fields)
    return Schedule(**values)  # type: ignore[arg-type]


async def test_a_schedule_is_saved_once_per_name_and_graph_and_read_back(store: Backend) -> None:
    saved = await store.save_schedule(schedule())
    assert saved.definition == EVERY_MINUTE and saved.next_fire_ms == NOW + 60_000
    assert saved.source == "api" and not saved.paused and saved.create_ms > 0
    with pytest.raises(Conflict, match="Schedule 'tick' already exists"):
        await store.save_schedule(schedule(next_fire_ms=1))
    # the same name in another graph is another schedule
    await store.save_schedule(schedule(graph=OTHER))
    assert [s.name for s in await store.schedules(GRAPH)] == ["tick"]
    assert len(await store.schedules(None)) == 2
    assert await store.schedule(GRAPH, "tick") == saved
    assert await store.schedule(GRAPH, "none") is None


async def test_a_replaced_definition_keeps_the_pause_and_the_last_fire(store: Backend) -> None:
    await store.save_schedule(schedule())
    [claimed] = await store.claim_schedules(NOW + 60_000, NOW + 90_000, "me", 10)
    assert await store.advance_schedule(claimed, "me", NOW + 120_000, (NOW + 60_000, 7))
    await store.pause_schedule(GRAPH, "tick", True, None)
    hourly = parse_definition({"type": "echo", "cron": "@hourly"})
    replaced = await store.save_schedule(
        schedule(definition=hourly, next_fire_ms=NOW + 3_600_000, source="config"), replace=True
    )
    assert replaced.definition == hourly and replaced.source == "config"
    assert replaced.paused and replaced.next_fire_ms is None  # still paused
    assert (replaced.last_fire_ms, replaced.last_task_id) == (NOW + 60_000, 7)


async def test_pause_resume_and_delete(store: Backend) -> None:
    await store.save_schedule(schedule())
    paused = await store.pause_schedule(GRAPH, "tick", True, None)
    assert paused.paused and paused.next_fire_ms is None
    assert await store.next_schedule_due() is None  # nothing to fire
    assert await store.claim_schedules(NOW * 2, NOW * 2, "me", 10) == []
    resumed = await store.pause_schedule(GRAPH, "tick", False, NOW + 600_000)
    assert not resumed.paused and resumed.next_fire_ms == NOW + 600_000
    assert (await store.delete_schedule(GRAPH, "tick")).name == "tick"
    for gone in (
        store.delete_schedule(GRAPH, "tick"),
        store.pause_schedule(GRAPH, "tick", True, None),
    ):
        with pytest.raises(NotFound, match="Can't find schedule with name 'tick'"):
            await gone


async def test_a_claim_holds_the_due_schedules_for_one_owner_until_its_lease_ends(
    store: Backend,
) -> None:
    await store.save_schedule(schedule("a", next_fire_ms=NOW))
    await store.save_schedule(schedule("b", next_fire_ms=NOW + 5_000))
    await store.save_schedule(schedule("later", next_fire_ms=NOW + 60_000))
    assert await store.next_schedule_due() == NOW
    claimed = await store.claim_schedules(NOW + 5_000, NOW + 35_000, "one", 10)
    assert [s.name for s in claimed] == ["a", "b"]  # the due ones, earliest first
    # held: another process finds none of them, and the loop's next look is the lease's end
    # or the next fire time, whichever comes first
    assert await store.claim_schedules(NOW + 6_000, NOW + 36_000, "two", 10) == []
    assert await store.next_schedule_due() == NOW + 35_000
    # once the lease ran out (its holder died firing), another takes them
    again = await store.claim_schedules(NOW + 35_000, NOW + 65_000, "two", 1)
    assert [s.name for s in again] == ["a"]  # at most the limit


async def test_only_the_holder_of_the_lease_moves_a_schedule_on(store: Backend) -> None:
    await store.save_schedule(schedule(next_fire_ms=NOW))
    [held] = await store.claim_schedules(NOW, NOW + 30_000, "one", 10)
    assert not await store.advance_schedule(held, "two", NOW + 60_000, (NOW, 1))
    assert await store.advance_schedule(held, "one", NOW + 60_000, (NOW, 1))
    moved = await store.schedule(GRAPH, "tick")
    assert moved is not None
    assert (moved.next_fire_ms, moved.last_fire_ms, moved.last_task_id) == (NOW + 60_000, NOW, 1)
    # the lease was let go: due again at its next fire time, to anyone
    assert await store.next_schedule_due() == NOW + 60_000
    # a pause meanwhile takes the lease: the firing's end moves nothing
    [held] = await store.claim_schedules(NOW + 60_000, NOW + 90_000, "one", 10)
    await store.pause_schedule(GRAPH, "tick", True, None)
    assert not await store.advance_schedule(held, "one", NOW + 120_000, (NOW + 60_000, 2))
    paused = await store.schedule(GRAPH, "tick")
    assert paused is not None and paused.paused and paused.last_task_id == 1


async def test_a_firing_tried_again_later_holds_the_schedule_until_then(store: Backend) -> None:
    await store.save_schedule(schedule(next_fire_ms=NOW))
    [held] = await store.claim_schedules(NOW, NOW + 30_000, "one", 10)
    # its task could not be submitted: the same fire time again, a second later
    assert await store.advance_schedule(held, "one", NOW, None, NOW + 1_000)
    assert await store.next_schedule_due() == NOW + 1_000
    assert await store.claim_schedules(NOW + 500, NOW + 30_000, "two", 10) == []
    [again] = await store.claim_schedules(NOW + 1_000, NOW + 31_000, "two", 10)
    assert again.next_fire_ms == NOW and again.last_task_id is None


async def test_the_lease_of_a_firing_whose_process_died_is_let_go_at_recovery(
    store: Backend,
) -> None:
    """Its process is gone (SQLite: the file's last process, at the start; PostgreSQL: an
    owner that is not a live replica, at the sweep): the schedule is due again at once, not
    when the lease runs out. A hold for a firing to be tried again stays."""
    await store.save_schedule(schedule("died", next_fire_ms=NOW))
    await store.save_schedule(schedule("retried", next_fire_ms=NOW))
    claimed = await store.claim_schedules(NOW, NOW + 600_000, "gone:1:dead", 10)
    assert [s.name for s in claimed] == ["died", "retried"]
    assert await store.advance_schedule(claimed[1], "gone:1:dead", NOW, None, NOW + 300_000)
    assert await store.claim_schedules(NOW + 1_000, NOW + 31_000, "alive", 10) == []
    await store.recover(lambda task: Change(task.id, Status.RESTORING))
    again = await store.claim_schedules(NOW + 1_000, NOW + 31_000, "alive", 10)
    assert [s.name for s in again] == ["died"]
    assert await store.next_schedule_due() == NOW + 31_000  # its new lease; "retried" later
