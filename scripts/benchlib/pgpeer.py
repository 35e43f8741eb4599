"""The PostgreSQL peer row: procrastinate on the PostgreSQL rows' server (benchlib.pg).

Its worker is procrastinate's own (`procrastinate --app benchlib.procrastinate_peer.app
worker --concurrency C`), in its own process; the producer is another process
(benchlib.procrastinate_peer), deferring one job per `defer_async` from 64 coroutines.
Two runs of N jobs for each concurrency, each on a fresh database of the same server:

- sequential: N deferred with no worker running (defers/s), then the worker started with
  `--one-shot` (it stops once the queue is empty), timed from its first job's `started`
  event to the last job's `succeeded` event (executions/s); defer-plus-execute = N / (defer time +
  execute time);
- concurrent: the worker running when the producer starts; N / (the first defer -> the
  last `succeeded` event), the shape of sidetask's end-to-end figure.

Times of the end come from procrastinate's own events table (`at`: the database's clock,
the transaction's start), as sidetask's come from its events. Every job must be
`succeeded`. CPU per job: the worker's (/proc), the producer's, and the PostgreSQL
server's, over the concurrent run.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from . import cpu
from .pg import PgBench
from .server import ROOT, child_env, run_loop, run_python, work_dir

APP = "benchlib.procrastinate_peer.app"
#: the producer's coroutines (sidetask's submissions come over as many connections)
PRODUCERS = 64


def version() -> str:
    try:
        from importlib.metadata import version as installed
    except ImportError:  # pragma: no cover
        return "missing"
    try:
        return installed("procrastinate")
    except Exception:
        return "missing"


class _Run:
    def __init__(self, pg: PgBench, count: int, concurrency: int) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="procrastinate-", dir=work_dir()))
        self.dsn = pg.fresh_database("procrastinate")
        self.count = count
        self.concurrency = concurrency
        self.env = {
            **child_env(),
            "BENCH_PROCRASTINATE_DSN": self.dsn,
            # a connection for each slot, the listener and the heartbeat
            "BENCH_PROCRASTINATE_POOL": str(concurrency + 2),
        }
        self.worker: subprocess.Popen[bytes] | None = None
        self._python("from benchlib.procrastinate_peer import main; main(['schema'])")

    def _python(self, code: str) -> str:
        return run_python(code, self.env, f"procrastinate: {code!r}")

    def defer(self) -> dict[str, float]:
        env = {**self.env, "BENCH_PROCRASTINATE_POOL": "16"}
        out = run_python(
            "from benchlib.procrastinate_peer import main; "
            f"main(['defer', '{self.count}', '{PRODUCERS}'])",
            env,
            "procrastinate producer",
        )
        return dict(json.loads(out.strip().splitlines()[-1]))

    def start_worker(self, one_shot: bool) -> None:
        log = (self.dir / "worker.log").open("ab")
        self.worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "procrastinate",
                "--app",
                APP,
                "worker",
                "--concurrency",
                str(self.concurrency),
                *(["--one-shot"] if one_shot else []),
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def wait_workers_registered(self, timeout: float = 60) -> None:
        """The worker is polling: its row is in procrastinate_workers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.query("SELECT COUNT(*) FROM procrastinate_workers")[0][0]:
                return
            self._check_alive()
            time.sleep(0.02)
        raise TimeoutError("procrastinate worker not registered")

    def _check_alive(self) -> None:
        if self.worker is not None and self.worker.poll() is not None and self.worker.returncode:
            raise RuntimeError(f"procrastinate worker exited: {self._log_tail()}")

    def wait_done(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            (done,) = self.query(
                "SELECT COUNT(*) FROM procrastinate_jobs WHERE status IN ('succeeded', 'failed')"
            )[0]
            if done >= self.count:
                return
            self._check_alive()
            time.sleep(0.05)
        raise TimeoutError(f"procrastinate: not all {self.count} jobs done within {timeout:g} s")

    def query(self, sql: str) -> list[Any]:
        async def go() -> list[Any]:
            conn = await asyncpg.connect(self.dsn)
            try:
                return list(await conn.fetch(sql))
            finally:
                await conn.close()

        return run_loop(go())

    def event_time(self, kind: str, last: bool = True) -> float:
        """The wall-clock time (epoch s) of the last (or first) event of `kind`."""
        (at,) = self.query(
            f"SELECT EXTRACT(EPOCH FROM {'MAX' if last else 'MIN'}(at)) FROM procrastinate_events"
            f" WHERE type = '{kind}'"
        )[0]
        return float(at)

    def check(self) -> dict[str, Any]:
        statuses = dict(
            (str(s), int(n))
            for s, n in self.query(
                "SELECT status, COUNT(*) FROM procrastinate_jobs GROUP BY status"
            )
        )
        return {"statuses": statuses, "succeeded": statuses.get("succeeded", 0)}

    def _log_tail(self) -> str:
        return (self.dir / "worker.log").read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.send_signal(signal.SIGINT)  # its graceful stop
            try:
                self.worker.wait(30)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait()


def run_procrastinate(
    pg: PgBench, count: int, concurrency: int = 16, timeout: float = 600.0
) -> dict[str, Any]:
    sequential = _Run(pg, count, concurrency)
    try:
        deferred = sequential.defer()
        defer_s = deferred["end"] - deferred["start"]
        sequential.start_worker(one_shot=True)
        sequential.wait_done(timeout)
        # from its first job's start: the interpreter's start and imports are not counted
        execute_s = sequential.event_time("succeeded") - sequential.event_time("started", False)
    finally:
        sequential.stop()
    seq_check = sequential.check()

    concurrent = _Run(pg, count, concurrency)
    try:
        concurrent.start_worker(one_shot=False)
        concurrent.wait_workers_registered()
        assert concurrent.worker is not None
        with cpu.Window(concurrent.worker.pid) as worker_cpu, pg.cpu_window() as pg_cpu:
            produced = concurrent.defer()
            concurrent.wait_done(timeout)
        concurrent_s = concurrent.event_time("succeeded") - produced["start"]
    finally:
        concurrent.stop()
    con_check = concurrent.check()

    return {
        "tasks": count,
        "concurrency": concurrency,
        "producers": PRODUCERS,
        "defer_seconds": defer_s,
        "defers_per_s": count / defer_s,
        "execute_seconds": execute_s,
        "executions_per_s": count / execute_s,
        "defer_plus_execute_per_s": count / (defer_s + execute_s),
        "concurrent_seconds": concurrent_s,
        "concurrent_per_s": count / concurrent_s,
        "concurrent_defer_seconds": produced["end"] - produced["start"],
        "sequential_check": seq_check,
        "concurrent_check": con_check,
        "worker_cpu": worker_cpu.result(count),
        "producer_cpu_us_per_task": produced["cpu_s"] * 1e6 / count,
        "postgres_cpu": pg_cpu.result(count),
    }
