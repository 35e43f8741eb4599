"""`sidetask watch`: one task to its end (a bar, lines or JSON), or a graph's tasks as they
change (a live table, lines or JSON), read from the client's event streams (which
reconnect by themselves, resuming with Last-Event-ID)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape

from ..model import UNFINISHED_STATUSES, Status
from .render import Output, outcome, styled_status, task_table

if TYPE_CHECKING:
    from rich.table import Table

    from ..client import Client, EventStream, Task

#: the statuses `watch` lists the tasks of when it starts (service.model.UNFINISHED_STATUSES),
#: in the order they go through them
WATCHED_STATUSES = tuple(s.value for s in Status if s in UNFINISHED_STATUSES)


def _total_of(task: Task, given: int | None) -> int | None:
    """The progress value that means done: given, else the one the job declared
    (task_progress_total), else the input's `total` or `steps` (the built-in sleep job
    counts its steps), else unknown."""
    if given is not None:
        return given if given > 0 else None
    if task.progress_total is not None:
        return int(task.progress_total)
    try:
        value = task.input_value()
    except ValueError:
        return None
    if isinstance(value, dict):
        for key in ("total", "steps"):
            candidate = value.get(key)
            if isinstance(candidate, int) and not isinstance(candidate, bool) and candidate > 0:
                return candidate
    return None


class _Total:
    """`_total_of` along one task's events: a status or progress event leaves the input
    out (only the first state and task.created carry it), so what it gave is kept."""

    def __init__(self, given: int | None) -> None:
        self.given = given
        self.known: int | None = None

    def of(self, task: Task) -> int | None:
        if self.given is not None or task.progress_total is not None or task.input is not None:
            self.known = _total_of(task, self.given)
        return self.known


async def watch_task(client: Client, task_id: int, out: Output, total: int | None = None) -> int:
    """Follows one task to its end: a progress bar on a terminal, a line per change
    otherwise, one JSON object per event with --json. 0 success, 1 failed, 2 cancelled."""
    stream = client.events(task_id)
    last: Task | None = None
    deleted = False
    try:
        if out.live:
            last, deleted = await _watch_bar(stream, out, total)
        else:
            shown: tuple[str, int] | None = None
            totals = _Total(total)
            async for event in stream:
                if out.json:
                    out.print_json({"id": event.id, "event": event.kind, "data": event.data})
                task = event.task
                if task is None:  # task.deleted: its data is only the id
                    deleted = True
                    continue
                last = task
                limit = totals.of(last)
                if not out.json and (last.status, last.progress) != shown:
                    shown = (last.status, last.progress)
                    count = f"{last.progress}/{limit}" if limit else str(last.progress)
                    out.print(f"task {last.id} {styled_status(last.status)} progress {count}")
    finally:
        await stream.close()
    return outcome(last, deleted, out)


async def _watch_bar(
    stream: EventStream, out: Output, total: int | None
) -> tuple[Task | None, bool]:
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[count]}"),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=out.console,
    )
    last: Task | None = None
    deleted = False
    totals = _Total(total)
    with progress:
        bar = None
        async for event in stream:
            task = event.task
            if task is None:  # task.deleted: its data is only the id
                deleted = True
                continue
            last = task
            limit = totals.of(last)
            done = last.progress
            if last.status == "success" and limit:
                done = limit
            count = f"{last.progress}/{limit}" if limit else str(last.progress)
            status = styled_status(last.status)
            if bar is None:
                bar = progress.add_task(
                    f"task {last.id} {escape(last.name)}",
                    total=limit,
                    completed=done,
                    count=count,
                    status=status,
                )
            else:
                progress.update(bar, total=limit, completed=done, count=count, status=status)
        if bar is not None:
            progress.stop_task(bar)
    return last, deleted


async def watch_graph(
    client: Client, out: Output, *, status: str | None, task_type: str | None, limit: int
) -> None:
    """A graph's tasks as they change: a table redrawn in place on a terminal (the tasks
    not yet completed when it starts, then every task that changes), a line per event
    otherwise, one JSON object per event with --json. Runs until interrupted."""
    stream = client.events(status=status, type=task_type)
    rows: dict[int, Task] = {}
    try:
        # subscribed before the snapshot is read: no change falls between the two
        await stream.connect()
        if out.live:
            for name in [status.lower()] if status else WATCHED_STATUSES:
                async for task in client.list(name, limit=limit):
                    if task_type is None or task.type == task_type:
                        rows[task.id] = task
            await _live_table(stream, out, rows, limit, client.graph)
        else:
            what = f"{task_type} tasks" if task_type else "tasks"
            out.note(f"Watching the {what} of {client.graph} (Ctrl-C to stop)")
            async for event in stream:
                if out.json:
                    out.print_json({"id": event.id, "event": event.kind, "data": event.data})
                elif event.task is None:
                    out.print(f"task {event.task_id} deleted")
                else:
                    task = event.task
                    out.print(
                        f"task {task.id} {styled_status(task.status)} progress {task.progress} "
                        f"({escape(task.type)})"
                    )
    finally:
        await stream.close()


async def _live_table(
    stream: EventStream, out: Output, rows: dict[int, Task], limit: int, graph: str
) -> None:
    from rich.live import Live

    def render() -> Table:
        shown = [rows[i] for i in sorted(rows)[-limit:]]
        table = task_table(shown, out.console.width)
        table.title = f"{graph}: {len(shown)} task(s), live"
        return table

    with Live(render(), console=out.console, auto_refresh=False) as live:
        async for event in stream:
            if event.task is None:
                rows.pop(event.task_id, None)
            else:
                known = rows.get(event.task_id)
                # the snapshot may be newer than an event that waited in the socket meanwhile
                if known is None or event.task.updated_ms >= known.updated_ms:
                    rows[event.task_id] = event.task
            live.update(render(), refresh=True)
