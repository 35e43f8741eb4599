"""Job types used only by the benchmarks."""

from __future__ import annotations

import asyncio
from typing import Any

from service.jobs import JobContext


async def ticker(ctx: JobContext) -> int:
    """Reports progress `rate` times a second for `seconds`: a steady source of events."""
    options: dict[str, Any] = ctx.input or {}
    rate = float(options.get("rate", 100))
    count = int(rate * float(options.get("seconds", 10)))
    loop = asyncio.get_running_loop()
    start = loop.time()
    for step in range(1, count + 1):
        await asyncio.sleep(max(0.0, start + step / rate - loop.time()))
        ctx.progress(step)
    return count


async def log_flood(ctx: JobContext) -> int:
    """Writes `lines` log lines as fast as it can (yielding every `every` lines, so the
    service's flushes run meanwhile): the cost of a job that logs a lot."""
    options: dict[str, Any] = ctx.input or {}
    lines, every = int(options.get("lines", 100_000)), int(options.get("every", 1000))
    for n in range(lines):
        ctx.log(f"line {n} of {lines}: some words a job might write about its work")
        if n % every == every - 1:
            await asyncio.sleep(0)
    return lines


def log_flood_thread(ctx: JobContext) -> int:
    """The same from a plain function's thread."""
    options: dict[str, Any] = ctx.input or {}
    lines = int(options.get("lines", 100_000))
    for n in range(lines):
        ctx.log(f"line {n} of {lines}: some words a job might write about its work")
    return lines
