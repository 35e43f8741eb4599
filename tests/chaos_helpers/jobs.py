"""The chaos job: records each run's start and end, with the task id and the process id, in an
append-only file, so that runs of one task in two live processes at once can be found after.

Registered as `jobs = { chaos = "tests.chaos_helpers.jobs:record" }` (the repository's root on
PYTHONPATH). Input: `{"record": "/path/to/file", "steps": 3, "interval": 0.01}`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
from typing import Any

from service.jobs import JobContext

#: the threads that write the record (an fsync per line keeps the event loop free)
_WRITERS = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="chaos-record")


def append(path: str, line: str) -> None:
    """One line, in one write to a file opened O_APPEND (appends from several processes do not
    interleave), flushed to the disk before the run goes on."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


async def _append(path: str, line: str) -> None:
    """`append` in a thread. Cancelled meanwhile, it returns only once the line is written,
    or certain never to be (its write had not begun): nothing of it comes after what the
    caller writes next."""
    written = _WRITERS.submit(append, path, line)
    try:
        await asyncio.wrap_future(written)
    except BaseException:
        with contextlib.suppress(concurrent.futures.CancelledError):
            written.result()
        raise


async def record(ctx: JobContext) -> Any:
    """`start <task> <pid> <retries>`, `steps` steps of `interval` seconds, `end <task> <pid>
    <retries>`; returns the pid that ran it to its end. A run stopped in its process (a
    cancel, or a replica giving up its jobs) writes `stop <task> <pid> <retries>` as it
    stops: nothing of that run comes after the line."""
    options = ctx.input if isinstance(ctx.input, dict) else {}
    path = str(options["record"])
    pid = os.getpid()
    try:
        await _append(path, f"start {ctx.task_id} {pid} {ctx.retries}")
        for step in range(int(options.get("steps", 1))):
            await asyncio.sleep(float(options.get("interval", 0.01)))
            ctx.progress(step + 1)
        await _append(path, f"end {ctx.task_id} {pid} {ctx.retries}")
    except BaseException:
        # here, in the loop's thread: an await could be cancelled again
        append(path, f"stop {ctx.task_id} {pid} {ctx.retries}")
        raise
    return {"pid": pid}
