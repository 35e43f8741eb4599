"""Stored rows as Tasks and Events; a row that cannot be interpreted (damaged) reads as `unknown`."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Protocol

import orjson

from ..model import (
    LOG_LEVEL_INDEX,
    Attempt,
    AttemptOutcome,
    Delivery,
    DeliveryAnswer,
    DeliveryState,
    DueDelivery,
    Event,
    EventKind,
    GraphRef,
    LogLine,
    Status,
    Task,
)
from ..schedules import Definition, Schedule

_STATUSES: dict[Any, Status] = {status.value: status for status in Status}


class Row(Protocol):
    """A stored row as a driver gives it: a tuple (sqlite3) or a Record (asyncpg), indexed
    and sliced by position."""

    def __getitem__(self, index: Any, /) -> Any: ...
    def __len__(self) -> int: ...


_N = type(None)
#: the task columns (queries.TASK_COLUMNS); a query may add its own after them
_COLUMNS = 27
#: the types of a sound row, column by column: one check of the whole row tells the usual
#: case from a damaged one (a list reads a hundred rows per request)
_SOUND_ROWS = frozenset(
    (int, str, str, str, str, str, str, int, int, int, result, input, int, int, int,
     timeout, int, server, description, total, traceparent, tracestate, dependencies, int, int,
     schedule, fire)
    for result in (str, _N)
    for input in (str, _N)
    for timeout in (float, int, _N)
    for server in (str, _N)
    for description in (str, _N)
    for total in (int, _N)
    for traceparent in (str, _N)
    for tracestate in (str, _N)
    for dependencies in (str, _N)
    for schedule, fire in ((str, int), (_N, _N))
)  # fmt: skip


def row_to_task(row: Row) -> Task:
    """A stored row (the columns of queries.TASK_COLUMNS, in order, maybe more after them)
    as a Task; a row that cannot be interpreted shows as `unknown`: a status this version
    does not know, or a damaged field (a NULL where a value belongs, text where a number
    belongs, an input that is not JSON). Such a task is never run nor changed."""
    if tuple(map(type, row[:_COLUMNS])) not in _SOUND_ROWS:
        return _damaged(row)
    if row[11] is not None:  # every column is of its type: the input's JSON is left to check
        try:
            orjson.loads(row[11])
        except ValueError:
            return _damaged(row)
    timeout = row[15]
    return Task(
        row[0], _graph_ref(row[1], row[2]), row[3], row[4], row[5],
        _STATUSES.get(row[6], Status.UNKNOWN), row[7], row[8], row[9], row[10], row[11],
        row[12], row[13], row[14], None if timeout is None else float(timeout), row[16],
        row[17], row[18], row[19], row[20], row[21],
        () if row[22] is None else _ids(row[22]), row[23], row[24], row[25], row[26],
    )  # fmt: skip


def _ids(text: str) -> tuple[int, ...]:
    """A task's dependencies as stored: a JSON list of ids."""
    return tuple(orjson.loads(text))


def _damaged(row: Row) -> Task:
    """A row with a damaged field: what can be shown, as `unknown`, so nothing is hidden."""
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


_EVENT_KINDS: dict[Any, EventKind] = {kind.value: kind for kind in EventKind}


