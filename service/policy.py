"""What the service decides, as pure functions: retry or fail, what recovery does with an
interrupted task, what a lost lease means, whether an action is allowed.

No I/O and no clock: the time (`now_ms`) and the randomness (`jitter`, `delay`) come in as
arguments, so a test drives them. The supervisor and the lease hub ask here and hand the
answer to the store, which applies it as a compare-and-set and decides nothing itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .model import (
    ACTION_STATUSES,
    EXECUTING_STATUSES,
    Action,
    AttemptEnd,
    AttemptOutcome,
    Status,
    Task,
)

__all__ = [
    "Outcome",
    "Refusal",
    "after_failure",
    "after_interruption",
    "after_lease_expired",
    "after_unleased",
    "delete_sources",
    "refusal",
    "retry_delay",
    "wants_cancel",
]


@dataclass(frozen=True, slots=True)
class Outcome:
    """A decided status change of one task: where it goes and the fields written with it."""

    target: Status
    fields: Mapping[str, Any] = field(default_factory=dict)
    #: how the task's run ends with this change (None: no run ends)
    attempt: AttemptEnd | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an action is refused: HugeGraph's message, and the cause shown after it."""

    message: str
    cause: str = ""


# --- retries ---


def retry_delay(retries: int, backoff: float, backoff_max: float, jitter: float) -> float:
    """Seconds before retry number `retries` + 1: `backoff` doubled for each retry spent,
    at most `backoff_max`, times 0.5 to 1 as `jitter` (a random number in [0, 1)) says, so
    tasks that failed together do not all come back at once."""
    base = backoff * float(2**retries)
    return min(backoff_max, base) * (0.5 + jitter / 2)


def after_failure(
    task: Task,
    message: str,
    now_ms: int,
    delay: Callable[[int], float],
    *,
    retry: bool = True,
    error: AttemptEnd | None = None,
) -> Outcome:
    """A job that failed (in-process, or reported by an external worker): `restoring` with
    one more retry spent, due after `delay(retries)` seconds, while retries are left (and
    `retry` is true), else `failed`. The message is the task's result either way; the
    run ends as `error` says (default: failed, with the message)."""
    end = error or AttemptEnd(AttemptOutcome.FAILED, error_message=message)
    if retry and task.retries < task.max_retries:
        delay_ms = int(delay(task.retries) * 1000)
        return Outcome(
            Status.RESTORING,
            {"result": message, "retries": task.retries + 1, "run_after_ms": now_ms + delay_ms},
            end,
        )
    return Outcome(Status.FAILED, {"result": message}, end)


# --- interruptions: a restart, a lost lease ---


def after_interruption(task: Task, now_ms: int) -> Outcome:
    """SPEC 9: a task a dead process left in an interruptible status (model.
    INTERRUPTIBLE_STATUSES). `cancelling` ends `cancelled` (the cancel was asked for); any
    other goes `restoring` with one more retry spent, due at once, while retries are left,
    else `failed`, saying so.

    A task of an external type that a worker holds under a lease was not running in the
    dead process: it is not interrupted, and its lease decides (`after_lease_expired`). One
    with no lease ran in-process before its type became external: it was interrupted like
    any other. The caller tells the store which types to leave to their leases."""
    end = _ended(task, AttemptOutcome.INTERRUPTED)
    if task.status is Status.CANCELLING:
        return Outcome(Status.CANCELLED, attempt=end)
    if task.retries < task.max_retries:
        return Outcome(Status.RESTORING, {"retries": task.retries + 1, "run_after_ms": now_ms}, end)
    return Outcome(
        Status.FAILED,
        {
            "result": f"Task '{task.id}' was interrupted in status {task.status.name} by a "
            f"restart, with no retries left ({task.retries} of {task.max_retries} used)"
        },
        end,
    )


def _ended(task: Task, outcome: AttemptOutcome) -> AttemptEnd | None:
    """The end of the task's run, when it was running (an earlier status had none)."""
    return AttemptEnd(outcome) if task.status in EXECUTING_STATUSES else None


