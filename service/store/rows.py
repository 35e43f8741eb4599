"""Stored rows as Tasks and Events; a row that cannot be interpreted (damaged) reads as `unknown`."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import orjson

from ..model import Event, EventKind, GraphRef, Status, Task

_STATUSES: dict[Any, Status] = {status.value: status for status in Status}


def row_to_task(row: Sequence[Any]) -> Task:
    """A stored row (the columns of queries.TASK_COLUMNS, in order) as a Task; a row that
    cannot be interpreted shows as `unknown`: a status this version does not know, or a
    damaged field (a NULL where a value belongs, text where a number belongs, an input that
    is not JSON). Such a task is never run nor changed."""
    status = _STATUSES.get(row[6], Status.UNKNOWN)
    try:
        task = Task(
            id=int(row[0]),
            graph=_graph_ref(_text(row[1]), _text(row[2])),
            name=_text(row[3]),
            type=_text(row[4]),
            callable=_text(row[5]),
            status=status,
            progress=_integer(row[7]),
            create_ms=_integer(row[8]),
            update_ms=_integer(row[9]),
            result=_optional_text(row[10]),
            input=_json_text(row[11]),
            retries=_integer(row[12]),
            max_retries=_integer(row[13]),
            priority=_integer(row[14]),
            timeout=None if row[15] is None else _number(row[15]),
            run_after_ms=_integer(row[16]),
            server=_optional_text(row[17]),
            description=_optional_text(row[18]),
            progress_total=None if row[19] is None else _integer(row[19]),
        )
    except (TypeError, ValueError):
        # A damaged field: show what can be shown, as `unknown`, so nothing is hidden.
        return Task(
            id=int(row[0]),
            graph=GraphRef(str(row[1]), str(row[2])),
            name=_text_or_empty(row[3]),
            type=_text_or_empty(row[4]),
            callable=_text_or_empty(row[5]),
            status=Status.UNKNOWN,
            create_ms=_int_or_zero(row[8]),
            update_ms=_int_or_zero(row[9]),
            input=_text_or_none(row[11]),
        )
    return task


def row_to_event(row: Sequence[Any]) -> Event:
    """A stored event row (the columns of queries.EVENT_COLUMNS) as an Event."""
    status = None
    if row[6] is not None:
        try:
            status = Status(row[6])
        except ValueError:
            status = Status.UNKNOWN
    return Event(
        id=row[0],
        kind=EventKind(row[1]),
        task_id=row[2],
        graph=GraphRef(row[3], row[4]),
        task_type=row[5],
        status=status,
        data=bytes(row[7]),
    )


def stored_status(value: Any) -> Status:
    """A stored status value as a Status: one this version does not know (written by a
    newer one, or damaged) is `unknown`, shown and not hidden."""
    return _STATUSES.get(value, Status.UNKNOWN)


def is_json(value: str) -> int:
    """SQL function `sidetask_json(text)` of the reader connections: 1 when the text is
    JSON to orjson (the parser row_to_task uses), else 0."""
    try:
        orjson.loads(value)
    except (TypeError, ValueError):
        return 0
    return 1


@functools.lru_cache(maxsize=1024)
def _graph_ref(graphspace: str, graph: str) -> GraphRef:
    # rows name a handful of graphs: one GraphRef each, not one per row
    return GraphRef(graphspace, graph)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {value!r}")
    return value


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _integer(value: Any) -> int:
    # SQLite stores an integral number in an INTEGER column as an integer: anything else
    # (text, 1.5, NULL) was written by something that is not sidetask.
    if type(value) is not int:
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _number(value: Any) -> float:
    if type(value) not in (int, float):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def _json_text(value: Any) -> str | None:
    """The stored input: JSON text, as the service wrote it, or NULL."""
    if value is None:
        return None
    orjson.loads(_text(value))  # JSONDecodeError is a ValueError
    return str(value)


def _text_or_empty(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int_or_zero(value: Any) -> int:
    return value if type(value) is int else 0
