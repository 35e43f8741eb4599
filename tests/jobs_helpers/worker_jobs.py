"""Functions the external-worker tests run in real `python -m service.worker` processes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from service.worker import PermanentFailure, WorkerTask


async def hold(task: WorkerTask) -> dict[str, Any]:
    """Reports progress 1, then waits until the file input["release"] exists."""
    task.progress(1)
    release = Path(task.input["release"])
    # The file comes from the test, another process: there is nothing to await but time.
    while not await asyncio.to_thread(release.exists):
        await asyncio.sleep(0.01)
    return {"released": True, "retries": task.retries}


async def spin(task: WorkerTask) -> None:
    """Reports ever-growing progress until it is cancelled; then writes the file
    input["marker"] (so a test sees that the work itself stopped)."""
    done = 0
    try:
        while True:
            done += 1
            task.progress(done)
            await asyncio.sleep(0.02)
    except asyncio.CancelledError:
        Path(task.input["marker"]).write_text(str(done))
        raise


def count(task: WorkerTask) -> dict[str, int]:
    """A plain function (run in a thread): counts to input["steps"], reporting each step."""
    steps = int(task.input["steps"])
    for step in range(1, steps + 1):
        task.progress(step)
    return {"counted": steps}


async def broken(task: WorkerTask) -> None:
    raise ValueError(task.input.get("message", "broken"))


async def hopeless(task: WorkerTask) -> None:
    raise PermanentFailure("no retry can mend this")


async def deep(task: WorkerTask) -> list[Any]:
    """Returns an array nested input["depth"] levels deep ([] is 1)."""
    value: list[Any] = []
    for _ in range(int(task.input["depth"]) - 1):
        value = [value]
    return value


async def big(task: WorkerTask) -> str:
    """Returns a string of input["size"] characters."""
    return "x" * int(task.input["size"])
