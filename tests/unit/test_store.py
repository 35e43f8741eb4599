"""The SQLite store on a real file: migrations, compare-and-set transitions, group commit,
claims, recovery, retention, indexes, and one process per database file."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from service import clock
from service.errors import (
    NotFound,
    SidetaskError,
    StoreLocked,
    TransitionRefused,
    Unprocessable,
)
from service.model import (
    COMPLETED_STATUSES,
    Event,
    EventKind,
    GraphRef,
    NewTask,
    Status,
    Task,
    can_transition,
)
from service.policy import after_interruption
from service.store import Change, SQLiteStore
from service.store.schema import MIGRATIONS, SCHEMA_VERSION
from tests.sup_util import execute, rows

GRAPH = GraphRef("DEFAULT", "hugegraph")
OTHER = GraphRef("gs1", "other")


def new(graph: GraphRef = GRAPH, **fields: object) -> NewTask:
    values: dict[str, object] = {
        "graph": graph,
        "type": "echo",
        "callable": "service.jobs.echo.run",
        "name": "t",
        "input": None,
    }
    values.update(fields)
    return NewTask(**values)  # type: ignore[arg-type]


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


def stored_status(db: Path, task_id: int) -> str:
    return str(rows(db, "SELECT status FROM tasks WHERE id = ?", (task_id,))[0][0])


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


# --- inserts ---


async def test_insert_stores_a_new_task_and_its_created_event(store: SQLiteStore, db: Path) -> None:
    task, created = await store.insert(new(input='{"a":1}', priority=3, max_retries=2))
    assert created
    assert (task.status, task.input, task.priority, task.max_retries) == (
        Status.NEW, '{"a":1}', 3, 2,
    )
    assert task.create_ms == task.update_ms > 0
    assert rows(db, "SELECT kind, status FROM events WHERE task_id = ?", (task.id,)) == [
        ("task.created", "new")
    ]


async def test_ids_increase_and_are_never_reused(store: SQLiteStore) -> None:
    first, _ = await store.insert(new())
    await store.delete(GRAPH, first.id, None)
    second, _ = await store.insert(new())
    assert second.id > first.id


async def test_an_idempotency_key_returns_the_first_task_within_a_graph(store: SQLiteStore) -> None:
    first, created = await store.insert(new(idempotency_key="k", input='{"a":1,"b":[2]}'))
    # the same request: the members of an object in another order are the same input
    again, created_again = await store.insert(new(idempotency_key="k", input='{"b":[2],"a":1}'))
    elsewhere, created_elsewhere = await store.insert(new(OTHER, idempotency_key="k"))
    assert created and not created_again and created_elsewhere
    assert again == first
    assert elsewhere.id != first.id


@pytest.mark.parametrize(
    "change",
    [
        {"input": '{"a":2,"b":[2]}'},
        {"input": None},
        {"name": "other"},
        {"type": "sleep", "callable": "service.jobs.sleep.run"},
        {"priority": 5},
        {"max_retries": 2},
        {"timeout": 60.0},
        {"delay_ms": 1000},
    ],
    ids=lambda change: "+".join(change),
)
async def test_an_idempotency_key_used_with_another_request_is_refused(
    store: SQLiteStore, change: dict[str, Any]
) -> None:
    first, _ = await store.insert(new(idempotency_key="k", input='{"a":1,"b":[2]}'))
    with pytest.raises(Unprocessable) as refused:
        await store.insert(new(idempotency_key="k", **{"input": '{"a":1,"b":[2]}', **change}))
    assert refused.value.message == (
        f"Idempotency-Key 'k' was used with a different request for task {first.id}"
    )
    assert [t.id for t in await store.list_tasks(GRAPH, None, None, 0)] == [first.id]


async def test_a_key_stored_before_requests_were_fingerprinted_answers_as_a_replay(db: Path) -> None:
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


async def test_a_delay_sets_when_the_task_may_run(store: SQLiteStore) -> None:
    task, _ = await store.insert(new(delay_ms=5000))
    assert task.run_after_ms == task.create_ms + 5000
    assert await store.claim(10, task.create_ms + 4999, {}) == []
    (claimed,) = await store.claim(10, task.create_ms + 5000, {})
    assert claimed.id == task.id


# --- compare-and-set transitions ---


async def test_every_change_applies_exactly_when_the_table_allows_it(
    store: SQLiteStore, db: Path
) -> None:
    pairs = [(source, target) for source in Status for target in Status]
    tasks = await asyncio.gather(*(store.insert(new()) for _ in pairs))
    ids = [task.id for task, _ in tasks]
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "UPDATE tasks SET status = ? WHERE id = ?",
            [(source.value, task_id) for (source, _), task_id in zip(pairs, ids, strict=True)],
        )
    conn.close()
    before = rows(db, "SELECT COUNT(*) FROM events")[0][0]

    results = await store.transition_many(
        [Change(task_id, target) for (_, target), task_id in zip(pairs, ids, strict=True)]
    )

    allowed = 0
    for (source, target), task_id, result in zip(pairs, ids, results, strict=True):
        if can_transition(source, target):
            allowed += 1
            assert isinstance(result, Task) and result.status is target, (source, target)
            assert stored_status(db, task_id) == target.value
        else:
            assert isinstance(result, TransitionRefused), (source, target, result)
            assert source.name in result.message and target.name in result.message
            assert stored_status(db, task_id) == source.value
    # one status event per applied change, none for a refused one
    assert rows(db, "SELECT COUNT(*) FROM events")[0][0] == before + allowed
    assert allowed > 20


async def test_a_refused_transition_raises_and_changes_nothing(store: SQLiteStore, db: Path) -> None:
    task, _ = await store.insert(new())
    with pytest.raises(TransitionRefused):
        await store.transition(Change(task.id, Status.SUCCESS, {"result": '"sneaky"'}))
    stored = await store.get(GRAPH, task.id)
    assert stored == task
    assert rows(db, "SELECT COUNT(*) FROM events WHERE task_id = ?", (task.id,)) == [(1,)]


async def test_a_change_can_be_narrowed_to_the_status_it_was_decided_on(store: SQLiteStore) -> None:
    task, _ = await store.insert(new())
    await store.transition(Change(task.id, Status.SCHEDULING))
    # the table allows new|scheduling -> pending, but the caller decided on `new`
    with pytest.raises(TransitionRefused):
        await store.transition(Change(task.id, Status.PENDING, sources=frozenset({Status.NEW})))
    paused = await store.transition(
        Change(task.id, Status.PENDING, sources=frozenset({Status.SCHEDULING}))
    )
    assert paused.status is Status.PENDING


async def test_a_change_to_a_missing_task_is_not_found(store: SQLiteStore) -> None:
    with pytest.raises(NotFound, match="Can't find task with id '999'"):
        await store.transition(Change(999, Status.SCHEDULING))


async def test_a_change_sets_only_the_fields_it_may(store: SQLiteStore) -> None:
    task, _ = await store.insert(new())
    with pytest.raises(ValueError, match="not changeable"):
        await store.transition(Change(task.id, Status.SCHEDULING, {"type": "fail"}))
    assert (await store.get(GRAPH, task.id)) == task


async def test_a_refused_write_does_not_undo_the_others_of_its_transaction(
    store: SQLiteStore, db: Path
) -> None:
    """Writes sharing a transaction each apply or fail on their own."""
    task, _ = await store.insert(new())
    good = store.insert(new(name="good"))
    bad = store.transition(Change(task.id, Status.RUNNING))
    also_good = store.transition(Change(task.id, Status.SCHEDULING))
    results = await asyncio.gather(good, bad, also_good, return_exceptions=True)
    assert isinstance(results[0], tuple) and results[0][0].name == "good"
    assert isinstance(results[1], TransitionRefused)
    assert isinstance(results[2], Task) and results[2].status is Status.SCHEDULING
    assert stored_status(db, task.id) == "scheduling"


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


async def test_listeners_hear_of_committed_events_in_id_order(store: SQLiteStore, db: Path) -> None:
    heard: list[Event] = []

    def listener(events: Sequence[Event]) -> None:
        # called after the commit: another connection already sees the rows
        for event in events:
            assert rows(db, "SELECT COUNT(*) FROM events WHERE id = ?", (event.id,)) == [(1,)]
        heard.extend(events)

    store.add_listener(listener)
    task, _ = await store.insert(new())
    await store.transition(Change(task.id, Status.SCHEDULING))
    with pytest.raises(TransitionRefused):
        await store.transition(Change(task.id, Status.SUCCESS))
    assert [(e.kind, e.status) for e in heard] == [
        (EventKind.CREATED, Status.NEW),
        (EventKind.STATUS, Status.SCHEDULING),
    ]
    assert heard[0].id < heard[1].id


async def test_a_write_after_close_is_refused(db: Path) -> None:
    store = SQLiteStore(db)
    await store.open()
    await store.close()
    with pytest.raises(SidetaskError, match="closed"):
        await store.insert(new())


# --- claims ---


async def test_claim_takes_the_highest_priority_first_then_the_oldest(store: SQLiteStore) -> None:
    priorities = [0, 5, 0, 10, 5, -1]
    ids = [(await store.insert(new(priority=p)))[0].id for p in priorities]
    expected = [i for _, i in sorted(zip(priorities, ids, strict=True), key=lambda x: (-x[0], x[1]))]
    first = await store.claim(4, clock.now_ms(), {})
    rest = await store.claim(10, clock.now_ms(), {})
    assert [t.id for t in first + rest] == expected
    assert {t.status for t in first + rest} == {Status.SCHEDULING}
    assert await store.claim(10, clock.now_ms(), {}) == []


async def test_claim_sends_a_restoring_task_straight_to_queued(store: SQLiteStore, db: Path) -> None:
    task, _ = await store.insert(new())
    set_status(db, task.id, "restoring")
    (claimed,) = await store.claim(10, clock.now_ms(), {})
    assert claimed.status is Status.QUEUED


async def test_claim_leaves_tasks_of_other_statuses(store: SQLiteStore, db: Path) -> None:
    statuses = [s for s in Status if s not in (Status.NEW, Status.RESTORING)]
    for status in statuses:
        task, _ = await store.insert(new())
        set_status(db, task.id, status.value)
    task, _ = await store.insert(new())
    set_status(db, task.id, "from-a-newer-version")
    assert await store.claim(100, clock.now_ms(), {}) == []


async def test_claim_respects_the_room_left_for_each_type(store: SQLiteStore) -> None:
    """A type with no room left is not claimed; one with room for two gets two, and the other
    types fill the rest in priority order."""
    for i in range(4):
        await store.insert(new(type="gremlin", name=f"g{i}", priority=10))
    for i in range(3):
        await store.insert(new(type="sleep", name=f"s{i}", priority=5))
    for i in range(3):
        await store.insert(new(type="echo", name=f"e{i}"))
    claimed = await store.claim(6, clock.now_ms(), {"gremlin": 2, "sleep": 0})
    assert [t.name for t in claimed] == ["g0", "g1", "e0", "e1", "e2"]


# --- progress ---


async def test_progress_is_written_only_for_running_tasks(store: SQLiteStore, db: Path) -> None:
    running, _ = await store.insert(new())
    waiting, _ = await store.insert(new())
    set_status(db, running.id, "running")
    await store.set_progress({running.id: 5, waiting.id: 7, 12345: 1})
    assert (await store.get(GRAPH, running.id)).progress == 5  # type: ignore[union-attr]
    assert (await store.get(GRAPH, waiting.id)).progress == 0  # type: ignore[union-attr]
    # the same value again is not a change: no second event
    await store.set_progress({running.id: 5})
    assert rows(db, "SELECT COUNT(*) FROM events WHERE kind = 'task.progress'") == [(1,)]
    assert rows(db, "SELECT COUNT(*) FROM tasks") == [(2,)]


# --- deletes ---


async def test_delete_removes_completed_tasks_and_refuses_incomplete_ones(
    store: SQLiteStore, db: Path
) -> None:
    done, _ = await store.insert(new())
    set_status(db, done.id, "success")
    waiting, _ = await store.insert(new())
    # the statuses to delete from are the caller's (service.policy.delete_sources, whose
    # refusal message tests/unit/test_policy.py checks); the store only compares and sets
    await store.delete(GRAPH, done.id, COMPLETED_STATUSES)
    with pytest.raises(TransitionRefused):
        await store.delete(GRAPH, waiting.id, COMPLETED_STATUSES)
    assert stored_status(db, waiting.id) == "new"
    with pytest.raises(NotFound):
        await store.delete(OTHER, waiting.id, None)
    await store.delete(GRAPH, waiting.id, None)
    assert rows(db, "SELECT COUNT(*) FROM tasks") == [(0,)]
    assert rows(db, "SELECT task_id, data FROM events WHERE kind = 'task.deleted' ORDER BY id") == [
        (done.id, f'{{"id":{done.id}}}'.encode()),
        (waiting.id, f'{{"id":{waiting.id}}}'.encode()),
    ]


# --- reads ---


async def test_a_task_is_visible_only_in_its_graph(store: SQLiteStore) -> None:
    task, _ = await store.insert(new(OTHER))
    assert await store.get(GRAPH, task.id) is None
    assert await store.get(OTHER, task.id) == task
    assert await store.list_tasks(GRAPH, None, None, 0) == []
    assert await store.list_ids(GRAPH, [task.id]) == []


async def test_list_filters_by_status_pages_and_limits(store: SQLiteStore, db: Path) -> None:
    ids = [(await store.insert(new()))[0].id for _ in range(5)]
    set_status(db, ids[1], "success")
    set_status(db, ids[3], "success")
    assert [t.id for t in await store.list_tasks(GRAPH, Status.SUCCESS, None, 0)] == [ids[1], ids[3]]
    assert [t.id for t in await store.list_tasks(GRAPH, None, 2, 0)] == ids[:2]
    assert [t.id for t in await store.list_tasks(GRAPH, None, 2, ids[1])] == ids[2:4]
    assert [t.id for t in await store.list_ids(GRAPH, [ids[4], ids[0], 999, ids[0]])] == [
        ids[0], ids[4],
    ]


async def test_a_row_that_cannot_be_interpreted_reads_as_unknown(store: SQLiteStore, db: Path) -> None:
    damaged, _ = await store.insert(new())
    newer, _ = await store.insert(new())
    fine, _ = await store.insert(new())
    execute(db, "UPDATE tasks SET progress = 'lots' WHERE id = ?", (damaged.id,))
    set_status(db, newer.id, "archived")
    assert (await store.get(GRAPH, damaged.id)).status is Status.UNKNOWN  # type: ignore[union-attr]
    assert (await store.get(GRAPH, newer.id)).status is Status.UNKNOWN  # type: ignore[union-attr]
    listed = await store.list_tasks(GRAPH, Status.UNKNOWN, None, 0)
    # listed under the status it reads as, not under the one stored in it
    assert [t.id for t in listed] == [damaged.id, newer.id]
    assert damaged.id not in [t.id for t in await store.list_tasks(GRAPH, Status.NEW, None, 0)]
    assert fine.id not in [t.id for t in listed]
    # the counts come from the index on the stored status alone (README, Faults and recovery)
    counts = await store.count_by_status()
    assert counts[("unknown", "echo")] == 1


async def test_a_list_with_a_blob_where_text_belongs_still_answers(store: SQLiteStore, db: Path) -> None:
    damaged, _ = await store.insert(new())
    fine, _ = await store.insert(new())
    # SQLite cannot put a BLOB into JSON: the list is read the row-by-row way instead
    execute(db, "UPDATE tasks SET name = X'00ff' WHERE id = ?", (damaged.id,))
    listed = await store.list_tasks(GRAPH, None, 10, 0)
    assert [(t.id, t.status) for t in listed] == [(damaged.id, Status.UNKNOWN), (fine.id, Status.NEW)]


async def test_a_page_of_a_status_is_filled_past_damaged_rows(store: SQLiteStore, db: Path) -> None:
    tasks = [(await store.insert(new()))[0] for _ in range(6)]
    for task in tasks[1:4]:
        execute(db, "UPDATE tasks SET priority = 'high' WHERE id = ?", (task.id,))
    # two `new` tasks asked for: the three damaged rows between them are passed over
    page = await store.list_tasks(GRAPH, Status.NEW, 2, 0)
    assert [t.id for t in page] == [tasks[0].id, tasks[4].id]
    page = await store.list_tasks(GRAPH, Status.NEW, 2, tasks[4].id)
    assert [t.id for t in page] == [tasks[5].id]


# --- recovery ---


def recover_as_policy_says(task: Task) -> Change:
    """What the supervisor passes to recover: the policy's change for an interrupted task."""
    outcome = after_interruption(task, clock.now_ms())
    return Change(task.id, outcome.target, outcome.fields)


