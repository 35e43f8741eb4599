"""A database with many stored tasks, built quickly.

The service creates the schema (a server is started once on the new file, so every
migration runs, and one real echo task is run through it); then the remaining tasks are
inserted with sqlite3 directly, in one transaction with executemany, each row a copy of
that real task with its status, times and result changed. Mix: 90% success, 5% failed,
4% cancelled, 1% pending (paused: never run), created over the last 12 hours (well
inside the retention, so no purge starts). Only tasks are inserted, not their events.
The indexes are built after the rows, so they are more compact than a file grown over
months would have.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
import urllib.request
from pathlib import Path
from typing import Any

from .server import BenchServer

MIX = (("success", 0.90), ("failed", 0.05), ("cancelled", 0.04), ("pending", 0.01))
SPAN_MS = 12 * 3600 * 1000


def _template(db: Path) -> None:
    """Starts the service on `db` (migrations run), runs one echo task to success, stops it."""
    with BenchServer(db=db) as server:
        request = urllib.request.Request(
            f"{server.url}/graphs/hugegraph/jobs/echo",
            data=b'{"bench":1}',
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            task_id = json.loads(response.read())["task_id"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with urllib.request.urlopen(
                f"{server.url}/graphs/hugegraph/tasks/{task_id}", timeout=10
            ) as response:
                if json.loads(response.read())["task_status"] == "success":
                    return
            time.sleep(0.02)
        raise RuntimeError("the template task did not succeed")


def build(db: Path, count: int) -> dict[str, Any]:
    """`count` tasks in a new database at `db`; how long it took."""
    started = time.monotonic()
    _template(db)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")  # a scratch file: nothing to lose
        conn.execute("PRAGMA cache_size = -262144")
        columns = [row[1] for row in conn.execute("PRAGMA table_info(tasks)")]
        template = dict(
            zip(
                columns,
                conn.execute("SELECT * FROM tasks ORDER BY id LIMIT 1").fetchone(),
                strict=True,
            )
        )
        # the columns every row shares with the template (its status and result set per
        # status) first, then the three times each row has of its own
        timed = ["create_ms", "update_ms", "run_after_ms"]
        fixed = [c for c in columns if c not in ("id", *timed)]
        prefixes = {}
        for status, _ in MIX:
            row = {**template, "status": status}
            if status == "failed":
                row["result"] = "RuntimeError: bench failure"
            elif status != "success":
                row["result"] = None
            prefixes[status] = tuple(row[c] for c in fixed)
        rng = random.Random(20261121)
        rest = count - 1
        drawn = rng.choices([s for s, _ in MIX], [w for _, w in MIX], k=rest)
        first_ms = int(time.time() * 1000) - SPAN_MS
        step = SPAN_MS / max(1, rest)
        rows = (
            prefixes[status] + (created, created + 1 + i % 37, created)
            for i, status in enumerate(drawn)
            for created in (first_ms + int(i * step),)
        )
        # Indexes are dropped for the insert and made again from their own SQL in the same
        # transaction: quicker than updating eight indexes row by row, same schema after.
        indexes = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tasks' AND sql IS NOT NULL"
        ).fetchall()
        conn.execute("BEGIN")
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        names = fixed + timed
        conn.executemany(
            f"INSERT INTO tasks ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})", rows
        )
        for _, sql in indexes:
            conn.execute(sql)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (total,) = conn.execute("SELECT COUNT(*) FROM tasks").fetchone()
        (last_id,) = conn.execute("SELECT MAX(id) FROM tasks").fetchone()
        status_counts = dict(
            conn.execute("SELECT status, COUNT(*) FROM tasks GROUP BY status").fetchall()
        )
    finally:
        conn.close()
    return {
        "tasks": total,
        "last_id": last_id,
        "seconds": time.monotonic() - started,
        "mb": db.stat().st_size / 2**20,
        "statuses": status_counts,
    }
