"""Chaos: SIGKILL real `python -m service serve` processes again and again while submitters
post chaos jobs to them on loopback; then wait until every acknowledged task is completed,
and check what the database and the runs' record say:

- lost: acknowledged (201 with a task_id) but not stored;
- unfinished: stored but not completed within the final wait;
- overlaps: a task started while a run of it was still alive (in any process): the record
  file holds each run's start and its end (or `stop`, when its process stopped it), and a
  `dead <pid>` line once a killed server can run nothing more, so a run's life is known
  from the file's order alone;
- illegal: a stored status change the transition table does not allow.

One server (the default): it is killed, started again, killed…; a last one finishes.

Several replicas (`replicas` > 1, PostgreSQL only): that many servers on one database, each
on its own port; the submitters spread their posts over the replicas alive; the kills go
to the replicas in turn, one at a time, each once the victim has acknowledged its share of
this round's submissions and started a run in it; after each kill a fresh process takes
the victim's place, so `replicas` stay up, and the survivors recover what the victim held.
The replicas alive at the end finish the work, and are stopped cleanly (SIGTERM: each must
exit 0). Besides, an SSE subscriber follows the service's stream (`/events`, every event of
every graph) from event 0 on a replica that is not the next victim: before its replica is
killed it moves to another one, resuming with `Last-Event-ID` as a user's client does (and
after any cut it reconnects the same way). At the end it is given time to reach the last
stored event, and what it received is compared with the stored `events` table: a stored
event it never received is a gap; besides, ids received twice, ids lower than one before
them, and ids that are not stored.

Why a victim is frozen before it is killed. The record's order is the overlap check's
clock, and `dead <pid>` must come after the victim's last line and before any other
process can start a task the victim held. With one server the second half is free: nothing
else runs. With survivors it is not: a SIGKILL ends the victim's database session at once,
its life lock with it, and a survivor's sweep may restore and start its task before the
harness has written `dead` — a run that reads as overlapping one that was already dead.
Writing `dead` before the SIGKILL would err the other way: the victim could still write a
start after it. So the victim is stopped first: SIGSTOP, then waitpid(WUNTRACED), which
returns once every thread of it is stopped (a write under way in the kernel completes
before); from then on it writes no line and sends nothing to the database. The wait is
needed: kill() returns before the target has stopped, and a process writing all the time
wrote a line after a `dead` appended right after the SIGSTOP in 5 tries of 20 (none with
the wait; tests/web/test_chaos.py keeps that check). Its session stays open, and with it
its life lock: no survivor takes its tasks yet (only a heartbeat older than
`replica_timeout` could make them, and the freeze lasts milliseconds, 132 at most in a run
of 20 kills on a loaded machine; each kill's progress line says how long — a survivor
that did start one then would be running a task while the replica holding it was still
alive until the freeze, an overlap that must be counted). Then `dead <pid>` is appended,
which is true at that point, and only then SIGKILL and the reap. A start of a victim's task
before its `dead` line is therefore a real overlap, and none is excused after it. The same
freeze serves the single server, where it changes nothing.

Everything is bounded: the number of kills, the submissions per server, every wait.
Used by scripts/chaos and, shortened, by tests/web/test_chaos.py (one server, both stores)
and tests/pg/test_chaos_replicas.py (three replicas).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import aiohttp
import orjson

from tests.chaos_helpers.checks import DEFAULT_SCHEMA, all_illegal_steps, query
from tests.chaos_helpers.jobs import append

ROOT = Path(__file__).resolve().parent.parent.parent
CONFIG = ROOT / "config" / "test.toml"
BASE = "/graphs/hugegraph"
#: the stream that carries every event of every graph
STREAM = "/events"
COMPLETED = frozenset({"success", "failed", "cancelled"})
#: enough that restores after kills never use up a task's retries
MAX_RETRIES = 1000
#: replicas' liveness unless the environment sets it: a killed replica's lock is gone at
#: once, and the survivors sweep every heartbeat_interval; replica_timeout only matters for
#: a replica that hangs, and is long enough that a busy one is not taken for dead
REPLICA_ENV = {"SIDETASK_HEARTBEAT_INTERVAL": "0.5", "SIDETASK_REPLICA_TIMEOUT": "5"}
#: seconds the subscriber waits before it connects again after a cut (its `retry`, shorter)
RECONNECT_DELAY = 0.1

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
    #: servers up at once (1: one server at a time)
    replicas: int = 1
    #: with replicas: the subscriber's events received, and what they missed or repeated
    sse_events: int = 0
    sse_gaps: int = 0
    sse_duplicates: int = 0
    sse_out_of_order: int = 0
    sse_unstored: int = 0
    #: its moves to another replica before its own was killed, and reconnects after a cut
    sse_moves: int = 0
    sse_reconnects: int = 0
    #: with replicas: those stopped at the end that did not exit 0
    bad_exits: int = 0
    #: with replicas: deadlocks PostgreSQL counted in the database during the run
    deadlocks: int = 0
    #: runs stopped by their process (a `stop` line)
    stopped_runs: int = 0

    @property
    def ok(self) -> bool:
        wrong = (
            self.lost
            or self.unfinished
            or self.overlaps
            or self.illegal
            or self.success_without_run
            or self.statuses.keys() - {"success"}
        )
        if self.replicas > 1:
            wrong = wrong or (
                not self.sse_events
                or self.sse_gaps
                or self.sse_duplicates
                or self.sse_out_of_order
                or self.sse_unstored
                or self.bad_exits
                or self.deadlocks
            )
        return not wrong

    def line(self) -> str:
        statuses = ",".join(f"{k}:{v}" for k, v in sorted(self.statuses.items()))
        text = (
            f"acked={self.acked} lost={self.lost} unfinished={self.unfinished}"
            f" kills={self.kills} overlaps={len(self.overlaps)} illegal={len(self.illegal)}"
            f" stored={self.stored} statuses={statuses or '-'} interrupted_runs={self.interrupted_runs}"
            f" ended_twice={self.ended_twice} success_without_run={self.success_without_run}"
            f" refused={self.refused} unanswered={self.unanswered}"
        )
        if self.replicas > 1:
            text += (
                f" replicas={self.replicas} sse_events={self.sse_events}"
                f" sse_gaps={self.sse_gaps} sse_duplicates={self.sse_duplicates}"
                f" sse_out_of_order={self.sse_out_of_order} sse_unstored={self.sse_unstored}"
                f" sse_moves={self.sse_moves} sse_reconnects={self.sse_reconnects}"
                f" stopped_runs={self.stopped_runs} bad_exits={self.bad_exits}"
                f" deadlocks={self.deadlocks}"
            )
        return text


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

    def __init__(
        self,
        workdir: Path,
        db: Path | str,
        port: int,
        number: int,
        env: dict[str, str] | None = None,
    ) -> None:
        self.number = number
        self.url = f"http://127.0.0.1:{port}"
        self.log = workdir / f"server-{number}.log"
        environment = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "SIDETASK_JOBS": orjson.dumps({"chaos": "tests.chaos_helpers.jobs:record"}).decode(),
        }
        for name, value in (env or {}).items():
            environment.setdefault(name, value)
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "service", "serve", "--port", str(port), "--db", str(db),
                 "--config", str(CONFIG)],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=environment,
            )  # fmt: skip
        self.pid = self.proc.pid
        #: seconds from the SIGSTOP to the SIGKILL, once killed
        self.frozen_for = 0.0

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"server {self.number} (pid {self.pid}) exited with {self.proc.returncode};"
                f" see {self.log}"
            )

    async def ready(self, session: aiohttp.ClientSession, seconds: float = 30.0) -> None:
        async def probe() -> bool:
            self.check_alive()
            try:
                async with session.get(f"{self.url}/ready") as response:
                    return response.status == 200
            except (aiohttp.ClientError, OSError):
                return False

        await poll(probe, seconds, f"server {self.number} to be ready")

    async def kill(self, record: Path) -> None:
        self.frozen_for = await freeze_and_kill(self.proc, record)

    async def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.proc.wait, 30)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(self.proc.wait, 30)
            return -signal.SIGKILL


async def freeze_and_kill(proc: subprocess.Popen[bytes], record: Path) -> float:
    """Frozen (SIGSTOP, and waited for until the kernel says it is stopped), `dead <pid>`
    appended to the record, then SIGKILLed and reaped: the module's docstring says why.
    Returns the seconds from the SIGSTOP to the SIGKILL."""
    began = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(signal.SIGSTOP)
        _, status = await asyncio.to_thread(os.waitpid, proc.pid, os.WUNTRACED)
        if not os.WIFSTOPPED(status):  # it had exited by itself: reaped here
            proc.returncode = os.waitstatus_to_exitcode(status)
    await asyncio.to_thread(append, str(record), f"dead {proc.pid}")
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    frozen = time.monotonic() - began
    await asyncio.to_thread(proc.wait, 30)
    return frozen


class RecordTail:
    """Reads the record file's new lines as they come: the runs started in each process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.starts: Counter[int] = Counter()

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
                self.starts[int(parts[2])] += 1


