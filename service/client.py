"""An async Python client of sidetask: submit, read, list, act on tasks, and follow their events.

    from service.client import Client

    async with Client("http://127.0.0.1:8080", graph="DEFAULT/hugegraph") as client:
        task_id = await client.submit("sleep", {"steps": 3, "interval": 0.5})
        async for event in client.events(task_id):
            print(event.kind, event.task.status, event.task.progress)
        print((await client.get(task_id)).result_value())

`events()` reconnects by itself after a dropped connection, sending `Last-Event-ID`, so
the server replays what was missed; a task's stream ends after a completed status or the
task's deletion, a graph's or the service's never ends.

`claim`, `report`, `complete` and `fail` are the external workers' requests; the worker
library (service.worker) is built on them.

Exceptions:

    ClientError             anything this client raises on purpose
    ├── APIError            the server answered with an error (.status, .message, .exception, .cause)
    └── ConnectionFailed    no answer: the server cannot be reached, or a stream could not be resumed
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import errno
import os
import re
import socket
import ssl
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import aiohttp
import orjson

from . import jsontext, model
from .backoff import Backoff

__all__ = [
    "COMPLETED_STATUSES",
    "DEFAULT_GRAPH",
    "DEFAULT_URL",
    "MAX_RECONNECT_PAUSE",
    "APIError",
    "Attempt",
    "BulkResult",
    "Client",
    "ClientError",
    "ConnectionFailed",
    "Delivery",
    "Event",
    "EventStream",
    "LogLine",
    "Schedule",
    "Task",
    "parse_graph",
]

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_GRAPH = "DEFAULT/hugegraph"
#: the completed statuses as the API writes them (service.model.COMPLETED_STATUSES)
COMPLETED_STATUSES = frozenset(status.value for status in model.COMPLETED_STATUSES)
#: the longest pause between two reconnections of an event stream (unless the server
#: suggested a longer one)
MAX_RECONNECT_PAUSE = 30.0


# --- errors ---


class ClientError(Exception):
    """The root of every error this client raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class APIError(ClientError):
    """The server answered with an error: its HTTP status and its error body
    (`{"exception": …, "message": …, "cause": …}`)."""

    def __init__(self, status: int, message: str, exception: str = "", cause: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.exception = exception
        self.cause = cause

    def __str__(self) -> str:
        return f"{self.status}: {self.message}"


class ConnectionFailed(ClientError):
    """The server could not be reached (refused, timed out, dropped and not back in time)."""


#: an errno in the text of an OSError that has none of its own (asyncio's "Multiple
#: exceptions: [Errno 111] …, [Errno 111] …" when every address of a host refused)
_ERRNO = re.compile(r"\[Errno (\d+)\]")


def _connection_problem(exc: BaseException) -> str:
    """Why a connection failed, in a few words for a person (`connection refused`), without
    aiohttp's connection key and the addresses tried (`ssl:default [Connect call failed …]`)."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"its TLS certificate is not accepted: {_os_problem(exc.certificate_error)}"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve the host name '{exc.host}'"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _os_problem(exc.os_error)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(exc, aiohttp.InvalidURL):
        return f"not a URL it can connect to ({exc.url})"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the answer was cut off"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, OSError):
        return _os_problem(exc)
    return str(exc) or type(exc).__name__


def _os_problem(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, TimeoutError):
        return "the connection timed out"
    if isinstance(exc, socket.gaierror):
        return "cannot resolve the host name"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, OSError):
        numbers = {exc.errno} if exc.errno else {int(n) for n in _ERRNO.findall(str(exc))}
        if numbers == {errno.ECONNREFUSED}:
            return "connection refused"
        if len(numbers) == 1:  # "No route to host" -> "no route to host"
            text = os.strerror(numbers.pop())
            return text[:1].lower() + text[1:]
    return str(exc) or type(exc).__name__


def _unreachable(url: str, exc: BaseException) -> str:
    """`cannot reach http://127.0.0.1:8080: connection refused`."""
    return f"cannot reach {url}: {_connection_problem(exc)}"


def _run_at_text(run_at: str | int | datetime | None) -> str | None:
    """`run_at` as the server takes it: ISO-8601 with an offset, or epoch milliseconds. A
    datetime without a time zone is refused here, as the server would."""
    if run_at is None or isinstance(run_at, str):
        return run_at
    if isinstance(run_at, datetime):
        if run_at.tzinfo is None:
            raise ValueError("run_at needs a time zone (datetime.now(UTC), not datetime.now())")
        return run_at.isoformat()
    return str(int(run_at))


def _time_text(name: str, value: str | int | datetime | None) -> str | None:
    """A list's time bound as the server takes it: epoch milliseconds (an int), ISO-8601
    (a str, or a datetime, which needs a time zone)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{name} needs a time zone (datetime.now(UTC), not datetime.now())")
        return value.isoformat()
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: epoch milliseconds (an int), an ISO-8601 str or a datetime")
    return str(value)


def _filter_params(
    status: str | None,
    task_type: str | None,
    name: str | None,
    created_from: str | int | datetime | None,
    created_to: str | int | datetime | None,
    updated_from: str | int | datetime | None,
    updated_to: str | int | datetime | None,
) -> dict[str, str]:
    """A list's or a bulk action's filter as query parameters (the ones given)."""
    given = {
        "status": status,
        "type": task_type,
        "name": name,
        "created_from": _time_text("created_from", created_from),
        "created_to": _time_text("created_to", created_to),
        "updated_from": _time_text("updated_from", updated_from),
        "updated_to": _time_text("updated_to", updated_to),
    }
    return {key: value for key, value in given.items() if value is not None}


# --- values ---


@dataclass(frozen=True, slots=True)
class Task:
    """A task as the server shows it; `raw` is the object exactly as it was sent."""

    id: int
    name: str
    type: str
    status: str
    progress: int
    #: creation and last change, epoch milliseconds
    created_ms: int
    updated_ms: int
    retries: int
    #: JSON text of the result, or the error text of a failed task; None until there is one
    result: str | None
    #: JSON text of the input; None when there is none
    input: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)
    #: the progress value that means done, when the job declared one (task_progress_total)
    progress_total: int | None = None
    #: the tasks it waits for (task_dependencies), and how many of them have not succeeded
    #: yet while it has not started (task_dependencies_left; 0: none)
    dependencies: tuple[int, ...] = ()
    dependencies_left: int = 0
    #: when a task waiting for its delay, its run_at or a retry's backoff becomes due
    #: (task_run_at, epoch ms); None for any other
    run_at_ms: int | None = None
    #: the schedule that submitted it and the fire time it was for (task_schedule,
    #: task_schedule_fire); None: not a schedule's
    schedule: str | None = None
    schedule_fire_ms: int | None = None

    @classmethod
    def from_api(cls, body: Mapping[str, Any]) -> Task:
        total = body.get("task_progress_total")
        run_at = body.get("task_run_at")
        fire = body.get("task_schedule_fire")
        return cls(
            id=int(body["id"]),
            name=str(body.get("task_name", "")),
            type=str(body.get("task_type", "")),
            status=str(body.get("task_status", "unknown")),
            progress=int(body.get("task_progress", 0)),
            created_ms=int(body.get("task_create", 0)),
            updated_ms=int(body.get("task_update", 0)),
            retries=int(body.get("task_retries", 0)),
            result=body.get("task_result"),
            input=body.get("task_input"),
            raw=dict(body),
            progress_total=None if total is None else int(total),
            dependencies=tuple(int(d) for d in body.get("task_dependencies") or ()),
            dependencies_left=int(body.get("task_dependencies_left", 0)),
            run_at_ms=None if run_at is None else int(run_at),
            schedule=body.get("task_schedule"),
            schedule_fire_ms=None if fire is None else int(fire),
        )

    @property
    def completed(self) -> bool:
        """success, failed or cancelled: nothing more will happen to it."""
        return self.status in COMPLETED_STATUSES

    def result_value(self) -> Any:
        """The result decoded from its JSON text (a failed task's error text as is)."""
        if self.result is None:
            return None
        try:
            return orjson.loads(self.result)
        except orjson.JSONDecodeError:
            return self.result

    def input_value(self) -> Any:
        return None if self.input is None else orjson.loads(self.input)


