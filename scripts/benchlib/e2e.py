"""End to end: echo tasks submitted over HTTP and run to `success`, every step persisted.

Two parts on one fresh server:

- low load: `sequential` tasks submitted one at a time, each waited for (over one SSE
  subscription to the graph's events) until it is `success` before the next is sent, so
  every task finds the service idle;
- under load: `count` tasks submitted over `connections` keep-alive connections as fast
  as the service answers, while it runs them; done when the database holds all of them
  as `success`.

Figures come from the database, not the client: a task's dispatch latency is the
`create_ms` of its `task.status`/`running` event minus that of its `task.created` event
(each is the start time of the transaction that wrote it, in whole milliseconds, so a
single difference is exact to ±1 ms; the mean of many is unbiased). The rate is N over
the time from the client's first request (wall clock, just before it is written) to the
`create_ms` of the last `success` event. Every task's event sequence is checked.
The low-load part also gives a client-side figure with microsecond resolution: from
writing the POST to reading the task's `running` event on the stream (an upper bound:
it includes the HTTP answer path and the SSE delivery).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from .client import Connection, submit_many
from .server import BenchServer, run_loop
from .stats import mean, percentile

PATH = "/graphs/hugegraph/jobs/echo"
BODY = b'{"bench":1}'
EXPECTED = "new>queued>running>success"


class Watcher:
    """One subscriber of the graph's event stream: when each (task, status) was seen."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: dict[tuple[int, str], float] = {}
        self.changed = asyncio.Event()
        self.live = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watcher:
        self._session = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.live.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        await self._session.close()

    async def _run(self) -> None:
        async with self._session.get(
            f"{self.url}/graphs/hugegraph/events?type=echo",
            timeout=aiohttp.ClientTimeout(total=None),
        ) as response:
            response.raise_for_status()
            self.live.set()
            async for line in response.content:
                if not line.startswith(b"data:"):
                    continue
                now = time.perf_counter()
                data = orjson.loads(line[5:])
                status = data.get("task_status")
                if status is not None:
                    self.seen.setdefault((int(data["id"]), status), now)
                    self.changed.set()

    async def wait_for(self, task_id: int, status: str, within: float = 10.0) -> float:
        deadline = time.monotonic() + within
        while (task_id, status) not in self.seen:
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"task {task_id} not {status} within {within:g} s")
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                pass
        return self.seen[(task_id, status)]


def _db(server: BenchServer) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{server.db}?mode=ro", uri=True)


def task_figures(server: BenchServer, first: int, last: int) -> dict[str, Any]:
    """Per task of ids first..last: created, running and success times (ms) and its event
    sequence, from the events table."""
    with _db(server) as conn:
        rows = conn.execute(
            "SELECT task_id,"
            " MIN(CASE WHEN kind = 'task.created' THEN create_ms END),"
            " MIN(CASE WHEN kind = 'task.status' AND status = 'running' THEN create_ms END),"
            " MAX(CASE WHEN kind = 'task.status' AND status = 'success' THEN create_ms END)"
            " FROM events WHERE task_id BETWEEN ? AND ? GROUP BY task_id",
            (first, last),
        ).fetchall()
        sequences = Counter(
            dict(
                conn.execute(
                    "SELECT seq, COUNT(*) FROM (SELECT task_id, group_concat(status, '>') AS seq"
                    " FROM (SELECT task_id, status FROM events WHERE task_id BETWEEN ? AND ?"
                    " ORDER BY task_id, id) GROUP BY task_id) GROUP BY seq",
                    (first, last),
                ).fetchall()
            )
        )
        statuses = dict(
            conn.execute(
                "SELECT status, COUNT(*) FROM tasks WHERE id BETWEEN ? AND ? GROUP BY status",
                (first, last),
            ).fetchall()
        )
    dispatch = [
        running - created
        for _, created, running, _ in rows
        if created is not None and running is not None
    ]
    successes = [success for *_, success in rows if success is not None]
    return {
        "tasks": last - first + 1,
        "statuses": statuses,
        "sequences": dict(sequences.most_common(5)),
        "complete": sequences.get(EXPECTED, 0),
        "dispatch_ms": dispatch,
        "last_success_ms": max(successes) if successes else None,
        "first_created_ms": min((c for _, c, _, _ in rows if c is not None), default=None),
    }


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 0.50),
        "p99": percentile(values, 0.99),
        "mean": mean(values),
        "max": max(values, default=float("nan")),
    }


