"""The tasks this process has claimed (`queued`) and not started: taken highest priority
first, then oldest, in O(log n) each however many wait."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator

from .model import Task


class ReadyQueue:
    """Queued tasks by id, and a heap of (-priority, id) that says which goes next. A task
    removed by id (paused, cancelled, deleted) leaves its heap entry behind, skipped when it
    comes up."""

    def __init__(self) -> None:
        self._tasks: dict[int, Task] = {}
        self._order: list[tuple[int, int]] = []

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, task_id: int) -> bool:
        return task_id in self._tasks

    def __iter__(self) -> Iterator[int]:
        return iter(self._tasks)

    def tasks(self) -> Iterator[Task]:
        return iter(self._tasks.values())

    def add(self, task: Task) -> None:
        if task.id not in self._tasks:
            heapq.heappush(self._order, (-task.priority, task.id))
        self._tasks[task.id] = task

    def discard(self, task_id: int) -> None:
        self._tasks.pop(task_id, None)

    def clear(self) -> None:
        self._tasks.clear()
        self._order.clear()

    def take(self, fits: Callable[[Task], bool]) -> Task | None:
        """Removes and returns the first task that `fits` (a type at its limit does not);
        those passed over keep their places."""
        passed: list[tuple[int, int]] = []
        found: Task | None = None
        while self._order:
            entry = heapq.heappop(self._order)
            task = self._tasks.get(entry[1])
            if task is None:
                continue  # removed meanwhile
            if fits(task):
                del self._tasks[task.id]
                found = task
                break
            passed.append(entry)
        for entry in passed:
            heapq.heappush(self._order, entry)
        return found