@dataclass(frozen=True, slots=True)
class Schedule:
    """A schedule as the server shows it (README, "Schedules"); `raw` is its object."""

    name: str
    type: str
    #: the cron expression and its time zone, or the interval in seconds
    cron: str | None
    timezone: str | None
    every: float | None
    paused: bool
    #: the next fire time (epoch ms); None while paused
    next_fire_ms: int | None
    #: the last fire time that submitted a task, and that task
    last_fire_ms: int | None
    last_task_id: int | None
    missed: str
    #: "config" (declared in the configuration) or "api"
    source: str
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_api(cls, body: Mapping[str, Any]) -> Schedule:
        every = body.get("every")
        return cls(
            name=str(body["name"]),
            type=str(body.get("type", "")),
            cron=body.get("cron"),
            timezone=body.get("timezone"),
            every=None if every is None else float(every),
            paused=bool(body.get("paused", False)),
            next_fire_ms=body.get("next_fire"),
            last_fire_ms=body.get("last_fire"),
            last_task_id=body.get("last_task_id"),
            missed=str(body.get("missed", "once")),
            source=str(body.get("source", "api")),
            raw=dict(body),
        )

    @property
    def when(self) -> str:
        """The schedule in words: `every 60 s`, `cron '0 3 * * *' (Europe/Paris)`."""
        if self.every is not None:
            return f"every {self.every:g} s"
        return f"cron '{self.cron}' ({self.timezone})"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One run of a task, as GET …/tasks/{id}/attempts shows it."""

    number: int
    #: the task_server it ran under, and the sidetask process (host:pid) that started it
    server: str | None
    replica: str | None
    #: epoch milliseconds; `end_ms` None while it runs
    start_ms: int
    end_ms: int | None
    #: running, success, failed, timed_out, cancelled, interrupted, handed_back or lost
    outcome: str
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    checkpointed: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, body: Mapping[str, Any]) -> Attempt:
        error = body.get("error") or {}
        end = body.get("end")
        return cls(
            number=int(body["attempt"]),
            server=body.get("server"),
            replica=body.get("replica"),
            start_ms=int(body.get("start", 0)),
            end_ms=None if end is None else int(end),
            outcome=str(body.get("outcome", "running")),
            error_type=error.get("type"),
            error_message=error.get("message"),
            traceback=error.get("traceback"),
            checkpointed=bool(body.get("checkpointed", False)),
            raw=dict(body),
        )


@dataclass(frozen=True, slots=True)
class BulkResult:
    """What a bulk action did (POST …/tasks/bulk): of the tasks it `matched`, how many it
    `changed`, and the others by the reason each was refused."""

    action: str
    matched: int
    changed: int
    #: reason (the single action's refusal, without the task's id) -> how many
    refused: dict[str, int]
    batches: int = 0
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, body: Mapping[str, Any]) -> BulkResult:
        return cls(
            action=str(body["action"]),
            matched=int(body["matched"]),
            changed=int(body["changed"]),
            refused={str(k): int(v) for k, v in (body.get("refused") or {}).items()},
            batches=int(body.get("batches", 0)),
            raw=dict(body),
        )


@dataclass(frozen=True, slots=True)
class Delivery:
    """One webhook delivery of a task, as GET …/tasks/{id}/deliveries shows it (README,
    "Webhooks"): to a configured hook or the task's own callback."""

    #: the delivery id: the Sidetask-Delivery header of each of its tries
    id: str
    hook: str
    url: str
    #: the status whose change wrote it
    status: str
    #: pending, delivered or failed
    state: str
    attempts: int
    created_ms: int
    #: when it is tried next (pending only)
    next_try_ms: int | None
    #: the last try's HTTP status, or the error that stood for one
    last_code: int | None = None
    last_error: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, body: Mapping[str, Any]) -> Delivery:
        last = body.get("last_answer") or {}
        next_try = body.get("next_try")
        return cls(
            id=str(body["delivery"]),
            hook=str(body.get("hook", "")),
            url=str(body.get("url", "")),
            status=str(body.get("status", "")),
            state=str(body.get("state", "pending")),
            attempts=int(body.get("attempts", 0)),
            created_ms=int(body.get("created", 0)),
            next_try_ms=None if next_try is None else int(next_try),
            last_code=last.get("code"),
            last_error=last.get("error"),
            raw=dict(body),
        )


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line of a task's log, as GET …/tasks/{id}/logs and task.log events show it."""

    id: int
    #: epoch milliseconds
    time_ms: int
    #: debug, info, warning or error
    level: str
    #: the attempt that wrote it (None: the marker of the dropped lines)
    attempt: int | None
    text: str

    @classmethod
    def from_api(cls, body: Mapping[str, Any]) -> LogLine:
        attempt = body.get("attempt")
        return cls(
            id=int(body["id"]),
            time_ms=int(body.get("time", 0)),
            level=str(body.get("level", "info")),
            attempt=None if attempt is None else int(attempt),
            text=str(body.get("text", "")),
        )