@dataclass
class RecordAnalysis:
    overlaps: list[str]
    #: runs cut by a kill (alive at their process's `dead` line)
    interrupted: int
    #: ended runs per task
    ended: dict[int, int]
    #: runs their process stopped (`stop` lines of runs alive)
    stopped: int


def analyse(path: Path) -> RecordAnalysis:
    """Overlapping runs, runs cut by a kill, ended runs per task, runs stopped."""
    alive: dict[int, set[int]] = defaultdict(set)  # task -> pids with a run of it alive
    overlaps: list[str] = []
    ended: Counter[int] = Counter()
    interrupted = stopped = 0
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
        elif kind == "stop" and pid in alive[task_id]:
            alive[task_id].discard(pid)
            stopped += 1
    return RecordAnalysis(overlaps, interrupted, dict(ended), stopped)


def analyse_record(path: Path) -> tuple[list[str], int, dict[int, int]]:
    """Overlapping runs, runs cut by a kill, and the number of ended runs per task."""
    found = analyse(path)
    return found.overlaps, found.interrupted, found.ended


@dataclass
class StreamComparison:
    gaps: int
    duplicates: int
    out_of_order: int
    unstored: int


def compare_stream(received: Sequence[int], stored: Sequence[int]) -> StreamComparison:
    """What a subscriber received (event ids, in the order they came) against the ids stored
    over the same span: stored ones it never got, ids it got again, ids lower than the one
    before them, ids it got that are not stored."""
    got, kept = set(received), set(stored)
    return StreamComparison(
        gaps=len(kept - got),
        duplicates=len(received) - len(got),
        out_of_order=sum(1 for before, after in itertools.pairwise(received) if after < before),
        unstored=len(got - kept),
    )


