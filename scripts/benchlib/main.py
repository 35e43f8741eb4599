"""sidetask's benchmark: every row against freshly started servers on loopback, one table.

    scripts/bench [--quick] [--rows ceiling,submit,e2e,backlog,peer,reads,sse,startup,pg,pg2,procrastinate] [--json]

Rows (scripts/benchlib/README.md says how each is measured):
  ceiling  a minimal aiohttp endpoint (own process) under the submit row's wrk load
  submit   POST …/jobs/echo over 64 keep-alive connections (wrk), ratio to the ceiling
  e2e      echo tasks submitted and run to success: tasks/s; dispatch latency at low
           load and under load (from the events table)
  backlog  the e2e row on a server whose database holds 100,000 tasks waiting (delayed a
           day; 20,000 quick), beside the e2e row's empty-database figures and the ratio
  peer     Huey with SqliteHuey, the same no-op job: enqueues/s, executions/s
  pg       the e2e row on PostgreSQL (a throwaway server, fsync on), one replica: submits/s,
           tasks/s, CPU per task of sidetask and of the PostgreSQL server
  pg2      the same with two replicas on one database, the submissions split over both
  procrastinate  the PostgreSQL peer: procrastinate's own worker on the same server, the
           same no-op job: defers/s, executions/s, CPU per job; the ratio to the pg row
  reads    GET one task, list, a deep page, with 1,000,000 tasks stored (100,000 quick)
  sse      SSE fan-out: 1,000 subscribers x 100 ev/s, 5,000 x 20 ev/s
  startup  process start to /ready, RSS idle and peak, on the same stored tasks
  login-flood  a fresh correct login's latency, quiet and while 60 connections send wrong
           passwords (600,000 PBKDF2 iterations), from one address and from 60

Every row that runs a server also gives its CPU per task or request, from /proc (benchlib.cpu):
the event loop's (main thread), the writer thread's (sidetask-writer), the rest, and any
child processes by name.

Load goes only to 127.0.0.1; every loop is bounded; every process started is stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import wrk
from .cpu import TICK_US
from .cpu import describe as describe_cpu
from .server import (
    BenchServer,
    CeilingServer,
    Process,
    keep_work_dir,
    remove_work_dir,
    work_dir,
)

ROWS = (
    "ceiling",
    "submit",
    "e2e",
    "backlog",
    "peer",
    "reads",
    "sse",
    "startup",
    "login-flood",
    "pg",
    "pg2",
    "procrastinate",
)
PG_ROWS = frozenset({"pg", "pg2", "procrastinate"})
SUBMIT_PATH = "/graphs/hugegraph/jobs/echo"
SUBMIT_BODY = '{"bench":1}'
HUEY_REQUIREMENT = "huey>=2.5,<4"
#: procrastinate and the psycopg it runs on (with its C build: procrastinate at its best)
PROCRASTINATE_REQUIREMENTS = ("procrastinate>=3.5,<4", "psycopg[binary,pool]>=3.2,<4")


@dataclass
class Plan:
    quick: bool
    #: wrk's duration for the ceiling and submit rows (same for both)
    wrk_seconds: int
    connections: int = 64
    wrk_threads: int = 2
    e2e_tasks: int = 20_000
    sequential: int = 200
    e2e_settings: dict[str, Any] = field(default_factory=dict)
    #: tasks already waiting (delayed) in the backlog row's database
    backlog_waiting: int = 100_000
    backlog_delay_s: int = 86400
    peer_tasks: int = 20_000
    huey_workers: list[int] = field(default_factory=lambda: [1, 4])
    db_tasks: int = 1_000_000
    read_seconds: int = 5
    read_warmup: bool = True
    sse_cases: list[tuple[int, float]] = field(
        default_factory=lambda: [(1000, 100.0), (5000, 20.0)]
    )
    sse_seconds: float = 10.0
    #: fresh logins measured in each part of the login-flood row, and the flood's size
    flood_logins: int = 20
    flood_connections: int = 60
    flood_warmup: float = 3.0
    #: tasks of the PostgreSQL rows (pg, pg2, and procrastinate's jobs)
    pg_tasks: int = 10_000
    #: rounds of rows 9 and 9b, alternated (their figures: the median round's)
    pg_rounds: int = 3
    procrastinate_concurrency: list[int] = field(default_factory=lambda: [4, 16])

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if not quick:
            return cls(quick=False, wrk_seconds=10)
        return cls(
            quick=True,
            wrk_seconds=2,
            e2e_tasks=2000,
            sequential=30,
            backlog_waiting=20_000,
            peer_tasks=1000,
            huey_workers=[4],
            db_tasks=100_000,
            read_seconds=1,
            read_warmup=False,
            sse_cases=[(200, 100.0), (1000, 20.0)],
            sse_seconds=2.0,
            flood_logins=5,
            flood_warmup=1.0,
            pg_tasks=2000,
            pg_rounds=1,
            procrastinate_concurrency=[16],
        )


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- what the rows need installed ---


def ensure_debian(package: str, present: Callable[[], bool], what: str) -> None:
    """A Debian package installed quietly when `present()` says it is missing and we are
    root (apt-get update only when the first install fails)."""
    if present():
        return
    if os.geteuid() != 0:
        raise RuntimeError(
            f"{what} is missing: install Debian's package (apt-get install {package}) or run as root"
        )
    log(f"installing {package} (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env, "check": False}
    if subprocess.run(["apt-get", "install", "-y", "-qq", package], **quiet).returncode != 0:  # type: ignore[call-overload]
        subprocess.run(["apt-get", "update", "-qq"], **quiet)  # type: ignore[call-overload]
        subprocess.run(["apt-get", "install", "-y", "-qq", package], **quiet)  # type: ignore[call-overload]
    if not present():
        raise RuntimeError(f"{package} could not be installed with apt-get")


def ensure_wrk() -> None:
    ensure_debian("wrk", wrk.available, "wrk")


def ensure_postgresql() -> None:
    """The server binaries rows 9, 9b and 10 start a throwaway server with."""
    from tests.pgserver import PgServer

    ensure_debian("postgresql", lambda: PgServer.find() is not None, "PostgreSQL")


def pip_install(*requirements: str) -> None:
    log(f"installing {' '.join(requirements)} (pip)")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *requirements,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    import importlib

    importlib.invalidate_caches()


def ensure_huey() -> None:
    """Huey in this virtualenv, with pip, when missing."""
    try:
        import huey  # noqa: F401
    except ImportError:
        pip_install(HUEY_REQUIREMENT)


def ensure_procrastinate() -> None:
    """procrastinate (and psycopg) in this virtualenv, with pip, when missing."""
    try:
        import procrastinate  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        pip_install(*PROCRASTINATE_REQUIREMENTS)


# --- the rows ---


def measured_wrk(server: Process, script: str, options: dict[str, Any]) -> dict[str, Any]:
    """wrk against `server`, with the server's CPU per request answered over the run."""
    with server.cpu_window() as cpu:
        result = wrk.run(server.url + SUBMIT_PATH, script, **options).as_dict()
    result["server_cpu"] = cpu.result(result["requests"])
    return result


