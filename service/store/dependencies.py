"""What a task's end does to the tasks waiting for it, inside the transaction of that end
(README, "Dependencies"), for both stores: a success counts down each dependant's
`waiting_on` (at 0 it is in the claim index again), a failure or a cancel ends the
dependants that have not started as HugeGraph's scheduler ends them, and a retry of a
dependency puts back the dependants its end had ended. A dependant that changes so is
followed in turn, in the same transaction (a chain, a fan-out), by a loop and not by
recursion, so a chain of any length fits in the stack.

Only a task some other task named (`dependants` above 0) is looked at: every other end
costs a test of one field."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import orjson

from ..errors import BadRequest
from ..model import (
    CLAIMABLE_STATUSES,
    DEPENDENCY_DELETED,
    DEPENDENCY_ENDS,
    EventKind,
    GraphRef,
    Status,
    Task,
    dependency_results,
)
from . import pg_queries as pq
from . import queries as q
from .base import Change
from .rows import Row, row_to_task, stored_status

#: a task to follow, and whether it was deleted (rather than changed)
Followed = list[tuple[Task, bool]]


class Tx(Protocol):
    """What a follow needs of the SQLite writer's transaction (writer.Tx)."""

    conn: sqlite3.Connection
    #: the tasks still to follow while a follow runs; None when none runs
    following: Followed | None

    def event(self, kind: EventKind, task: Task, data: dict[str, Any] | None = None) -> None: ...
    def change_many(self, changes: Sequence[Change]) -> Sequence[object]: ...
    def select_task(self, task_id: int) -> Task | None: ...


class PgTx(Protocol):
    """What a follow needs of the PostgreSQL writer's transaction (postgres.PgTx)."""

    conn: Any  # asyncpg.Connection: only service.store.postgres imports the driver
    following: Followed | None

    def event(self, kind: EventKind, task: Task, data: dict[str, Any] | None = None) -> None: ...
    async def change_many(self, changes: Sequence[Change]) -> Sequence[object]: ...
    async def select_task(self, task_id: int) -> Task | None: ...


#: the statuses whose writing reaches a task's dependants
FOLLOWED = frozenset({Status.SUCCESS, Status.FAILED, Status.CANCELLED, Status.RESTORING})
#: waiting tasks the re-check reads at a time
RECHECK_BATCH = 500
#: the statuses of a task that waits and has not started: what a dependency's end (and the
#: re-check) ends
WAITING = frozenset({Status.NEW, Status.RESTORING, Status.PENDING})


def named(task: Task, wanted: Sequence[int], rows: Iterable[Row]) -> int:
    """Checks a new task's dependencies against the rows read of them (id, graphspace,
    graph, status): each must be another task of its graph; else a 400 naming the first
    that is not. A task can name only tasks that existed before it, so no cycle can form.
    Returns how many of them have not succeeded (the new task's `waiting_on`)."""
    graph = task.graph
    found = {
        int(row[0]): (GraphRef(row[1], row[2]), stored_status(row[3]))
        for row in rows
        if int(row[0]) != task.id  # the task itself, just inserted: a cycle
    }
    waiting = 0
    for dependency in wanted:
        got = found.get(dependency)
        if got is None or got[0] != graph:
            raise BadRequest(
                f"Can't find dependency task with id '{dependency}' in graph '{graph.graph}': "
                "a task depends only on tasks that exist in its own graph"
            )
        if got[1] is not Status.SUCCESS:
            waiting += 1
    return waiting


def dependencies_json(wanted: Sequence[int]) -> str:
    return orjson.dumps(list(wanted)).decode()


def _end_of(task: Task, deleted: bool) -> tuple[Status, str] | None:
    """The end of the tasks waiting for `task` that its status (or its delete) brings."""
    if deleted:
        return Status.CANCELLED, DEPENDENCY_DELETED.format(id=task.id)
    end = DEPENDENCY_ENDS.get(task.status)
    return None if end is None else (end[0], end[1].format(id=task.id))


def _ends(waiting: Iterable[Task], end: tuple[Status, str]) -> list[Change]:
    target, result = end
    return [
        Change(d.id, target, {"result": result}, frozenset({d.status}))
        for d in waiting
        if d.status is not Status.UNKNOWN
    ]


def _put_back(ended: Iterable[Task]) -> list[Change]:
    return [
        Change(d.id, Status.RESTORING, None, frozenset({d.status}))
        for d in ended
        if d.status is not Status.UNKNOWN
    ]


def _wanted(tasks: Iterable[Task], deleted: bool) -> list[tuple[Task, bool]]:
    return [(t, deleted) for t in tasks if t.dependants > 0 and (deleted or t.status in FOLLOWED)]


