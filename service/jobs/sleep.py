"""`sleep`: `steps` times, sleep `interval` seconds and report the steps done (SPEC 5)."""

from __future__ import annotations

import asyncio

from .base import JobContext, PermanentFailure


async def run(ctx: JobContext) -> int:
    options = ctx.input if isinstance(ctx.input, dict) else {}
    steps = options.get("steps", 10)
    interval = options.get("interval", 1.0)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise PermanentFailure(f"sleep: 'steps' must be a non-negative integer, got {steps!r}")
    if isinstance(interval, bool) or not isinstance(interval, int | float) or interval < 0:
        raise PermanentFailure(f"sleep: 'interval' must be a non-negative number, got {interval!r}")
    done = 0
    for _ in range(steps):
        await asyncio.sleep(interval)  # a cancel lands here, at the next await
        done += 1
        ctx.progress(done, total=steps)  # task_progress_total: clients show "3 of 5"
    return done
