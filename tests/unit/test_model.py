"""The statuses and the transition table (SPEC 3): data, and what that data allows."""

from __future__ import annotations

import itertools

import pytest

from service.model import (
    ACTION_STATUSES,
    CLAIMABLE_STATUSES,
    COMPLETED_STATUSES,
    EXECUTING_STATUSES,
    INTERRUPTIBLE_STATUSES,
    LEASED_STATUSES,
    NOT_COMPLETED_STATUSES,
    NOT_STARTED_STATUSES,
    TRANSITIONS,
    UNFINISHED_STATUSES,
    WAITING_STATUSES,
    Action,
    GraphRef,
    Status,
    Task,
    actions_of,
    allowed_sources,
    can_transition,
)
from tests.conftest import HUGEGRAPH_KEYS

S = Status


def test_the_twelve_statuses_of_the_seeds() -> None:
    assert {s.value for s in Status} == {
        "unknown",
        "new",
        "scheduling",
        "scheduled",
        "queued",
        "pending",
        "restoring",
        "running",
        "success",
        "cancelling",
        "cancelled",
        "failed",
    }


@pytest.mark.parametrize("text", ["SUCCESS", "success", "Success", "cAnCeLlInG"])
def test_status_names_parse_case_insensitively(text: str) -> None:
    assert Status.parse(text).value == text.lower()


@pytest.mark.parametrize("text", ["", "done", "succes", "SUCCESS "])
def test_anything_else_is_not_a_status(text: str) -> None:
    with pytest.raises(ValueError):
        Status.parse(text)


def test_every_status_is_a_key_of_the_table() -> None:
    assert set(TRANSITIONS) == set(Status)


def test_unknown_is_never_written() -> None:
    assert allowed_sources(S.UNKNOWN) == frozenset()
    assert all(S.UNKNOWN not in sources for sources in TRANSITIONS.values())


def test_success_is_final() -> None:
    assert all(not can_transition(S.SUCCESS, target) for target in Status)


@pytest.mark.parametrize("done", [S.CANCELLED, S.FAILED])
def test_cancelled_and_failed_only_come_back_by_retry(done: Status) -> None:
    assert [t for t in Status if can_transition(done, t)] == [S.RESTORING]


def test_the_path_of_a_new_task_to_success() -> None:
    """SPEC 3: each way a task is run takes only the steps that happen."""
    in_process = [S.NEW, S.QUEUED, S.RUNNING, S.SUCCESS]
    replicas = [S.NEW, S.SCHEDULING, S.SCHEDULED, S.QUEUED, S.RUNNING, S.SUCCESS]
    worker = [S.NEW, S.SCHEDULED, S.RUNNING, S.SUCCESS]
    for path in (in_process, replicas, worker):
        assert all(can_transition(a, b) for a, b in itertools.pairwise(path))


def test_a_task_runs_only_once_queued_or_confirmed_by_its_worker() -> None:
    assert allowed_sources(S.RUNNING) == {S.QUEUED, S.SCHEDULED}


def test_only_a_running_task_succeeds_or_starts_cancelling() -> None:
    assert allowed_sources(S.SUCCESS) == {S.RUNNING}
    assert allowed_sources(S.CANCELLING) == {S.RUNNING}


def test_restoring_is_reached_from_resume_retry_backoff_and_restart() -> None:
    for source in (S.PENDING, S.FAILED, S.CANCELLED, S.RUNNING):
        assert can_transition(source, S.RESTORING)
    for interrupted in INTERRUPTIBLE_STATUSES - {S.CANCELLING}:
        assert can_transition(interrupted, S.RESTORING)
    # a cancelling task that is interrupted ends cancelled instead (SPEC 9)
    assert not can_transition(S.CANCELLING, S.RESTORING)
    assert can_transition(S.CANCELLING, S.CANCELLED)


def test_restoring_goes_on_to_queued_without_a_second_claim() -> None:
    assert can_transition(S.RESTORING, S.QUEUED)
    assert not can_transition(S.RESTORING, S.RUNNING)


def test_only_tasks_that_have_not_started_can_be_paused() -> None:
    assert allowed_sources(S.PENDING) == {
        S.NEW,
        S.SCHEDULING,
        S.SCHEDULED,
        S.QUEUED,
        S.RESTORING,
    }


def test_a_cancelling_task_does_not_fail_or_succeed() -> None:
    assert not can_transition(S.CANCELLING, S.FAILED)
    assert not can_transition(S.CANCELLING, S.SUCCESS)


def test_completed_statuses() -> None:
    assert COMPLETED_STATUSES == {S.SUCCESS, S.CANCELLED, S.FAILED}


def test_the_api_keys_follow_the_seeds_order() -> None:
    task = Task(
        id=7,
        graph=GraphRef("DEFAULT", "hugegraph"),
        name="n",
        type="echo",
        callable="service.jobs.echo.run",
        status=S.SUCCESS,
        result="1",
        input="{}",
    )
    assert list(task.to_api())[:11] == HUGEGRAPH_KEYS
    bare = task.evolve(result=None, input=None).to_api()
    assert "task_result" not in bare and "task_input" not in bare


# --- the user's actions ---


def _target(action: Action, source: Status) -> Status:
    if action is Action.CANCEL:
        return S.CANCELLING if source is S.RUNNING else S.CANCELLED
    return {Action.PAUSE: S.PENDING, Action.RESUME: S.RESTORING, Action.RETRY: S.RESTORING}[action]


@pytest.mark.parametrize("action", [Action.CANCEL, Action.PAUSE, Action.RESUME, Action.RETRY])
def test_every_allowed_action_is_a_transition_of_the_table(action: Action) -> None:
    assert ACTION_STATUSES[action], action
    for source in ACTION_STATUSES[action]:
        assert can_transition(source, _target(action, source)), (action, source)


def test_a_status_is_deleted_plainly_or_by_force_never_both() -> None:
    assert ACTION_STATUSES[Action.DELETE] == COMPLETED_STATUSES
    assert ACTION_STATUSES[Action.DELETE] | ACTION_STATUSES[Action.FORCE_DELETE] == set(Status)
    assert not ACTION_STATUSES[Action.DELETE] & ACTION_STATUSES[Action.FORCE_DELETE]


def test_a_task_never_run_again_allows_no_status_change() -> None:
    deletes = (Action.DELETE, Action.FORCE_DELETE)
    for status in (S.SUCCESS, S.CANCELLING, S.UNKNOWN):
        assert [a for a in actions_of(status) if a not in deletes] == []


def test_the_status_groups_say_what_their_names_say() -> None:
    assert NOT_COMPLETED_STATUSES == set(Status) - COMPLETED_STATUSES
    # a task is completed, on its way, or cannot be read
    assert UNFINISHED_STATUSES == NOT_COMPLETED_STATUSES - {S.UNKNOWN}
    assert UNFINISHED_STATUSES == NOT_STARTED_STATUSES | EXECUTING_STATUSES
    assert not NOT_STARTED_STATUSES & EXECUTING_STATUSES
    assert WAITING_STATUSES == NOT_STARTED_STATUSES - {S.PENDING}
    assert CLAIMABLE_STATUSES <= WAITING_STATUSES
    assert INTERRUPTIBLE_STATUSES == UNFINISHED_STATUSES - {S.NEW, S.PENDING, S.RESTORING}
    # a worker holds a task from its claim (`scheduled`) to its end
    assert LEASED_STATUSES == {S.SCHEDULED} | EXECUTING_STATUSES
