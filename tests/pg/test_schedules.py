"""Two replicas on one PostgreSQL database firing one schedule: each fire time gets one
task, whether the replicas' claims meet (SKIP LOCKED, the lease) or both fire the same
schedule at once (the key per schedule and fire time)."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service import clock
from service.clock import ManualClock
from service.web import create_app
from service.web.keys import SCHEDULER
from tests.conftest import BASES, make_settings, wait_for
from tests.sup_util import rows

BASE = BASES[0]


async def replicas(aiohttp_client: Any, tmp_path: Path, dsn: str) -> list[TestClient]:
    return [
        await aiohttp_client(create_app(make_settings(tmp_path / name, dsn))) for name in ("a", "b")
    ]


def counted(dsn: str) -> Counter[int]:
    found = rows(dsn, "SELECT schedule_fire_ms FROM tasks WHERE schedule = 'tick'")
    return Counter(int(row[0]) for row in found)


async def test_two_replicas_give_each_fire_time_one_task_on_a_clock_moved_by_hand(
    aiohttp_client: Any, tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    manual = ManualClock()
    monkeypatch.setattr(clock, "now_ms", manual)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    a, b = await replicas(aiohttp_client, tmp_path, pg_dsn)
    response = await a.post(f"{BASE}/schedules", json={"name": "tick", "type": "echo", "every": 1})
    assert response.status == 201
    first = (await response.json())["next_fire"]
    scheduler_a, scheduler_b = a.app[SCHEDULER], b.app[SCHEDULER]
    # both claim at each step: one takes the schedule, the other skips it
    for _ in range(20):
        manual.advance(1)
        await asyncio.wait_for(asyncio.gather(scheduler_a.fire_due(), scheduler_b.fire_due()), 10)
    # both fire the same schedule at once, past any claim: the key keeps one task a fire time
    manual.advance(10)
    [schedule] = await scheduler_a.store.schedules(None)
    made = await asyncio.wait_for(
        asyncio.gather(
            scheduler_a.fire_schedule(schedule, manual.ms),
            scheduler_b.fire_schedule(schedule, manual.ms),
        ),
        10,
    )
    # ten fire times came: each made once, by one or the other (or by a replica's own
    # loop, which runs meanwhile)
    assert sum(made) <= 10
    fires = counted(pg_dsn)
    assert max(fires.values()) == 1
    assert sorted(fires) == [first + 1000 * n for n in range(30)]


async def test_two_replicas_firing_on_the_real_clock_give_each_fire_time_one_task(
    aiohttp_client: Any, tmp_path: Path, pg_dsn: str
) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    a, b = await replicas(aiohttp_client, tmp_path, pg_dsn)
    response = await b.post(f"{BASE}/schedules", json={"name": "tick", "type": "echo", "every": 1})
    assert response.status == 201
    a.app[SCHEDULER].wake()  # the other replica would find it at its next look

    async def five() -> Counter[int] | None:
        fires = counted(pg_dsn)
        return fires if len(fires) >= 5 else None

    fires = await wait_for(five, 20, "five fire times")
    assert max(fires.values()) == 1
    times = sorted(fires)
    assert [y - x for x, y in itertools.pairwise(times)] == [1000] * (len(times) - 1)
