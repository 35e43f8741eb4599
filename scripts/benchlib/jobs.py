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