def recheck_end(
    task: Task, statuses: Sequence[tuple[int, Any]]
) -> tuple[int, tuple[Status, str] | None]:
    """For a waiting task and its dependencies' (id, stored status) (None: deleted): how
    many have not succeeded, and the end a failed or cancelled one brings (the first of
    them in the task's own order), if any."""
    by_id = {int(dependency): status for dependency, status in statuses}
    left = 0
    for dependency in task.dependencies or tuple(by_id):
        value = by_id.get(dependency)
        if value is None:
            continue  # deleted: it holds nobody (its delete ended those it held then)
        status = stored_status(value)
        end = DEPENDENCY_ENDS.get(status)
        if end is not None:
            return left, (end[0], end[1].format(id=dependency))
        if status is not Status.SUCCESS:
            left += 1
    return left, None


# --- SQLite (the writer's thread) ---


def follow(tx: Tx, tasks: Iterable[Task], deleted: bool = False) -> None:
    """What the changed (or `deleted`) tasks' new statuses do to the tasks waiting for
    them, in `tx`. Called from within a follow (a dependant's change), it only queues."""
    found = _wanted(tasks, deleted)
    if not found:
        return
    if tx.following is not None:
        tx.following.extend(found)
        return
    tx.following = found
    try:
        while tx.following:
            task, gone = tx.following.pop(0)
            _follow_one(tx, task, gone)
    finally:
        tx.following = None


def _follow_one(tx: Tx, task: Task, deleted: bool) -> None:
    conn = tx.conn
    if task.status is Status.SUCCESS and not deleted:
        for row in conn.execute(q.RELEASE_DEPENDANTS, (task.id,)).fetchall():
            ready = row_to_task(row)
            if ready.waiting_on == 0 and ready.status in CLAIMABLE_STATUSES:
                tx.event(EventKind.STATUS, ready)  # ready: no longer waiting (README)
        return
    if task.status is Status.RESTORING and not deleted:
        failed, cancelled = dependency_results(task.id)
        rows = conn.execute(q.ENDED_DEPENDANTS, (task.id, failed, cancelled)).fetchall()
        ended = [row_to_task(row) for row in rows]
        for dependant in ended:
            conn.execute(q.RECOUNT_WAITING, (dependant.id,))
        changes = _put_back(ended)
        if changes:
            tx.change_many(changes)
        return
    end = _end_of(task, deleted)
    if end is not None:
        rows = conn.execute(q.WAITING_DEPENDANTS, (task.id,)).fetchall()
        changes = _ends(map(row_to_task, rows), end)
        if changes:
            tx.change_many(changes)


def insert_dependencies(tx: Tx, task: Task, wanted: Sequence[int]) -> Task:
    """A new task's dependencies, checked, stored and counted; the task as it now is."""
    rows: list[Row] = []
    for at in range(0, len(wanted), 500):
        chunk = wanted[at : at + 500]
        rows += tx.conn.execute(q.dependency_rows(len(chunk)), chunk).fetchall()
    waiting = named(task, wanted, rows)
    tx.conn.executemany(q.INSERT_DEPENDENCY, [(task.id, d) for d in wanted])
    tx.conn.executemany(q.COUNT_DEPENDANT, [(d,) for d in wanted])
    row = tx.conn.execute(
        q.SET_DEPENDENCIES, (dependencies_json(wanted), waiting, task.id)
    ).fetchone()
    return row_to_task(row)


def _to_look_at(rows: Iterable[Row]) -> tuple[list[int], list[int]]:
    """From the re-check's rows (id, status, waiting_on, not succeeded, one ended): the
    waiting tasks a dependency's failure or cancel ends, and those whose count is wrong."""
    ending: list[int] = []
    recount: list[int] = []
    for row in rows:
        if stored_status(row[1]) not in WAITING:
            continue
        if row[4]:
            ending.append(int(row[0]))
        elif int(row[3]) != int(row[2]):
            recount.append(int(row[0]))
    return ending, recount


