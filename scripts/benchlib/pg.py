"""The PostgreSQL rows: sidetask on PostgreSQL with one replica and with two on the same
database, and procrastinate (the peer) on the same server with the same no-op job.

One throwaway PostgreSQL server (tests.pgserver.PgServer, fsync on: the durable setting)
serves the three rows, each on a fresh database of its own. A sidetask row: N echo tasks
submitted over 64 keep-alive connections (split evenly over the replicas, 32 each with
two) while the replicas run them; done when the database holds all N finished. Figures
from the database, as the SQLite row's: tasks/s = N / (the client's first request -> the
`create_ms` of the last `success` event); every task's event sequence is checked (each
step once: a task run twice would show it). CPU per task: every replica's (summed, and
each apart) and the PostgreSQL server's own (the postmaster and every backend, from
/proc), over the same window.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import asyncpg

from . import cpu
from .client import SubmitRun, submit_many
from .server import BenchServer, run_loop
from .stats import mean, percentile

PATH = "/graphs/hugegraph/jobs/echo"
BODY = b'{"bench":1}'
#: a task's events on a store several processes share (SPEC 3: claimed, handed to a
#: slot, confirmed, running, ended)
EXPECTED = "new>scheduling>scheduled>queued>running>success"
SCHEMA = "sidetask"


class PgBench:
    """The rows' PostgreSQL server: started with fsync on, stopped at the end."""

    def __init__(self) -> None:
        from tests.pgserver import PgServer

        self.server = PgServer(fsync=True)
        self._databases = 0

    def __enter__(self) -> PgBench:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    def fresh_database(self, prefix: str) -> str:
        self._databases += 1
        return self.server.create_database(f"{prefix}_{self._databases}")

    def postmaster(self) -> int:
        """The server's first process (every backend is its child)."""
        return int((self.server.data / "postmaster.pid").read_text().split()[0])

    def cpu_window(self) -> cpu.Window:
        return cpu.Window(self.postmaster())

    def version(self) -> str:
        return self.server.psql("SHOW server_version").strip()


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 0.50),
        "p99": percentile(values, 0.99),
        "mean": mean(values),
        "max": max(values, default=float("nan")),
    }


async def _figures(conn: asyncpg.Connection, first: int, last: int) -> dict[str, Any]:
    rows = await conn.fetch(
        f"SELECT task_id,"
        " MIN(create_ms) FILTER (WHERE kind = 'task.created'),"
        " MIN(create_ms) FILTER (WHERE kind = 'task.status' AND status = 'running'),"
        " MAX(create_ms) FILTER (WHERE kind = 'task.status' AND status = 'success'),"
        " string_agg(status, '>' ORDER BY id)"
        f" FROM {SCHEMA}.events WHERE task_id BETWEEN $1 AND $2 GROUP BY task_id",
        first,
        last,
    )
    statuses = dict(
        await conn.fetch(
            f"SELECT status, COUNT(*) FROM {SCHEMA}.tasks WHERE id BETWEEN $1 AND $2 GROUP BY status",
            first,
            last,
        )
    )
    sequences = Counter(row[4] for row in rows)
    successes = [row[3] for row in rows if row[3] is not None]
    return {
        "statuses": statuses,
        "sequences": dict(sequences.most_common(5)),
        "complete": sequences.get(EXPECTED, 0),
        "dispatch_ms": [r[2] - r[1] for r in rows if r[1] is not None and r[2] is not None],
        "last_success_ms": max(successes) if successes else None,
    }


#: tasks each replica runs before the measured window (its connections, prepared
#: statements and the database's caches warm, as row 3's low-load part warms its server)
WARMUP = 200


async def _wait_done(
    conn: asyncpg.Connection, seen: int, first: int, last: int, within: float
) -> tuple[bool, int]:
    """Until every task of ids first..last has ended (or `within` s): whether they all
    did, and the last event id read. Reads the events after the last one read (by the
    primary key), so the poll's own cost in the PostgreSQL server stays small and does
    not grow with the tasks done."""
    deadline = time.monotonic() + within
    finished = 0
    while time.monotonic() < deadline:
        top, ended = await conn.fetchrow(
            f"SELECT max(id), count(*) FILTER (WHERE kind = 'task.status'"
            " AND status IN ('success', 'failed', 'cancelled') AND task_id BETWEEN $2 AND $3)"
            f" FROM {SCHEMA}.events WHERE id > $1",
            seen,
            first,
            last,
        )
        if top is not None:
            seen, finished = int(top), finished + int(ended)
        if finished >= last - first + 1:
            return True, seen
        await asyncio.sleep(0.05)
    return False, seen