def row_ceiling_submit(plan: Plan, rows: set[str], out: dict[str, Any]) -> None:
    script = wrk.post_script(SUBMIT_BODY)
    options = {
        "seconds": plan.wrk_seconds,
        "connections": plan.connections,
        "threads": plan.wrk_threads,
    }
    log(
        f"ceiling: minimal aiohttp endpoint, wrk -t{plan.wrk_threads} -c{plan.connections} -d{plan.wrk_seconds}s"
    )
    with CeilingServer() as ceiling:
        out["ceiling"] = measured_wrk(ceiling, script, options)
    if "submit" not in rows:
        return
    log(f"submit: POST {SUBMIT_PATH}, same wrk settings")
    import sqlite3

    with BenchServer() as server:
        result = measured_wrk(server, script, options)
        with sqlite3.connect(f"file:{server.db}?mode=ro", uri=True) as conn:
            statuses = dict(
                conn.execute("SELECT status, COUNT(*) FROM tasks GROUP BY status").fetchall()
            )
        result["stored_tasks"] = sum(statuses.values())
        result["statuses_at_end"] = statuses
    # the ceiling again, after: a machine whose load changed meanwhile shows as a spread
    log("ceiling again, after submit")
    with CeilingServer() as ceiling:
        again = measured_wrk(ceiling, script, options)
    out["ceiling"]["after_submit"] = again
    ceiling_rps = (out["ceiling"]["requests_per_s"] + again["requests_per_s"]) / 2
    result["ceiling_requests_per_s"] = ceiling_rps
    result["ratio_to_ceiling"] = result["requests_per_s"] / ceiling_rps
    out["submit"] = result


def row_e2e(plan: Plan, out: dict[str, Any]) -> None:
    from .e2e import run_e2e

    log(
        f"e2e: {plan.sequential} sequential echo tasks, then {plan.e2e_tasks} over {plan.connections} connections"
    )
    out["e2e"] = run_e2e(plan.e2e_tasks, plan.sequential, plan.connections, **plan.e2e_settings)


def row_backlog(plan: Plan, out: dict[str, Any]) -> None:
    """The e2e row again, on a database that already holds `backlog_waiting` tasks waiting
    for a delay that outlasts the run; they must all still be waiting after it."""
    import sqlite3

    from . import dataset
    from .e2e import run_e2e

    db = work_dir() / "backlog.db"
    log(
        f"backlog: a database of {plan.backlog_waiting:,} echo tasks delayed {plan.backlog_delay_s:,} s"
    )
    info = dataset.build_waiting(db, plan.backlog_waiting, plan.backlog_delay_s)
    if info["tasks"] != plan.backlog_waiting:
        raise RuntimeError(f"built {info['tasks']} waiting tasks, not {plan.backlog_waiting}")
    log(
        f"  built in {info['seconds']:.1f} s ({info['mb']:.0f} MB); then e2e on it: {plan.sequential} "
        f"sequential, {plan.e2e_tasks} over {plan.connections} connections"
    )
    # the shipped max_waiting (100,000) counts the delayed tasks too: room above them for
    # the measured ones, as much again as the shipped limit
    settings = {**plan.e2e_settings, "max_waiting": plan.backlog_waiting + 100_000}
    result = run_e2e(plan.e2e_tasks, plan.sequential, plan.connections, db=db, **settings)
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        (waiting,) = conn.execute(
            "SELECT COUNT(*) FROM tasks WHERE id <= ? AND status = 'new'", (info["last_id"],)
        ).fetchone()
    result["database"] = info
    result["still_waiting"] = waiting
    out["backlog"] = result


def row_peer(plan: Plan, out: dict[str, Any]) -> None:
    ensure_huey()
    from .peer import run_peer

    runs = []
    for workers in plan.huey_workers:
        log(
            f"peer: Huey (SqliteHuey), {plan.peer_tasks} echo tasks, consumer with {workers} thread worker(s)"
        )
        runs.append(run_peer(plan.peer_tasks, workers=workers))
    best = max(runs, key=lambda r: max(r["enqueue_plus_execute_per_s"], r["concurrent_per_s"]))
    out["peer"] = {"best": best, "runs": runs}


