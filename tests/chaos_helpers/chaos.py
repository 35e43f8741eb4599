"""Chaos: SIGKILL a real `python -m service serve` again and again while submitters post
chaos jobs to it on loopback; then start it once more, wait until every acknowledged task is
completed, and check what the file and the runs' record say:

- lost: acknowledged (201 with a task_id) but not stored;
- unfinished: stored but not completed within the final wait;
- overlaps: a task started while a run of it was still alive (in any process): the record
  file holds each run's start and end, and a `dead <pid>` line once a killed server has been
  reaped, so a run's life is known from the file's order alone;
- illegal: a stored status change the transition table does not allow.

Everything is bounded: the number of kills, the submissions per server, every wait.
Used by scripts/chaos and, shortened, by tests/web/test_chaos.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import aiohttp
import orjson

from tests.chaos_helpers.checks import all_illegal_steps
from tests.chaos_helpers.jobs import append
from tests.sup_util import rows

ROOT = Path(__file__).resolve().parent.parent.parent
CONFIG = ROOT / "config" / "test.toml"
BASE = "/graphs/hugegraph"
COMPLETED = frozenset({"success", "failed", "cancelled"})
#: enough that restores after kills never use up a task's retries
MAX_RETRIES = 1000

T = TypeVar("T")


@dataclass
class Report:
    kills: int = 0
    acked: int = 0
    lost: int = 0
    unfinished: int = 0
    overlaps: list[str] = field(default_factory=list)
    illegal: dict[int, list[tuple[str, str]]] = field(default_factory=dict)
    #: acknowledged tasks by final status
    statuses: Counter[str] = field(default_factory=Counter)
    #: answers other than 201 (503s while a server was starting or dying, …)
    refused: int = 0
    #: submissions that got no answer (the server was killed under them)
    unanswered: int = 0
    #: runs cut by a kill (a start without an end)
    interrupted_runs: int = 0
    #: tasks that ran to their end more than once (killed after the run, before its end was stored)
    ended_twice: int = 0
    #: acknowledged successes without an ended run in the record
    success_without_run: int = 0
    stored: int = 0

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.unfinished
            or self.overlaps
            or self.illegal
            or self.success_without_run
            or self.statuses.keys() - {"success"}
        )

    def line(self) -> str:
        statuses = ",".join(f"{k}:{v}" for k, v in sorted(self.statuses.items()))
        return (
            f"acked={self.acked} lost={self.lost} unfinished={self.unfinished}"
            f" kills={self.kills} overlaps={len(self.overlaps)} illegal={len(self.illegal)}"
            f" stored={self.stored} statuses={statuses or '-'} interrupted_runs={self.interrupted_runs}"
            f" ended_twice={self.ended_twice} success_without_run={self.success_without_run}"
            f" refused={self.refused} unanswered={self.unanswered}"
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def poll(probe: Callable[[], Awaitable[T | None]], seconds: float, what: str) -> T:
    """`probe` until it returns something truthy; an error after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {seconds:g} s waiting for {what}")
        await asyncio.sleep(0.01)


class Server:
    """One `python -m service serve` on the chaos database, the chaos job registered."""

    def __init__(self, workdir: Path, db: Path | str, port: int, number: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = workdir / f"server-{number}.log"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "SIDETASK_JOBS": orjson.dumps({"chaos": "tests.chaos_helpers.jobs:record"}).decode(),
        }
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "service", "serve", "--port", str(port), "--db", str(db),
                 "--config", str(CONFIG)],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        self.pid = self.proc.pid

    async def ready(self, session: aiohttp.ClientSession, seconds: float = 30.0) -> None:
        async def probe() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log}")
            try:
                async with session.get(f"{self.url}/ready") as response:
                    return response.status == 200
            except (aiohttp.ClientError, OSError):
                return False

        await poll(probe, seconds, "the server to be ready")

    async def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.proc.wait, 30)

    async def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.proc.wait, 30)
        except subprocess.TimeoutExpired:
            await self.kill()
            return -signal.SIGKILL


