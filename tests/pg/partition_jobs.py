"""The partition tests' jobs, each run recorded as the chaos job records its runs
(tests/chaos_helpers/jobs.py), so the record shows which process ran what, and that a
stopped run stopped before another began: a first run that never ends by itself (a re-run
ends at once), and a run that writes progress all the time until its gate opens."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
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


async def reports_until_gate(ctx: JobContext) -> Any:
    """`start …`; reports progress every few milliseconds (a write, and an event, at each
    flush) until the file `gate` exists; then `end …` (or `stop …` if stopped first)."""
    options = ctx.input if isinstance(ctx.input, dict) else {}
    path, gate = str(options["record"]), Path(str(options["gate"]))
    pid = os.getpid()
    try:
        await _append(path, f"start {ctx.task_id} {pid} {ctx.retries}")
        step = 0
        while not gate.exists():
            step += 1
            ctx.progress(step)
            await asyncio.sleep(0.005)
        await _append(path, f"end {ctx.task_id} {pid} {ctx.retries}")
    except BaseException:
        append(path, f"stop {ctx.task_id} {pid} {ctx.retries}")
        raise
    return {"pid": pid}