def rows_pg(plan: Plan, rows: set[str], out: dict[str, Any]) -> None:
    """The PostgreSQL rows, on one server started for them (each row a fresh database)."""
    from .pg import PgBench, run_pg_e2e

    with PgBench() as pg:
        out["postgres"] = {"version": pg.version(), "fsync": True}
        log(f"PostgreSQL {out['postgres']['version']} (fsync on) on port {pg.server.port}")
        wanted = [(name, n) for name, n in (("pg", 1), ("pg2", 2)) if name in rows]
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in wanted}
        for round_ in range(plan.pg_rounds):
            # the order flips each round (9, 9b, then 9b, 9, …): a drift of the machine's
            # speed during the run weighs on both rows alike
            for name, replicas in wanted if round_ % 2 == 0 else wanted[::-1]:
                log(
                    f"{name} (round {round_ + 1} of {plan.pg_rounds}): {plan.pg_tasks} echo "
                    f"tasks over {plan.connections} connections, {replicas} "
                    f"replica{'s' if replicas > 1 else ''} on one database"
                )
                runs[name].append(
                    run_pg_e2e(pg, plan.pg_tasks, replicas, plan.connections, **plan.e2e_settings)
                )
        for name, results in runs.items():
            out[name] = median_run(results)
            out[name]["rounds"] = [round_summary(r) for r in results]
        if "pg" in runs and "pg2" in runs:
            out["pg_pairs"] = [
                pair_ratios(one, two) for one, two in zip(runs["pg"], runs["pg2"], strict=True)
            ]
        if "procrastinate" in rows:
            from .pgpeer import run_procrastinate

            runs = []
            for concurrency in plan.procrastinate_concurrency:
                log(
                    f"procrastinate: {plan.pg_tasks} echo jobs, its worker with concurrency {concurrency}"
                )
                runs.append(run_procrastinate(pg, plan.pg_tasks, concurrency))
            best = max(
                runs, key=lambda r: max(r["defer_plus_execute_per_s"], r["concurrent_per_s"])
            )
            out["procrastinate"] = {"best": best, "runs": runs}


def median_run(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The round of median tasks/s (the lower middle of an even number)."""
    ranked = sorted(results, key=lambda r: float(r["tasks_per_s"]))
    return dict(ranked[(len(ranked) - 1) // 2])


def _cpu_per_task(r: dict[str, Any], key: str) -> float:
    return float(r[key]["per_unit"]["total_us"])


def round_summary(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "tasks_per_s": r["tasks_per_s"],
        "sidetask_us": _cpu_per_task(r, "server_cpu"),
        "postgres_us": _cpu_per_task(r, "postgres_cpu"),
        "stolen": r["stolen"],
    }


def pair_ratios(one: dict[str, Any], two: dict[str, Any]) -> dict[str, float]:
    """Row 9b over row 9 of one round: tasks/s, and the CPU per task of each side."""

    def ratio(a: float, b: float) -> float:
        return a / b if b else float("nan")

    return {
        "rate": ratio(two["tasks_per_s"], one["tasks_per_s"]),
        "sidetask_cpu": ratio(_cpu_per_task(two, "server_cpu"), _cpu_per_task(one, "server_cpu")),
        "postgres_cpu": ratio(
            _cpu_per_task(two, "postgres_cpu"), _cpu_per_task(one, "postgres_cpu")
        ),
    }


def row_sse(plan: Plan, out: dict[str, Any]) -> None:
    from .fanout import case_settings, run_fanout

    cases = []
    for subscribers, rate in plan.sse_cases:
        log(f"sse: {subscribers} subscribers x {rate:g} events/s for {plan.sse_seconds:g} s")
        result = run_fanout(subscribers, rate, plan.sse_seconds)
        result["published_per_s"] = result["published"] / plan.sse_seconds
        cases.append(result)
    out["sse"] = {
        "cases": cases,
        "settings": {f"{s}x{r:g}": case_settings(s) for s, r in plan.sse_cases},
    }


def row_login_flood(plan: Plan, out: dict[str, Any]) -> None:
    from .login import run_login_flood

    log(
        f"login-flood: {plan.flood_logins} fresh logins quiet, then under {plan.flood_connections} "
        "connections of wrong passwords from one address, then from as many addresses"
    )
    out["login_flood"] = run_login_flood(
        plan.flood_logins, plan.flood_connections, plan.flood_warmup
    )


def row_stored(plan: Plan, rows: set[str], out: dict[str, Any]) -> None:
    from . import dataset
    from .reads import run_reads

    db = work_dir() / "stored.db"
    log(f"reads/startup: building a database of {plan.db_tasks:,} tasks")
    info = dataset.build(db, plan.db_tasks)
    log(f"  built in {info['seconds']:.1f} s ({info['mb']:.0f} MB); starting a server on it")
    result = run_reads(
        db, info["last_id"], plan.read_seconds, reads="reads" in rows, warmup=plan.read_warmup
    )
    result["database"] = info
    out["stored"] = result


# --- the table ---


@dataclass
class Line:
    row: str
    figure: str
    value: str
    target: str = ""
    verdict: str = ""


def fmt(value: float, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def stolen_note(share: float) -> str:
    """A round's steal, when enough to matter (a few percent is every round's)."""
    return f" (steal {share:.0%})" if share >= 0.05 else ""


def verdict(ok: bool | None, quick: bool) -> str:
    if ok is None:
        return ""
    word = "PASS" if ok else "MISS"
    return word.lower() + "*" if quick else word


def cpu_line(label: str, window: dict[str, Any], server: bool = True) -> Line:
    """A sub-line: the server's CPU over a measured window, split (benchlib.cpu)."""
    return Line("", f"  {label}", describe_cpu(window, server=server))


#: how far the backlog row's per-task figures may be from the empty case's and still
#: "match within noise": the spread at which the table calls the machine busy
NOISE = 0.15


