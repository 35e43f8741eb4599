"""A real `sidetask serve` with a schedule every second, killed with SIGKILL and started
again on its database: every fire time has its task, none has two (counted by fire time),
on both stores."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from tests.conftest import ServerProcess, wait_for
from tests.sup_util import rows

ENV = {
    "SIDETASK_SCHEDULES": orjson.dumps({"tick": {"type": "echo", "every": 1}}).decode(),
    # a kill in the middle of a firing leaves its lease on the schedule: the restart fires
    # it once the lease ran out (all within schedule_grace, so nothing is lost either way)
    "SIDETASK_SCHEDULE_LEASE": "2",
}


@pytest.fixture
def db(any_db: Path | str) -> Path | str:
    return any_db


def fire_times(db: Path | str) -> list[int]:
    found = rows(db, "SELECT schedule_fire_ms FROM tasks WHERE schedule = 'tick' ORDER BY 1")
    return [int(row[0]) for row in found]


async def at_least(db: Path | str, count: int, after: int = 0) -> list[int]:
    async def probe() -> list[int] | None:
        fires = fire_times(db)
        return fires if len([f for f in fires if f > after]) >= count else None

    return await wait_for(probe, 45, f"{count} fire times after {after}")


async def test_no_fire_time_is_lost_or_doubled_across_a_sigkill(
    db: Path | str, server_factory: Callable[..., ServerProcess]
) -> None:
    first = server_factory(db, env=ENV)
    await first.wait_ready()
    await at_least(db, 3)
    first.kill()  # SIGKILL: maybe between a fire time's task and the move to the next
    before = fire_times(db)
    second = server_factory(db, env=ENV)
    await second.wait_ready()
    await at_least(db, 3, after=before[-1])
    assert second.terminate() == 0
    fires = fire_times(db)
    counted = Counter(fires)
    assert max(counted.values()) == 1, [f for f, n in counted.items() if n > 1]
    # the restart took less than schedule_grace (60 s): the fire times it was down for
    # are late, not missed, and each got its task; one grid from the schedule's creation
    assert [b - a for a, b in itertools.pairwise(fires)] == [1000] * (len(fires) - 1)
    # each task links back to its fire time, which the store's key holds once
    keys = rows(db, "SELECT count(DISTINCT idempotency_key) FROM tasks WHERE schedule = 'tick'")
    assert keys == [(len(fires),)]