def row_to_event(row: Row) -> Event:
    """A stored event row (the columns of queries.EVENT_COLUMNS) as an Event. Lookups, not
    the enums' constructors: every replica reads every event of the cluster through here."""
    value = row[6]
    kind = _EVENT_KINDS.get(row[1])
    return Event(
        row[0],
        EventKind(row[1]) if kind is None else kind,  # an unknown kind raises ValueError
        row[2],
        _graph_ref(row[3], row[4]),
        row[5],
        None if value is None else _STATUSES.get(value, Status.UNKNOWN),
        bytes(row[7]),
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


def _text_or_empty(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int_or_zero(value: Any) -> int:
    return value if type(value) is int else 0


_OUTCOMES: dict[Any, AttemptOutcome] = {outcome.value: outcome for outcome in AttemptOutcome}


def row_to_attempt(row: Row) -> Attempt:
    """A stored attempt row (the columns of queries.ATTEMPT_COLUMNS) as an Attempt; an
    outcome this version does not know reads as `interrupted` once the attempt has ended."""
    end_ms = row[5]
    outcome = None if row[6] is None else _OUTCOMES.get(row[6], AttemptOutcome.INTERRUPTED)
    return Attempt(
        task_id=int(row[0]),
        number=int(row[1]),
        server=row[2],
        replica=row[3],
        start_ms=int(row[4]),
        end_ms=None if end_ms is None else int(end_ms),
        outcome=outcome,
        error_type=row[7],
        error_message=row[8],
        traceback=row[9],
        checkpointed=bool(row[10]),
    )


#: the lines a task.log event carries at most (the last of its batch); the others are read
#: from GET …/logs with after=
EVENT_LOG_LINES = 200
_WARNING = LOG_LEVEL_INDEX["warning"]


def row_to_log_line(row: Row) -> LogLine:
    """A stored line (the columns of queries.LOG_COLUMNS) as a LogLine."""
    return LogLine(
        time_ms=int(row[1]),
        level=int(row[2]),
        text=str(row[4]),
        attempt=None if row[3] is None else int(row[3]),
        id=int(row[0]),
    )


def log_page(
    lines: list[LogLine], dropped: int, first_id: int | None, after: int, level: int, limit: int
) -> list[LogLine]:
    """A page of a task's lines with the marker of the dropped ones before its first kept
    line (id: that line's id - 1), when the page starts before it."""
    if dropped <= 0 or first_id is None or after >= first_id - 1 or level > _WARNING:
        return lines
    first_time = lines[0].time_ms if lines else 0
    marker = LogLine(
        time_ms=first_time,
        level=_WARNING,
        text=f"… {dropped} earlier lines dropped (max_log_lines)",
        id=first_id - 1,
    )
    return [marker, *lines[: max(limit - 1, 0)]]


def log_event_data(task_id: int, lines: list[LogLine]) -> dict[str, Any]:
    """A task.log event's data: the task's id and its new lines (the last EVENT_LOG_LINES;
    `omitted` says how many before them it does not carry)."""
    carried = lines[-EVENT_LOG_LINES:]
    data: dict[str, Any] = {"id": task_id, "lines": [line.to_api() for line in carried]}
    if len(lines) > len(carried):
        data["omitted"] = len(lines) - len(carried)
    return data


def row_to_due_delivery(row: Row, lease: str) -> DueDelivery:
    """A claimed delivery from its row (DELIVERY_COLUMNS)."""
    return DueDelivery(
        id=int(row[0]),
        uid=str(row[1]),
        task_id=int(row[2]),
        hook=str(row[3]),
        url=str(row[4]),
        status=str(row[5]),
        body=bytes(row[6]),
        attempts=int(row[7]),
        create_ms=int(row[8]),
        lease=lease,
    )


def deliveries_of(rows: Sequence[Row], answers: Sequence[Row]) -> list[Delivery]:
    """A task's deliveries from their rows (SELECT_DELIVERIES) and their answers'
    (SELECT_DELIVERY_ANSWERS: delivery id, time, code, error, duration)."""
    by_delivery: dict[int, list[DeliveryAnswer]] = {}
    for a in answers:
        by_delivery.setdefault(int(a[0]), []).append(
            DeliveryAnswer(int(a[1]), None if a[2] is None else int(a[2]), a[3], int(a[4]))
        )
    return [
        Delivery(
            id=int(r[0]),
            uid=str(r[1]),
            task_id=int(r[2]),
            hook=str(r[3]),
            url=str(r[4]),
            status=str(r[5]),
            state=DeliveryState(r[6]),
            attempts=int(r[7]),
            create_ms=int(r[8]),
            next_ms=None if r[9] is None else int(r[9]),
            answers=tuple(by_delivery.get(int(r[0]), ())),
        )
        for r in rows
    ]


def row_to_schedule(row: Row) -> Schedule:
    """A stored schedule (the columns of queries.SCHEDULE_COLUMNS, in order)."""
    return Schedule(
        graph=_graph_ref(row[0], row[1]),
        name=row[2],
        definition=Definition.from_json(row[3]),
        paused=bool(row[4]),
        next_fire_ms=row[5],
        anchor_ms=row[6],
        source=row[7],
        create_ms=row[8],
        update_ms=row[9],
        last_fire_ms=row[10],
        last_task_id=row[11],
    )