def backlog_lines(plan: Plan, out: dict[str, Any]) -> list[Line]:
    b = out["backlog"]
    load, low = b["under_load"], b["low_load"]
    n = b["database"]["tasks"]
    ok = load["finished"] and load["complete"] == load["tasks"] and b["still_waiting"] == n
    check = (
        ""
        if load["finished"] and load["complete"] == load["tasks"]
        else f" (ONLY {load['complete']}/{load['tasks']} complete: {load['statuses']})"
    )
    days = b["database"]["delay_s"] / 86400
    lines = [
        Line(
            "3b backlog",
            f"as row 3, {n:,} tasks already waiting (delayed {days:g} day{'s' if days != 1 else ''})",
            f"{fmt(load['tasks_per_s'])} tasks/s{check}",
        ),
        Line(
            "",
            "  every status stored; the backlog untouched",
            f"{load['complete']:,}/{load['tasks']:,} tasks; {b['still_waiting']:,}/{n:,} still waiting",
        ),
        cpu_line("server CPU per task", load["server_cpu"]),
        Line(
            "",
            "  dispatch p50, low load / under load",
            f"{fmt(low['dispatch_ms']['p50'], 0)} ms / {fmt(load['dispatch_ms']['p50'], 0)} ms"
            f" (empty: {fmt(out['e2e']['low_load']['dispatch_ms']['p50'], 0)} ms / "
            f"{fmt(out['e2e']['under_load']['dispatch_ms']['p50'], 0)} ms)"
            if "e2e" in out
            else f"{fmt(low['dispatch_ms']['p50'], 0)} ms / {fmt(load['dispatch_ms']['p50'], 0)} ms",
        ),
    ]
    if "e2e" in out:
        empty = out["e2e"]["under_load"]
        mine, theirs = load["server_cpu"]["per_unit"], empty["server_cpu"]["per_unit"]

        def ratio(key: str) -> float:
            return mine[key] / theirs[key] if theirs[key] else float("nan")

        rate = load["tasks_per_s"] / empty["tasks_per_s"] if empty["tasks_per_s"] else 0.0
        cost = ratio("total_us")
        lines.append(
            Line(
                "",
                "  backlog / empty database (row 3, same run)",
                f"tasks/s {rate:.2f}x; CPU per task {cost:.2f}x (loop {ratio('loop_us'):.2f}x, "
                f"writer {ratio('writer_us'):.2f}x)",
                f"matches the empty case within noise (±{NOISE:.0%})",
                verdict(
                    ok
                    and abs(rate - 1) <= NOISE
                    and abs(cost - 1) <= NOISE
                    and abs(ratio("writer_us") - 1) <= NOISE,
                    plan.quick,
                ),
            )
        )
    return lines


def pg_lines(plan: Plan, out: dict[str, Any]) -> list[Line]:
    """Rows 9 (pg), 9b (pg2) and 10 (procrastinate)."""
    q = plan.quick
    lines: list[Line] = []
    for name, label in (("pg", "9 PostgreSQL"), ("pg2", "9b 2 replicas")):
        if name not in out:
            continue
        r = out[name]
        ok = r["finished"] and r["complete"] == r["tasks"]
        check = "" if ok else f" (ONLY {r['complete']}/{r['tasks']} complete: {r['statuses']})"
        n = r["replicas"]
        lines.append(
            Line(
                label,
                f"{r['tasks']:,} echo tasks to success, {r['connections']} conns, "
                f"{n} replica{'s' if n > 1 else ''}",
                f"{fmt(r['tasks_per_s'])} tasks/s{check}",
                "all complete",
                verdict(ok, q),
            )
        )
        lines.append(
            Line(
                "",
                "  every status stored as an event, each once",
                f"{r['complete']:,}/{r['tasks']:,} tasks; submits answered at {fmt(r['submits_per_s'])}/s",
            )
        )
        lines.append(
            Line(
                "",
                f"  sidetask CPU per task{' (replicas summed)' if n > 1 else ''}",
                describe_cpu(r["server_cpu"], server=False),
            )
        )
        if n > 1:
            for i, w in enumerate(r["replica_cpu"], start=1):
                lines.append(Line("", f"    replica {i}", describe_cpu(w, server=False)))
        lines.append(
            Line(
                "",
                "  PostgreSQL server CPU per task",
                describe_cpu(r["postgres_cpu"], server=False, main="postmaster"),
            )
        )
        d = r["dispatch_ms"]
        lines.append(
            Line(
                "",
                f"  dispatch, under load ({r['tasks']:,})",
                f"p50 {fmt(d['p50'], 0)} ms, p99 {fmt(d['p99'], 0)} ms",
            )
        )
        rounds = r.get("rounds", [])
        if len(rounds) > 1:
            lines.append(
                Line(
                    "",
                    f"  {len(rounds)} rounds: tasks/s, CPU per task (sidetask + PostgreSQL)",
                    "; ".join(
                        f"{fmt(x['tasks_per_s'], 0)}, {fmt(x['sidetask_us'], 0)} + "
                        f"{fmt(x['postgres_us'], 0)} µs" + stolen_note(x["stolen"])
                        for x in rounds
                    ),
                )
            )
        elif rounds:
            lines.append(
                Line("", "  steal (machine time the hypervisor took)", f"{rounds[0]['stolen']:.1%}")
            )
    if "pg_pairs" in out:
        pairs = out["pg_pairs"]
        rate, cost, pg_cost = (
            statistics.median(p[key] for p in pairs)
            for key in ("rate", "sidetask_cpu", "postgres_cpu")
        )
        each = ""
        if len(pairs) > 1:
            each = (
                " (rounds: "
                + ", ".join(
                    f"{p['rate']:.2f}/{p['sidetask_cpu']:.2f}/{p['postgres_cpu']:.2f}"
                    for p in pairs
                )
                + ")"
            )
        lines.append(
            Line(
                "",
                f"  2 replicas / 1 (rows 9b / 9, {'median of ' + str(len(pairs)) + ' rounds' if len(pairs) > 1 else 'same run'})",
                f"tasks/s {rate:.2f}x; sidetask CPU per task {cost:.2f}x; PostgreSQL's {pg_cost:.2f}x{each}",
                f"tasks/s >= 1x; CPU per task flat (at most +{NOISE:.0%})",
                verdict(rate >= 1.0 and cost <= 1 + NOISE and pg_cost <= 1 + NOISE, q),
            )
        )
    if "procrastinate" in out:
        p = out["procrastinate"]["best"]
        ok = (
            p["sequential_check"]["succeeded"] == p["tasks"]
            and p["concurrent_check"]["succeeded"] == p["tasks"]
        )
        lines.append(
            Line(
                "10 peer: procrastinate",
                f"{p['tasks']:,} jobs, its worker, concurrency {p['concurrency']}",
                f"{fmt(p['defers_per_s'])} defers/s, {fmt(p['executions_per_s'])} executions/s"
                + ("" if ok else f" (NOT ALL SUCCEEDED: {p['concurrent_check']['statuses']})"),
            )
        )
        lines.append(
            Line(
                "",
                "  defer-plus-execute",
                f"{fmt(p['defer_plus_execute_per_s'])}/s sequential, {fmt(p['concurrent_per_s'])}/s concurrent",
            )
        )
        lines.append(
            Line(
                "",
                "  procrastinate CPU per job (concurrent)",
                f"worker {describe_cpu(p['worker_cpu'], server=False, main='main')}; "
                f"producer {fmt(p['producer_cpu_us_per_task'], 0)} µs",
            )
        )
        lines.append(
            Line(
                "",
                "  PostgreSQL server CPU per job",
                describe_cpu(p["postgres_cpu"], server=False, main="postmaster"),
            )
        )
        if "pg" in out:
            theirs = max(p["defer_plus_execute_per_s"], p["concurrent_per_s"])
            ratio = out["pg"]["tasks_per_s"] / theirs
            lines.append(
                Line(
                    "",
                    "  sidetask pg (row 9) / procrastinate (its better figure)",
                    f"{ratio:.2f}x",
                    ">= 3x",
                    verdict(ratio >= 3, q),
                )
            )
    return lines