async def test_recovery_restores_fails_or_cancels_what_a_dead_process_left(
    store: SQLiteStore, db: Path
) -> None:
    cases = {
        "scheduling": (0, 1), "scheduled": (0, 1), "queued": (0, 1), "running": (0, 1),
        "cancelling": (0, 1),
    }
    with_retries = {}
    without = {}
    for status, (retries, max_retries) in cases.items():
        task, _ = await store.insert(new(max_retries=max_retries))
        set_status(db, task.id, status)
        execute(db, "UPDATE tasks SET retries = ? WHERE id = ?", (retries, task.id))
        with_retries[status] = task.id
        task, _ = await store.insert(new(max_retries=2))
        set_status(db, task.id, status)
        execute(db, "UPDATE tasks SET retries = 2 WHERE id = ?", (task.id,))
        without[status] = task.id
    untouched = {}
    for status in ("new", "pending", "restoring", "success", "failed", "cancelled", "archived"):
        task, _ = await store.insert(new(max_retries=1))
        set_status(db, task.id, status)
        untouched[status] = task.id

    recovery = await store.recover(recover_as_policy_says)

    assert (recovery.restored, recovery.failed, recovery.cancelled) == (4, 4, 2)
    for status, task_id in with_retries.items():
        task = await store.get(GRAPH, task_id)
        assert task is not None
        if status == "cancelling":
            assert (task.status, task.retries) == (Status.CANCELLED, 0)
        else:
            assert (task.status, task.retries) == (Status.RESTORING, 1)
    for status, task_id in without.items():
        task = await store.get(GRAPH, task_id)
        assert task is not None
        if status == "cancelling":
            assert task.status is Status.CANCELLED
        else:
            assert task.status is Status.FAILED
            assert task.result is not None and "interrupted" in task.result
            assert task.retries == 2
    for status, task_id in untouched.items():
        assert stored_status(db, task_id) == status


