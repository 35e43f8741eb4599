"""`echo`: returns its input; the no-op job for throughput measurements."""

from __future__ import annotations

from typing import Any

from .base import JobContext


async def run(ctx: JobContext) -> Any:
    return ctx.input
