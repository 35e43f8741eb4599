"""Job types whose outcome the stateful test controls, and a count of their live runs per task
(so that two runs of one task at once are seen). State is per test machine: reset() it."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from service.jobs import JobContext

JOBS = {
    "ok": "tests.chaos_helpers.stateful_jobs:ok",
    "boom": "tests.chaos_helpers.stateful_jobs:boom",
    "held": "tests.chaos_helpers.stateful_jobs:held",
}

#: runs of each task alive now
ACTIVE: Counter[int] = Counter()
#: tasks a run of which started while another was alive
OVERLAPS: list[int] = []
#: held tasks' gates, and whether a released one succeeds
GATES: dict[int, asyncio.Event] = {}
OUTCOMES: dict[int, bool] = {}


def reset() -> None:
    ACTIVE.clear()
    OVERLAPS.clear()
    GATES.clear()
    OUTCOMES.clear()


class _Run:
    def __init__(self, task_id: int) -> None:
        self.task_id = task_id

    def __enter__(self) -> None:
        if ACTIVE[self.task_id]:
            OVERLAPS.append(self.task_id)
        ACTIVE[self.task_id] += 1

    def __exit__(self, *exc: object) -> None:
        ACTIVE[self.task_id] -= 1


def gate(task_id: int) -> asyncio.Event:
    return GATES.setdefault(task_id, asyncio.Event())


async def ok(ctx: JobContext) -> Any:
    with _Run(ctx.task_id):
        await asyncio.sleep(0)
        return ctx.input


async def boom(ctx: JobContext) -> Any:
    with _Run(ctx.task_id):
        await asyncio.sleep(0)
        raise RuntimeError("boom")


async def held(ctx: JobContext) -> Any:
    """Waits until the test releases it; then succeeds or fails as the test said."""
    with _Run(ctx.task_id):
        await gate(ctx.task_id).wait()
        if not OUTCOMES.get(ctx.task_id, True):
            raise RuntimeError("released to fail")
        return "released"
