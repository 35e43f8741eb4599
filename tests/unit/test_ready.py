"""The queue of claimed tasks waiting for a slot: highest priority first, then oldest; a type
at its limit is passed over and keeps its place; a removed task never comes out."""

from __future__ import annotations

from service.model import GraphRef, Status, Task
from service.ready import ReadyQueue


def task(task_id: int, priority: int = 0, type_name: str = "echo") -> Task:
    return Task(
        id=task_id,
        graph=GraphRef("DEFAULT", "hugegraph"),
        name="t",
        type=type_name,
        callable="c",
        status=Status.QUEUED,
        priority=priority,
    )


def drain(queue: ReadyQueue) -> list[int]:
    taken = []
    while (next_task := queue.take(lambda t: True)) is not None:
        taken.append(next_task.id)
    return taken


def test_highest_priority_first_then_the_oldest() -> None:
    queue = ReadyQueue()
    for task_id, priority in [(5, 0), (2, 0), (9, 10), (7, 10), (3, -1)]:
        queue.add(task(task_id, priority))
    assert len(queue) == 5
    assert drain(queue) == [7, 9, 2, 5, 3]
    assert len(queue) == 0 and queue.take(lambda t: True) is None


def test_a_task_that_does_not_fit_is_passed_over_and_keeps_its_place() -> None:
    queue = ReadyQueue()
    queue.add(task(1, 5, "gremlin"))
    queue.add(task(2, 0, "echo"))
    queue.add(task(3, 0, "gremlin"))
    taken = queue.take(lambda t: t.type != "gremlin")
    assert taken is not None and taken.id == 2
    assert 1 in queue and 3 in queue
    assert drain(queue) == [1, 3]


def test_a_removed_task_never_comes_out_and_can_come_back() -> None:
    queue = ReadyQueue()
    for task_id in (1, 2, 3):
        queue.add(task(task_id))
    queue.discard(2)
    queue.discard(99)  # not there: nothing happens
    assert 2 not in queue and sorted(queue) == [1, 3]
    queue.add(task(2))  # claimed again (resumed)
    assert drain(queue) == [1, 2, 3]  # once, in its place
