"""The PostgreSQL peer: procrastinate, the same no-op job as sidetask's echo.

This module is both procrastinate's application (named to its own worker,
`procrastinate --app benchlib.procrastinate_peer.app worker`) and the producer
(`benchlib.procrastinate_peer.main(["defer", N, CONCURRENCY])`, which prints its timing as
JSON; not `python -m`, under which the task would be registered as `__main__.echo`).
BENCH_PROCRASTINATE_DSN names the database (its schema applied by
`main(["schema"])`), BENCH_PROCRASTINATE_POOL the size of the connection pool (the
worker's slots each hold a connection while they fetch or finish a job; too few would
make them queue for one).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import procrastinate

_POOL = int(os.environ.get("BENCH_PROCRASTINATE_POOL", "16"))

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(
        conninfo=os.environ.get("BENCH_PROCRASTINATE_DSN", ""),
        min_size=1,
        max_size=_POOL,
    )
)


@app.task(name="echo")
async def echo(bench: Any = None) -> Any:
    return bench


async def defer(count: int, concurrency: int) -> dict[str, float]:
    """Defers `count` echo jobs, one `defer_async` each (one INSERT, its own commit), from
    `concurrency` coroutines at once; wall-clock start and end, and the producer's CPU
    seconds meanwhile (its imports and the pool's opening not counted)."""
    async with app.open_async():
        await app.check_connection_async()  # the pool is open before the clock starts
        left = count

        async def produce() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await echo.defer_async(bench=1)

        start = time.time()
        cpu_start = time.process_time()
        await asyncio.gather(*(produce() for _ in range(concurrency)))
        end = time.time()
        cpu = time.process_time() - cpu_start
    return {"start": start, "end": end, "cpu_s": cpu}


async def apply_schema() -> None:
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


def main(argv: list[str]) -> None:
    if argv[:1] == ["schema"]:
        asyncio.run(apply_schema())
        return
    if len(argv) != 3 or argv[0] != "defer":
        sys.exit("usage: main(['defer', COUNT, CONCURRENCY]) or main(['schema'])")
    print(json.dumps(asyncio.run(defer(int(argv[1]), int(argv[2])))))
