"""The peer: Huey with its SQLite storage (SqliteHuey), the same no-op job as sidetask's echo.

This module is both Huey's application (imported by the real consumer,
`python -m huey.bin.huey_consumer benchlib.huey_peer.huey`) and the producer
(`benchlib.huey_peer.main(["enqueue", N, THREADS])`, which prints its timing as JSON; not
`python -m`, under which the task would be registered as `__main__.echo`).
BENCH_HUEY_DB names the database file, BENCH_HUEY_STATE a directory where the consumer
writes the wall-clock time its first worker started (`started`) and the time the
BENCH_HUEY_COUNT-th task completed (`done`); a task that errs is written to `errors`.
The timestamps come from Huey's own hooks (a startup hook, the `complete` and `error`
signals), so the consumer is not polled and its imports are not counted.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from huey import SqliteHuey, signals

#: fsync=True is `PRAGMA synchronous = FULL` (WAL), as sidetask writes: a task is on disk
#: when enqueue returns. Results are stored (Huey's default), as sidetask stores its own.
huey = SqliteHuey("bench", filename=os.environ.get("BENCH_HUEY_DB", "huey.db"), fsync=True)

_STATE = Path(os.environ.get("BENCH_HUEY_STATE", "."))
_COUNT = int(os.environ.get("BENCH_HUEY_COUNT", "0"))
_lock = threading.Lock()
_completed = 0


@huey.task()
def echo(data: Any) -> Any:
    return data


def _write_once(name: str, value: float) -> None:
    try:
        fd = os.open(_STATE / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as handle:
        handle.write(repr(value))


@huey.on_startup()
def _started() -> None:
    _write_once("started", time.time())


@huey.signal(signals.SIGNAL_COMPLETE)
def _complete(signal: str, task: Any) -> None:
    global _completed
    with _lock:
        _completed += 1
        if _completed == _COUNT:
            _write_once("done", time.time())


@huey.signal(signals.SIGNAL_ERROR)
def _error(signal: str, task: Any, exc: Exception | None = None) -> None:
    with _lock, (_STATE / "errors").open("a") as handle:
        handle.write(f"{task}: {exc!r}\n")


def enqueue(count: int, threads: int) -> dict[str, float]:
    """Enqueues `count` echo tasks from `threads` threads; wall-clock start and end, and
    the CPU seconds the producer spent enqueueing (its imports not counted)."""
    share = [count // threads + (1 if i < count % threads else 0) for i in range(threads)]

    def produce(n: int) -> None:
        for _ in range(n):
            echo({"bench": 1})

    workers = [threading.Thread(target=produce, args=(n,)) for n in share]
    start = time.time()
    cpu_start = time.process_time()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    end = time.time()
    return {"start": start, "end": end, "cpu_s": time.process_time() - cpu_start}


def main(argv: list[str]) -> None:
    if len(argv) != 3 or argv[0] != "enqueue":
        sys.exit("usage: main(['enqueue', COUNT, THREADS])")
    print(json.dumps(enqueue(int(argv[1]), int(argv[2]))))
