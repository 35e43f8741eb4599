"""A job for the dashboard's log test, run by a real `sidetask serve`."""

from __future__ import annotations

import asyncio
from pathlib import Path

from service.jobs import JobContext


async def gated(ctx: JobContext) -> str:
    """A line, then another once the file `go` exists, then ends once `end` exists."""
    ctx.log("waiting for the go")
    while not Path(ctx.input["go"]).exists():
        await asyncio.sleep(0.01)
    ctx.log("went", level="warning")
    while not Path(ctx.input["end"]).exists():
        await asyncio.sleep(0.01)
    return "done"
