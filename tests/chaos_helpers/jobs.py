"""The chaos job: records each run's start and end, with the task id and the process id, in an
append-only file, so that runs of one task in two live processes at once can be found after.

Registered as `jobs = { chaos = "tests.chaos_helpers.jobs:record" }` (the repository's root on
PYTHONPATH). Input: `{"record": "/path/to/file", "steps": 3, "interval": 0.01}`.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from service.jobs import JobContext


def append(path: str, line: str) -> None:
    """One line, in one write to a file opened O_APPEND (appends from several processes do not
    interleave), flushed to the disk before the run goes on."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


async def record(ctx: JobContext) -> Any:
    """`start <task> <pid> <retries>`, `steps` steps of `interval` seconds, `end <task> <pid>
    <retries>`; returns the pid that ran it to its end."""
    options = ctx.input if isinstance(ctx.input, dict) else {}
    path = str(options["record"])
    pid = os.getpid()
    await asyncio.to_thread(append, path, f"start {ctx.task_id} {pid} {ctx.retries}")
    for step in range(int(options.get("steps", 1))):
        await asyncio.sleep(float(options.get("interval", 0.01)))
        ctx.progress(step + 1)
    await asyncio.to_thread(append, path, f"end {ctx.task_id} {pid} {ctx.retries}")
    return {"pid": pid}
