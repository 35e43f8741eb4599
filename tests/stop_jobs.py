"""Job types of the tests of stopping jobs: plain functions in threads that look at
`ctx.cancelled` or do not, and functions run in a child process (`run_in = "process"`).

Each run appends `start <task> <run>` and `end <task> <run>` lines to the file `log` of its
input (O_APPEND: one write per line), so a test can tell whether two runs ever overlapped.
Thread jobs wait on a threading.Event the test releases (`release(name)`); jobs in a child
process wait on a gate file.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from service.jobs import JobContext, PermanentFailure

#: how often a job looks at its gate file or its flag
POLL = 0.005
#: the longest a job waits for anything: a test that forgets to release it still ends
LONGEST = 60.0

#: the jobs run in the service, as the `jobs` setting names them
THREAD_JOBS = {
    "blind": "tests.stop_jobs:blind",
    "looking": "tests.stop_jobs:looking",
    "waits_for_flag": "tests.stop_jobs:waits_for_flag",
    # proc_fail run in a thread: the failure texts a child's must match
    "thread_fail": "tests.stop_jobs:proc_fail",
    "raises_cancelled": "tests.stop_jobs:raises_cancelled",
    "async_flag": "tests.stop_jobs:async_flag",
}
#: the jobs run in a child process
PROCESS_JOBS = {
    "proc_hold": {"call": "tests.stop_jobs:proc_hold", "run_in": "process"},
    "proc_async": {"call": "tests.stop_jobs:proc_async", "run_in": "process"},
    "proc_result": {"call": "tests.stop_jobs:proc_result", "run_in": "process"},
    "proc_fail": {"call": "tests.stop_jobs:proc_fail", "run_in": "process"},
    "proc_echo": {"call": "service.jobs.echo:run", "run_in": "process"},
}

_gates: dict[str, threading.Event] = {}
_gates_lock = threading.Lock()


def gate(name: str) -> threading.Event:
    with _gates_lock:
        return _gates.setdefault(name, threading.Event())


def release(name: str) -> None:
    gate(name).set()


def _options(ctx: JobContext) -> dict[str, Any]:
    return ctx.input if isinstance(ctx.input, dict) else {}


def note(ctx: JobContext, what: str) -> None:
    """Appends `what <task> <run>` to the input's `log` file in one write."""
    path = _options(ctx).get("log")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{what} {ctx.task_id} {ctx.retries}\n".encode())
        finally:
            os.close(fd)


def lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


# --- in the service's threads ---


def blind(ctx: JobContext) -> Any:
    """Never looks at ctx.cancelled: blocks until the test releases `gate`, reports
    progress 1 and 2 on the way."""
    note(ctx, "start")
    ctx.progress(1)
    released = gate(_options(ctx)["gate"]).wait(LONGEST)
    ctx.progress(2)
    note(ctx, "end")
    return {"released": released}


def looking(ctx: JobContext) -> Any:
    """A loop that stops when cancelled: ctx.raise_if_cancelled() at each step."""
    note(ctx, "start")
    deadline = time.monotonic() + LONGEST
    step = 0
    try:
        while time.monotonic() < deadline:
            ctx.raise_if_cancelled()
            step += 1
            ctx.progress(step)
            time.sleep(POLL)
    finally:
        note(ctx, "end")
    return "never cancelled"


def waits_for_flag(ctx: JobContext) -> Any:
    """Notes when ctx.cancelled becomes true (a timeout sets it), then blocks until the test
    releases `gate` anyway: a job that takes its time to stop."""
    note(ctx, "start")
    deadline = time.monotonic() + LONGEST
    while not ctx.cancelled and time.monotonic() < deadline:
        time.sleep(POLL)
    note(ctx, "flag" if ctx.cancelled else "no-flag")
    gate(_options(ctx)["gate"]).wait(LONGEST)
    note(ctx, "end")
    return "finished late"


async def async_flag(ctx: JobContext) -> Any:
    """An async job that notes, as its cancel (or timeout) arrives, whether ctx.cancelled
    was already set."""
    note(ctx, "start")
    try:
        await asyncio.sleep(LONGEST)
    except asyncio.CancelledError:
        note(ctx, "flag" if ctx.cancelled else "no-flag")
        raise
    return "slept"


async def raises_cancelled(ctx: JobContext) -> Any:
    """Raises CancelledError though no one cancelled it (an inner operation's, leaking out)."""
    raise asyncio.CancelledError("an inner operation was cancelled")


# --- in a child process ---


def _write_pid(ctx: JobContext) -> None:
    path = _options(ctx).get("pid_file")
    if path:
        Path(path + ".tmp").write_text(str(os.getpid()))
        os.replace(path + ".tmp", path)  # the test never reads half a pid


def proc_hold(ctx: JobContext) -> Any:
    """Writes its pid to `pid_file`, reports progress 1 then 2, and waits for the file
    `path`. With `ignore_term`, SIGTERM is ignored (it then takes SIGKILL to stop it); with
    `cleanup`, a cancel writes that file on its way out."""
    options = _options(ctx)
    if options.get("ignore_term"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    note(ctx, "start")
    _write_pid(ctx)
    ctx.progress(1)
    ctx.progress(2)
    try:
        deadline = time.monotonic() + LONGEST
        while not Path(options["path"]).exists():
            if time.monotonic() > deadline:
                raise RuntimeError("gate never opened")
            time.sleep(POLL)
    finally:
        if ctx.cancelled and options.get("cleanup"):
            Path(options["cleanup"]).write_text("cleaned up")
    note(ctx, "end")
    return {"pid": os.getpid()}


async def proc_async(ctx: JobContext) -> Any:
    """An async job in a child process: a cancel interrupts its await; its `finally` runs."""
    options = _options(ctx)
    _write_pid(ctx)
    try:
        while not Path(options["path"]).exists():
            await asyncio.sleep(POLL)
    finally:
        if ctx.cancelled:
            Path(options["cleanup"]).write_text("cleaned up")
    return "done"


def proc_result(ctx: JobContext) -> Any:
    """Reports progress 1..`steps` in a tight loop (of `total`, when given) and returns
    what it saw."""
    steps = int(_options(ctx).get("steps", 3))
    total = _options(ctx).get("total")
    for value in range(1, steps + 1):
        ctx.progress(value, total=total)
    return {
        "pid": os.getpid(),
        "input": ctx.input,
        "retries": ctx.retries,
        "graph": str(ctx.graph),
        "task_id": ctx.task_id,
        "kill_grace": ctx.settings.kill_grace,
        "task_env": os.environ.get("SIDETASK_TASK_ID"),
    }


def proc_fail(ctx: JobContext) -> Any:
    """Raises ValueError, PermanentFailure, returns what JSON cannot hold or what is nested
    too deeply, or exits (`how`)."""
    how = _options(ctx).get("how")
    if how == "permanent":
        raise PermanentFailure("the input names no such graph")
    if how == "unserialisable":
        return {"a set": {1, 2}}
    if how == "deep":
        value: Any = []
        for _ in range(300):
            value = [value]
        return value
    if how == "exit":
        os._exit(3)
    raise ValueError(f"bad value in run {ctx.retries + 1}")
