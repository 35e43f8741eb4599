"""What is SQLite's own in the SQLite store: migrations of the file, one process per file,
group commit seen in the statements run, damage only SQLite can hold, and the index every
query uses. What any store must do is the contract, tests/store/, run on SQLite too."""

from __future__ import annotations

import ast
import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from service import clock
from service.errors import SidetaskError, StoreLocked
from service.model import DeliveryAnswer, DeliveryState, Event, Outbox, Status, Task
from service.policy import after_interruption
from service.store import Change, SQLiteStore
from service.store.schema import MIGRATIONS, SCHEMA_VERSION
from tests.store.conftest import GRAPH, new
from tests.sup_util import execute, rows


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture
async def store(db: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(db)
    await store.open()
    yield store
    await store.close()


def set_status(db: Path, task_id: int, status: str) -> None:
    execute(db, "UPDATE tasks SET status = ? WHERE id = ?", (status, task_id))


# --- schema and migrations ---


async def test_a_new_file_gets_the_schema_in_wal_mode(store: SQLiteStore, db: Path) -> None:
    assert rows(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert rows(db, "PRAGMA journal_mode") == [("wal",)]
    tables = {name for (name,) in rows(db, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"tasks", "events"} <= tables


async def test_reopening_keeps_the_data_and_applies_nothing_twice(db: Path) -> None:
    first = SQLiteStore(db)
    await first.open()
    task, _ = await first.insert(new())
    await first.close()
    again = SQLiteStore(db)
    await again.open()
    try:
        assert await again.get(GRAPH, task.id) == task
        assert rows(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    finally:
        await again.close()


async def test_an_older_schema_is_migrated_in_place(db: Path) -> None:
    """A file written by the first schema version gets the later migrations and keeps its rows."""
    with sqlite3.connect(db) as conn:
        conn.executescript(f"{MIGRATIONS[0]}\nPRAGMA user_version = 1;")
        conn.execute(
            "INSERT INTO tasks (graphspace, graph, name, type, callable, status, create_ms, update_ms)"
            " VALUES ('DEFAULT', 'hugegraph', 'old', 'echo', 'service.jobs.echo.run', 'success', 1, 1)"
        )
    conn.close()
    store = SQLiteStore(db)
    await store.open()
    try:
        assert rows(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
        (old,) = await store.list_tasks(GRAPH, None, None, 0)
        assert (old.name, old.status) == ("old", Status.SUCCESS)
    finally:
        await store.close()


async def test_a_newer_schema_is_refused_with_a_clear_message(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.close()
    store = SQLiteStore(db)
    with pytest.raises(SidetaskError, match="newer than this sidetask knows"):
        await store.open()
    # the refusal released the file: a store of the right version may take it later
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    conn.close()


async def test_a_second_store_on_the_same_file_is_refused(store: SQLiteStore, db: Path) -> None:
    second = SQLiteStore(db)
    with pytest.raises(StoreLocked, match="in use by another sidetask process"):
        await second.open()


# --- Idempotency-Keys of files older than the fingerprint ---


async def test_a_key_stored_before_requests_were_fingerprinted_answers_as_a_replay(
    db: Path,
) -> None:
    """A row of a file written before the fingerprint migration has no fingerprint: what
    its request was is not known, and the key answers with its task, as it did then."""
    before = next(i for i, script in enumerate(MIGRATIONS) if "idempotency_fingerprint" in script)
    with sqlite3.connect(db) as conn:
        conn.executescript(";\n".join(MIGRATIONS[:before]) + f";\nPRAGMA user_version = {before};")
        conn.execute(
            "INSERT INTO tasks (graphspace, graph, name, type, callable, status, create_ms,"
            " update_ms, idempotency_key) VALUES ('DEFAULT', 'hugegraph', 'old', 'echo',"
            " 'service.jobs.echo.run', 'new', 1, 1, 'k')"
        )
    conn.close()
    store = SQLiteStore(db)
    await store.open()
    try:
        old, created = await store.insert(new(idempotency_key="k", input='{"any":"thing"}'))
        assert (old.name, created) == ("old", False)
    finally:
        await store.close()


# --- group commit ---


def traced_store(db: Path) -> tuple[SQLiteStore, list[str]]:
    """A store on `db` and the list every SQL statement it runs is appended to."""
    statements: list[str] = []
    lock = threading.Lock()  # the writer's and the readers' threads all trace

    def trace(sql: str) -> None:
        with lock:
            statements.append(sql)

    return SQLiteStore(db, trace=trace), statements


async def test_concurrent_writes_share_transactions(db: Path) -> None:
    """200 submissions at once: every one committed, in far fewer transactions than rows."""
    store, statements = traced_store(db)
    await store.open()
    transactions: list[Sequence[Event]] = []
    store.add_listener(transactions.append)
    try:
        statements.clear()
        inserted = await asyncio.gather(*(store.insert(new(name=f"t{i}")) for i in range(200)))
    finally:
        await store.close()
    assert len({task.id for task, _ in inserted}) == 200
    assert rows(db, "SELECT COUNT(*) FROM tasks") == [(200,)]
    commits = sum(1 for sql in statements if sql.strip().upper() == "COMMIT")
    assert 1 <= commits <= 5
    assert len(transactions) == commits
    assert sum(len(events) for events in transactions) == 200


# --- damage only SQLite can hold ---


async def test_a_list_with_a_blob_where_text_belongs_still_answers(
    store: SQLiteStore, db: Path
) -> None:
    damaged, _ = await store.insert(new())
    fine, _ = await store.insert(new())
    # SQLite cannot put a BLOB into JSON: the list is read the row-by-row way instead
    execute(db, "UPDATE tasks SET name = X'00ff' WHERE id = ?", (damaged.id,))
    listed = await store.list_tasks(GRAPH, None, 10, 0)
    assert [(t.id, t.status) for t in listed] == [
        (damaged.id, Status.UNKNOWN),
        (fine.id, Status.NEW),
    ]


# --- what the plan test runs ---


def recover_as_policy_says(task: Task) -> Change:
    """What the supervisor passes to recover: the policy's change for an interrupted task."""
    outcome = after_interruption(task, clock.now_ms())
    return Change(task.id, outcome.target, outcome.fields)


# --- indexes ---


async def test_every_query_of_the_api_uses_an_index(db: Path) -> None:
    """EXPLAIN QUERY PLAN of every statement the store ran for the API's reads and the
    supervisor's writes: none scans the whole tasks table."""
    store, statements = traced_store(db)
    await store.open()
    try:
        statements.clear()
        store.set_outbox(Outbox(callback_statuses=frozenset({Status.CANCELLED})))
        tasks = [(await store.insert(new(idempotency_key=f"k{i}")))[0] for i in range(3)]
        await store.insert(new(idempotency_key="k0"))
        claimed = await store.claim(2, clock.now_ms(), {"sleep": 1, "gremlin": 0})
        await store.transition_many([Change(t.id, Status.SCHEDULED) for t in claimed])
        set_status(db, tasks[0].id, "running")
        await store.set_progress({tasks[0].id: 3})
        await store.get(GRAPH, tasks[0].id)
        for status in (None, Status.SUCCESS, Status.UNKNOWN):
            await store.list_tasks(GRAPH, status, 100, 0)
            await store.list_tasks(GRAPH, status, None, tasks[0].id)
            # newest first reads the same indexes backwards; a type has an index of its own
            await store.list_tasks(GRAPH, status, 100, 0, descending=True)
            await store.list_tasks(GRAPH, status, 100, tasks[2].id, descending=True)
            await store.list_tasks(GRAPH, status, 100, 0, task_type="sleep")
            await store.list_tasks(GRAPH, status, 100, 0, task_type="sleep", descending=True)
        await store.list_ids(GRAPH, [t.id for t in tasks])
        await store.events_after(0, GRAPH, None, 100)
        await store.events_after(0, None, tasks[1].id, 100)
        await store.events_after(0, None, None, 100)
        await store.last_event_id()
        await store.count_by_status()
        await store.count_statuses(GRAPH)
        # an external worker's lease on a task, its report, renewal and expiry
        worked, _ = await store.insert(new(type="render"))
        now = clock.now_ms()
        lease, _ = await store.lease("w1", ["render"], now, "token", now + 60_000)
        assert lease is not None and lease.task.id == worked.id
        await store.lease("w1", ["render"], now, "token2", now + 60_000)  # none left
        await store.report(GRAPH, worked.id, "token", 5, now + 60_000)
        await store.renew_leases(["render"], now + 120_000)
        await store.expire_leases(
            now + 200_000, ["render"], lambda t: Change(t.id, Status.RESTORING)
        )
        await store.set_process_group(tasks[0].id, 4242, "boot")
        await store.process_groups()
        # a webhook's delivery: written with a cancel, claimed, answered, shown
        called, _ = await store.insert(new(callback="https://example.org/cb"))
        await store.transition(Change(called.id, Status.CANCELLED))
        for due in await store.claim_deliveries(5, 60_000):
            answer = DeliveryAnswer(now, 200, None, 1)
            await store.record_delivery(due, answer, DeliveryState.DELIVERED, None)
        await store.deliveries(called.id)
        await store.next_delivery_ms()
        await store.delete(GRAPH, tasks[2].id, None)
        await store.recover(recover_as_policy_says)
        await store.purge(clock.now_ms(), clock.now_ms())
    finally:
        await store.close()

    queries = {
        sql for sql in statements if sql.split(None, 1)[0].upper() in {"SELECT", "UPDATE", "DELETE"}
    }
    assert len(queries) > 15
    with sqlite3.connect(db) as conn:
        # the store's readers have this function (a row whose input is not JSON reads as unknown)
        conn.create_function("sidetask_json", 1, lambda text: 1, deterministic=True)
        for sql in sorted(queries):
            plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
            # "SCAN (subquery-N)" reads the rows of a subquery (whose own plan is checked
            # here too), not a table
            scans = [
                step
                for step in plan
                if step.startswith("SCAN")
                and "INDEX" not in step
                and "INTEGER PRIMARY KEY" not in step
                and not step.startswith("SCAN events")
                and not step.startswith("SCAN (subquery-")
                # the paused job types, read whole by each claim: a row per paused type
                and step != "SCAN paused_types"
            ]
            assert not scans, f"{sql}\n{plan}"
            if " FROM tasks " in sql and " LIMIT " in sql:
                # a page or a claim reads in index order and stops: no sort of every match
                assert not any("TEMP B-TREE" in step for step in plan), f"{sql}\n{plan}"
            if sql.startswith("SELECT id, status, type FROM tasks"):  # the claim
                assert plan == ["SCAN tasks USING INDEX tasks_waiting"], f"{sql}\n{plan}"
            if " FROM tasks " in sql and " AND type = ?" in sql and " AND status" not in sql:
                assert any("tasks_by_graph_type" in step for step in plan), f"{sql}\n{plan}"
            if "GROUP BY status, type" in sql:
                assert plan == ["SCAN tasks USING COVERING INDEX tasks_by_status_type"], plan
    conn.close()


# --- no library internals ---


def test_the_store_reads_no_private_attribute_of_a_library() -> None:
    """The store uses aiosqlite and sqlite3 through their public API (the writer owns its
    connection and thread): no `x._name` in service/store/ but on the store's own objects."""
    store_dir = Path(__file__).parents[2] / "service" / "store"
    found = []
    for path in sorted(store_dir.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"})
            ):
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    assert len(list(store_dir.glob("*.py"))) >= 7
    assert found == []
