"""`sidetask copy-db` takes the webhooks', schedules', paused types' and rate limits' rows
along: a pending delivery is claimed and delivered on PostgreSQL with its id, tries and
answers kept, and new deliveries' ids come after every one the file gave out; a paused
type stays paused; a schedule keeps its next fire time and its pause (a firing lease of
the file's process is dropped); a rate-limited type's starts in its window still count.
Then the same through real servers: one on the file, one on PostgreSQL after the copy."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import ClientSession

from service import clock
from service.model import DeliveryAnswer, DeliveryState, Outbox, Status
from service.schedules import Schedule, parse_definition
from service.store import Change, SQLiteStore
from service.store.postgres import PostgresStore
from tests.conftest import BASES, ServerProcess, free_port, wait_for
from tests.pg.test_copy_db import copy_db
from tests.store.conftest import GRAPH, new
from tests.web.webhook_receiver import Receiver

BASE = BASES[0]
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


async def test_served_before_and_after_the_move(
    server_factory: Callable[..., ServerProcess], tmp_path: Path, pg_dsn: str
) -> None:
    """A real server on the file whose callback target is down, stopped, the file copied,
    then a replica on PostgreSQL: it delivers the pending delivery (its id, its earlier
    tries), and shows the schedules and the paused type as the file's server did."""
    port = free_port()  # the target is down while the file's server runs
    env = {
        "SIDETASK_CALLBACK_SECRET": "copy-secret",
        "SIDETASK_WEBHOOK_ALLOW": "127.0.0.1",
        "SIDETASK_WEBHOOK_BACKOFF": "0.05",
        "SIDETASK_WEBHOOK_BACKOFF_MAX": "0.2",
        # a claim lasts the timeout and 5 s: one the stop cut short comes due after it
        "SIDETASK_WEBHOOK_TIMEOUT": "1",
    }
    db = tmp_path / "sidetask.db"
    first = server_factory(db, env=env)
    await first.wait_ready()
    async with ClientSession() as http, asyncio.timeout(60):
        submitted = await http.post(
            f"{first.url}{BASE}/jobs/echo",
            json={"x": 1},
            params={"callback": f"http://127.0.0.1:{port}/hook"},
        )
        assert submitted.status == 201, await submitted.text()
        task_id = int((await submitted.json())["task_id"])

        async def tried() -> bool:
            async with http.get(f"{first.url}{BASE}/tasks/{task_id}/deliveries") as response:
                found = (await response.json())["deliveries"]
                return bool(found and found[0]["attempts"] >= 1)

        await wait_for(tried, 20, "a try of the delivery")
        for name, paused in (("tick", False), ("tock", True)):
            made = await http.post(
                f"{first.url}{BASE}/schedules", json={"name": name, "type": "echo", "every": 3600}
            )
            assert made.status == 201, await made.text()
            if paused:
                async with http.put(
                    f"{first.url}{BASE}/schedules/{name}", params={"action": "pause"}
                ) as response:
                    assert response.status == 200, await response.text()
        async with http.put(f"{first.url}/types/sleep", params={"action": "pause"}) as response:
            assert response.status == 200, await response.text()
        async with http.get(f"{first.url}{BASE}/schedules") as response:
            schedules = await response.json()
        async with http.get(f"{first.url}/types") as response:
            paused_types = (await response.json())["paused"]
        assert first.terminate() == 0
        store = SQLiteStore(db)
        await store.open()
        (before,) = await store.deliveries(task_id)
        await store.close()
        assert before.state is DeliveryState.PENDING and before.attempts >= 1

        assert copy_db(db, pg_dsn).returncode == 0
        receiver = await Receiver().start(port)
        try:
            second = server_factory(pg_dsn, env=env)
            await second.wait_ready(30)

            async def delivered() -> dict[str, Any] | None:
                async with http.get(f"{second.url}{BASE}/tasks/{task_id}/deliveries") as got:
                    (found,) = (await got.json())["deliveries"]
                    return found if found["state"] == "delivered" else None

            after = await wait_for(delivered, 20, "the delivery on PostgreSQL")
            assert receiver.delivery_ids() == [before.uid] == [after["delivery"]]
            assert after["attempts"] == before.attempts + 1
            answers = [(a["time"], a["code"]) for a in after["answers"]]
            assert answers[:-1] == [(a.time_ms, a.code) for a in before.answers]
            assert answers[-1][1] == 200
            async with http.get(f"{second.url}{BASE}/schedules") as response:
                assert await response.json() == schedules
            async with http.get(f"{second.url}/types") as response:
                assert (
                    (await response.json())["paused"]
                    == paused_types
                    == {"sleep": paused_types["sleep"]}
                )
        finally:
            await receiver.stop()