def build_table(plan: Plan, out: dict[str, Any]) -> list[Line]:
    q = plan.quick
    lines: list[Line] = []
    wrk_load = f"wrk -t{plan.wrk_threads} -c{plan.connections}, {plan.wrk_seconds} s"

    def latency(r: dict[str, Any]) -> str:
        return f"p50 {fmt(r['p50_ms'], 2)} ms, p99 {fmt(r['p99_ms'], 2)} ms"

    def errors(r: dict[str, Any]) -> str:
        return f"; {sum(r['errors'].values())} ERRORS {r['errors']}" if r["errors"] else ""

    if "ceiling" in out:
        c = out["ceiling"]
        lines.append(
            Line(
                "1 ceiling",
                f"minimal aiohttp POST, {wrk_load}",
                f"{fmt(c['requests_per_s'])} req/s; {latency(c)}{errors(c)}",
            )
        )
        lines.append(cpu_line("ceiling CPU per request", c["server_cpu"], server=False))
    if "submit" in out:
        s = out["submit"]
        lost = (
            ""
            if s["stored_tasks"] >= s["requests"]
            else f"; ONLY {s['stored_tasks']:,} TASKS STORED FOR {s['requests']:,} ANSWERS"
        )
        lines.append(
            Line(
                "2 submit",
                f"POST …/jobs/echo, {wrk_load}",
                f"{fmt(s['requests_per_s'])} req/s; {latency(s)}{errors(s)}{lost}",
            )
        )
        lines.append(cpu_line("server CPU per request", s["server_cpu"]))
        ratio = s["ratio_to_ceiling"]
        again = out["ceiling"]["after_submit"]
        before = out["ceiling"]["requests_per_s"]
        spread = abs(again["requests_per_s"] - before) / max(before, again["requests_per_s"])
        lines.append(
            Line(
                "",
                "  ceiling again, after submit",
                f"{fmt(again['requests_per_s'])} req/s; {latency(again)}"
                + (f"; {spread:.0%} APART: A BUSY MACHINE" if spread > 0.15 else ""),
            )
        )
        lines.append(cpu_line("ceiling CPU per request", again["server_cpu"], server=False))
        lines.append(
            Line(
                "",
                "  ratio to the ceiling (mean of both)",
                f"{ratio:.0%}",
                ">= 50%",
                verdict(ratio >= 0.5 and not s["errors"] and not lost, q),
            )
        )
    if "e2e" in out:
        e = out["e2e"]
        load, low = e["under_load"], e["low_load"]
        ok = load["finished"] and load["complete"] == load["tasks"]
        check = (
            "" if ok else f" (ONLY {load['complete']}/{load['tasks']} complete: {load['statuses']})"
        )
        lines.append(
            Line(
                "3 end to end",
                f"{load['tasks']:,} echo tasks to success, {plan.connections} conns",
                f"{fmt(load['tasks_per_s'])} tasks/s{check}",
                "all complete",
                verdict(ok, q),
            )
        )
        lines.append(
            Line(
                "",
                "  every status stored as an event",
                f"{load['complete']:,}/{load['tasks']:,} tasks; submits answered at {fmt(load['submits_per_s'])}/s",
            )
        )
        lines.append(cpu_line("server CPU per task", load["server_cpu"]))
        d = low["dispatch_ms"]
        lines.append(
            Line(
                "",
                f"  dispatch, low load ({low['tasks']} one at a time)",
                f"p50 {fmt(d['p50'], 0)} ms, p99 {fmt(d['p99'], 0)} ms, mean {fmt(d['mean'], 2)} ms (events, 1 ms steps)",
                "p50 <= 2 ms",
                verdict(d["p50"] <= 2, q),
            )
        )
        cl = low["client_submit_to_running_ms"]
        lines.append(
            Line(
                "",
                "  submit -> running seen by a client",
                f"p50 {fmt(cl['p50'], 2)} ms, p99 {fmt(cl['p99'], 2)} ms (HTTP + SSE included)",
            )
        )
        d = load["dispatch_ms"]
        lines.append(
            Line(
                "",
                f"  dispatch, under load ({load['tasks']:,})",
                f"p50 {fmt(d['p50'], 0)} ms, p99 {fmt(d['p99'], 0)} ms",
            )
        )
    if "backlog" in out:
        lines.extend(backlog_lines(plan, out))
    if "peer" in out:
        p = out["peer"]["best"]
        lines.append(
            Line(
                "4 peer: Huey",
                f"SqliteHuey, {p['tasks']:,} tasks, {p['workers']} thread worker{'s' if p['workers'] > 1 else ''}",
                f"{fmt(p['enqueues_per_s'])} enqueues/s, {fmt(p['executions_per_s'])} executions/s",
            )
        )
        lines.append(
            Line(
                "",
                "  enqueue-plus-execute",
                f"{fmt(p['enqueue_plus_execute_per_s'])}/s sequential, {fmt(p['concurrent_per_s'])}/s concurrent",
            )
        )
        if "consumer_cpu" in p:
            lines.append(
                Line(
                    "",
                    "  Huey CPU per task (concurrent)",
                    f"consumer {describe_cpu(p['consumer_cpu'], server=False, main='main')}; "
                    f"producer {fmt(p['producer_cpu_us_per_task'], 0)} µs",
                )
            )
        if "e2e" in out:
            huey_rate = max(p["enqueue_plus_execute_per_s"], p["concurrent_per_s"])
            ratio = out["e2e"]["under_load"]["tasks_per_s"] / huey_rate
            lines.append(
                Line(
                    "",
                    "  sidetask e2e / Huey (its better figure)",
                    f"{ratio:.2f}x",
                    ">= 3x",
                    verdict(ratio >= 3, q),
                )
            )
    lines.extend(pg_lines(plan, out))
    if "stored" in out:
        st = out["stored"]
        n = st["database"]["tasks"]
        label = f"{n:,} stored"
        for key, name, target in (
            ("get", "GET one task (random id)", 5.0),
            ("list", "list status=success&limit=100", 10.0),
            ("deep_page", "same, page token near the end", 10.0),
        ):
            if key not in st:
                continue
            r = st[key]
            lines.append(
                Line(
                    "5 reads" if key == "get" else "",
                    f"{name}, {label}",
                    f"c4: {latency(r['c4'])}{errors(r['c4'])}",
                    f"p99 <= {target:g} ms",
                    verdict(r["c4"]["p99_ms"] <= target and not r["c4"]["errors"], q),
                )
            )
            lines.append(
                Line(
                    "",
                    "",
                    f"c64: {fmt(r['c64']['requests_per_s'])} req/s, {latency(r['c64'])}{errors(r['c64'])}",
                )
            )
            lines.append(cpu_line("server CPU per request, c64", r["c64"]["server_cpu"]))
    if "sse" in out:
        for i, c in enumerate(out["sse"]["cases"]):
            target = (
                100 if c["rate"] >= 100 else 150
            )  # 1,000 x 100 ev/s: 100 ms; 5,000 x 20 ev/s: 150 ms
            all_delivered = c["deliveries"] == c["deliveries_expected"] and c["published"] > 0
            at_rate = c["published_per_s"] >= 0.95 * c["rate"]
            lines.append(
                Line(
                    "6 SSE fan-out" if i == 0 else "",
                    f"{c['subscribers']:,} subs x {c['rate']:g} ev/s, {c['seconds']:g} s",
                    f"lag p50 {fmt(c['lag_p50_ms'])} ms, p99 {fmt(c['lag_p99_ms'])} ms; {fmt(c['delivered_per_s'])} delivered/s",
                    f"p99 <= {target} ms, all delivered",
                    verdict(c["lag_p99_ms"] <= target and all_delivered and at_rate, q),
                )
            )
            delivered = (
                f"all {c['deliveries']:,} delivered"
                if all_delivered
                else f"ONLY {c['deliveries']:,}/{c['deliveries_expected']:,} delivered"
            )
            rate = f"{c['published_per_s']:.1f}/s" + (
                "" if at_rate else f", < 95% of {c['rate']:g}/s ASKED"
            )
            lines.append(
                Line(
                    "",
                    "",
                    f"{c['published']} events ({rate}); {delivered}; RSS {fmt(c['rss_peak_mb'], 0)} MB",
                )
            )
            lines.append(cpu_line("server CPU per event delivered", c["server_cpu"]))
    if "stored" in out:
        st = out["stored"]
        n = st["database"]["tasks"]
        lines.append(
            Line(
                "7 start-up",
                f"process start to /ready, {n:,} stored",
                f"{st['ready_s'] * 1000:,.0f} ms",
                "<= 1 s",
                verdict(st["ready_s"] <= 1.0, q),
            )
        )
        lines.append(cpu_line("server CPU to ready", st["cpu_to_ready"]))
        lines.append(
            Line(
                "",
                "  RSS idle",
                f"{fmt(st['rss_idle_mb'], 0)} MB",
                "<= 100 MB",
                verdict(st["rss_idle_mb"] <= 100, q),
            )
        )
        if "get" in st:
            lines.append(
                Line(
                    "",
                    "  RSS peak (process life, reads included)",
                    f"{fmt(st['rss_peak_mb'], 0)} MB",
                )
            )
    if "login_flood" in out:
        f = out["login_flood"]

        def logins(r: dict[str, Any]) -> str:
            refused = {k: v for k, v in r["statuses"].items() if k != "200"}
            others = f"; {sum(refused.values())} not 200: {refused}" if refused else ""
            return f"p50 {fmt(r['p50_ms'], 0)} ms, p99 {fmt(r['p99_ms'], 0)} ms ({r['ok']}/{r['logins']} ok{others})"

        def answered(r: dict[str, Any]) -> str:
            return ", ".join(f"{k}: {v:,}" for k, v in sorted(r["flood_statuses"].items()))

        lines.append(
            Line(
                "8 login flood",
                f"fresh correct login, {f['iterations']:,} iterations, quiet",
                logins(f["quiet"]),
            )
        )
        lines.append(cpu_line("server CPU per login", f["quiet"]["server_cpu"]))
        for key, label in (
            ("flood_one_address", "from one address"),
            ("flood_many_addresses", "from 60 addresses"),
        ):
            r = f[key]
            lines.append(
                Line(
                    "",
                    f"  while {f['flood_connections']} conns send wrong passwords {label}",
                    logins(r),
                )
            )
            lines.append(Line("", "", f"flood answered: {answered(r)}"))
            lines.append(cpu_line("server CPU per request (logins and flood)", r["server_cpu"]))
    return lines


