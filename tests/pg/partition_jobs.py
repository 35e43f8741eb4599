"""The partition test's job: a first run that never ends by itself, a re-run that ends at
once, each recorded as the chaos job records its runs (tests/chaos_helpers/jobs.py), so the
record shows which process ran what, and that a stopped run stopped before another began."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from service.jobs import JobContext
from tests.chaos_helpers.jobs import _append, append


async def first_run_held(ctx: JobContext) -> Any:
    """`start <task> <pid> <retries>`; the first run then waits until it is stopped (and
    writes `stop …` as it stops), a re-run writes `end …` and returns its pid."""
    path = str(ctx.input["record"]) if isinstance(ctx.input, dict) else ""
    pid = os.getpid()
    try:
        await _append(path, f"start {ctx.task_id} {pid} {ctx.retries}")
        if ctx.retries == 0:
            await asyncio.Event().wait()
        await _append(path, f"end {ctx.task_id} {pid} {ctx.retries}")
    except BaseException:
        append(path, f"stop {ctx.task_id} {pid} {ctx.retries}")
        raise
    return {"pid": pid}