class RecordTail:
    """Reads the record file's new lines as they come."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.started_by: set[int] = set()

    def read(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        end = data.rfind(b"\n") + 1  # a line being written is read next time
        self.offset += end
        for line in data[:end].decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "start":
                self.started_by.add(int(parts[2]))


def analyse_record(path: Path) -> tuple[list[str], int, dict[int, int]]:
    """Overlapping runs, runs cut by a kill, and the number of ended runs per task."""
    alive: dict[int, set[int]] = defaultdict(set)  # task -> pids with a run of it alive
    overlaps: list[str] = []
    ended: Counter[int] = Counter()
    interrupted = 0
    lines = path.read_text().splitlines() if path.exists() else []
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if len(parts) < 2:
            continue
        kind = parts[0]
        if kind == "dead":
            pid = int(parts[1])
            for pids in alive.values():
                if pid in pids:
                    pids.discard(pid)
                    interrupted += 1
            continue
        if len(parts) < 3:
            continue
        task_id, pid = int(parts[1]), int(parts[2])
        if kind == "start":
            if alive[task_id]:
                overlaps.append(
                    f"line {number}: task {task_id} started in pid {pid} while running in "
                    f"pid(s) {sorted(alive[task_id])}"
                )
            alive[task_id].add(pid)
        elif kind == "end":
            alive[task_id].discard(pid)
            ended[task_id] += 1
    return overlaps, interrupted, dict(ended)


def stored_statuses(db: Path | str, ids: list[int]) -> dict[int, str]:
    found: dict[int, str] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        found.update(
            rows(
                db,
                f"SELECT id, status FROM tasks WHERE id IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
        )
    return found


class Submitters:
    """`count` loops posting chaos jobs while they have allowance; a task is acknowledged only
    by a 201 whose body has its task_id."""

    def __init__(self, count: int, record: Path, rng: random.Random) -> None:
        self.count = count
        self.record = record
        self.rng = rng
        self.acked: list[int] = []
        self.refused = 0
        self.unanswered = 0
        self.url = ""
        self.allowance = 0
        self._more = asyncio.Event()
        self._stop = False

    def allow(self, url: str, submissions: int) -> None:
        self.url = url
        self.allowance = submissions
        self._more.set()

    def pause(self) -> None:
        self.allowance = 0
        self._more.clear()

    async def run(self, session: aiohttp.ClientSession) -> None:
        await asyncio.gather(*(self._loop(session) for _ in range(self.count)))

    def stop(self) -> None:
        self._stop = True
        self._more.set()

    async def _loop(self, session: aiohttp.ClientSession) -> None:
        while not self._stop:
            if self.allowance <= 0:
                self._more.clear()
                await self._more.wait()
                continue
            self.allowance -= 1
            job = {
                "record": str(self.record),
                "steps": self.rng.randint(1, 3),
                "interval": self.rng.choice((0.005, 0.01, 0.02)),
            }
            query = {"max_retries": str(MAX_RETRIES), "priority": str(self.rng.randint(0, 2))}
            if self.rng.random() < 0.1:
                query["delay"] = "0.2"  # waiting (new) across a kill
            try:
                async with session.post(
                    f"{self.url}{BASE}/jobs/chaos", json=job, params=query
                ) as response:
                    body = await response.read()
                    task_id = orjson.loads(body).get("task_id") if response.status == 201 else None
                    if isinstance(task_id, int):
                        self.acked.append(task_id)
                    else:
                        self.refused += 1
            except (aiohttp.ClientError, OSError, TimeoutError, orjson.JSONDecodeError):
                self.unanswered += 1


def _prepare(workdir: Path, db: str | None) -> tuple[Path | str, Path]:
    """The database (a SQLite file in `workdir`, or the PostgreSQL URL `db`) and the record
    file, in `workdir`."""
    workdir.mkdir(parents=True, exist_ok=True)
    return db or workdir / "chaos.db", workdir / "runs.log"


async def run_chaos(
    workdir: Path,
    kills: int,
    *,
    submitters: int = 8,
    per_server: tuple[int, int] = (20, 60),
    seed: int | None = None,
    finish_timeout: float = 120.0,
    progress: Callable[[str], None] | None = None,
    db_url: str | None = None,
) -> Report:
    """`kills` SIGKILLs, each after `per_server` (a random number in that range) submissions
    of the server being killed were acknowledged and a run had started in it; then one more
    server that must complete every acknowledged task within `finish_timeout` seconds.
    `db_url`: on that PostgreSQL database instead of a SQLite file."""
    db, record = _prepare(workdir, db_url)
    rng = random.Random(seed)
    port = free_port()
    tail = RecordTail(record)
    load = Submitters(submitters, record, rng)
    report = Report()
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        loader = asyncio.create_task(load.run(session))
        try:
            for number in range(kills):
                server = Server(workdir, db, port, number)
                await server.ready(session)
                target = len(load.acked) + rng.randint(*per_server)
                # more allowance than the target: submissions are in flight when the kill comes
                load.allow(server.url, target - len(load.acked) + 2 * submitters)

                async def due(pid: int = server.pid, target: int = target) -> bool:
                    tail.read()
                    return len(load.acked) >= target and pid in tail.started_by

                await poll(due, 60, f"{target} acknowledged submissions and a run in the server")
                load.pause()  # no new submissions; those in flight meet the kill
                await server.kill()
                append(str(record), f"dead {server.pid}")
                report.kills += 1
                if progress is not None:
                    progress(
                        f"kill {report.kills}/{kills}: pid {server.pid}, acked {len(load.acked)}"
                    )
        finally:
            load.stop()
            await loader
        final = Server(workdir, db, port, kills)
        try:
            await final.ready(session)
            acked = sorted(set(load.acked))

            async def finished() -> bool:
                statuses = stored_statuses(db, acked)
                return all(statuses.get(i) in COMPLETED for i in acked)

            with contextlib.suppress(TimeoutError):
                await poll(finished, finish_timeout, "every acknowledged task to complete")
        finally:
            await final.stop()

    statuses = stored_statuses(db, acked)
    report.acked = len(acked)
    report.lost = sum(1 for i in acked if i not in statuses)
    report.unfinished = sum(1 for i in acked if i in statuses and statuses[i] not in COMPLETED)
    report.statuses = Counter(statuses[i] for i in acked if i in statuses)
    report.refused = load.refused
    report.unanswered = load.unanswered
    report.overlaps, report.interrupted_runs, ended = analyse_record(record)
    report.ended_twice = sum(1 for n in ended.values() if n > 1)
    report.success_without_run = sum(
        1 for i in acked if statuses.get(i) == "success" and ended.get(i, 0) == 0
    )
    report.illegal = all_illegal_steps(db)
    report.stored = int(rows(db, "SELECT COUNT(*) FROM tasks")[0][0])
    return report


def main(argv: list[str] | None = None) -> int:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(
        prog="scripts/chaos",
        description="SIGKILL sidetask repeatedly under submission load (loopback only), then "
        "check that every acknowledged task exists and completed, and that no task ran twice "
        "at the same time. Prints acked=… lost=… unfinished=…; exits 1 if anything is wrong.",
    )
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs (default 20)")
    parser.add_argument(
        "--submitters", type=int, default=8, help="concurrent submitters (default 8)"
    )
    parser.add_argument(
        "--per-server", type=int, nargs=2, default=(20, 60), metavar=("MIN", "MAX"),
        help="acknowledged submissions before each kill, drawn from MIN..MAX (default 20 60)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--finish-timeout", type=float, default=120.0, help="seconds (default 120)")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep the database, record and logs here"
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="on a throwaway PostgreSQL server (tests/pgserver.py, fsync on) instead of SQLite",
    )
    args = parser.parse_args(argv)
    if args.kills < 1 or args.submitters < 1 or not 1 <= args.per_server[0] <= args.per_server[1]:
        parser.error("--kills and --submitters must be at least 1, and 1 <= MIN <= MAX")
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="sidetask-chaos-"))
        )
        db_url = None
        if args.postgres:
            from tests.pgserver import PgServer

            bindir = PgServer.find()
            if bindir is None:
                parser.error("--postgres: PostgreSQL's binaries are not installed")
            db_url = stack.enter_context(PgServer(bindir, fsync=True)).dsn
        where = db_url or workdir
        print(f"chaos: {args.kills} kills, seed {seed}, in {where}", file=sys.stderr)
        report = asyncio.run(
            run_chaos(
                workdir,
                args.kills,
                submitters=args.submitters,
                per_server=tuple(args.per_server),
                seed=seed,
                finish_timeout=args.finish_timeout,
                progress=lambda text: print(text, file=sys.stderr),
                db_url=db_url,
            )
        )
        print(report.line())
        for text in report.overlaps[:10]:
            print(f"overlap: {text}")
        for task_id, steps in list(report.illegal.items())[:10]:
            print(f"illegal: task {task_id}: {steps}")
    return 0 if report.ok else 1