def sse_connections(plan: Plan) -> str:
    """The SSE cases' max_connections where one is past the shipped value, for the header."""
    from .fanout import case_settings

    raised = [
        f"{case_settings(s)['max_connections']:,} for {s:,} subscribers"
        for s, _ in plan.sse_cases
        if "max_connections" in case_settings(s)
    ]
    return f", max_connections = {', '.join(raised)} (each one a connection)" if raised else ""


def render(
    plan: Plan,
    machine: dict[str, Any],
    lines: list[Line],
    out: dict[str, Any],
    failures: dict[str, str],
) -> str:
    started = out["started"]
    text = [
        f"sidetask benchmark — {'QUICK run (shorter, smaller: figures are indicative, verdicts marked *)' if plan.quick else 'full run'}, {started}, git {machine['git']}",
        f"machine: {machine['nproc']} cores, {machine['cpu']}, {machine['memory_gib']} GiB, Python {machine['python']}, uvloop {machine['uvloop']}, "
        f"SQLite {machine['sqlite']}, wrk {machine['wrk']}, huey {machine['huey']}"
        + (
            f", PostgreSQL {out['postgres']['version']} (fsync on), procrastinate {machine['procrastinate']}"
            if "postgres" in out
            else ""
        ),
        "load average at start {:.2f} {:.2f} {:.2f}, at end {:.2f} {:.2f} {:.2f}".format(
            *machine["load_average_start"], *out["load_average_end"]
        ),
        "servers: 127.0.0.1, each a fresh process; the shipped config/sidetask.toml (log_level INFO, to a file), except:",
        "  SSE row: jobs = {ticker = benchlib.jobs:ticker}, progress_interval = 0.001 (each progress report an event)"
        + sse_connections(plan)
        + "; "
        + (f"e2e row: {plan.e2e_settings}" if plan.e2e_settings else "nothing else")
        + (
            f"; backlog row: max_waiting = {out['backlog']['settings']['max_waiting']:,} "
            "(the delayed tasks count against it)"
            if "backlog" in out
            else ""
        )
        + (
            "; login-flood row: users = {bench = <PBKDF2, 600,000 iterations>}"
            if "login_flood" in out
            else ""
        ),
        "",
    ]
    widths = [
        max(len(getattr(line, f)) for line in lines) if lines else 0
        for f in ("row", "figure", "value", "target")
    ]
    header = Line("row", "measure", "figure", "target", "")
    for line in [header, *lines]:
        text.append(
            f"{line.row:<{widths[0]}}  {line.figure:<{widths[1]}}  {line.value:<{widths[2]}}  {line.target:<{widths[3]}}  {line.verdict}".rstrip()
        )
        if line is header:
            text.append("-" * (sum(widths) + 14))
    for name, error in failures.items():
        text.append(f"{name}: FAILED: {error}")
    text.append("")
    if "get" in out.get("stored", {}):
        text.append(
            "c4 / c64: wrk with 4 connections (1 thread; the targets are judged there) / 64 connections (2 threads)"
        )
    if "e2e" in out:
        from .e2e import EXPECTED

        load = out["e2e"]["under_load"]
        text.append(
            "end to end: N / (first request written -> create_ms of the last success event); a task is complete with events "
            + EXPECTED
        )
        if load["complete"] != load["tasks"]:
            text.append(f"  event sequences seen: {load['sequences']}")
        text.append(
            "dispatch: created -> running, from the create_ms of the task's events (start of the transaction that wrote each)"
        )
    if "backlog" in out:
        text.append(
            "backlog: the file is made before the server starts: one task submitted with ?delay= through the service, its row "
            "and its task.created event copied with new ids; ratios are backlog / empty, judged within "
            f"±{NOISE:.0%} on tasks/s, on CPU per task and on the writer's CPU per task"
        )
    if out.keys() & {"ceiling", "e2e", "stored", "sse", "login_flood"}:
        text.append(
            "server CPU: utime + stime from /proc over each measured window (under load: first request to last task finished), "
            "per task or request; loop = the main thread (the event loop), writer = the thread named sidetask-writer, "
            "other = the rest of the process (aiosqlite readers, job threads, ended threads), child NAME = a child process "
            f"by its comm; cores = CPU s per s; 1 tick = {TICK_US / 1000:g} ms"
        )
    if "peer" in out:
        p = out["peer"]["best"]
        text.append(
            "Huey: consumer `huey_consumer -k thread -n -d 0.01 -m 0.1`, SqliteHuey(fsync=True); sequential = N / (enqueue N with no "
            "consumer + execute N from the consumer's start); concurrent = N / (first enqueue to N-th completion); "
            f"the ratio uses the better of the two (workers tried: {', '.join(str(r['workers']) for r in out['peer']['runs'])}; best {p['workers']}); "
            "its CPU per task: the consumer's (/proc) from the first enqueue to the N-th completion, and the producer's "
            "while it enqueued (Huey's enqueue is the insert that sidetask's server does)"
        )
    if "sse" in out:
        text.append(
            "SSE: events = the task's progress reports that became events (counted in the database; the service coalesces "
            "progress when it falls behind); a case passes with >= 95% of the rate asked, every event to every subscriber, p99 lag in target"
        )
    if out.keys() & {"pg", "pg2", "procrastinate"}:
        from .pg import EXPECTED as PG_EXPECTED

        text.append(
            "PostgreSQL rows: one throwaway server (tests.pgserver, fsync on), each row on a fresh database of it; "
            "9/9b as row 3 under load (submissions split evenly over the replicas' connections), complete = events "
            + PG_EXPECTED
            + "; sidetask CPU = every replica's process (the writer is a task on the loop); PostgreSQL CPU = "
            "the postmaster and every backend, same window"
        )
    if "procrastinate" in out:
        p = out["procrastinate"]["best"]
        text.append(
            "procrastinate: its worker (`procrastinate worker --concurrency C`, a pool of C + 2 connections), "
            f"the producer deferring one job per defer_async from {p['producers']} coroutines; sequential = "
            "N / (defer N with no worker + its first job's start to the last success, --one-shot); concurrent = "
            "N / (first defer to the last `succeeded` event); the ratio uses the better of the two (concurrency tried: "
            f"{', '.join(str(r['concurrency']) for r in out['procrastinate']['runs'])}; best {p['concurrency']}); "
            "CPU per job from the concurrent run"
        )
    if plan.quick:
        text.append(
            "* quick run: fewer tasks, shorter loads, fewer subscribers, 100,000 stored tasks instead of 1,000,000"
            + (
                f", {plan.backlog_waiting:,} waiting in the backlog row instead of 100,000"
                if "backlog" in out
                else ""
            )
        )
    return "\n".join(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="under a minute: shorter loads, smaller sizes (figures indicative)",
    )
    parser.add_argument(
        "--rows",
        default=",".join(ROWS),
        help=f"comma-separated subset of {','.join(ROWS)} (default: all)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the figures as JSON instead of the table"
    )
    parser.add_argument(
        "--json-file", metavar="FILE", help="also write the figures as JSON to FILE"
    )
    parser.add_argument(
        "--tasks",
        type=int,
        help="N of the e2e and peer rows (default 20,000; quick 2,000 and 1,000)",
    )
    parser.add_argument(
        "--db-tasks",
        type=int,
        help="tasks stored for reads/startup (default 1,000,000; quick 100,000)",
    )
    parser.add_argument(
        "--backlog",
        type=int,
        help="tasks waiting in the backlog row's database (default 100,000; quick 20,000)",
    )
    parser.add_argument(
        "--huey-workers",
        help="comma-separated consumer worker counts to try (default 1,4; quick 4)",
    )
    parser.add_argument(
        "--pg-tasks",
        type=int,
        help="N of the pg, pg2 and procrastinate rows (default 10,000; quick 2,000)",
    )
    parser.add_argument(
        "--pg-rounds",
        type=int,
        help="rounds of the pg and pg2 rows, alternated; their figures are the median "
        "round's (default 3; quick 1)",
    )
    parser.add_argument(
        "--procrastinate-concurrency",
        help="comma-separated worker concurrencies to try (default 4,16; quick 16)",
    )
    parser.add_argument(
        "--e2e-concurrency", type=int, help="the e2e row's `concurrency` setting (default: shipped)"
    )
    parser.add_argument(
        "--sse-cases", help="SUBSCRIBERS:RATE,... (default 1000:100,5000:20; quick 200:100,1000:20)"
    )
    parser.add_argument(
        "--sse-seconds", type=float, help="seconds each SSE case publishes (default 10; quick 2)"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary directory (databases, configs, server logs)",
    )
    args = parser.parse_args(argv)
    unknown = set(args.rows.split(",")) - set(ROWS)
    if unknown:
        parser.error(f"unknown row(s) {', '.join(sorted(unknown))}; rows are {', '.join(ROWS)}")
    return args