@dataclass(frozen=True, slots=True)
class Event:
    """One Server-Sent Event: `kind` is task.created, task.status, task.progress or
    task.deleted (and task.log, on a stream asked for with logs=True)."""

    id: int | None
    kind: str
    data: dict[str, Any]

    @property
    def task_id(self) -> int:
        return int(self.data["id"])

    @property
    def task(self) -> Task | None:
        """The task after the change; None for task.deleted (its data is only the id).
        Only task.created and a task stream's first event carry the input: in the others
        `input` is None (it never changes; `get` reads it)."""
        if self.kind in ("task.deleted", "task.log"):
            return None
        return Task.from_api(self.data)

    @property
    def lines(self) -> builtins.list[LogLine]:
        """A task.log event's new lines (none for the other kinds). `omitted` in its data
        says how many came before them that it does not carry (read them with logs())."""
        if self.kind != "task.log":
            return []
        return [LogLine.from_api(item) for item in self.data.get("lines", [])]

    @property
    def ends_task_stream(self) -> bool:
        """A task's stream ends after its deletion or a completed status."""
        return self.kind == "task.deleted" or (
            self.kind == "task.status" and self.data.get("task_status") in COMPLETED_STATUSES
        )


def parse_graph(text: str) -> tuple[str, str]:
    """`graphspace/graph`, or `graph` alone for graphspace DEFAULT."""
    space, sep, graph = text.partition("/")
    if not sep:
        space, graph = "DEFAULT", space
    if not space or not graph or "/" in graph:
        raise ValueError(f"graph {text!r} is not 'graphspace/graph' or 'graph'")
    return space, graph