def recheck(tx: Tx, after_id: int, ids: Sequence[int] | None = None) -> tuple[int, int]:
    """Up to RECHECK_BATCH tasks waiting for a dependency, after `after_id` (or those of
    `ids`), looked at by one statement: each count made true again, each whose dependency
    ended failed or cancelled ended (what a process stopped between a submission and its
    check left). Returns the last id read (0: no more) and how many changed."""
    if ids is not None:
        rows = tx.conn.execute(q.recheck_of(len(ids)), list(ids)).fetchall()
    else:
        rows = tx.conn.execute(q.RECHECK_AFTER, (after_id, RECHECK_BATCH)).fetchall()
    ending, recount = _to_look_at(rows)
    changed = 0
    for task_id in recount:
        ready = row_to_task(tx.conn.execute(q.RECOUNT_WAITING, (task_id,)).fetchone())
        changed += 1
        if ready.waiting_on == 0 and ready.status in CLAIMABLE_STATUSES:
            tx.event(EventKind.STATUS, ready)
    ends: list[Change] = []
    for task_id in ending:  # rare: the first ended dependency in the task's own order
        task = tx.select_task(task_id)
        if task is not None:
            statuses = tx.conn.execute(q.DEPENDENCY_STATUSES, (task_id,)).fetchall()
            end = recheck_end(task, statuses)[1]
            if end is not None:
                ends += _ends([task], end)
    if ends:
        changed += sum(isinstance(r, Task) for r in tx.change_many(ends))
    last = int(rows[-1][0]) if ids is None and len(rows) == RECHECK_BATCH else 0
    return last, changed


# --- PostgreSQL (the writer's connection) ---


async def follow_pg(tx: PgTx, tasks: Iterable[Task], deleted: bool = False) -> None:
    """`follow` on PostgreSQL."""
    found = _wanted(tasks, deleted)
    if not found:
        return
    if tx.following is not None:
        tx.following.extend(found)
        return
    tx.following = found
    try:
        while tx.following:
            task, gone = tx.following.pop(0)
            await _follow_one_pg(tx, task, gone)
    finally:
        tx.following = None


async def _follow_one_pg(tx: PgTx, task: Task, deleted: bool) -> None:
    conn = tx.conn
    if task.status is Status.SUCCESS and not deleted:
        for row in await conn.fetch(pq.RELEASE_DEPENDANTS, task.id):
            ready = row_to_task(row)
            if ready.waiting_on == 0 and ready.status in CLAIMABLE_STATUSES:
                tx.event(EventKind.STATUS, ready)
        return
    if task.status is Status.RESTORING and not deleted:
        failed, cancelled = dependency_results(task.id)
        ended = [
            row_to_task(row)
            for row in await conn.fetch(pq.ENDED_DEPENDANTS, task.id, failed, cancelled)
        ]
        for dependant in ended:
            await conn.execute(pq.RECOUNT_WAITING, dependant.id)
        changes = _put_back(ended)
        if changes:
            await tx.change_many(changes)
        return
    end = _end_of(task, deleted)
    if end is not None:
        rows = await conn.fetch(pq.WAITING_DEPENDANTS, task.id)
        changes = _ends(map(row_to_task, rows), end)
        if changes:
            await tx.change_many(changes)


async def insert_dependencies_pg(tx: PgTx, task: Task, wanted: Sequence[int]) -> Task:
    """`insert_dependencies` on PostgreSQL: the dependencies' rows are locked first, so one
    that ends meanwhile is seen ended here or sees this task's edges in its end."""
    rows = await tx.conn.fetch(pq.LOCK_DEPENDENCIES, list(wanted))
    waiting = named(task, wanted, rows)
    await tx.conn.execute(pq.INSERT_DEPENDENCIES, task.id, list(wanted))
    await tx.conn.execute(pq.COUNT_DEPENDANTS, list(wanted))
    row = await tx.conn.fetchrow(pq.SET_DEPENDENCIES, dependencies_json(wanted), waiting, task.id)
    assert row is not None
    return row_to_task(row)


async def recheck_pg(tx: PgTx, after_id: int, ids: Sequence[int] | None = None) -> tuple[int, int]:
    """`recheck` on PostgreSQL."""
    if ids is not None:
        rows = await tx.conn.fetch(pq.RECHECK_OF, list(ids))
    else:
        rows = await tx.conn.fetch(pq.RECHECK_AFTER, after_id, RECHECK_BATCH)
    ending, recount = _to_look_at(rows)
    changed = 0
    for task_id in recount:
        ready = row_to_task(await tx.conn.fetchrow(pq.RECOUNT_WAITING, task_id))
        changed += 1
        if ready.waiting_on == 0 and ready.status in CLAIMABLE_STATUSES:
            tx.event(EventKind.STATUS, ready)
    ends: list[Change] = []
    for task_id in ending:
        task = await tx.select_task(task_id)
        if task is not None:
            statuses = await tx.conn.fetch(pq.DEPENDENCY_STATUSES, task_id)
            end = recheck_end(task, [(r[0], r[1]) for r in statuses])[1]
            if end is not None:
                ends += _ends([task], end)
    if ends:
        changed += sum(isinstance(r, Task) for r in await tx.change_many(ends))
    last = int(rows[-1][0]) if ids is None and len(rows) == RECHECK_BATCH else 0
    return last, changed