async def _low_load(server: BenchServer, count: int) -> dict[str, Any]:
    client_ms: list[float] = []
    ids: list[int] = []
    async with Watcher(server.url) as watcher:
        conn = await Connection.open(server.port)
        try:
            with server.cpu_window() as cpu:
                for _ in range(count):
                    sent = time.perf_counter()
                    status, payload = await conn.request("POST", PATH, BODY)
                    if status != 201:
                        raise RuntimeError(f"POST {PATH}: {status} {payload[:300]!r}")
                    task_id = int(orjson.loads(payload)["task_id"])
                    ids.append(task_id)
                    running = await watcher.wait_for(task_id, "running")
                    client_ms.append((running - sent) * 1000)
                    await watcher.wait_for(task_id, "success")
        finally:
            await conn.close()
    figures = task_figures(server, min(ids), max(ids))
    return {
        "tasks": count,
        "dispatch_ms": _summary(figures["dispatch_ms"]),
        "client_submit_to_running_ms": _summary(client_ms),
        "complete": figures["complete"],
        "sequences": figures["sequences"],
        "server_cpu": cpu.result(count),
    }


async def _under_load(
    server: BenchServer, count: int, connections: int, within: float
) -> dict[str, Any]:
    with server.cpu_window() as cpu:
        run = await submit_many(server.port, PATH, BODY, count, connections)
        first, last = min(run.task_ids), max(run.task_ids)
        if last - first + 1 != count:
            raise RuntimeError(f"expected {count} consecutive task ids, got {first}..{last}")
        deadline = time.monotonic() + within
        done = False
        with _db(server) as conn:
            while time.monotonic() < deadline:
                (finished,) = conn.execute(
                    "SELECT COUNT(*) FROM tasks WHERE id BETWEEN ? AND ? AND status IN ('success', 'failed', 'cancelled')",
                    (first, last),
                ).fetchone()
                if finished == count:
                    done = True
                    break
                await asyncio.sleep(0.05)
    figures = task_figures(server, first, last)
    success = figures["statuses"].get("success", 0)
    end_ms = figures["last_success_ms"]
    span_s = (end_ms / 1000 - run.first_sent) if end_ms is not None else float("nan")
    return {
        "tasks": count,
        "connections": connections,
        "finished": done,
        "success": success,
        "statuses": figures["statuses"],
        "complete": figures["complete"],
        "sequences": figures["sequences"],
        "seconds": span_s,
        "tasks_per_s": success / span_s if span_s > 0 else 0.0,
        "submit_seconds": run.last_answer - run.first_sent,
        "submits_per_s": count / (run.last_answer - run.first_sent),
        "submit_latency_ms": _summary(run.latencies_ms),
        "dispatch_ms": _summary(figures["dispatch_ms"]),
        "server_cpu": cpu.result(count),
    }


async def _measure(
    server: BenchServer, count: int, sequential: int, connections: int, within: float
) -> dict[str, Any]:
    low = await _low_load(server, sequential)
    load = await _under_load(server, count, connections, within)
    return {"low_load": low, "under_load": load}


def run_e2e(
    count: int,
    sequential: int,
    connections: int = 64,
    within: float = 180.0,
    db: Path | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """`within`: seconds the N tasks get, after the last submission, to finish; `db`: a
    database to start on (the backlog row's), else a fresh one."""
    with BenchServer(db=db, **settings) as server:
        result = run_loop(_measure(server, count, sequential, connections, within))
        result["rss_peak_mb"] = server.peak_rss_mb()
    result["settings"] = settings
    return result
