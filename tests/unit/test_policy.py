"""The service's decisions (service.policy): every branch, with the time and the randomness
given as arguments; no store, no server, no event loop."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from service import policy
from service.model import (
    ACTION_STATUSES,
    COMPLETED_STATUSES,
    EXECUTING_STATUSES,
    INTERRUPTIBLE_STATUSES,
    Action,
    AttemptEnd,
    AttemptOutcome,
    GraphRef,
    Status,
    Task,
    can_transition,
)
from service.policy import Outcome, Refusal

S = Status
NOW = 1_700_000_000_000


def ended(status: Status) -> AttemptEnd | None:
    """How an interruption ends the run of a task found in `status`: only an executing one
    had a run to end."""
    return AttemptEnd(AttemptOutcome.INTERRUPTED) if status in EXECUTING_STATUSES else None


def task(
    status: Status = S.RUNNING, retries: int = 0, max_retries: int = 0, **fields: object
) -> Task:
    values: dict[str, object] = {"server": "w1", "type": "render", **fields}
    return Task(
        id=7,
        graph=GraphRef("DEFAULT", "hugegraph"),
        name="t",
        callable="c",
        status=status,
        retries=retries,
        max_retries=max_retries,
        **values,  # type: ignore[arg-type]
    )


def never(retries: int) -> float:
    raise AssertionError("no retry is left: no delay is drawn")


# --- retry delays ---


@pytest.mark.parametrize(
    ("retries", "jitter", "expected"),
    [
        (0, 0.0, 5.0),  # the first retry: half the backoff at the least jitter
        (0, 1.0, 10.0),  # ... and all of it at the most
        (1, 0.0, 10.0),  # doubled for each retry spent
        (2, 0.5, 30.0),  # 40 s * 0.75
        (3, 1.0, 60.0),  # 80 s capped at 60 s
        (30, 0.0, 30.0),  # capped long before, then jittered: half the cap
    ],
)
def test_the_retry_delay_doubles_up_to_the_cap_then_is_jittered(
    retries: int, jitter: float, expected: float
) -> None:
    assert policy.retry_delay(retries, 10.0, 60.0, jitter) == pytest.approx(expected)


# --- a failed job ---


def test_a_failure_with_retries_left_is_retried_after_its_delay() -> None:
    asked: list[int] = []

    def delay(retries: int) -> float:
        asked.append(retries)
        return 2.5

    outcome = policy.after_failure(task(retries=1, max_retries=3), "boom", NOW, delay)
    assert outcome == Outcome(
        S.RESTORING,
        {"result": "boom", "retries": 2, "run_after_ms": NOW + 2500},
        AttemptEnd(AttemptOutcome.FAILED, error_message="boom"),
    )
    assert asked == [1]  # the delay of the retries spent so far
    assert can_transition(S.RUNNING, outcome.target)


def test_a_failure_with_no_retries_left_fails() -> None:
    error = AttemptEnd(AttemptOutcome.FAILED, "OSError", "out of disk", "Traceback …")
    outcome = policy.after_failure(task(retries=3, max_retries=3), "boom", NOW, never, error=error)
    # the run ends as the caller described it; the task's result stays the text
    assert outcome == Outcome(S.FAILED, {"result": "boom"}, error)


def test_a_failure_not_to_be_retried_fails_even_with_retries_left() -> None:
    outcome = policy.after_failure(task(max_retries=3), "bad input", NOW, never, retry=False)
    assert outcome == Outcome(
        S.FAILED,
        {"result": "bad input"},
        AttemptEnd(AttemptOutcome.FAILED, error_message="bad input"),
    )


# --- a restart's interruptions ---


@pytest.mark.parametrize("status", sorted(INTERRUPTIBLE_STATUSES - {S.CANCELLING}))
def test_an_interrupted_task_with_retries_left_is_restored_at_once(status: Status) -> None:
    outcome = policy.after_interruption(task(status, retries=0, max_retries=1), NOW)
    # no result: what a previous run said stays; a run it was in ends `interrupted`
    assert outcome == Outcome(S.RESTORING, {"retries": 1, "run_after_ms": NOW}, ended(status))
    assert can_transition(status, outcome.target)


@pytest.mark.parametrize("status", sorted(INTERRUPTIBLE_STATUSES - {S.CANCELLING}))
def test_an_interrupted_task_with_no_retries_left_fails_saying_so(status: Status) -> None:
    outcome = policy.after_interruption(task(status, retries=2, max_retries=2), NOW)
    assert outcome == Outcome(
        S.FAILED,
        {
            "result": f"Task '7' was interrupted in status {status.name} by a restart, "
            "with no retries left (2 of 2 used)"
        },
        ended(status),
    )
    assert can_transition(status, outcome.target)


@pytest.mark.parametrize("retries", [0, 2])
def test_an_interrupted_cancel_ends_cancelled_and_spends_no_retry(retries: int) -> None:
    outcome = policy.after_interruption(task(S.CANCELLING, retries, max_retries=2), NOW)
    assert outcome == Outcome(S.CANCELLED, attempt=AttemptEnd(AttemptOutcome.INTERRUPTED))
    assert can_transition(S.CANCELLING, outcome.target)


# --- lost leases ---

LAPSED = "The lease of worker 'w1' on task '7' expired in status {}: the worker stopped reporting"
UNLEASED = (
    "Task '7' was {} with no worker's lease: it ran in-process before 'render' became an "
    "external type"
)
GIVE_BACK = [(policy.after_lease_expired, LAPSED), (policy.after_unleased, UNLEASED)]


@pytest.mark.parametrize(("decide", "message"), GIVE_BACK)
@pytest.mark.parametrize("status", [S.SCHEDULED, S.RUNNING])
def test_a_lost_lease_with_retries_left_gives_the_task_back_at_once(
    decide: Callable[[Task, int], Outcome], message: str, status: Status
) -> None:
    outcome = decide(task(status, retries=1, max_retries=2), NOW)
    text = message.format(status.name)
    # a worker that had started (running) lost its run; one that had only claimed had none
    lost = AttemptEnd(AttemptOutcome.LOST, error_message=text) if status is S.RUNNING else None
    assert outcome == Outcome(
        S.RESTORING, {"result": text, "retries": 2, "run_after_ms": NOW}, lost
    )
    assert can_transition(status, outcome.target)


@pytest.mark.parametrize(("decide", "message"), GIVE_BACK)
def test_a_lost_lease_with_no_retries_left_fails_saying_so(
    decide: Callable[[Task, int], Outcome], message: str
) -> None:
    outcome = decide(task(S.RUNNING, retries=1, max_retries=1), NOW)
    expected = message.format("RUNNING") + ", with no retries left (1 of 1 used)"
    lost = AttemptEnd(AttemptOutcome.LOST, error_message=message.format("RUNNING"))
    assert outcome == Outcome(S.FAILED, {"result": expected}, lost)


@pytest.mark.parametrize(("decide", "message"), GIVE_BACK)
def test_a_lost_lease_on_a_cancelled_task_ends_it_cancelled(
    decide: Callable[[Task, int], Outcome], message: str
) -> None:
    lost = AttemptEnd(AttemptOutcome.LOST, error_message=message.format("CANCELLING"))
    assert decide(task(S.CANCELLING, max_retries=3), NOW) == Outcome(S.CANCELLED, attempt=lost)


@pytest.mark.parametrize("status", list(Status))
def test_a_worker_is_told_to_stop_once_a_cancel_was_asked_for(status: Status) -> None:
    assert policy.wants_cancel(task(status)) is (status in (S.CANCELLING, S.CANCELLED))


# --- user actions ---

FOUND = "Task '7' is in status {}"
REFUSED = {
    Action.CANCEL: "Can't cancel task '7' which is completed or cancelling",
    Action.PAUSE: (
        "Can't pause task '7' in status {}, only a task that has not started running can be paused"
    ),
    Action.RESUME: "Can't resume task '7' in status {}, only a pending task can be resumed",
    Action.RETRY: (
        "Can't retry task '7' in status {}, only a failed or cancelled task can be retried"
    ),
    Action.DELETE: (
        "Can't delete incomplete task '7' in status {}, Please try to cancel the task first"
    ),
}
CELLS = list(itertools.product(Status, [a for a in Action if a is not Action.FORCE_DELETE]))
REFUSED_CELLS = [(s, a) for s, a in CELLS if s not in ACTION_STATUSES[a]]


@pytest.mark.parametrize(("status", "action"), CELLS)
def test_an_action_is_allowed_exactly_where_the_action_table_says(
    status: Status, action: Action
) -> None:
    refused = policy.refusal(action, task(status))
    assert (refused is None) is (status in ACTION_STATUSES[action])


@pytest.mark.parametrize(("status", "action"), REFUSED_CELLS)
def test_a_refusal_says_hugegraphs_message_and_the_status_found(
    status: Status, action: Action
) -> None:
    refused = policy.refusal(action, task(status))
    message = REFUSED[action].format(status.name)
    if action is Action.CANCEL and status is S.UNKNOWN:
        message = "Can't cancel task '7' in status UNKNOWN"
    if action is Action.PAUSE and status is S.PENDING:
        message = "Can't pause task '7' in status PENDING, it is paused already"
    if action is Action.DELETE:
        # the supervisor's refusals name the status in their cause; a delete's (HugeGraph's
        # message names it) has none, but for a task that cannot be cancelled either
        cause = (
            "Its stored state cannot be interpreted, so it can't be cancelled: "
            "delete it with force=true"
            if status is S.UNKNOWN
            else ""
        )
    else:
        cause = FOUND.format(status.name)
    assert refused == Refusal(message, cause)


@pytest.mark.parametrize("status", list(Status))
def test_a_force_delete_is_never_refused(status: Status) -> None:
    assert policy.refusal(Action.FORCE_DELETE, task(status)) is None


def test_a_delete_removes_only_completed_tasks_unless_forced() -> None:
    assert policy.delete_sources(force=False) == COMPLETED_STATUSES
    assert policy.delete_sources(force=True) is None
