"""The peer row: Huey (SqliteHuey, a real file in the benchmark's temp directory).

The consumer is Huey's own (`huey.bin.huey_consumer`) in its own process with thread
workers; the producer is another process (benchlib.huey_peer). Two runs of N tasks, each
on a fresh database:

- sequential: the producer enqueues N with no consumer running (enqueues/s), then the
  consumer starts and executes them (executions/s, from its first worker's start to the
  N-th `complete` signal). Enqueue-plus-execute rate = N / (enqueue time + execute time).
- concurrent: the consumer is running when the producer starts; N / (time from the first
  enqueue to the N-th completion), the same shape as sidetask's end-to-end figure.

Every task's result must be stored and no task may err.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import cpu
from .server import ROOT, child_env, run_python, work_dir

#: the consumer's queue polling: Huey's default waits 0.1 s growing to 10 s on an empty
#: queue, which would leave the concurrent run's workers asleep; these keep them close.
POLL_DELAY = 0.01
POLL_MAX_DELAY = 0.1


def version() -> str:
    try:
        import huey
    except ImportError:
        return "missing"
    return str(huey.__version__)


class _Run:
    def __init__(self, count: int) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="huey-", dir=work_dir()))
        self.db = self.dir / "huey.db"
        self.count = count
        self.env = {
            **child_env(),
            "BENCH_HUEY_DB": str(self.db),
            "BENCH_HUEY_STATE": str(self.dir),
            "BENCH_HUEY_COUNT": str(count),
        }
        self.consumer: subprocess.Popen[bytes] | None = None

    def enqueue(self, threads: int) -> dict[str, float]:
        out = run_python(
            f"from benchlib.huey_peer import main; main(['enqueue', '{self.count}', '{threads}'])",
            self.env,
            "huey producer",
        )
        return dict(json.loads(out.strip().splitlines()[-1]))

    def start_consumer(self, workers: int) -> None:
        log = (self.dir / "consumer.log").open("wb")
        self.consumer = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "huey.bin.huey_consumer",
                "benchlib.huey_peer.huey",
                "-w",
                str(workers),
                "-k",
                "thread",
                "-n",
                "-d",
                str(POLL_DELAY),
                "-m",
                str(POLL_MAX_DELAY),
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def wait_file(self, name: str, timeout: float) -> float:
        """The time written in `name`; fails when the consumer dies, times out, or has had
        an empty queue for 5 s without the file appearing (tasks lost or failing)."""
        path = self.dir / name
        deadline = time.monotonic() + timeout
        empty_since: float | None = None
        next_look = time.monotonic() + 1
        while time.monotonic() < deadline:
            if path.exists() and path.stat().st_size:
                return float(path.read_text())
            if self.consumer is not None and self.consumer.poll() is not None:
                raise RuntimeError(f"huey consumer exited: {self._log_tail()}")
            if name == "done" and time.monotonic() >= next_look:
                next_look = time.monotonic() + 1
                if self.check()["left_in_queue"] == 0:
                    empty_since = empty_since or time.monotonic()
                    if time.monotonic() - empty_since > 5:
                        raise RuntimeError(
                            f"huey: queue empty but {name} missing: {self.check()} {self._log_tail()}"
                        )
                else:
                    empty_since = None
            time.sleep(0.002)
        raise TimeoutError(f"huey: no {name} within {timeout:g} s")

    def _log_tail(self) -> str:
        return (self.dir / "consumer.log").read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.consumer is not None and self.consumer.poll() is None:
            self.consumer.send_signal(signal.SIGINT)  # Huey's graceful stop
            try:
                self.consumer.wait(30)
            except subprocess.TimeoutExpired:
                self.consumer.kill()
                self.consumer.wait()

    def check(self) -> dict[str, Any]:
        with sqlite3.connect(self.db, timeout=10) as conn:
            (queued,) = conn.execute("SELECT COUNT(*) FROM task").fetchone()
            (results,) = conn.execute("SELECT COUNT(*) FROM kv").fetchone()
        errors = self.dir / "errors"
        return {
            "left_in_queue": queued,
            "results_stored": results,
            "errors": len(errors.read_text().splitlines()) if errors.exists() else 0,
        }


def run_peer(
    count: int, workers: int = 4, producer_threads: int = 1, timeout: float = 300.0
) -> dict[str, Any]:
    sequential = _Run(count)
    try:
        enqueued = sequential.enqueue(producer_threads)
        enqueue_s = enqueued["end"] - enqueued["start"]
        sequential.start_consumer(workers)
        started = sequential.wait_file("started", 60)
        done = sequential.wait_file("done", timeout)
        execute_s = done - started
    finally:
        sequential.stop()
    seq_check = sequential.check()

    concurrent = _Run(count)
    try:
        concurrent.start_consumer(workers)
        concurrent.wait_file("started", 60)
        assert concurrent.consumer is not None
        with cpu.Window(concurrent.consumer.pid) as consumer_cpu:
            produced = concurrent.enqueue(producer_threads)
            done = concurrent.wait_file("done", timeout)
        concurrent_s = done - produced["start"]
    finally:
        concurrent.stop()
    con_check = concurrent.check()

    return {
        "tasks": count,
        "workers": workers,
        "producer_threads": producer_threads,
        "enqueue_seconds": enqueue_s,
        "enqueues_per_s": count / enqueue_s,
        "execute_seconds": execute_s,
        "executions_per_s": count / execute_s,
        "enqueue_plus_execute_per_s": count / (enqueue_s + execute_s),
        "concurrent_seconds": concurrent_s,
        "concurrent_per_s": count / concurrent_s,
        "concurrent_enqueue_seconds": produced["end"] - produced["start"],
        "sequential_check": seq_check,
        "concurrent_check": con_check,
        # the concurrent part: the consumer's CPU (benchlib.cpu) and the producer's
        # (Huey's enqueue is the SQLite insert sidetask's server does), per task
        "consumer_cpu": consumer_cpu.result(count),
        "producer_cpu_us_per_task": produced["cpu_s"] * 1e6 / count,
    }
