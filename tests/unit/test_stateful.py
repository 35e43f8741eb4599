"""A hypothesis state machine of the supervisor and the store on a real SQLite file: random
sequences of submit, cancel, pause, resume, retry, delete, force-delete, releasing held jobs,
letting the service settle, and restart (drain, close the store, open a new one on the same
file), checked after every step against a model:

- never an illegal transition: every consecutive pair of a task's stored statuses is allowed
  by the transition table;
- never a lost task: every acknowledged task that was not deleted exists; a deleted one never
  comes back;
- a completed task never changes except by a retry (or a delete): its stored trail leaves a
  completed status exactly as often as a retry of it was accepted, and between two looks it
  stays as it was;
- no task runs twice at the same time (the jobs count their live runs);
- the service settles: whatever can move on does, within a bounded wait.

Hypothesis's machines are synchronous; each machine drives the service on a private event
loop, one `run_until_complete` per rule.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from service import config
from service.errors import BadRequest, NotFound, ServiceUnavailable
from service.jobs.registry import build_registry
from service.model import COMPLETED_STATUSES, GraphRef, Status, Task
from service.store import SQLiteStore
from service.supervisor import Supervisor
from tests.chaos_helpers import stateful_jobs
from tests.chaos_helpers.checks import illegal_steps, trails

ROOT = Path(__file__).resolve().parent.parent.parent
GRAPH = GraphRef("DEFAULT", "hugegraph")
#: how long a step may take, and how long the service may take to settle
STEP_SECONDS = 20.0
SETTLE_SECONDS = 10.0
#: what a user action may answer: the task after it, or the refusal a user sees as a 4xx
Refused = (BadRequest, NotFound)
#: what an action answers when the store could not write it (the disk is full): a 503
UNAVAILABLE: Any = object()

T = TypeVar("T")


class ServiceMachine(RuleBasedStateMachine):
    tasks = Bundle("tasks")

    def __init__(self) -> None:
        super().__init__()
        stateful_jobs.reset()
        self.dir = Path(tempfile.mkdtemp(prefix="sidetask-stateful-"))
        self.settings = config.load(
            ROOT / "config" / "test.toml",
            env={},
            db=str(self.dir / "sidetask.db"),
            jobs=stateful_jobs.JOBS,
            concurrency=64,  # more than a run ever submits: a held job never waits for a slot
            drain_grace=0.0,
        )
        self.loop = asyncio.new_event_loop()
        self.store: SQLiteStore | None = None
        self.supervisor: Supervisor | None = None
        #: what each submit answered: a task id, or None when the store could not write it
        self.handles: list[int | None] = []
        #: acknowledged tasks, by kind of job
        self.kinds: dict[int, str] = {}
        self.deleted: set[int] = set()
        #: each task's retries accepted by the service
        self.retried: Counter[int] = Counter()
        #: completed tasks as last seen, to compare with what the next look finds
        self.frozen: dict[int, dict[str, Any]] = {}
        self.released: set[int] = set()
        #: tasks whose cancel the service accepted: nothing else may cancel a task
        self.cancels: set[int] = set()
        #: whether the database is capped at its size (a full disk)
        self.full = False
        self.run(self.open())

    # --- driving the service ---

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(coro, STEP_SECONDS))

    async def open(self) -> None:
        self.store = SQLiteStore(self.settings.db)
        await self.store.open()
        self.supervisor = Supervisor(self.settings, self.store, build_registry(self.settings))
        await self.supervisor.start()

    async def close(self) -> None:
        if self.supervisor is not None:
            await self.supervisor.drain()
            self.supervisor = None
        if self.store is not None:
            await self.store.close()
            self.store = None

    def teardown(self) -> None:
        try:
            self.run(self.close())
            # what a drain cancelled finishes on this loop before it closes
            pending = asyncio.all_tasks(self.loop)
            if pending:
                self.loop.run_until_complete(asyncio.wait(pending, timeout=STEP_SECONDS))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
        finally:
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def sup(self) -> Supervisor:
        assert self.supervisor is not None
        return self.supervisor

    def get(self, task_id: int) -> Task | None:
        assert self.store is not None
        return self.run(self.store.get(GRAPH, task_id))

    def act(self, coro: Coroutine[Any, Any, Task]) -> Task | None:
        """A user's action: the task after it, None when the service refused it, or
        UNAVAILABLE when the store could not write it."""
        try:
            return self.run(coro)
        except Refused:
            return None
        except ServiceUnavailable:
            assert self.full, "a 503 without a store fault"
            return UNAVAILABLE

    def release_gate(self, task_id: int) -> None:
        async def release() -> None:
            stateful_jobs.gate(task_id).set()

        self.run(release())

    # --- rules ---

    @rule(target=tasks, kind=st.sampled_from(["ok", "boom", "held"]), max_retries=st.integers(0, 2))
    def submit(self, kind: str, max_retries: int) -> Any:
        try:
            task, created = self.run(
                self.sup.submit(GRAPH, kind, '{"k":1}', max_retries=max_retries)
            )
        except ServiceUnavailable:
            assert self.full, "a 503 without a store fault"
            # not acknowledged; a handle all the same, so that what hypothesis draws does
            # not depend on the store's answer
            self.handles.append(None)
            return len(self.handles) - 1
        assert created and task.status is Status.NEW
        assert task.id not in self.kinds
        self.kinds[task.id] = kind
        self.handles.append(task.id)
        return len(self.handles) - 1

    @rule(handle=tasks)
    def cancel(self, handle: int) -> None:
        task_id = self.handles[handle]
        if task_id is None:
            return
        before = self.get(task_id)
        after = self.act(self.sup.cancel(GRAPH, task_id))
        if after is UNAVAILABLE:
            return
        if task_id in self.deleted:
            assert before is None and after is None
            return
        assert before is not None
        if before.completed:
            assert after is None, f"cancel of a completed task was accepted: {after}"
        elif after is not None:
            assert after.status in (Status.CANCELLING, Status.CANCELLED)
            self.cancels.add(task_id)
        else:  # refused: it completed, or was being cancelled, by then
            now = self.get(task_id)
            assert now is not None and now.status in COMPLETED_STATUSES | {Status.CANCELLING}

    @rule(handle=tasks)
    def pause(self, handle: int) -> None:
        task_id = self.handles[handle]
        if task_id is None:
            return
        before = self.get(task_id)
        after = self.act(self.sup.pause(GRAPH, task_id))
        if after is UNAVAILABLE:
            return
        if after is not None:
            assert after.status is Status.PENDING
            assert before is not None and not before.completed
        elif before is not None and before.completed:
            assert self.get(task_id) == before

    @rule(handle=tasks)
    def resume(self, handle: int) -> None:
        task_id = self.handles[handle]
        if task_id is None:
            return
        before = self.get(task_id)
        after = self.act(self.sup.resume(GRAPH, task_id))
        if after is UNAVAILABLE:
            return
        if after is not None:
            assert before is not None and before.status is Status.PENDING
            assert after.status is Status.RESTORING
        else:
            now = self.get(task_id)
            # nothing but a pause makes a task pending, and only a resume ends that
            assert now is None or now.status is not Status.PENDING

    @rule(handle=tasks)
    def retry(self, handle: int) -> None:
        task_id = self.handles[handle]
        if task_id is None:
            return
        before = self.get(task_id)
        after = self.act(self.sup.retry(GRAPH, task_id))
        if after is UNAVAILABLE:
            return
        if after is not None:
            assert before is not None
            assert after.status is Status.RESTORING
            self.retried[task_id] += 1
            self.frozen.pop(task_id, None)
            if before.completed:  # it was failed or cancelled, and stayed so until now
                assert before.status in (Status.FAILED, Status.CANCELLED)
                assert after.retries == before.retries + 1
        elif before is not None and before.status in (Status.FAILED, Status.CANCELLED):
            raise AssertionError(f"retry of a {before.status} task was refused")

    @rule(handle=tasks)
    def delete(self, handle: int) -> None:
        task_id = self.handles[handle]
        if task_id is None:
            return
        before = self.get(task_id)
        after = self.act(self.sup.delete(GRAPH, task_id, False))
        if after is UNAVAILABLE:
            return
        if after is not None:
            assert after.completed
            self.forget(task_id)
        elif before is not None and before.completed:
            raise AssertionError(f"delete of a completed task was refused: {before}")

    @rule(handle=tasks)
    def force_delete(self, handle: int) -> None:
        task_id = self.handles[handle]
        if task_id is None:
            return
        after = self.act(self.sup.delete(GRAPH, task_id, True))
        if after is UNAVAILABLE:
            return
        if task_id in self.deleted:
            assert after is None
        else:
            assert after is not None, f"force-delete of task {task_id} was refused"
            self.forget(task_id)

    def forget(self, task_id: int) -> None:
        self.deleted.add(task_id)
        self.frozen.pop(task_id, None)
        assert self.get(task_id) is None

    @rule(handle=tasks, succeed=st.booleans())
    def release(self, handle: int, succeed: bool) -> None:
        task_id = self.handles[handle]
        if task_id is None or self.kinds[task_id] != "held" or task_id in self.released:
            return
        self.released.add(task_id)
        stateful_jobs.OUTCOMES[task_id] = succeed
        self.release_gate(task_id)

    @precondition(lambda self: not self.full)
    @rule()
    def settle(self) -> None:
        """Whatever can move on does: every task ends completed, pending, or held running."""

        async def wait() -> None:
            deadline = time.monotonic() + SETTLE_SECONDS
            while True:
                moving = [i for i in self.kinds if not self.resting(await self._get(i), i)]
                if not moving:
                    return
                if time.monotonic() > deadline:
                    statuses = {i: (await self._get(i)) for i in moving}
                    raise AssertionError(f"tasks that never came to rest: {statuses}")
                await asyncio.sleep(0.005)

        self.run(wait())

    async def _get(self, task_id: int) -> Task | None:
        assert self.store is not None
        return await self.store.get(GRAPH, task_id)

    def resting(self, task: Task | None, task_id: int) -> bool:
        if task is None or task.completed or task.status is Status.PENDING:
            return True
        held = self.kinds[task_id] == "held" and task_id not in self.released
        return held and task.status is Status.RUNNING

    @precondition(lambda self: bool(self.kinds))
    @rule()
    def restart(self) -> None:
        """Drain (no grace: held jobs are left running, restored at the next start), close
        the store, and open a new store and supervisor on the same file."""
        self.run(self.close())
        self.run(self.open())
        self.full = False  # the cap belonged to the closed store's connection

    @precondition(lambda self: not self.full)
    @rule()
    def fill_disk(self) -> None:
        """The database may not grow: writes that need a new page fail as on a full disk."""
        assert self.store is not None
        self.run(self.store.limit_pages(1))
        self.full = True

    @precondition(lambda self: self.full)
    @rule()
    def free_disk(self) -> None:
        assert self.store is not None
        self.run(self.store.limit_pages(None))
        self.full = False

    # --- invariants ---

    @invariant()
    def no_illegal_transition_and_completed_left_only_by_retry(self) -> None:
        for task_id, trail in trails(self.settings.db).items():
            assert illegal_steps(trail) == [], (task_id, trail)
            left = sum(
                1
                for source, target in itertools.pairwise(trail)
                if source in COMPLETED_STATUSES and target not in COMPLETED_STATUSES
            )
            assert left == self.retried[task_id], (task_id, trail, self.retried[task_id])

    @invariant()
    def nothing_lost_nothing_back_completed_unchanged(self) -> None:
        if self.store is None:
            return
        for task_id in self.kinds:
            task = self.get(task_id)
            if task_id in self.deleted:
                assert task is None, f"deleted task {task_id} came back: {task}"
                continue
            assert task is not None, f"acknowledged task {task_id} is lost"
            assert task.status is not Status.UNKNOWN
            if task.status in (Status.CANCELLING, Status.CANCELLED):
                assert task_id in self.cancels, f"task {task_id} cancelled unasked: {task}"
            if task_id in self.frozen:
                assert task.to_api() == self.frozen[task_id], (task_id, task)
            if task.completed:
                self.frozen[task_id] = task.to_api()

    @invariant()
    def no_task_runs_twice_at_once(self) -> None:
        assert stateful_jobs.OVERLAPS == []


ServiceMachine.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestService = ServiceMachine.TestCase
