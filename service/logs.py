"""Logging: one line per request and per task transition, as text for people or JSON for collectors.

The request id of the request being served travels in a context variable, so every line
logged while serving it carries it (`request_id`), whatever logger wrote it. Task lines
carry `task_id`. With `log_format = "json"` each line is one JSON object:

    {"time":"2026-11-21T09:02:01.123Z","level":"INFO","logger":"sidetask.tasks",
     "message":"task 5 running","task_id":5,"graph":"DEFAULT/hugegraph","task_type":"sleep",
     "status":"running","event_id":12}
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Any, TextIO

import orjson

from .model import Event, EventKind, Status

__all__ = [
    "FORMATS",
    "REQUEST_ID",
    "JsonFormatter",
    "TextFormatter",
    "configure",
    "log_events",
    "own_log_events",
]

FORMATS = ("text", "json")

#: the id of the request being served, set by the access middleware
REQUEST_ID: ContextVar[str | None] = ContextVar("sidetask_request_id", default=None)

#: fields a record may carry (through `extra=`) that both formats write
FIELDS = (
    "request_id", "task_id", "graph", "task_type", "status", "event_id",
    "method", "path", "route", "status_code", "duration_ms", "remote", "user_agent",
)  # fmt: skip

tasks_log = logging.getLogger("sidetask.tasks")

#: each status's value: Enum's `.value` is a property, several times slower than a lookup
_VALUE = {status: status.value for status in Status}


class _RequestIdFilter(logging.Filter):
    """Gives every record the current request's id, unless it carries one already."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One compact JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": _iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                body[name] = value
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return _json_line(body)


class TextFormatter(logging.Formatter):
    """`time level logger: message`, then the request and task ids when there are any."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        tags = [
            f"{name}={value}"
            for name in ("request_id", "task_id")
            if (value := getattr(record, name, None)) is not None
        ]
        if not tags:
            return text
        first, newline, rest = text.partition("\n")  # keep a traceback below the tags
        return f"{first} [{' '.join(tags)}]{newline}{rest}"


def _json_line(body: dict[str, Any]) -> str:
    """One JSON object. A field may quote what a client sent (a path, a User-Agent) as text
    that is not UTF-8: it is written with replacement characters, not lost with the line."""
    try:
        return orjson.dumps(body, default=str).decode()
    except TypeError:
        clean = {
            k: v.encode("utf-8", "replace").decode() if isinstance(v, str) else v
            for k, v in body.items()
        }
        return orjson.dumps(clean, default=str).decode()


def _iso_time(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def configure(level: str = "INFO", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Sets up the root logger for `sidetask serve`: one handler, the chosen format."""
    if fmt not in FORMATS:
        raise ValueError(f"log_format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    _lines.use(handler, json=fmt == "json")


class _LineBatch:
    """The lines that come by the thousand — one per request, one per task transition — are
    formatted here directly and written together once per event-loop iteration. Through the
    logging module each costs a LogRecord, a filter, a formatter and a write (~10 µs);
    at several thousand tasks a second that is a tenth of a core. The lines are the same
    as the formatters above write; they may land a moment after a line logged the
    ordinary way in the same iteration."""

    def __init__(self) -> None:
        self.handler: logging.StreamHandler[TextIO] | None = None
        self.json = False
        self.pending: list[str] = []
        self.scheduled = False
        self._second = -1
        self._second_text = ""

    def use(self, handler: logging.StreamHandler[TextIO], json: bool) -> None:
        self.flush()
        self.handler = handler
        self.json = json

    def add(self, logger: logging.Logger, entries: Sequence[tuple[str, dict[str, Any]]]) -> None:
        handler = self.handler
        if handler is None or logger.handlers or not logger.propagate:
            # logging set up some other way (a test, an embedding application): the usual path
            for message, fields in entries:
                logger.info(message, extra=fields)
            return
        now = time.time()
        if self.json:
            stamp = _iso_time(now)
            for message, fields in entries:
                body: dict[str, Any] = {
                    "time": stamp,
                    "level": "INFO",
                    "logger": logger.name,
                    "message": message,
                }
                body.update((k, v) for k, v in fields.items() if v is not None)
                self.pending.append(_json_line(body) + "\n")
        else:
            prefix = f"{self._local_time(now)} INFO {logger.name}: "
            append = self.pending.append
            for message, fields in entries:
                request_id = fields.get("request_id")
                task_id = fields.get("task_id")
                if request_id is None and task_id is None:
                    append(f"{prefix}{message}\n")
                elif task_id is None:
                    append(f"{prefix}{message} [request_id={request_id}]\n")
                elif request_id is None:
                    append(f"{prefix}{message} [task_id={task_id}]\n")
                else:
                    append(f"{prefix}{message} [request_id={request_id} task_id={task_id}]\n")
        self._schedule()

    def add_text(self, logger: logging.Logger, texts: Sequence[str]) -> None:
        """Text-format INFO lines of `logger` (see wants_fields), each given as its message
        and tags: only the time, level and logger name are put in front."""
        prefix = f"{self._local_time(time.time())} INFO {logger.name}: "
        self.pending.extend([f"{prefix}{text}\n" for text in texts])
        self._schedule()

    def _schedule(self) -> None:
        if not self.scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self.scheduled = True
            loop.call_soon(self.flush)

    def _local_time(self, now: float) -> str:
        """logging.Formatter's default asctime: `2026-11-21 09:02:01,123`, local time."""
        second = int(now)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._second_text},{int((now - second) * 1000):03d}"

    def flush(self) -> None:
        self.scheduled = False
        if not self.pending or self.handler is None:
            self.pending.clear()
            return
        text, self.pending = "".join(self.pending), []
        handler = self.handler
        handler.acquire()
        try:
            handler.stream.write(text)
            handler.flush()
        except (OSError, ValueError):
            pass  # a closed or broken log stream must not break the service
        finally:
            handler.release()