def stored_statuses(db: Path | str, ids: list[int], schema: str) -> dict[int, str]:
    found: dict[int, str] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        found.update(
            query(
                db,
                f"SELECT id, status FROM tasks WHERE id IN ({', '.join('?' * len(chunk))})",
                chunk,
                schema,
            )
        )
    return found


class Submitters:
    """`count` loops posting chaos jobs while they have allowance, each to one of the
    servers they are given, at random; a task is acknowledged only by a 201 whose body has
    its task_id."""

    def __init__(self, count: int, record: Path, rng: random.Random) -> None:
        self.count = count
        self.record = record
        self.rng = rng
        self.acked: list[int] = []
        #: acknowledged submissions by the server (its number) that answered them
        self.acked_by: Counter[int] = Counter()
        self.refused = 0
        self.unanswered = 0
        self.servers: list[Server] = []
        self.allowance = 0
        self._more = asyncio.Event()
        self._stop = False

    def allow(self, servers: list[Server], submissions: int) -> None:
        self.servers = list(servers)
        self.allowance = submissions
        self._more.set()

    def leave_out(self, server: Server) -> None:
        """No new submission goes to `server` (those in flight go on)."""
        self.servers = [s for s in self.servers if s is not server]

    def add(self, server: Server) -> None:
        self.servers = [*self.servers, server]
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
            if self.allowance <= 0 or not self.servers:
                self._more.clear()
                await self._more.wait()
                continue
            self.allowance -= 1
            server = self.rng.choice(self.servers)
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
                    f"{server.url}{BASE}/jobs/chaos", json=job, params=query
                ) as response:
                    body = await response.read()
                    task_id = orjson.loads(body).get("task_id") if response.status == 201 else None
                    if isinstance(task_id, int):
                        self.acked.append(task_id)
                        self.acked_by[server.number] += 1
                    else:
                        self.refused += 1
            except (aiohttp.ClientError, OSError, TimeoutError, orjson.JSONDecodeError):
                self.unanswered += 1


