"""Schedules (README, "Schedules"): the API, and firing under a clock the test moves, on
both stores: one task per schedule and fire time, the missed policies, a schedule's tasks
linked back to it, pause and resume, the configuration's schedules at start."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service import clock
from service.clock import ManualClock
from service.web.keys import SCHEDULER
from tests.conftest import BASES, submit, wait_for
from tests.sup_util import Start, execute, rows
from tests.web.test_tasks_api import assert_task_keys

BASE = BASES[0]
MINUTE = 60.0


@pytest.fixture
def db(any_db: Path | str) -> Path | str:
    """Every test here runs on both stores."""
    return any_db


@pytest.fixture
def manual(monkeypatch: pytest.MonkeyPatch) -> ManualClock:
    """The service's clock, moved by the test."""
    moved = ManualClock()
    monkeypatch.setattr(clock, "now_ms", moved)
    return moved


async def create(client: TestClient, body: dict[str, Any], base: str = BASE) -> dict[str, Any]:
    response = await asyncio.wait_for(client.post(f"{base}/schedules", json=body), 10)
    assert response.status == 201, await response.text()
    return dict(await response.json())


async def schedule_tasks(client: TestClient, name: str, base: str = BASE) -> list[dict[str, Any]]:
    response = await asyncio.wait_for(client.get(f"{base}/tasks", params={"limit": "-1"}), 10)
    assert response.status == 200
    return [t for t in (await response.json())["tasks"] if t.get("task_schedule") == name]


async def fire(client: TestClient) -> int:
    """One round of the firing loop, as it runs when the clock has moved."""
    return await asyncio.wait_for(client.app[SCHEDULER].fire_due(), 10)


async def driven(start: Start, **settings: Any) -> TestClient:
    """A server whose firing loop the test runs itself (`fire`) as it moves the clock: the
    loop of its own, woken by a new schedule, would race the test's rounds."""
    client = await start(**settings)
    await asyncio.wait_for(client.app[SCHEDULER].stop(), 10)
    return client


async def test_a_schedule_is_created_listed_got_paused_resumed_and_deleted(
    start: Start, manual: ManualClock
) -> None:
    client = await driven(start)
    made = await create(
        client,
        {
            "name": "nightly",
            "type": "echo",
            "cron": "30 3 * * *",
            "timezone": "Europe/Paris",
            "input": {"report": "daily"},
            "priority": 5,
        },
    )
    assert made["name"] == "nightly"
    assert made["cron"] == "30 3 * * *" and made["timezone"] == "Europe/Paris"
    assert made["input"] == {"report": "daily"}
    assert made["paused"] is False and made["source"] == "api"
    # the next fire time is the next 03:30 in Paris: within a day, after now
    assert manual.ms < made["next_fire"] <= manual.ms + 24 * 3600 * 1000
    every = await create(client, {"name": "tick", "type": "echo", "every": 60})
    assert every["next_fire"] == manual.ms + 60_000
    for base in BASES:  # both prefixes of SPEC 1
        listed = await (await client.get(f"{base}/schedules")).json()
        assert [s["name"] for s in listed["schedules"]] == ["nightly", "tick"]
    got = await (await client.get(f"{BASE}/schedules/nightly")).json()
    assert got == made
    paused = await client.put(f"{BASE}/schedules/tick", params={"action": "pause"})
    assert paused.status == 200
    body = await paused.json()
    assert body["paused"] is True and body["next_fire"] is None
    # resumed later: from the next fire time after then, nothing of the pause fired
    manual.advance(10 * MINUTE)
    resumed = await (await client.put(f"{BASE}/schedules/tick", params={"action": "resume"})).json()
    assert resumed["paused"] is False
    assert resumed["next_fire"] == every["next_fire"] + 10 * 60_000
    assert await fire(client) == 0
    deleted = await client.delete(f"{BASE}/schedules/tick")
    assert deleted.status == 204
    missing = await client.get(f"{BASE}/schedules/tick")
    assert missing.status == 404
    assert (await missing.json())["message"] == "Can't find schedule with name 'tick'"
    # a schedule is its graph's
    other = await client.get("/graphspaces/gs1/graphs/hugegraph/schedules/nightly")
    assert other.status == 404


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"type": "echo", "every": 60}, "name"),
        ({"name": "a b", "type": "echo", "every": 60}, "name"),
        ({"name": "x", "every": 60}, "'type'"),
        ({"name": "x", "type": "echo"}, "exactly one of 'cron'"),
        ({"name": "x", "type": "echo", "cron": "0 3 * *"}, "is not a cron expression"),
        ({"name": "x", "type": "echo", "cron": "0 3 * * *", "timezone": "Mars/Base"}, "time zone"),
        ({"name": "x", "type": "echo", "every": 0.5}, "'every' must be between 1"),
        ({"name": "x", "type": "echo", "every": 60, "missed": "all"}, "'missed' must be one of"),
        ({"name": "x", "type": "echo", "every": 60, "input": [1]}, "'input' must be a JSON object"),
        ({"name": "x", "type": "echo", "every": 60, "colour": "red"}, "unknown key(s) colour"),
        ({"name": "x", "type": "nope", "every": 60}, "Job type 'nope' is not registered"),
    ],
)
async def test_a_bad_schedule_is_a_400_that_says_what_is_wrong(
    start: Start, body: dict[str, Any], message: str
) -> None:
    client = await start()
    response = await client.post(f"{BASE}/schedules", json=body)
    assert response.status == 400
    error = await response.json()
    assert set(error) == {"exception", "message", "cause"}
    assert message in error["message"]