# --- the client ---


class Client:
    """sidetask's task API for one graph.

    `user`/`password` are sent as HTTP Basic credentials, `token` as a Bearer token (it
    wins when both are given). `timeout` bounds each request (not event streams, which
    stay open; `stream_idle_timeout` bounds the silence on one, and the server's keep-alive
    comments break it). `headers` are sent with every request (the credentials above win
    over an Authorization among them). Pass `session` to share an aiohttp session; it is
    then not closed (and `headers` and the credentials are not its own: give them to it).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        graph: str = DEFAULT_GRAPH,
        *,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        session: aiohttp.ClientSession | None = None,
        reconnect_delay: float = 1.0,
        reconnect_timeout: float = 60.0,
        stream_idle_timeout: float = 90.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        space, name = parse_graph(graph)
        self.graph = f"{space}/{name}"
        self.base = f"/graphspaces/{quote(space, safe='')}/graphs/{quote(name, safe='')}"
        self.timeout = timeout
        #: seconds before reconnecting when the server did not suggest its own (`retry:`)
        self.reconnect_delay = reconnect_delay
        #: seconds a stream keeps trying to come back before ConnectionFailed
        self.reconnect_timeout = reconnect_timeout
        self.stream_idle_timeout = stream_idle_timeout
        self._headers: dict[str, str] = dict(headers or {})
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        elif user is not None:
            pair = f"{user}:{password or ''}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        self._session = session
        self._own_session = session is None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
        self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers)
            self._own_session = True
        return self._session

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | builtins.list[tuple[str, str]] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - aiohttp's, for this request
    ) -> Any:
        """One request; the decoded JSON answer (None for an empty one, as a 204's), or an
        APIError. `timeout` replaces the client's for this request. A body nested deeper
        than the service takes is refused here (jsontext.TooDeep, a ValueError)."""
        total = self.timeout if timeout is None else timeout
        data = None if body is None else jsontext.dumps(body, "The request body")
        send_headers = dict(headers or {})
        if data is not None:
            send_headers["Content-Type"] = "application/json"
        try:
            async with self._http().request(
                method,
                self.url + path,
                params=params,
                data=data,
                headers=send_headers,
                timeout=aiohttp.ClientTimeout(total=total),
            ) as response:
                raw = await response.read()
                if response.status >= 400:
                    raise _api_error(response.status, raw)
        except aiohttp.ClientError as exc:
            raise ConnectionFailed(_unreachable(self.url, exc)) from exc
        except TimeoutError as exc:
            raise ConnectionFailed(f"No answer from {self.url} within {total:g} s") from exc
        if not raw.strip():
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise APIError(
                response.status, f"The server sent a body that is not JSON: {raw[:200]!r}"
            ) from None

    # --- tasks ---

    async def submit(
        self,
        job_type: str,
        input: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        priority: int | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the task's, sent to the server
        delay: float | None = None,
        run_at: str | int | datetime | None = None,
        idempotency_key: str | None = None,
        callback: str | None = None,
        dependencies: Sequence[int] = (),
    ) -> int:
        """Submits a job of `job_type` with `input` as its input; the new task's id. For
        `gremlin`, `input` is HugeGraph's body: `{"gremlin": "g.V().count()"}`.
        `dependencies`: ids of tasks of the graph it waits for (it runs once each one
        succeeded; it ends failed or cancelled when one does)."""
        params = {
            key: str(value)
            for key, value in (
                ("name", name),
                ("priority", priority),
                ("max_retries", max_retries),
                ("timeout", timeout),
                ("delay", delay),
                ("run_at", _run_at_text(run_at)),
                ("callback", callback),
            )
            if value is not None
        }
        if dependencies:
            params["dependencies"] = ",".join(str(int(d)) for d in dependencies)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        answer = await self._request(
            "POST",
            f"{self.base}/jobs/{quote(job_type, safe='')}",
            params=params,
            body=input,
            headers=headers,
        )
        return int(answer["task_id"])

    async def get(self, task_id: int) -> Task:
        return Task.from_api(await self._request("GET", f"{self.base}/tasks/{int(task_id)}"))

    async def attempts(self, task_id: int) -> builtins.list[Attempt]:
        """Each run of the task, in the order they started."""
        body = await self._request("GET", f"{self.base}/tasks/{int(task_id)}/attempts")
        return [Attempt.from_api(item) for item in body.get("attempts", [])]

    async def deliveries(self, task_id: int) -> builtins.list[Delivery]:
        """The task's webhook deliveries, in the order they were written."""
        body = await self._request("GET", f"{self.base}/tasks/{int(task_id)}/deliveries")
        return [Delivery.from_api(item) for item in body.get("deliveries", [])]

    async def logs(
        self, task_id: int, *, after: int = 0, limit: int = 1000, level: str | None = None
    ) -> builtins.list[LogLine]:
        """A page of the task's log lines after the line id `after` (the last one's id goes
        on to the next page), of `level` or above."""
        params = {"after": str(after), "limit": str(limit)}
        if level is not None:
            params["level"] = level
        body = await self._request("GET", f"{self.base}/tasks/{int(task_id)}/logs", params=params)
        return [LogLine.from_api(item) for item in body.get("lines", [])]

    async def list(
        self,
        status: str | None = None,
        *,
        limit: int | None = None,
        page_size: int = 100,
        task_type: str | None = None,
        newest_first: bool = False,
        name: str | None = None,
        created_from: str | int | datetime | None = None,
        created_to: str | int | datetime | None = None,
        updated_from: str | int | datetime | None = None,
        updated_to: str | int | datetime | None = None,
    ) -> AsyncIterator[Task]:
        """The graph's tasks in ascending id order (newest_first: descending), of one type
        when `task_type` is given, `page_size` per request (following the server's page
        tokens), at most `limit` of them (None: all). `name`: a prefix of the task's name;
        `created_*` / `updated_*`: [from, to) ranges of task_create / task_update (epoch
        milliseconds, ISO-8601, or a datetime with a time zone)."""
        terms = _filter_params(None, None, name, created_from, created_to, updated_from, updated_to)
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        page = ""
        given = 0
        while True:
            size = page_size if limit is None else min(page_size, limit - given)
            if size <= 0:
                return
            params = {"page": page, "limit": str(size), **terms}
            if status is not None:
                params["status"] = status
            if task_type is not None:
                params["type"] = task_type
            if newest_first:
                params["order"] = "desc"
            answer = await self._request("GET", f"{self.base}/tasks", params=params)
            for body in answer["tasks"]:
                yield Task.from_api(body)
                given += 1
            page = answer.get("page")
            if not page:
                return

    async def cancel(self, task_id: int) -> Task:
        """A task not yet running is cancelled at once; a running one goes `cancelling`."""
        return await self._act(task_id, "cancel")

    async def pause(self, task_id: int) -> Task:
        return await self._act(task_id, "pause")

    async def resume(self, task_id: int) -> Task:
        return await self._act(task_id, "resume")

    async def retry(self, task_id: int) -> Task:
        return await self._act(task_id, "retry")

    async def _act(self, task_id: int, action: str) -> Task:
        answer = await self._request(
            "PUT", f"{self.base}/tasks/{int(task_id)}", params={"action": action}
        )
        return Task.from_api(answer)

    async def bulk(
        self,
        action: str,
        status: str | None = None,
        *,
        task_type: str | None = None,
        name: str | None = None,
        created_from: str | int | datetime | None = None,
        created_to: str | int | datetime | None = None,
        updated_from: str | int | datetime | None = None,
        updated_to: str | int | datetime | None = None,
        every: bool = False,
        force: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 - aiohttp's, for this request
    ) -> BulkResult:
        """`action` (cancel, pause, resume, retry or delete) on every task the filter
        matches, the terms as `list` takes them; `every`: every task of the graph (needed
        when no term is given); `force`: with delete, incomplete tasks too. A large bulk
        action takes a while: `timeout` replaces the client's for it."""
        params = _filter_params(
            status, task_type, name, created_from, created_to, updated_from, updated_to
        )
        params["action"] = action
        if every:
            params["all"] = "true"
        if force:
            params["force"] = "true"
        answer = await self._request(
            "POST", f"{self.base}/tasks/bulk", params=params, timeout=timeout
        )
        return BulkResult.from_api(answer)

    async def delete(self, task_id: int, *, force: bool = False) -> None:
        """Deletes a task's record; `force` deletes an incomplete one too (its job runs on)."""
        await self._request(
            "DELETE",
            f"{self.base}/tasks/{int(task_id)}",
            params={"force": "true" if force else "false"},
        )

    # --- schedules ---

    async def schedules(self) -> builtins.list[Schedule]:
        """The graph's schedules by name."""
        answer = await self._request("GET", f"{self.base}/schedules")
        return [Schedule.from_api(body) for body in answer["schedules"]]

    async def schedule(self, name: str) -> Schedule:
        return Schedule.from_api(await self._request("GET", self._schedule_path(name)))

    async def create_schedule(
        self,
        name: str,
        job_type: str,
        input: Mapping[str, Any] | None = None,
        *,
        cron: str | None = None,
        timezone: str | None = None,
        every: float | None = None,
        task_name: str | None = None,
        priority: int | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the tasks', sent to the server
        missed: str | None = None,
        paused: bool = False,
    ) -> Schedule:
        """A new schedule: `job_type` with `input`, at the times of `cron` (in `timezone`,
        default UTC) or every `every` seconds. `missed`: "once" or "skip"."""
        body: dict[str, Any] = {"name": name, "type": job_type}
        for key, value in (
            ("cron", cron),
            ("timezone", timezone),
            ("every", every),
            ("input", None if input is None else dict(input)),
            ("task_name", task_name),
            ("priority", priority),
            ("max_retries", max_retries),
            ("timeout", timeout),
            ("missed", missed),
        ):
            if value is not None:
                body[key] = value
        if paused:
            body["paused"] = True
        answer = await self._request("POST", f"{self.base}/schedules", body=body)
        return Schedule.from_api(answer)

    async def pause_schedule(self, name: str) -> Schedule:
        answer = await self._request("PUT", self._schedule_path(name), params={"action": "pause"})
        return Schedule.from_api(answer)

    async def resume_schedule(self, name: str) -> Schedule:
        """Fires again from its next fire time after now."""
        answer = await self._request("PUT", self._schedule_path(name), params={"action": "resume"})
        return Schedule.from_api(answer)

    async def delete_schedule(self, name: str) -> None:
        """Removes the schedule; the tasks it submitted stay."""
        await self._request("DELETE", self._schedule_path(name))

    def _schedule_path(self, name: str) -> str:
        return f"{self.base}/schedules/{quote(name, safe='')}"

    async def actions(self) -> dict[str, builtins.list[str]]:
        """What each status allows (GET /actions): `{"new": ["cancel", "pause",
        "force_delete"], …, "success": ["delete"], …}`, the rule the server refuses by."""
        answer = await self._request("GET", "/actions")
        allowed = answer["actions"]
        return {str(status): [str(a) for a in actions] for status, actions in allowed.items()}

    # --- job types as a whole ---

    async def job_types(self) -> dict[str, Any]:
        """GET /types: `{"types": [names…], "paused": {name: paused since (epoch ms)}}`."""
        answer = await self._request("GET", "/types")
        return {
            "types": [str(name) for name in answer.get("types", [])],
            "paused": {str(k): int(v) for k, v in (answer.get("paused") or {}).items()},
        }

    async def pause_type(self, type_name: str) -> dict[str, Any]:
        """Pauses a job type as a whole (nothing new of it starts, in any graph, on any
        replica; its running jobs finish): `{"type", "paused": true, "paused_since"}`."""
        return await self._type_action(type_name, "pause")

    async def resume_type(self, type_name: str) -> dict[str, Any]:
        """Resumes a paused job type: `{"type", "paused": false, "paused_since": null}`."""
        return await self._type_action(type_name, "resume")

    async def _type_action(self, type_name: str, action: str) -> dict[str, Any]:
        answer = await self._request(
            "PUT", f"/types/{quote(type_name, safe='')}", params={"action": action}
        )
        return dict(answer)

    # --- external workers ---

    async def claim(
        self, worker: str, types: Iterable[str] = (), *, wait: float = 0.0
    ) -> dict[str, Any] | None:
        """The next due task of `types` (every external type when empty), leased to
        `worker`, waiting up to `wait` seconds for one (the request's timeout is the
        client's on top of that); None when none came. The claim as the service sent it:
        `id`, `type`, `input`, `task_url`, `lease`, `lease_duration`, …"""
        params = {"wait": str(wait)}
        names = ",".join(types)
        if names:
            params = {"types": names, **params}
        answer = await self._request(
            "POST",
            f"/workers/{quote(worker, safe='')}/claim",
            params=params,
            timeout=wait + self.timeout,
        )
        return None if answer is None else dict(answer)

    async def report(
        self, task_url: str, lease: str, progress: int | None = None, checkpoint: Any = None
    ) -> dict[str, Any]:
        """A progress report (None: a heartbeat) on the claimed task at `task_url`, with a
        checkpoint (any JSON value; None: none), which the task's next attempt is given; it
        keeps the lease. The answer's `cancel` says whether a cancel was requested."""
        body: dict[str, Any] = {} if progress is None else {"progress": progress}
        if checkpoint is not None:
            body["checkpoint"] = checkpoint
        return await self._lease_request("PUT", task_url, "/progress", lease, body)

    async def complete(
        self, task_url: str, lease: str, result: Any, *, progress: int | None = None
    ) -> dict[str, Any]:
        """Ends the claimed task `success` with `result` (any JSON value, or an
        orjson.Fragment of JSON text already written)."""
        if not isinstance(result, orjson.Fragment):
            # inside {"result": …} a result nested as deep as the service stores would be
            # a level too deep for orjson to write: written alone, it is embedded as text
            result = orjson.Fragment(jsontext.dumps(result, "The job's result"))
        body = {"result": result, **({} if progress is None else {"progress": progress})}
        return await self._lease_request("POST", task_url, "/complete", lease, body)

    async def fail(
        self,
        task_url: str,
        lease: str,
        error: str,
        *,
        retry: bool | None = None,
        progress: int | None = None,
        checkpoint: Any = None,
    ) -> dict[str, Any]:
        """Ends the claimed task's run with `error`: retried while retries are left
        (`retry=False`: never; None leaves it to the service, which retries). A checkpoint
        given is stored with the run, for the next one."""
        body: dict[str, Any] = {"error": error}
        if checkpoint is not None:
            body["checkpoint"] = checkpoint
        if retry is not None:
            body["retry"] = retry
        if progress is not None:
            body["progress"] = progress
        return await self._lease_request("POST", task_url, "/fail", lease, body)

    async def _lease_request(
        self, method: str, task_url: str, path: str, lease: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        # A 409 says the lease no longer holds the task, a 404 that the task is gone.
        answer = await self._request(method, task_url + path, body=body, headers={"X-Lease": lease})
        return dict(answer or {})

    # --- events ---

    def events(
        self,
        task_id: int | None = None,
        *,
        status: str | None = None,
        type: str | None = None,
        service: bool = False,
        last_event_id: int | None = None,
        logs: bool = False,
    ) -> EventStream:
        """A task's events (first its current state), or, without `task_id`, the graph's
        (optionally one status or type), or with `service=True` every graph's. With
        `last_event_id`, the stream starts after that event: nothing is missed. With
        `logs`, task.log events too (their `lines`); without, they are skipped."""
        if task_id is not None:
            path = f"{self.base}/tasks/{int(task_id)}/events"
        elif service:
            path = "/events"
        else:
            path = f"{self.base}/events"
        params = {k: v for k, v in (("status", status), ("type", type)) if v}
        return EventStream(
            self, path, params, ends=task_id is not None, last_event_id=last_event_id, logs=logs
        )


def _api_error(status: int, raw: bytes) -> APIError:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and "message" in body:
        return APIError(
            status, str(body["message"]), str(body.get("exception", "")), str(body.get("cause", ""))
        )
    text = raw.decode(errors="replace").strip()
    return APIError(status, text[:500] or f"HTTP {status}")


class EventStream:
    """An async iterator of `Event`s that resumes after a drop with Last-Event-ID.

    It connects at the first `__anext__` (or `connect()`, or `async with`), so a caller can
    be sure it is subscribed before it reads a snapshot of its own. Closing it (`close()`,
    leaving `async with`, breaking out of `async for` and closing the generator) closes
    the connection.
    """

    def __init__(
        self,
        client: Client,
        path: str,
        params: Mapping[str, str],
        *,
        ends: bool,
        last_event_id: int | None = None,
        logs: bool = False,
    ) -> None:
        self._client = client
        #: task.log events are given too (else skipped: their data is no task)
        self._logs = logs
        self._path = path
        self._params = dict(params)
        self._ends = ends
        #: the id of the last event received: where a reconnection resumes
        self.last_event_id = last_event_id
        #: the reconnection delay the server suggested (`retry:`), in milliseconds
        self.retry_ms: int | None = None
        #: how many times the stream reconnected after a drop
        self.reconnects = 0
        self._response: aiohttp.ClientResponse | None = None
        self._buffer = bytearray()
        self._scanned = 0
        self._finished = False

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __aiter__(self) -> Self:
        return self

    async def connect(self) -> None:
        """Opens the stream (or reopens it after `last_event_id`); APIError when the server
        refuses (an unknown task: 404), ConnectionFailed when it cannot be reached."""
        await self._drop()
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = str(self.last_event_id)
        client = self._client
        try:
            response = await client._http().get(
                client.url + self._path,
                params=self._params,
                headers=headers,
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=client.timeout, sock_read=client.stream_idle_timeout
                ),
            )
        except aiohttp.ClientError as exc:
            raise ConnectionFailed(_unreachable(client.url, exc)) from exc
        except TimeoutError as exc:
            raise ConnectionFailed(
                f"No answer from {client.url} within {client.timeout:g} s"
            ) from exc
        if response.status >= 400:
            try:
                raw = await response.read()
            except aiohttp.ClientError:
                raw = b""
            response.release()
            raise _api_error(response.status, raw)
        if response.status == 204:  # a task's stream resumed after its end: nothing will come
            response.release()
            self._finished = True
            return
        self._response = response

    async def close(self) -> None:
        self._finished = True
        await self._drop()

    async def _drop(self) -> None:
        self._buffer.clear()
        self._scanned = 0
        if self._response is not None:
            self._response.close()
            self._response = None

    async def __anext__(self) -> Event:
        if self._finished:
            raise StopAsyncIteration
        if self._response is None:
            await self.connect()
        while not self._finished:
            event = await self._read_event()
            if event is not None and event.kind == "task.log" and not self._logs:
                continue
            if event is not None:
                if self._ends and event.ends_task_stream:
                    await self.close()
                return event
            # the connection ended: a task's stream only ends after its last event
            await self._reconnect()
        raise StopAsyncIteration

    async def _reconnect(self) -> None:
        """Back after a drop: the server's suggested delay, doubling (with jitter) while it
        stays away, for at most the client's reconnect_timeout."""
        await self._drop()
        client = self._client
        delay = client.reconnect_delay if self.retry_ms is None else self.retry_ms / 1000
        backoff = Backoff(delay, max(MAX_RECONNECT_PAUSE, delay), budget=client.reconnect_timeout)
        # the first try waits the delay even when it is longer than the whole budget
        pause = backoff.next() or delay
        while True:
            await asyncio.sleep(pause)
            try:
                await self.connect()
            except ConnectionFailed:
                next_pause = backoff.next()
                if next_pause is None:
                    raise
            except APIError as exc:
                next_pause = None if exc.status < 500 else backoff.next()
                if next_pause is None:
                    raise
            else:
                self.reconnects += 1
                return
            pause = next_pause

    async def _read_event(self) -> Event | None:
        """The next event; None when the connection ended or broke."""
        event_id: str | None = None
        kind = "message"
        data: builtins.list[str] = []
        while True:
            raw = await self._readline()
            if raw is None:  # end of the stream: an unterminated event is discarded
                return None
            line = raw.decode("utf-8", errors="replace").removesuffix("\r")
            if not line:
                if event_id is not None:
                    self.last_event_id = _event_id(event_id, self.last_event_id)
                if not data:
                    event_id, kind = None, "message"
                    continue
                try:
                    payload = orjson.loads("\n".join(data))
                except orjson.JSONDecodeError:
                    payload = {"text": "\n".join(data)}
                return Event(self.last_event_id if event_id is not None else None, kind, payload)
            if line.startswith(":"):
                continue  # a comment: the keep-alive
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "id":
                event_id = value
            elif name == "event":
                kind = value
            elif name == "data":
                data.append(value)
            elif name == "retry" and value.isdigit():
                self.retry_ms = int(value)

    async def _readline(self) -> bytes | None:
        """One line without its newline. Read in chunks, not with StreamReader.readline,
        whose line limit (128 KiB) a task with a large input goes past."""
        assert self._response is not None
        content = self._response.content
        while True:
            index = self._buffer.find(b"\n", self._scanned)
            if index >= 0:
                line = bytes(self._buffer[:index])
                del self._buffer[: index + 1]
                self._scanned = 0
                return line
            self._scanned = len(self._buffer)
            try:
                chunk = await content.readany()
            except (aiohttp.ClientError, TimeoutError, ConnectionError):
                return None
            if not chunk:
                return None
            self._buffer.extend(chunk)


def _event_id(text: str, previous: int | None) -> int | None:
    try:
        return int(text)
    except ValueError:
        return previous
