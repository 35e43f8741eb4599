"""`sidetask copy-db` takes the webhooks', schedules', paused types' and rate limits' rows
along: a pending delivery is claimed and delivered on PostgreSQL with its id, tries and
answers kept, and new deliveries' ids come after every one the file gave out; a paused
type stays paused; a schedule keeps its next fire time and its pause (a firing lease of
the file's process is dropped); a rate-limited type's starts in its window still count."""

from __future__ import annotations

from pathlib import Path

from service import clock
from service.model import DeliveryAnswer, DeliveryState, Outbox, Status
from service.schedules import Schedule, parse_definition
from service.store import Change, SQLiteStore
from service.store.postgres import PostgresStore
from tests.pg.test_copy_db import copy_db
from tests.store.conftest import GRAPH, new

OUTBOX = Outbox(callback_statuses=frozenset({Status.CANCELLED}))
NOW = 1_800_000_000_000
#: a window no test run crosses the end of
MONTH_MS = 30 * 24 * 3_600_000


def answer(code: int | None) -> DeliveryAnswer:
    return DeliveryAnswer(clock.now_ms(), code, None, 3)


def schedule(name: str, **fields: object) -> Schedule:
    values: dict[str, object] = {
        "graph": GRAPH,
        "name": name,
        "definition": parse_definition({"type": "echo", "every": 60, "input": {"n": 1}}),
        "next_fire_ms": NOW + 60_000,
        "anchor_ms": NOW,
    }
    values.update(fields)
    return Schedule(**values)  # type: ignore[arg-type]


async def test_deliveries_move_and_the_pending_ones_are_delivered_after(
    tmp_path: Path, pg_dsn: str
) -> None:
    path = tmp_path / "sidetask.db"
    store = SQLiteStore(path)
    await store.open()
    store.set_outbox(OUTBOX)
    for n in range(3):
        task, _ = await store.insert(new(callback=f"https://me.example.org/{n}"))
        await store.transition(Change(task.id, Status.CANCELLED))
    retried, delivered, gone = await store.claim_deliveries(10, 60_000)
    # one tried once and pending again, one delivered, one deleted with its task
    assert await store.record_delivery(retried, answer(500), DeliveryState.PENDING, 0)
    assert await store.record_delivery(delivered, answer(200), DeliveryState.DELIVERED, None)
    await store.delete(GRAPH, gone.task_id, None)
    before = {d.task_id: await store.deliveries(d.task_id) for d in (retried, delivered)}
    copied = await store.list_tasks(GRAPH, None, None)
    await store.close()

    result = copy_db(path, pg_dsn)
    assert result.returncode == 0, result.stderr
    pg = PostgresStore(pg_dsn)
    await pg.open()
    try:
        assert await pg.list_tasks(GRAPH, None, None) == copied  # their callback URLs too
        for task_id, shown in before.items():
            assert await pg.deliveries(task_id) == shown  # ids, tries, answers, states
        # the pending one is claimed on PostgreSQL with its id and uid, and delivered
        (due,) = await pg.claim_deliveries(10, 60_000)
        assert (due.id, due.uid, due.attempts) == (retried.id, retried.uid, 1)
        assert await pg.record_delivery(due, answer(200), DeliveryState.DELIVERED, None)
        (shown,) = await pg.deliveries(retried.task_id)
        assert shown.state is DeliveryState.DELIVERED
        assert [a.code for a in shown.answers] == [500, 200]
        assert await pg.next_delivery_ms() is None
        # a new delivery's id comes after the deleted task's
        pg.set_outbox(OUTBOX)
        task, _ = await pg.insert(new(callback="https://me.example.org/new"))
        await pg.transition(Change(task.id, Status.CANCELLED))
        (fresh,) = await pg.deliveries(task.id)
        assert fresh.id == gone.id + 1
    finally:
        await pg.close()


async def test_paused_types_schedules_and_rate_windows_move(tmp_path: Path, pg_dsn: str) -> None:
    path = tmp_path / "sidetask.db"
    store = SQLiteStore(path)
    await store.open()
    since = await store.pause_type("resize")
    await store.save_schedule(schedule("tick"))
    await store.save_schedule(schedule("tock"))
    await store.pause_schedule(GRAPH, "tock", True, None)
    # a firing the file's process held: its lease does not hold the schedule on PostgreSQL
    assert [s.name for s in await store.claim_schedules(NOW, NOW + 3_600_000, "old", 10)] == []
    (held,) = await store.claim_schedules(NOW + 60_000, NOW + 3_600_000, "old", 10)
    schedules = await store.schedules(None)
    rates = {"limited": (2, MONTH_MS)}
    for _ in range(3):
        await store.insert(new(type="limited"))
    resize, _ = await store.insert(new(type="resize"))
    assert len(await store.claim(10, clock.now_ms(), {}, type_rates=rates)) == 2
    await store.close()

    result = copy_db(path, pg_dsn)
    assert result.returncode == 0, result.stderr
    pg = PostgresStore(pg_dsn)
    await pg.open()
    try:
        assert await pg.paused_types() == {"resize": since}
        # the window's two starts count: neither the third limited task nor a paused one
        assert await pg.claim(10, clock.now_ms(), {}, type_rates=rates) == []
        await pg.resume_type("resize")
        claimed = await pg.claim(10, clock.now_ms(), {}, type_rates=rates)
        assert [t.id for t in claimed] == [resize.id]
        assert await pg.schedules(None) == schedules
        tock = await pg.schedule(GRAPH, "tock")
        assert tock is not None and tock.paused and tock.next_fire_ms is None
        (fired,) = await pg.claim_schedules(NOW + 60_000, NOW + 90_000, "new", 10)
        assert (fired.name, fired.next_fire_ms) == (held.name, NOW + 60_000)
    finally:
        await pg.close()