async def test_a_taken_name_is_a_409_and_a_bad_action_a_400(start: Start) -> None:
    client = await start()
    await create(client, {"name": "tick", "type": "echo", "every": 60})
    again = await client.post(
        f"{BASE}/schedules", json={"name": "tick", "type": "echo", "every": 5}
    )
    assert again.status == 409
    assert "already exists" in (await again.json())["message"]
    bad = await client.put(f"{BASE}/schedules/tick", params={"action": "cancel"})
    assert bad.status == 400
    assert "Not support action 'cancel'" in (await bad.json())["message"]
    for method in ("PUT", "DELETE"):
        gone = await client.request(method, f"{BASE}/schedules/none", params={"action": "pause"})
        assert gone.status == 404


async def test_each_fire_time_makes_one_task_that_links_back(
    start: Start, manual: ManualClock
) -> None:
    client = await driven(start)
    made = await create(
        client, {"name": "tick", "type": "echo", "every": 60, "input": {"n": 1}, "task_name": "t"}
    )
    first = made["next_fire"]
    assert await fire(client) == 0  # not due yet
    manual.advance(MINUTE)
    assert await fire(client) == 1
    assert await fire(client) == 0  # a fire time fires once
    manual.advance(2 * MINUTE)  # two more came (within the grace): both get theirs
    assert await fire(client) == 2
    tasks = await schedule_tasks(client, "tick")
    assert [t["task_schedule_fire"] for t in tasks] == [first, first + 60_000, first + 120_000]
    task = tasks[0]
    assert task["task_name"] == "t" and task["task_input"] == '{"n":1}'
    assert_task_keys(task)  # the link comes after HugeGraph's keys
    listed = await (await client.get(f"{BASE}/schedules/tick")).json()
    assert listed["last_fire"] == first + 120_000
    assert listed["last_task_id"] == tasks[-1]["id"]
    assert listed["next_fire"] == first + 180_000


@pytest.mark.parametrize(("missed", "expected"), [("once", 1), ("skip", 0)])
async def test_fire_times_missed_while_down_get_one_task_or_none(
    start: Start, manual: ManualClock, missed: str, expected: int
) -> None:
    client = await driven(start, schedule_grace=MINUTE)
    made = await create(client, {"name": "tick", "type": "echo", "every": 60, "missed": missed})
    # ten minutes without firing, as a service that was down: of the nine fire times that
    # came, eight are older than the grace; the ninth is late by less than it
    manual.advance(10 * MINUTE - 0.001)
    await fire(client)
    fires = [t["task_schedule_fire"] for t in await schedule_tasks(client, "tick")]
    late = made["next_fire"] + 8 * 60_000  # within the grace: it gets its task either way
    older = [f for f in fires if f < late]
    assert len(older) == expected
    if missed == "once":  # the one task stands for the latest of them
        assert older == [late - 60_000]
    assert late in fires
    after = await (await client.get(f"{BASE}/schedules/tick")).json()
    assert after["next_fire"] == late + 60_000


