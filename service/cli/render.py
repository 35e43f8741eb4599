"""What the sidetask command writes: rich on standard output, errors on standard error;
a task as a table row or in detail, and a watched task's outcome."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from rich.markup import escape

from .exits import EXIT_CANCELLED, EXIT_ERROR, EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.table import Table

    from ..client import Attempt, Schedule, Task

#: the width of tables written to a pipe or a file
PIPE_WIDTH = 200
STATUS_STYLES = {
    "success": "green",
    "failed": "bold red",
    "cancelled": "yellow",
    "cancelling": "yellow",
    "running": "cyan",
    "pending": "magenta",
    "unknown": "red",
    # an attempt's outcomes besides those
    "timed_out": "bold red",
    "interrupted": "magenta",
    "handed_back": "magenta",
    "lost": "magenta",
}


class Output:
    """Where commands write: rich on standard output, errors on standard error."""

    def __init__(self, json: bool) -> None:
        from rich.console import Console

        self.json = json
        self.console = Console(highlight=False, soft_wrap=True)
        if not self.console.is_terminal and "COLUMNS" not in os.environ:
            # piped into a file or grep: tables as wide as they need, not squeezed into 80
            self.console = Console(highlight=False, soft_wrap=True, width=PIPE_WIDTH)
        self.errors = Console(stderr=True, highlight=False, soft_wrap=True)

    @property
    def live(self) -> bool:
        """Live displays (bars, tables redrawn in place) only on a terminal, never with --json."""
        return not self.json and self.console.is_terminal

    def print(self, *renderables: RenderableType) -> None:
        self.console.print(*renderables)

    def print_json(self, value: Any) -> None:
        sys.stdout.write(orjson.dumps(value).decode() + "\n")
        sys.stdout.flush()

    def note(self, message: str) -> None:
        """A remark for the person at the terminal, on standard error (stdout stays data)."""
        self.errors.print(f"[dim]{escape(message)}[/dim]")

    def error(self, message: str) -> None:
        self.errors.print(f"[bold red]sidetask:[/bold red] {escape(message)}")


def when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S") if ms else ""


def styled_status(status: str) -> str:
    style = STATUS_STYLES.get(status)
    return f"[{style}]{status}[/{style}]" if style else status


#: space rich puts between two columns of a table (padding on both sides and a divider)
_GAP = 3


def task_table(tasks: Sequence[Task], width: int = PIPE_WIDTH) -> Table:
    """The tasks as a table. On a narrow terminal columns go (the timestamps first, then the
    retries and the progress) and the name is cut, so id, status and type always show."""
    from rich import box
    from rich.table import Table

    rows = [
        {
            "ID": str(t.id),
            "STATUS": styled_status(t.status),
            "TYPE": escape(t.type),
            "NAME": escape(t.name),
            "PROGRESS": str(t.progress),
            "RETRIES": str(t.retries),
            "CREATED": when(t.created_ms),
            "UPDATED": when(t.updated_ms),
            "DUE": when(t.run_at_ms or 0),
        }
        for t in tasks
    ]
    plain = {
        "STATUS": [t.status for t in tasks],
        "TYPE": [t.type for t in tasks],
        "NAME": [t.name for t in tasks],
    }

    def need(name: str) -> int:
        values = plain.get(name) or [row[name] for row in rows]
        return max([len(name), *(len(v) for v in values)])

    names = ["ID", "STATUS", "TYPE", "NAME", "PROGRESS", "RETRIES", "CREATED", "UPDATED"]
    if any(t.run_at_ms for t in tasks):  # when the waiting ones come due (task_run_at)
        names.insert(2, "DUE")
    for optional in ("UPDATED", "CREATED", "RETRIES", "PROGRESS", "DUE"):
        if optional not in names:
            continue
        fixed = sum(need(n) for n in names if n != "NAME") + _GAP * (len(names) - 1)
        if fixed + 8 <= width:
            break
        names.remove(optional)
    fixed = sum(need(n) for n in names if n != "NAME") + _GAP * (len(names) - 1)
    name_width = max(4, min(need("NAME"), 40, width - fixed))

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name in names:
        right = name in ("ID", "PROGRESS", "RETRIES")
        table.add_column(
            name,
            justify="right" if right else "left",
            no_wrap=True,
            overflow="ellipsis",
            width=name_width if name == "NAME" else need(name),
        )
    for row in rows:
        table.add_row(*(row[name] for name in names))
    return table


#: the task's keys that hold a time (epoch ms): shown as a date too
_TIME_KEYS = ("task_create", "task_update", "task_run_at", "task_schedule_fire")


def task_detail(task: Task) -> Table:
    from rich.table import Table

    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in task.raw.items():
        if key == "task_status":
            text = styled_status(str(value))
        elif key in _TIME_KEYS and isinstance(value, int):
            text = f"{when(value)} ({value})"
        else:
            text = escape(value if isinstance(value, str) else orjson.dumps(value).decode())
        table.add_row(key, text)
    return table


def schedule_table(schedules: Sequence[Schedule]) -> Table:
    """The schedules, one row each: when each fires next, what it submits."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name in ("NAME", "TYPE", "WHEN", "NEXT FIRE", "LAST TASK", "MISSED", "SOURCE"):
        table.add_column(name, no_wrap=True, overflow="ellipsis")
    for s in schedules:
        table.add_row(
            escape(s.name),
            escape(s.type),
            escape(s.when),
            "[yellow]paused[/yellow]" if s.paused else when(s.next_fire_ms or 0),
            "" if s.last_task_id is None else str(s.last_task_id),
            s.missed,
            s.source,
        )
    return table


