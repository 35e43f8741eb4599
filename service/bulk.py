"""Bulk actions: one user action (cancel, pause, resume, retry, delete) on every task of a
graph that a filter matches, in bounded batches, answered with what changed and what was
refused and why."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import NotFound, ServiceUnavailable, SidetaskError
from .model import Action, GraphRef, Status, Task
from .policy import refusal
from .selection import EVERY, Selection

if TYPE_CHECKING:
    from .supervisor import Supervisor

#: the actions a bulk request may take, in the order the API lists them
BULK_ACTIONS = ("cancel", "pause", "resume", "retry", "delete")
#: single actions in flight at once: each reads its task and queues a write, so a request
#: that comes meanwhile waits behind at most this many reads and one commit of theirs
AT_ONCE = 32
#: why a task went between the list that found it and its action
GONE = "The task was deleted meanwhile"
#: a task's id in a refusal's message: a bulk answer counts refusals by their reason
_TASK_ID = re.compile(r"(?i)(task) '[0-9]+'")


@dataclass(frozen=True, slots=True)
class Filter:
    """The tasks a bulk action takes: those a list with the same terms gives."""

    status: Status | frozenset[Status] | None = None
    task_type: str | None = None
    selection: Selection = EVERY

    @property
    def empty(self) -> bool:
        return self.status is None and self.task_type is None and self.selection.empty


@dataclass(slots=True)
class Outcome:
    """What a bulk action did: of the tasks it `matched`, how many it `changed`, and the
    others by the reason each was refused (its message without the task's id)."""

    action: str
    matched: int = 0
    changed: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    batches: int = 0

    def to_api(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "matched": self.matched,
            "changed": self.changed,
            "refused": dict(self.refused.most_common()),
            "batches": self.batches,
        }


def reason(message: str) -> str:
    """A refusal's message as a reason several tasks share (the id left out)."""
    return _TASK_ID.sub(r"\1", message)


async def run(
    supervisor: Supervisor,
    graph: GraphRef,
    action: str,
    matching: Filter,
    *,
    force: bool = False,
    batch: int = 500,
) -> Outcome:
    """Applies `action` to every task of `graph` that `matching` takes, up to the newest
    task when the request came (one submitted meanwhile is left alone), in id order.

    Each batch is a list of up to `batch` tasks and then their actions, AT_ONCE at a time:
    each the single action itself (SPEC 4, the same checks, refusals and effects; a cancel
    of a task another replica runs reaches it as a single cancel does), which the store's
    writer commits together, so other requests wait behind at most one group of them. A task whose status as listed refuses the action is counted without a write; one
    that moved on meanwhile is decided again by its action, on the task as it is then."""
    outcome = Outcome(action)
    store = supervisor.store
    newest = await store.list_tasks(graph, None, 1, 0, descending=True)
    if not newest:
        return outcome
    upto = newest[0].id
    policy_action = Action.FORCE_DELETE if action == "delete" and force else Action(action)
    # a delete goes a group at a time (Supervisor.delete_many), any other action task by task
    act = None if action == "delete" else _actor(supervisor, action)
    after = 0
    while True:
        listed = await store.list_tasks(
            graph,
            matching.status,
            batch,
            after,
            task_type=matching.task_type,
            selection=matching.selection,
        )
        tasks = [task for task in listed if task.id <= upto]
        if not tasks:
            break
        after = tasks[-1].id
        outcome.matched += len(tasks)
        outcome.batches += 1
        allowed: list[Task] = []
        for task in tasks:
            refused = refusal(policy_action, task)
            if refused is None:
                allowed.append(task)
            else:
                outcome.refused[reason(refused.message)] += 1
        results: list[Task | BaseException] = []
        for at in range(0, len(allowed), AT_ONCE):
            if at:
                await asyncio.sleep(0)  # the loop's other work between two groups
            group = allowed[at : at + AT_ONCE]
            if act is None:  # a delete: one write for the group
                try:
                    results.extend(
                        await supervisor.delete_many(graph, [t.id for t in group], force)
                    )
                except SidetaskError as exc:  # the write failed: each of them with it
                    results.extend([exc] * len(group))
                continue
            results.extend(
                await asyncio.gather(
                    *(act(graph, task.id) for task in group), return_exceptions=True
                )
            )
        for result in results:
            if isinstance(result, NotFound):
                outcome.refused[GONE] += 1
            elif isinstance(result, ServiceUnavailable):
                raise ServiceUnavailable(
                    f"{result.message}: the bulk {action} stopped after changing "
                    f"{outcome.changed} of the {outcome.matched} tasks it matched so far",
                    result.cause,
                )
            elif isinstance(result, SidetaskError):
                outcome.refused[reason(result.message)] += 1
            elif isinstance(result, BaseException):
                raise result
            else:
                outcome.changed += 1
        if len(listed) < batch or tasks[-1].id >= upto:
            break
        await asyncio.sleep(0)  # the loop's other work between two batches
    return outcome


def _actor(supervisor: Supervisor, action: str) -> Callable[[GraphRef, int], Awaitable[Task]]:
    single: dict[str, Callable[[GraphRef, int], Awaitable[Task]]] = {
        "cancel": supervisor.cancel,
        "pause": supervisor.pause,
        "resume": supervisor.resume,
        "retry": supervisor.retry,
    }
    return single[action]
