"""What every store does alike with a status change (which fields it may set, which
statuses it may come from, how a refusal is put to the caller), with a worker's lease,
and with the answers of a group commit's batch."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from ..errors import Conflict, NotFound, SidetaskError, TransitionRefused
from ..model import (
    CALLBACK_HOOK,
    LEASED_STATUSES,
    AttemptEnd,
    GraphRef,
    Outbox,
    Status,
    Task,
    allowed_sources,
)
from .base import Change
from .rows import Row, row_to_task

#: a write's outcome in its batch: (True, its value) or (False, the error it was refused with)
Outcome = tuple[bool, Any]


def replica_name() -> str:
    """This process as an attempt names the process that started it: host:pid (both
    stores alike; on PostgreSQL the replicas table holds the same two)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def attempt_rows(
    applied: Sequence[tuple[Change, Task]],
) -> tuple[list[Task], list[tuple[Task, AttemptEnd]]]:
    """Of the changes applied, the tasks whose run starts and those whose run ends (with
    what ends it)."""
    starts: list[Task] = []
    ends: list[tuple[Task, AttemptEnd]] = []
    for change, task in applied:
        if change.starts_attempt:
            starts.append(task)
        elif change.ends_attempt is not None:
            ends.append((task, change.ends_attempt))
    return starts, ends


def delivery_rows(
    outbox: Outbox, tasks: Sequence[Task], callbacks: Mapping[int, str]
) -> list[tuple[str, int, str, str, str, bytes]]:
    """The outbox rows of tasks just changed (each as the change left it): one per hook
    that matches its new status and type, and one to its own callback URL (`callbacks`:
    the tasks that have one) on a callback status. Each: a new delivery id, the task's id,
    the hook, the URL, the status, the body (the task as GET shows it)."""
    rows: list[tuple[str, int, str, str, str, bytes]] = []
    for task in tasks:
        rules = outbox.hooks_for(task)
        url = callbacks.get(task.id) if task.status in outbox.callback_statuses else None
        if not rules and url is None:
            continue
        body = orjson.dumps(task.to_api())
        status = task.status.value
        for rule in rules:
            rows.append((uuid.uuid4().hex, task.id, rule.name, rule.url, status, body))
        if url is not None:
            rows.append((uuid.uuid4().hex, task.id, CALLBACK_HOOK, url, status, body))
    return rows


#: fields a status change may set besides status and update_ms
CHANGEABLE_FIELDS = frozenset(
    {"progress", "progress_total", "result", "retries", "run_after_ms", "server", "description"}
)


def changeable(fields: Mapping[str, Any]) -> tuple[str, ...]:
    """The names of `fields`, each one a status change may set (else ValueError)."""
    names = tuple(fields)
    bad = set(names) - CHANGEABLE_FIELDS
    if bad:
        raise ValueError(f"not changeable: {sorted(bad)}")
    return names


def sources_of(change: Change) -> list[str]:
    """The statuses `change` may come from, as stored values: the transition table's,
    narrowed by the change's own `sources` when given."""
    sources = allowed_sources(change.target)
    if change.sources is not None:
        sources = sources & change.sources
    return [s.value for s in sorted(sources)]


def refusal(change: Change, current: Task | None) -> SidetaskError:
    """Why `change` did not apply to the task as it is now (None: there is none)."""
    if current is None:
        return NotFound(f"Can't find task with id '{change.task_id}'")
    if change.fenced and current.status.value in sources_of(change):
        # the status would allow it: the fence refused it (another process holds the task)
        return TransitionRefused(
            f"Task '{change.task_id}' is no longer this process's: another took it over "
            f"(this one was taken for dead); it stays {current.status.name}"
        )
    return TransitionRefused(
        f"Task '{change.task_id}' in status {current.status.name} can't become {change.target.name}"
    )


def delete_refused(task: Task) -> TransitionRefused:
    """Why a delete from the statuses it was given left `task` where it is."""
    return TransitionRefused(f"Task '{task.id}' in status {task.status.name} can't be deleted")


# --- external workers' leases: what both stores check alike ---


#: the change a worker's first report makes: it confirmed, and it runs the task
def lease_start(task: Task, fields: Mapping[str, Any]) -> Change:
    return Change(
        task.id, Status.RUNNING, fields, frozenset({Status.SCHEDULED}), starts_attempt=True
    )


def leased_task(
    row: Row | None, graph: GraphRef, task_id: int, token: str
) -> tuple[Task, int | None]:
    """The task a lease's `token` holds and when the lease runs out, from its row (the task
    columns, then lease and lease_expires_ms), or the error that says why not."""
    if row is None or row_to_task(row).graph != graph:
        raise NotFound(f"Can't find task with id '{task_id}'")
    if row[-2] is None or row[-2] != token:
        raise Conflict(
            f"Task '{task_id}' is not held by this lease: it was never claimed with it, "
            "or its lease expired and the task was given back"
        )
    return row_to_task(row), row[-1]


def check_live(task: Task, expires_ms: int | None, now_ms: int) -> None:
    """A lease may report only while its task is a worker's and it has not run out."""
    if task.status not in LEASED_STATUSES:
        raise Conflict(f"Task '{task.id}' is {task.status.name}, it is no longer held by a worker")
    if expires_ms is None or expires_ms <= now_ms:
        raise Conflict(f"The lease on task '{task.id}' has expired; the task will be given back")


# --- group commit: what both writers do alike with a batch's answers ---


def answer(batch: Sequence[tuple[Any, asyncio.Future[Any]]], outcomes: Sequence[Outcome]) -> None:
    """Each write's answer to its caller, once its transaction has committed: its value, or
    the error it was refused with. A caller that gave up (its future is done) is skipped."""
    for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def fail(batch: Sequence[tuple[Any, asyncio.Future[Any]]], error: BaseException) -> None:
    """Every write of a transaction that failed as a whole: nothing of it was written."""
    for _, future in batch:
        if not future.done():
            future.set_exception(error)
