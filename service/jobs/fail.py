"""`fail`: raises an error with the given message, so retries and failures can be seen."""

from __future__ import annotations

from .base import JobContext


class JobFailed(RuntimeError):
    """The error the `fail` job raises."""


async def run(ctx: JobContext) -> None:
    options = ctx.input if isinstance(ctx.input, dict) else {}
    raise JobFailed(str(options.get("message", "failed on purpose")))