_lines = _LineBatch()
atexit.register(_lines.flush)


def wants_fields(logger: logging.Logger) -> bool:
    """Whether an INFO line of `logger` writes every field it is given: with JSON, or with
    logging set up some other way. When not, a text line shows only the request and task
    ids, and a hot path may leave the other fields out."""
    return _lines.handler is None or _lines.json or bool(logger.handlers) or not logger.propagate


def info_lines(logger: logging.Logger, entries: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """INFO lines of (message, fields), the hot-path way (see _LineBatch)."""
    if entries and logger.isEnabledFor(logging.INFO):
        _lines.add(logger, entries)


def log_events(events: Sequence[Event]) -> None:
    """A commit listener: one line per task created, moved to another status, or deleted.
    Progress is not a transition and is logged at DEBUG only."""
    if not tasks_log.isEnabledFor(logging.INFO):
        return
    if not wants_fields(tasks_log):  # text: the message and the task id, written directly
        texts = [
            f"task {event.task_id} {_what(event)} ({event.task_type}, {event.graph}) [task_id={event.task_id}]"
            for event in events
            if event.kind is not EventKind.PROGRESS
        ]
        if texts:
            _lines.add_text(tasks_log, texts)
        return
    entries: list[tuple[str, dict[str, Any]]] = []
    for event in events:
        if event.kind is EventKind.PROGRESS:
            continue
        graph = str(event.graph)
        fields = {
            "task_id": event.task_id,
            "graph": graph,
            "task_type": event.task_type,
            "status": None if event.status is None else _VALUE[event.status],
            "event_id": event.id,
        }
        message = f"task {event.task_id} {_what(event)} ({event.task_type}, {graph})"
        entries.append((message, fields))
    info_lines(tasks_log, entries)


def own_log_events(made_here: Callable[[int], bool]) -> Callable[[Sequence[Event]], None]:
    """log_events for a replica of several: the lines of the transitions its own writer
    committed (`made_here`), not those of every replica's, so a cluster's logs hold each
    line once (from the replica that made the change) and a replica spends nothing on
    the others' lines."""

    def listener(events: Sequence[Event]) -> None:
        own = [event for event in events if made_here(event.id)]
        if own:
            log_events(own)

    return listener


def _what(event: Event) -> str:
    """What a transition line says happened to the task."""
    if event.kind is EventKind.CREATED:
        return "created"
    if event.kind is EventKind.DELETED:
        return "deleted"
    return "changed" if event.status is None else _VALUE[event.status]
