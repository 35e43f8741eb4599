"""Job types the supervisor tests register through the `jobs` setting ("module:callable").

Jobs that must wait do so on a gate file named in their input: the test creates the file to
let them go. A file works the same for a job in this process and in a server subprocess.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from service.jobs import JobContext

#: how often a job looks at its gate file; the job polls, the test never sleeps
POLL = 0.005

#: every helper job, as the `jobs` setting names them
JOBS = {
    "gate": "tests.sup_jobs:gate",
    "gate_first_run": "tests.sup_jobs:gate_first_run",
    "stubborn": "tests.sup_jobs:stubborn",
    "swallow": "tests.sup_jobs:swallow",
    "burst": "tests.sup_jobs:burst",
    "sync_gate": "tests.sup_jobs:sync_gate",
    "sync_burst": "tests.sup_jobs:sync_burst",
    "raises_timeout": "tests.sup_jobs:raises_timeout",
    "fail_first": "tests.sup_jobs:fail_first",
    "deep": "tests.sup_jobs:deep",
}


def _options(ctx: JobContext) -> dict[str, Any]:
    return ctx.input if isinstance(ctx.input, dict) else {}


def _touch(path: str | None) -> None:
    if path:
        Path(path).touch()


async def _wait_file(path: str) -> None:
    while not Path(path).exists():
        await asyncio.sleep(POLL)


async def gate(ctx: JobContext) -> Any:
    """Touches `started`, waits for the file `path`, touches `done`, returns `result`."""
    options = _options(ctx)
    _touch(options.get("started"))
    await _wait_file(options["path"])
    if "progress" in options:
        ctx.progress(options["progress"])
    _touch(options.get("done"))
    return options.get("result", "done")


async def gate_first_run(ctx: JobContext) -> Any:
    """The first run waits for `path` (a file no one creates); a re-run returns at once."""
    options = _options(ctx)
    if ctx.retries == 0:
        _touch(options.get("started"))
        await _wait_file(options["path"])
    return f"run {ctx.retries + 1}"


async def stubborn(ctx: JobContext) -> Any:
    """Ignores cancellation until the file `path` exists, then returns."""
    options = _options(ctx)
    while not Path(options["path"]).exists():
        try:
            await asyncio.sleep(POLL)
        except asyncio.CancelledError:
            _touch(options.get("cancel_seen"))
            continue  # deliberately swallowed: this job does not cooperate
    return "finished anyway"


async def swallow(ctx: JobContext) -> Any:
    """Waits for `path`; a cancel is swallowed and the job returns as if it had succeeded."""
    options = _options(ctx)
    try:
        await _wait_file(options["path"])
    except asyncio.CancelledError:
        return "swallowed the cancel"
    return "done"


async def burst(ctx: JobContext) -> Any:
    """Reports progress `count` times in a tight loop (yielding every 1000 calls), then waits
    for `path` when given, and returns the count."""
    options = _options(ctx)
    count = int(options.get("count", 100_000))
    for value in range(1, count + 1):
        ctx.progress(value)
        if value % 1000 == 0:
            await asyncio.sleep(0)
    _touch(options.get("reported"))
    if "path" in options:
        await _wait_file(options["path"])
    return count


def sync_gate(ctx: JobContext) -> Any:
    """A plain function: blocks its thread until the file `path` exists."""
    options = _options(ctx)
    _touch(options.get("started"))
    deadline = time.monotonic() + 60
    while not Path(options["path"]).exists():
        if time.monotonic() > deadline:
            raise RuntimeError("gate never opened")
        time.sleep(POLL)
    return {"main_thread": threading.current_thread() is threading.main_thread()}


def sync_burst(ctx: JobContext) -> Any:
    """A plain function reporting progress `count` times in a tight loop."""
    count = int(_options(ctx).get("count", 100_000))
    for value in range(1, count + 1):
        ctx.progress(value)
    return count


async def raises_timeout(ctx: JobContext) -> Any:
    """A job whose own operation times out: a TimeoutError that is not the task's timeout."""
    raise TimeoutError("the upstream call took too long")


async def fail_first(ctx: JobContext) -> Any:
    """Fails while it has been retried fewer than `failures` times, then succeeds."""
    failures = int(_options(ctx).get("failures", 1))
    if ctx.retries < failures:
        raise RuntimeError(f"failure {ctx.retries + 1} of {failures}")
    return ctx.retries


async def deep(ctx: JobContext) -> Any:
    """Returns an array nested `depth` levels deep ([] is 1), or with `cycle` one that
    contains itself."""
    options = _options(ctx)
    if options.get("cycle"):
        cycle: list[Any] = []
        cycle.append(cycle)
        return cycle
    value: list[Any] = []
    for _ in range(int(options["depth"]) - 1):
        value = [value]
    return value
