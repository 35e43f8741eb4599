"""What the rest of the service may ask of a store; SQLite now, PostgreSQL behind the same interface later."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..model import Event, GraphRef, NewTask, Status, Task

#: called with the events of every committed write, in id order, after the commit
CommitListener = Callable[[Sequence[Event]], None]


@dataclass(frozen=True, slots=True)
class Change:
    """One compare-and-set status change: `task_id` moves to `target` only from a status
    the transition table allows (narrowed further by `sources` when given)."""

    task_id: int
    target: Status
    fields: Mapping[str, Any] | None = None
    sources: frozenset[Status] | None = None


@dataclass(frozen=True, slots=True)
class Recovery:
    """What start-up found of tasks a previous process left unfinished."""

    restored: int
    failed: int
    cancelled: int


class Store(Protocol):
    """Every read and write of task state. Writes are durable when they return."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    def add_listener(self, listener: CommitListener) -> None: ...

    # --- writes ---
    async def insert(self, new: NewTask) -> tuple[Task, bool]:
        """The stored task and whether it was created (False: an Idempotency-Key replay)."""
        ...

    async def transition(self, change: Change) -> Task: ...
    async def transition_many(self, changes: Sequence[Change]) -> list[Task | Exception]: ...
    async def set_progress(self, progress: Mapping[int, int]) -> None: ...
    async def delete(self, graph: GraphRef, task_id: int, force: bool) -> Task: ...
    async def claim(self, limit: int, now_ms: int, type_room: Mapping[str, int]) -> list[Task]:
        """Up to `limit` due tasks, at most `type_room[t]` of each limited type `t`."""
        ...

    async def recover(self) -> Recovery: ...
    async def purge(self, tasks_before_ms: int, events_before_ms: int) -> tuple[int, int]: ...

    # --- reads ---
    async def get(self, graph: GraphRef | None, task_id: int) -> Task | None: ...
    async def list(
        self, graph: GraphRef, status: Status | None, limit: int | None, after_id: int
    ) -> list[Task]: ...
    async def list_ids(self, graph: GraphRef, ids: Sequence[int]) -> list[Task]: ...
    async def events_after(
        self, after_id: int, graph: GraphRef | None, task_id: int | None, limit: int
    ) -> list[Event]: ...
    async def last_event_id(self) -> int: ...
    async def count_by_status(self) -> dict[tuple[str, str], int]: ...