async def test_a_fire_time_already_submitted_is_not_submitted_again(
    start: Start, manual: ManualClock, db: Path | str
) -> None:
    """A process killed between a fire time's task and the move to the next fire time
    leaves the schedule on that fire time; the next firing finds its task by the key."""
    client = await driven(start)
    made = await create(client, {"name": "tick", "type": "echo", "every": 60})
    manual.advance(MINUTE)
    assert await fire(client) == 1
    # as the kill left it: the schedule back on the fire time that has its task
    execute(db, "UPDATE schedules SET next_fire_ms = ? WHERE name = 'tick'", (made["next_fire"],))
    assert await fire(client) == 0
    fires = Counter(t["task_schedule_fire"] for t in await schedule_tasks(client, "tick"))
    assert fires == {made["next_fire"]: 1}
    stored = rows(db, "SELECT count(*) FROM tasks WHERE schedule = 'tick'")
    assert stored == [(1,)]


async def test_the_firing_loop_wakes_at_the_next_fire_time(start: Start) -> None:
    """The loop itself, on the real clock: a schedule every second fires within seconds."""
    client = await start()
    await create(client, {"name": "tick", "type": "echo", "every": 1})

    async def two() -> list[dict[str, Any]] | None:
        tasks = await schedule_tasks(client, "tick")
        return tasks if len(tasks) >= 2 else None

    tasks = await wait_for(two, 15, "two fires of the schedule")
    assert tasks[1]["task_schedule_fire"] - tasks[0]["task_schedule_fire"] == 1000


async def test_the_configuration_s_schedules_are_made_replaced_and_removed_at_start(
    start: Start, manual: ManualClock
) -> None:
    declared = {"nightly": {"type": "echo", "cron": "0 3 * * *", "timezone": "UTC"}}
    client = await driven(start, schedules=declared)
    await create(client, {"name": "mine", "type": "echo", "every": 60})
    listed = {
        s["name"]: s for s in (await (await client.get(f"{BASE}/schedules")).json())["schedules"]
    }
    assert listed["nightly"]["source"] == "config" and listed["mine"]["source"] == "api"
    kept = listed["nightly"]["next_fire"]
    await client.close()
    # the same definition again: kept as it was (its next fire time too)
    manual.advance(MINUTE)
    client = await driven(start, schedules=declared)
    same = await (await client.get(f"{BASE}/schedules/nightly")).json()
    assert same["next_fire"] == kept and same["update"] == listed["nightly"]["update"]
    await client.close()
    # changed: replaced
    client = await driven(start, schedules={"nightly": {"type": "echo", "every": 120}})
    changed = await (await client.get(f"{BASE}/schedules/nightly")).json()
    assert changed["every"] == 120 and changed["next_fire"] == manual.ms + 120_000
    await client.close()
    # no longer declared: deleted; the API's schedule is left alone
    client = await driven(start)
    names = [s["name"] for s in (await (await client.get(f"{BASE}/schedules")).json())["schedules"]]
    assert names == ["mine"]


async def test_the_firing_loop_goes_on_after_an_unexpected_error(
    start: Start, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    client = await start()
    store = client.app[SCHEDULER].store
    real = store.claim_schedules
    calls = 0

    async def failing_once(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug")
        return await real(*args)

    monkeypatch.setattr(store, "claim_schedules", failing_once)
    await create(client, {"name": "tick", "type": "echo", "every": 1})

    async def fired() -> list[dict[str, Any]] | None:
        return await schedule_tasks(client, "tick") or None

    await wait_for(fired, 15, "a fire after the loop's error")
    assert calls > 1
    assert "the firing loop failed; it goes on" in caplog.text


async def test_a_fire_time_refused_by_a_full_queue_is_tried_again_not_skipped(
    start: Start, manual: ManualClock
) -> None:
    client = await driven(start, max_waiting=1)
    waiting = await submit(client, BASE, "echo", {}, delay=3600)  # the queue is full
    made = await create(client, {"name": "tick", "type": "echo", "every": 60})
    manual.advance(MINUTE)
    assert await fire(client) == 0  # refused (429): held a second, on the same fire time
    held = await (await client.get(f"{BASE}/schedules/tick")).json()
    assert held["next_fire"] == made["next_fire"] and held["last_task_id"] is None
    manual.advance(0.5)
    assert await fire(client) == 0  # not yet due again
    cancelled = await client.put(f"{BASE}/tasks/{waiting}", params={"action": "cancel"})
    assert cancelled.status == 202
    manual.advance(0.5)
    assert await fire(client) == 1
    [task] = await schedule_tasks(client, "tick")
    assert task["task_schedule_fire"] == made["next_fire"]  # the fire time that was refused