def raise_open_files() -> None:
    """Thousands of SSE subscribers need as many sockets here and in the server (which
    inherits the limit): the soft limit goes up to the hard one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard)
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_open_files()
    plan = Plan.make(args.quick)
    if args.tasks:
        plan.e2e_tasks = plan.peer_tasks = args.tasks
    if args.db_tasks:
        plan.db_tasks = args.db_tasks
    if args.backlog:
        plan.backlog_waiting = args.backlog
    if args.huey_workers:
        plan.huey_workers = [int(w) for w in args.huey_workers.split(",")]
    if args.pg_tasks:
        plan.pg_tasks = args.pg_tasks
    if args.pg_rounds:
        plan.pg_rounds = args.pg_rounds
    if args.procrastinate_concurrency:
        plan.procrastinate_concurrency = [int(c) for c in args.procrastinate_concurrency.split(",")]
    if args.e2e_concurrency:
        plan.e2e_settings = {"concurrency": args.e2e_concurrency}
    if args.sse_cases:
        plan.sse_cases = [
            (int(s), float(r)) for s, r in (case.split(":") for case in args.sse_cases.split(","))
        ]
    if args.sse_seconds:
        plan.sse_seconds = args.sse_seconds
    rows = set(args.rows.split(","))
    if "submit" in rows:
        rows.add("ceiling")  # its ratio is to the ceiling of the same run
    if "backlog" in rows:
        rows.add("e2e")  # it is compared with the empty database of the same run

    from .machine import describe, load_average

    began = time.monotonic()
    out: dict[str, Any] = {"started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
    failures: dict[str, str] = {}
    steps: list[tuple[str, Callable[[], None]]] = []
    if "ceiling" in rows:
        steps.append(("ceiling/submit", lambda: row_ceiling_submit(plan, rows, out)))
    if "e2e" in rows:
        steps.append(("e2e", lambda: row_e2e(plan, out)))
    if "backlog" in rows:
        steps.append(("backlog", lambda: row_backlog(plan, out)))
    if "peer" in rows:
        steps.append(("peer", lambda: row_peer(plan, out)))
    if "sse" in rows:
        steps.append(("sse", lambda: row_sse(plan, out)))
    if "login-flood" in rows:
        steps.append(("login-flood", lambda: row_login_flood(plan, out)))
    if rows & {"reads", "startup"}:
        steps.append(("reads/startup", lambda: row_stored(plan, rows, out)))
    if rows & PG_ROWS:
        steps.append(("pg/pg2/procrastinate", lambda: rows_pg(plan, rows, out)))
    if args.keep:
        keep_work_dir()
    try:
        if rows & {"ceiling", "reads"}:
            ensure_wrk()
        if "peer" in rows:
            ensure_huey()
        if rows & PG_ROWS:
            ensure_postgresql()
        if "procrastinate" in rows:
            ensure_procrastinate()
        machine = describe()
        log(
            f"{'quick' if plan.quick else 'full'} run of {', '.join(r for r in ROWS if r in rows)}; files in {work_dir()}"
        )
        for name, step in steps:
            try:
                step()
            except Exception as exc:
                # one line for the table: the error, or the last line of a server's traceback
                text = [ln for ln in str(exc).splitlines() if ln.strip()]
                failures[name] = f"{type(exc).__name__}: {text[0] if text else ''}" + (
                    f" … {text[-1].strip()}" if len(text) > 1 else ""
                )
                log(f"{name} failed:\n{traceback.format_exc()}")
    finally:
        if args.keep:
            log(f"kept {work_dir()}")
        remove_work_dir()
    out["load_average_end"] = load_average()
    machine["load_average_end"] = out["load_average_end"]
    out["seconds"] = time.monotonic() - began
    lines = build_table(plan, out)
    document = json.dumps(
        {
            "quick": plan.quick,
            "plan": asdict(plan),
            "machine": machine,
            "results": out,
            "failures": failures,
            "table": [asdict(line) for line in lines],
        },
        indent=2,
        default=str,
    )
    if args.json_file:
        with open(args.json_file, "w") as handle:
            handle.write(document + "\n")
    if args.json:
        print(document)
    else:
        print(render(plan, machine, lines, out, failures))
        print(f"({out['seconds']:.0f} s)")
    return 1 if failures else 0