class Follower:
    """An SSE subscriber of the service's stream, as a user runs one: from event 0, it
    resumes with `Last-Event-ID` (the last event it received) after any cut, and when it is
    moved to another replica. `ids`: the ids of the events it received, in order."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.ids: list[int] = []
        self.server: Server | None = None
        self.moves = 0
        self.reconnects = 0
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self, server: Server) -> None:
        self.server = server
        self._task = asyncio.create_task(self._follow(server))

    async def move(self, server: Server) -> None:
        await self.stop()
        self.moves += 1
        self.start(server)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _follow(self, server: Server) -> None:
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError, ValueError):
                await self._read(server)
            self.reconnects += 1
            await asyncio.sleep(RECONNECT_DELAY)

    async def _read(self, server: Server) -> None:
        headers = {"Last-Event-ID": str(self.ids[-1] if self.ids else 0)}
        async with self.session.get(f"{server.url}{STREAM}", headers=headers) as response:
            if response.status != 200:
                return
            self.connected.set()
            event_id: int | None = None
            async for raw in response.content:
                line = raw.rstrip(b"\r\n")
                if not line:  # an event's end: it is dispatched
                    if event_id is not None:
                        self.ids.append(event_id)
                    event_id = None
                elif line.startswith(b"id:"):
                    event_id = int(line[3:].strip())


def _prepare(workdir: Path, db: str | None) -> tuple[Path | str, Path]:
    """The database (a SQLite file in `workdir`, or the PostgreSQL URL `db`) and the record
    file, in `workdir`."""
    workdir.mkdir(parents=True, exist_ok=True)
    return db or workdir / "chaos.db", workdir / "runs.log"


@dataclass
class _Run:
    """What the phases of one chaos run share."""

    session: aiohttp.ClientSession
    workdir: Path
    db: Path | str
    schema: str
    record: Path
    tail: RecordTail
    load: Submitters
    report: Report
    rng: random.Random
    kills: int
    per_server: tuple[int, int]
    finish_timeout: float
    progress: Callable[[str], None]

    def server(self, port: int, number: int, env: dict[str, str] | None = None) -> Server:
        extra = dict(env or {})
        if self.schema != DEFAULT_SCHEMA:
            extra["SIDETASK_DB_SCHEMA"] = self.schema
        return Server(self.workdir, self.db, port, number, extra)

    async def finish(self) -> None:
        """Waits (at most finish_timeout) until every acknowledged task is completed."""
        acked = sorted(set(self.load.acked))

        async def finished() -> bool:
            statuses = await asyncio.to_thread(stored_statuses, self.db, acked, self.schema)
            return all(statuses.get(i) in COMPLETED for i in acked)

        with contextlib.suppress(TimeoutError):
            await poll(finished, self.finish_timeout, "every acknowledged task to complete")


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
    replicas: int = 1,
    schema: str = DEFAULT_SCHEMA,
) -> Report:
    """`kills` SIGKILLs, each after `per_server` (a random number in that range) submissions
    acknowledged by the server being killed and a run started in it; then the work finished
    within `finish_timeout` seconds: by one more server, or by the replicas up.
    `db_url`: on that PostgreSQL database (in `schema`) instead of a SQLite file;
    `replicas` > 1 needs it."""
    if replicas > 1 and db_url is None:
        raise ValueError("several replicas share a PostgreSQL database: db_url is needed")
    db, record = _prepare(workdir, db_url)
    rng = random.Random(seed)
    load = Submitters(submitters, record, rng)
    report = Report(replicas=replicas)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        run = _Run(
            session, workdir, db, schema, record, RecordTail(record), load, report, rng,
            kills, per_server, finish_timeout, progress or (lambda _: None),
        )  # fmt: skip
        if replicas == 1:
            await _one_server(run)
        else:
            await _replicas(run, replicas)

    acked = sorted(set(load.acked))
    statuses = stored_statuses(db, acked, schema)
    report.acked = len(acked)
    report.lost = sum(1 for i in acked if i not in statuses)
    report.unfinished = sum(1 for i in acked if i in statuses and statuses[i] not in COMPLETED)
    report.statuses = Counter(statuses[i] for i in acked if i in statuses)
    report.refused = load.refused
    report.unanswered = load.unanswered
    found = analyse(record)
    report.overlaps, report.interrupted_runs = found.overlaps, found.interrupted
    report.stopped_runs = found.stopped
    report.ended_twice = sum(1 for n in found.ended.values() if n > 1)
    report.success_without_run = sum(
        1 for i in acked if statuses.get(i) == "success" and found.ended.get(i, 0) == 0
    )
    report.illegal = all_illegal_steps(db, schema)
    report.stored = int(query(db, "SELECT COUNT(*) FROM tasks", schema=schema)[0][0])
    return report


async def _one_server(run: _Run) -> None:
    """One server at a time, on one port: killed `kills` times, then one more finishes."""
    load, tail, report = run.load, run.tail, run.report
    port = free_port()
    loader = asyncio.create_task(load.run(run.session))
    try:
        for number in range(run.kills):
            server = run.server(port, number)
            await server.ready(run.session)
            target = len(load.acked) + run.rng.randint(*run.per_server)
            # more allowance than the target: submissions are in flight when the kill comes
            load.allow([server], target - len(load.acked) + 2 * load.count)

            async def due(pid: int = server.pid, target: int = target) -> bool:
                tail.read()
                return len(load.acked) >= target and tail.starts[pid] > 0

            await poll(due, 60, f"{target} acknowledged submissions and a run in the server")
            load.pause()  # no new submissions; those in flight meet the kill
            await server.kill(run.record)
            report.kills += 1
            run.progress(
                f"kill {report.kills}/{run.kills}: pid {server.pid}, acked {len(load.acked)}"
            )
    finally:
        load.stop()
        await loader
    final = run.server(port, run.kills)
    try:
        await final.ready(run.session)
        await run.finish()
    finally:
        await final.stop()


async def _replicas(run: _Run, count: int) -> None:
    """`count` replicas on one database, killed in turn, each replaced by a fresh process;
    an SSE subscriber on a replica that is not the next victim; the replicas up at the end
    finish the work, and are stopped cleanly."""
    load, report = run.load, run.report
    numbers = itertools.count()

    def replica() -> Server:
        number = next(numbers)
        return run.server(
            free_port(), number, {**REPLICA_ENV, "SIDETASK_SERVER_NAME": f"chaos-{number}"}
        )

    deadlocks = await asyncio.to_thread(_deadlocks, run.db)
    slots = [replica() for _ in range(count)]
    # the stream's own session: no total timeout (a keep-alive comes every sse_keepalive)
    stream_session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
    )
    follower = Follower(stream_session)
    loader: asyncio.Task[None] | None = None
    try:
        await asyncio.gather(*(server.ready(run.session) for server in slots))
        follower.start(slots[1])  # the first victim is slots[0]
        await asyncio.wait_for(follower.connected.wait(), 30)
        loader = asyncio.create_task(load.run(run.session))
        for kill in range(run.kills):
            slot = kill % count
            victim = slots[slot]
            await _until_due(run, slots, victim)
            if follower.server is victim:  # to the replica whose turn comes last
                await follower.move(slots[(slot - 1) % count])
            load.leave_out(victim)  # new posts go to the others; those in flight meet the kill
            await victim.kill(run.record)
            report.kills += 1
            assert follower.server is not None
            run.progress(
                f"kill {report.kills}/{run.kills}: replica {victim.number} (pid {victim.pid},"
                f" frozen {victim.frozen_for * 1000:.0f} ms), acked {len(load.acked)};"
                f" the subscriber on replica {follower.server.number},"
                f" {len(follower.ids)} events"
            )
            slots[slot] = replica()
            await slots[slot].ready(run.session)
            load.add(slots[slot])
        load.stop()
        await loader
        loader = None
        await run.finish()
        await _compare(run, follower)
        exits = await asyncio.gather(*(server.stop() for server in slots))
        report.bad_exits = sum(1 for code in exits if code != 0)
        await _sessions_ended(run.db)
        report.deadlocks = await asyncio.to_thread(_deadlocks, run.db) - deadlocks
    finally:
        load.stop()
        if loader is not None:
            await loader
        await follower.stop()
        await stream_session.close()
        for server in slots:
            await server.stop()


async def _until_due(run: _Run, slots: list[Server], victim: Server) -> None:
    """Until `victim` has acknowledged its share of this round's posts (drawn from
    per_server) and started a run in it; every replica must stay up meanwhile."""
    load, tail = run.load, run.tail
    tail.read()
    runs_before = tail.starts[victim.pid]
    share = run.rng.randint(*run.per_server)
    target = load.acked_by[victim.number] + share
    # each replica gets about 1/len(slots) of the posts; some in flight when the kill comes
    allowance = len(slots) * share + 2 * load.count
    load.allow(slots, allowance)

    async def due() -> bool:
        for server in slots:
            server.check_alive()
        tail.read()
        if load.acked_by[victim.number] >= target and tail.starts[victim.pid] > runs_before:
            return True
        if load.allowance <= 0:  # its share went to the others: more for everyone
            load.allow(slots, allowance)
        return False

    await poll(due, 60, f"replica {victim.number}: {share} acknowledged and a run started")


async def _compare(run: _Run, follower: Follower) -> None:
    """The subscriber, given time to reach the last stored event, against the stored ids."""
    rows = await asyncio.to_thread(
        query, run.db, "SELECT COALESCE(MAX(id), 0) FROM events", (), run.schema
    )
    last = int(rows[0][0])

    async def caught_up() -> bool:
        return bool(follower.ids) and follower.ids[-1] >= last

    with contextlib.suppress(TimeoutError):
        await poll(caught_up, 30, "the subscriber to receive the last stored event")
    await follower.stop()
    end = max(last, max(follower.ids, default=0))
    stored = [
        int(event_id)
        for (event_id,) in await asyncio.to_thread(
            query, run.db, "SELECT id FROM events WHERE id <= ? ORDER BY id", (end,), run.schema
        )
    ]
    found = compare_stream(follower.ids, stored)
    report = run.report
    report.sse_events = len(follower.ids)
    report.sse_gaps, report.sse_duplicates = found.gaps, found.duplicates
    report.sse_out_of_order, report.sse_unstored = found.out_of_order, found.unstored
    report.sse_moves, report.sse_reconnects = follower.moves, follower.reconnects


def _deadlocks(db: Path | str) -> int:
    """The deadlocks PostgreSQL has counted in the database (a session reports its own when
    it goes idle now and then, and when it ends)."""
    sql = "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    return int(query(db, sql)[0][0])


async def _sessions_ended(db: Path | str, seconds: float = 10.0) -> None:
    """Until the database's other sessions have ended (the stopped replicas' have reported
    their counts then); at most `seconds`: on a database others use too, some stay."""
    sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
    )

    async def ended() -> bool:
        return int((await asyncio.to_thread(query, db, sql))[0][0]) == 0

    with contextlib.suppress(TimeoutError):
        await poll(ended, seconds, "the replicas' sessions to end")


def _drop_schema(url: str, schema: str) -> None:
    async def drop() -> None:
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


def main(argv: list[str] | None = None) -> int:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(
        prog="scripts/chaos",
        description="SIGKILL sidetask repeatedly under submission load (loopback only), then "
        "check that every acknowledged task exists and completed, and that no task ran twice "
        "at the same time; with --replicas, on several replicas of one PostgreSQL database, "
        "and that an event stream followed across them missed nothing. Prints acked=… "
        "lost=… unfinished=…; exits 1 if anything is wrong.",
    )
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs (default 20)")
    parser.add_argument(
        "--submitters", type=int, default=8, help="concurrent submitters (default 8)"
    )
    parser.add_argument(
        "--per-server", type=int, nargs=2, default=(20, 60), metavar=("MIN", "MAX"),
        help="acknowledged submissions before each kill, drawn from MIN..MAX (default 20 60);"
        " with replicas, those the victim acknowledged since the previous kill",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--finish-timeout", type=float, default=120.0, help="seconds (default 120)")
    parser.add_argument(
        "--workdir", type=Path, default=None,
        help="keep the database, record and logs here (and, with --db, the schema)",
    )  # fmt: skip
    parser.add_argument(
        "--replicas", type=int, default=1,
        help="servers up at once on one PostgreSQL database, killed in turn (default 1: one"
        " server, killed and started again); more than 1 needs --db or --postgres",
    )  # fmt: skip
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--postgres",
        action="store_true",
        help="on a throwaway PostgreSQL server (tests/pgserver.py, fsync on) instead of SQLite",
    )
    where.add_argument(
        "--db", metavar="URL", default=None,
        help="on this PostgreSQL database (postgresql://…), in a schema of its own made for"
        " the run (chaos_<time>_<pid>) and dropped after it",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.kills < 1 or args.submitters < 1 or not 1 <= args.per_server[0] <= args.per_server[1]:
        parser.error("--kills and --submitters must be at least 1, and 1 <= MIN <= MAX")
    if args.replicas < 1:
        parser.error(f"--replicas must be at least 1, not {args.replicas}")
    if args.replicas > 1 and not (args.postgres or args.db):
        parser.error(
            f"--replicas {args.replicas}: replicas share a PostgreSQL database; give one with"
            " --db postgresql://… or start a throwaway one with --postgres"
        )
    if args.db is not None and not args.db.startswith(("postgresql://", "postgres://")):
        parser.error(f"--db takes a PostgreSQL URL (postgresql://…), not {args.db!r}")
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    schema = DEFAULT_SCHEMA
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="sidetask-chaos-"))
        )
        db_url = args.db
        if db_url is not None:
            schema = f"chaos_{time.strftime('%Y%m%d%H%M%S')}_{os.getpid()}"
            if args.workdir is None:
                stack.callback(_drop_schema, db_url, schema)
        if args.postgres:
            from tests.pgserver import PgServer

            bindir = PgServer.find()
            if bindir is None:
                parser.error("--postgres: PostgreSQL's binaries are not installed")
            db_url = stack.enter_context(PgServer(bindir, fsync=True)).dsn
        place = (
            workdir
            if db_url is None
            else "PostgreSQL" + (f", schema {schema}" if schema != DEFAULT_SCHEMA else "")
        )
        servers = f"{args.replicas} replicas" if args.replicas > 1 else "one server"
        print(f"chaos: {args.kills} kills of {servers}, seed {seed}, in {place}", file=sys.stderr)
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
                replicas=args.replicas,
                schema=schema,
            )
        )
        print(report.line())
        for text in report.overlaps[:10]:
            print(f"overlap: {text}")
        for task_id, steps in list(report.illegal.items())[:10]:
            print(f"illegal: task {task_id}: {steps}")
    return 0 if report.ok else 1