# --- retention ---


async def test_purge_removes_old_completed_tasks_and_old_events(
    store: SQLiteStore, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = clock.now_ms()
    monkeypatch.setattr(clock, "now_ms", lambda: start)
    old_done, _ = await store.insert(new())
    old_waiting, _ = await store.insert(new())
    set_status(db, old_done.id, "success")
    monkeypatch.setattr(clock, "now_ms", lambda: start + 10_000)
    recent, _ = await store.insert(new())
    set_status(db, recent.id, "failed")
    execute(db, "UPDATE tasks SET update_ms = ? WHERE id = ?", (start + 10_000, recent.id))

    tasks, events = await store.purge(start + 5_000, start + 5_000)

    assert tasks == 1
    assert events == 2  # the created events of the two old tasks
    assert await store.get(GRAPH, old_done.id) is None
    assert await store.get(GRAPH, old_waiting.id) is not None  # not completed: kept
    assert await store.get(GRAPH, recent.id) is not None  # completed, but recently
    assert rows(db, "SELECT task_id, kind FROM events ORDER BY id") == [
        (recent.id, "task.created"),
        (old_done.id, "task.deleted"),
    ]


# --- indexes ---


async def test_every_query_of_the_api_uses_an_index(db: Path) -> None:
    """EXPLAIN QUERY PLAN of every statement the store ran for the API's reads and the
    supervisor's writes: none scans the whole tasks table."""
    store, statements = traced_store(db)
    await store.open()
    try:
        statements.clear()
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
        await store.expire_leases(now + 200_000, ["render"], lambda t: Change(t.id, Status.RESTORING))
        await store.set_process_group(tasks[0].id, 4242, "boot")
        await store.process_groups()
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
            scans = [step for step in plan if step.startswith("SCAN") and "INDEX" not in step
                     and "INTEGER PRIMARY KEY" not in step and not step.startswith("SCAN events")
                     and not step.startswith("SCAN (subquery-")]
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