async def _warm_up(servers: list[BenchServer], conn: asyncpg.Connection) -> int:
    """WARMUP tasks through each replica, waited for; the last event id then."""
    seen = int(await conn.fetchval(f"SELECT coalesce(max(id), 0) FROM {SCHEMA}.events"))
    runs = await asyncio.gather(*(submit_many(s.port, PATH, BODY, WARMUP, 8) for s in servers))
    ids = [i for run in runs for i in run.task_ids]
    done, seen = await _wait_done(conn, seen, min(ids), max(ids), 60)
    if not done:
        raise RuntimeError(f"the {len(ids)} warm-up tasks did not all end within 60 s")
    return seen


async def _run(
    servers: list[BenchServer],
    pg: PgBench,
    dsn: str,
    count: int,
    connections: int,
    within: float,
) -> dict[str, Any]:
    shares = [
        count // len(servers) + (1 if i < count % len(servers) else 0) for i in range(len(servers))
    ]
    conns = [connections // len(servers)] * len(servers)
    windows = [s.cpu_window() for s in servers]
    pg_window = pg.cpu_window()
    conn = await asyncpg.connect(dsn)
    try:
        seen = await _warm_up(servers, conn)
        stolen = cpu.Stolen()
        stolen.start()
        pg_window.start()
        for w in windows:
            w.start()
        runs: list[SubmitRun] = list(
            await asyncio.gather(
                *(
                    submit_many(s.port, PATH, BODY, n, c)
                    for s, n, c in zip(servers, shares, conns, strict=True)
                )
            )
        )
        ids = [i for run in runs for i in run.task_ids]
        first, last = min(ids), max(ids)
        if last - first + 1 != count or len(set(ids)) != count:
            raise RuntimeError(f"expected {count} consecutive task ids, got {first}..{last}")
        done, _ = await _wait_done(conn, seen, first, last, within)
        for w in windows:
            w.stop()
        pg_window.stop()
        stolen_share = stolen.share()
        figures = await _figures(conn, first, last)
    finally:
        await conn.close()
    first_sent = min(run.first_sent for run in runs)
    last_answer = max(run.last_answer for run in runs)
    end_ms = figures["last_success_ms"]
    span_s = (end_ms / 1000 - first_sent) if end_ms is not None else float("nan")
    success = figures["statuses"].get("success", 0)
    replicas = [w.result(count) for w in windows]
    return {
        "tasks": count,
        "replicas": len(servers),
        "connections": sum(conns),
        "finished": done,
        "success": success,
        "statuses": figures["statuses"],
        "complete": figures["complete"],
        "sequences": figures["sequences"],
        "seconds": span_s,
        "tasks_per_s": success / span_s if span_s > 0 else 0.0,
        "submit_seconds": last_answer - first_sent,
        "submits_per_s": count / (last_answer - first_sent),
        "submit_latency_ms": _summary([ms for run in runs for ms in run.latencies_ms]),
        "dispatch_ms": _summary(figures["dispatch_ms"]),
        "tasks_per_replica": [
            len(run.task_ids) for run in runs
        ],  # submitted to each; run by whichever claimed
        "replica_cpu": replicas,
        "server_cpu": _sum_windows(replicas, count),
        "postgres_cpu": pg_window.result(count),
        "stolen": stolen_share,
    }


def _sum_windows(windows: list[dict[str, Any]], units: int) -> dict[str, Any]:
    """Several processes' windows as one: their µs summed, cores summed."""
    total: dict[str, Any] = {
        "seconds": max(w["seconds"] for w in windows),
        "children_us": {},
        "writer_threads": sum(w["writer_threads"] for w in windows),
        "tick_us": windows[0]["tick_us"],
        "cores": sum(w["cores"] for w in windows),
    }
    for key in ("total_us", "loop_us", "writer_us", "other_us", "reaped_us"):
        total[key] = sum(w[key] for w in windows)
    for w in windows:
        for name, us in w["children_us"].items():
            total["children_us"][name] = total["children_us"].get(name, 0) + us
    total["units"] = units
    total["per_unit"] = cpu.per_unit(total, units)
    return total


def run_pg_e2e(
    pg: PgBench,
    count: int,
    replicas: int = 1,
    connections: int = 64,
    within: float = 180.0,
    **settings: Any,
) -> dict[str, Any]:
    """N echo tasks through `replicas` sidetask servers on one fresh database."""
    dsn = pg.fresh_database(f"sidetask_r{replicas}")
    servers: list[BenchServer] = []
    try:
        for _ in range(replicas):
            servers.append(BenchServer(db=dsn, **settings))  # type: ignore[arg-type]
        result = run_loop(_run(servers, pg, dsn, count, connections, within))
        result["rss_peak_mb"] = [s.peak_rss_mb() for s in servers]
    finally:
        for s in servers:
            s.stop()
    result["settings"] = settings
    return result