def after_lease_expired(task: Task, now_ms: int) -> Outcome:
    """A worker's lease ran out (the worker died or lost touch): the task is given back."""
    return _given_back(
        task,
        f"The lease of worker '{task.server}' on task '{task.id}' expired in status "
        f"{task.status.name}: the worker stopped reporting",
        now_ms,
    )


def after_unleased(task: Task, now_ms: int) -> Outcome:
    """A task of an external type in a worker's status that no lease holds: it ran
    in-process before its type became external, and no worker will report on it."""
    return _given_back(
        task,
        f"Task '{task.id}' was {task.status.name} with no worker's lease: it ran "
        f"in-process before '{task.type}' became an external type",
        now_ms,
    )


def _given_back(task: Task, message: str, now_ms: int) -> Outcome:
    """`cancelled` when a cancel was asked for; else `restoring` with one more retry spent,
    due at once, while retries are left, else `failed`; the message says what happened.
    The worker's run, if it had started, ends `lost`."""
    end = _ended(task, AttemptOutcome.LOST)
    if end is not None:
        end = AttemptEnd(AttemptOutcome.LOST, error_message=message)
    if task.status is Status.CANCELLING:
        return Outcome(Status.CANCELLED, attempt=end)
    if task.retries < task.max_retries:
        return Outcome(
            Status.RESTORING,
            {"result": message, "retries": task.retries + 1, "run_after_ms": now_ms},
            end,
        )
    used = f"({task.retries} of {task.max_retries} used)"
    return Outcome(Status.FAILED, {"result": f"{message}, with no retries left {used}"}, end)


def wants_cancel(task: Task) -> bool:
    """Whether the worker holding `task` should stop: a cancel was requested."""
    return task.status in (Status.CANCELLING, Status.CANCELLED)


# --- user actions ---


def refusal(action: Action, task: Task) -> Refusal | None:
    """Why `action` is refused on `task` as read (None: allowed, model.ACTION_STATUSES).
    The messages are HugeGraph's; a cancel's does not say the status, so the cause of the
    supervisor's refusals always does. A force delete is never refused."""
    if action is Action.FORCE_DELETE or task.status in ACTION_STATUSES[action]:
        return None
    task_id, name = task.id, task.status.name
    found = f"Task '{task_id}' is in status {name}"
    if action is Action.CANCEL:
        if task.status is Status.UNKNOWN:
            return Refusal(f"Can't cancel task '{task_id}' in status UNKNOWN", found)
        return Refusal(f"Can't cancel task '{task_id}' which is completed or cancelling", found)
    if action is Action.PAUSE:
        if task.status is Status.PENDING:
            return Refusal(
                f"Can't pause task '{task_id}' in status PENDING, it is paused already", found
            )
        return Refusal(
            f"Can't pause task '{task_id}' in status {name}, "
            "only a task that has not started running can be paused",
            found,
        )
    if action is Action.RESUME:
        return Refusal(
            f"Can't resume task '{task_id}' in status {name}, only a pending task can be resumed",
            found,
        )
    if action is Action.RETRY:
        return Refusal(
            f"Can't retry task '{task_id}' in status {name}, "
            "only a failed or cancelled task can be retried",
            found,
        )
    # a delete: HugeGraph's message; a task that cannot be interpreted cannot be cancelled
    # either, and the cause says what does remove it
    cause = (
        "Its stored state cannot be interpreted, so it can't be cancelled: "
        "delete it with force=true"
        if task.status is Status.UNKNOWN
        else ""
    )
    return Refusal(
        f"Can't delete incomplete task '{task_id}' in status {name}, "
        "Please try to cancel the task first",
        cause,
    )


def delete_sources(force: bool) -> frozenset[Status] | None:
    """The statuses a delete may remove a task from, for the store's compare-and-set
    (None: any status; a force-deleted running job runs on, its end not recorded)."""
    return None if force else ACTION_STATUSES[Action.DELETE]