def type_table(types: Sequence[str], paused: dict[str, int]) -> Table:
    """The job types, one row each: paused (since when) or running."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name in ("TYPE", "STATE", "PAUSED SINCE"):
        table.add_column(name, no_wrap=True, overflow="ellipsis")
    for name in sorted({*types, *paused}):
        since = paused.get(name)
        state = "runs" if since is None else "[yellow]paused[/yellow]"
        table.add_row(escape(name), state, "" if since is None else when(since))
    return table


def schedule_detail(schedule: Schedule) -> Table:
    from rich.table import Table

    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in schedule.raw.items():
        if key in ("next_fire", "last_fire", "create", "update") and isinstance(value, int):
            text = f"{when(value)} ({value})"
        else:
            text = escape(value if isinstance(value, str) else orjson.dumps(value).decode())
        table.add_row(key, text)
    return table


def attempt_table(attempts: Sequence[Attempt]) -> Table:
    """A task's attempts, one row each: how it ended, where and when it ran, its error."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("#", justify="right", no_wrap=True)
    for name in ("OUTCOME", "SERVER", "REPLICA", "STARTED", "SECONDS"):
        table.add_column(name, no_wrap=True, justify="right" if name == "SECONDS" else "left")
    table.add_column("ERROR", overflow="fold")
    for a in attempts:
        seconds = "" if a.end_ms is None else f"{(a.end_ms - a.start_ms) / 1000:.1f}"
        error = ": ".join(part for part in (a.error_type, a.error_message) if part)
        table.add_row(
            str(a.number),
            styled_status(a.outcome),
            escape(a.server or ""),
            escape(a.replica or ""),
            when(a.start_ms),
            seconds,
            escape(error),
        )
    return table


def outcome(task: Task | None, deleted: bool, out: Output) -> int:
    """A watched task's end, said in a line (nothing more with --json), as an exit code:
    0 success, 1 failed, 2 cancelled, 3 deleted."""
    if deleted or task is None:
        out.error("the task was deleted")
        return EXIT_ERROR
    if out.json:
        pass
    elif task.status == "success":
        out.print(
            f"Task [bold]{task.id}[/bold] {styled_status('success')}: {escape(task.result or '')}"
        )
    elif task.status == "failed":
        out.print(
            f"Task [bold]{task.id}[/bold] {styled_status('failed')}: {escape(task.result or '')}"
        )
    else:
        out.print(f"Task [bold]{task.id}[/bold] {styled_status(task.status)}.")
    return {"success": EXIT_OK, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}.get(
        task.status, EXIT_ERROR
    )
