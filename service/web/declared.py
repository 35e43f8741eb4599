"""Every query parameter, header and body field a route reads, declared once: its type,
bounds, default and description, the parse that checks it (with HugeGraph's messages, in
service.web.params), and the schema /openapi.json shows for it (service.web.openapi).

A handler reads its input through these declarations only; tests/web/test_declared.py
checks that every query parameter a handler reads is in its operation's document."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from aiohttp import web

from .. import tracing
from ..bulk import BULK_ACTIONS
from ..errors import BadRequest
from ..leases import MAX_CLAIM_WAIT
from ..model import LOG_LEVELS, MAX_DEPENDENCIES, Action, Status
from ..selection import Selection
from . import params
from .params import MAX_INT

Where = Literal["query", "header", "path"]
#: a declaration without a default
NO_DEFAULT: Any = object()


def _bound(value: float) -> float | int:
    """A bound as the document writes it: 60, not 60.0."""
    return int(value) if float(value).is_integer() else value


@dataclass(frozen=True, kw_only=True)
class Param:
    """A query parameter, header or path parameter."""

    name: str
    where: Where = "query"
    description: str = ""
    required: bool = False
    default: Any = NO_DEFAULT

    def schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def _with_default(self, schema: dict[str, Any]) -> dict[str, Any]:
        return schema if self.default is NO_DEFAULT else {**schema, "default": self.default}

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI parameter object."""
        entry: dict[str, Any] = {
            "name": self.name,
            "in": self.where,
            "required": self.required or self.where == "path",
            "schema": self.schema(),
        }
        if self.description:
            entry["description"] = self.description
        return entry

    def text(self, request: web.Request) -> str | None:
        """The parameter as the request writes it, or None when it is not given."""
        if self.where == "query":
            return request.query.get(self.name)
        if self.where == "header":
            return request.headers.get(self.name)
        return request.match_info.get(self.name)

    def texts(self, request: web.Request) -> list[str]:
        """Every value of a repeated query parameter."""
        return request.query.getall(self.name, [])


@dataclass(frozen=True, kw_only=True)
class Integer(Param):
    minimum: int | None = None
    maximum: int = MAX_INT

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "integer"}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        schema["maximum"] = self.maximum
        return self._with_default(schema)

    def parse(self, text: str) -> int:
        return params.integer(self.name, text, minimum=self.minimum, maximum=self.maximum)

    def get(self, request: web.Request) -> int | None:
        text = self.text(request)
        if text is None:
            return None if self.default is NO_DEFAULT else int(self.default)
        return self.parse(text)


@dataclass(frozen=True, kw_only=True)
class TaskId(Integer):
    """A task's id in the path: HugeGraph's message for one that is not."""

    minimum: int | None = 1

    def get(self, request: web.Request) -> int:
        text = request.match_info[self.name]
        if not params.is_integer(text) or not (self.minimum or 0) <= int(text) <= self.maximum:
            raise BadRequest(f"Invalid task id '{text}', it must be a positive integer")
        return int(text)


@dataclass(frozen=True, kw_only=True)
class Integers(Param):
    """A repeated query parameter of integers (`ids=1&ids=2`)."""

    items: Integer

    def schema(self) -> dict[str, Any]:
        return {"type": "array", "items": self.items.schema()}

    def openapi(self) -> dict[str, Any]:
        return {**super().openapi(), "style": "form", "explode": True}

    def parse(self, texts: Sequence[str]) -> list[int]:
        return [self.items.parse(text) for text in texts]


@dataclass(frozen=True, kw_only=True)
class Number(Param):
    minimum: float = 0.0
    maximum: float = 10**9
    #: the minimum itself is refused
    exclusive: bool = False

    def schema(self) -> dict[str, Any]:
        low = "exclusiveMinimum" if self.exclusive else "minimum"
        schema = {"type": "number", low: _bound(self.minimum), "maximum": _bound(self.maximum)}
        return self._with_default(schema)

    def parse(self, text: str) -> float:
        return params.number(
            self.name, text, minimum=self.minimum, maximum=self.maximum, exclusive=self.exclusive
        )

    def get(self, request: web.Request) -> float | None:
        text = self.text(request)
        if text is None:
            return None if self.default is NO_DEFAULT else float(self.default)
        return self.parse(text)


@dataclass(frozen=True, kw_only=True)
class Boolean(Param):
    default: bool = False

    def schema(self) -> dict[str, Any]:
        return {"type": "boolean", "default": self.default}

    def get(self, request: web.Request) -> bool:
        text = self.text(request)
        return self.default if text is None else params.boolean(self.name, text)


@dataclass(frozen=True, kw_only=True)
class Choice(Param):
    """One of `values`; another is a 400 with `message` ({text}: the value, {values}: the
    valid ones)."""

    values: tuple[str, ...]
    message: str

    def schema(self) -> dict[str, Any]:
        return self._with_default({"type": "string", "enum": list(self.values)})

    def get(self, request: web.Request) -> str:
        text = self.text(request)
        if text is None and self.default is not NO_DEFAULT:
            return str(self.default)
        if text is None or text not in self.values:
            shown = "" if text is None else text
            raise BadRequest(self.message.format(text=shown, values=", ".join(self.values)))
        return text


@dataclass(frozen=True, kw_only=True)
class Text(Param):
    """A string; `check` refuses a bad one (with its message), or returns what it means."""

    schema_: dict[str, Any]
    check: Callable[[str], Any] = str

    def schema(self) -> dict[str, Any]:
        return self._with_default(dict(self.schema_))

    def parse(self, text: str) -> Any:
        return self.check(text)


@dataclass(frozen=True, kw_only=True)
class TypeFilter(Param):
    """`type`: one registered job type; another, or two, is a 400 that lists them."""

    def schema(self) -> dict[str, Any]:
        return {"type": "string"}

    def get(self, request: web.Request, registered: list[str]) -> str | None:
        return params.task_type(self.texts(request), registered)


@dataclass(frozen=True, kw_only=True)
class EventId(Param):
    """Last-Event-ID (a header, or a query parameter for clients that cannot set headers)."""

    #: how the message names a value that came in the query
    source: str = ""

    def schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": 0, "maximum": MAX_INT}

    def get(self, request: web.Request) -> int | None:
        text = self.text(request)
        if text is None:
            return None
        text = text.strip()
        # ASCII digits only (int() takes "٣" and "1_0"), and no more than an event id can be
        if not text.isascii() or not text.isdigit():
            raise BadRequest(
                f"Invalid Last-Event-ID '{text}'{self.source}, it must be an event id (an integer >= 0)"
            )
        if len(text) > 18 or int(text) > MAX_INT:
            raise BadRequest(
                f"Invalid Last-Event-ID '{text}'{self.source}, it must be at most {MAX_INT}"
            )
        return int(text)


@dataclass(frozen=True, kw_only=True)
class Field:
    """A field of a JSON object body. `check` takes the body's value (None when absent or
    null) and returns what it means, or raises the 400 that says what is wrong."""

    name: str
    schema_: dict[str, Any]
    description: str = ""
    required: bool = False
    #: the value an absent field has (None when there is none)
    default: Any = NO_DEFAULT
    #: whether the document shows the default
    shows_default: bool = True
    check: Callable[[Any], Any] = lambda value: value

    def schema(self) -> dict[str, Any]:
        schema = dict(self.schema_)
        if self.default is not NO_DEFAULT and self.shows_default:
            schema["default"] = self.default
        if self.description:
            schema["description"] = self.description
        return schema

    def get(self, body: dict[str, Any]) -> Any:
        if self.default is not NO_DEFAULT and self.name not in body:
            return self.check(self.default)
        return self.check(body.get(self.name))


def body_schema(fields: Sequence[Field]) -> dict[str, Any]:
    """The JSON schema of an object body with these fields."""
    schema: dict[str, Any] = {"type": "object", "properties": {f.name: f.schema() for f in fields}}
    required = [f.name for f in fields if f.required]
    if required:
        schema["required"] = required
    return schema


# --- paths ---

GRAPHSPACE = Text(
    name="graphspace", where="path", schema_={"type": "string"}, description="a declared graphspace"
)
GRAPH = Text(name="graph", where="path", schema_={"type": "string"}, description="a declared graph")
UI_ASSET = Text(
    name="asset",
    where="path",
    schema_={"type": "string"},
    description="the file's name, e.g. app.js",
)
DOCS_ASSET = Text(
    name="asset",
    where="path",
    schema_={"type": "string"},
    description="the file's name, e.g. swagger-ui.css",
)


# --- the task list and a task (SPEC 4) ---

#: a status name in any case (`SUCCESS`, `success`, `Success`), as a pattern
STATUS_PATTERN = (
    "^("
    + "|".join(
        "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in s.value) for s in Status
    )
    + ")$"
)
#: one status or several, comma-separated
STATUS_LIST_PATTERN = f"^{STATUS_PATTERN[1:-1]}(,{STATUS_PATTERN[1:-1]})*$"

TASK_ID = TaskId(name="id", where="path", description="the task's id")
LIST_STATUS = Text(
    name="status",
    schema_={"type": "string", "pattern": STATUS_LIST_PATTERN},
    description="a status name, case-insensitive, or several separated by commas "
    "(`new,queued`: tasks in any of them); not with ids",
    check=params.statuses,
)
LIST_TYPE = TypeFilter(
    name="type",
    description="tasks of this registered job type only (one type); not with ids; "
    "another value is a 400 that lists the registered types",
)
ORDER = Choice(
    name="order",
    values=params.ORDERS,
    default="asc",
    message="Invalid order '{text}', valid orders are: {values}",
    description="asc: oldest first (HugeGraph's); desc: newest first. A page token goes on "
    "in the order it was made in (with the other, a 400); not with ids",
)
LIMIT = Integer(
    name="limit",
    minimum=-1,
    default=params.DEFAULT_LIST_LIMIT,
    description="-1: no limit; with page, -1 or at least 1",
)
IDS = Integers(
    name="ids",
    items=Integer(name="ids", minimum=1),
    description="these tasks only (repeat the parameter); not with status, type, name, "
    "the time ranges, order or page",
)
PAGE = Text(
    name="page",
    schema_={"type": "string", "pattern": "^[A-Za-z0-9_-]*$"},
    description="page token (as a previous answer gave it); empty for the first page",
)

MAX_NAME_PREFIX = 256


def _name_prefix(text: str) -> str:
    if not text:
        raise BadRequest("The parameter 'name' must not be empty (leave it out for every name)")
    if len(text.encode()) > MAX_NAME_PREFIX:
        raise BadRequest(f"The parameter 'name' must be at most {MAX_NAME_PREFIX} UTF-8 bytes")
    return text


@dataclass(frozen=True, kw_only=True)
class Time(Param):
    """A time: epoch milliseconds or ISO-8601 (service.web.params.time_ms)."""

    def schema(self) -> dict[str, Any]:
        return {
            "oneOf": [
                {"type": "integer", "minimum": 0, "maximum": MAX_INT},
                {"type": "string", "format": "date-time"},
            ]
        }

    def get(self, request: web.Request) -> int | None:
        text = self.text(request)
        return None if text is None else params.time_ms(self.name, text)


LIST_NAME = Text(
    name="name",
    schema_={"type": "string", "minLength": 1, "maxLength": MAX_NAME_PREFIX},
    description="tasks whose name starts with this (case-sensitive); not with ids",
    check=_name_prefix,
)
_TIME = "epoch milliseconds or ISO-8601 (UTC when it has no offset)"
CREATED_FROM = Time(name="created_from", description=f"created at or after this time: {_TIME}")
CREATED_TO = Time(name="created_to", description=f"created before this time: {_TIME}")
UPDATED_FROM = Time(
    name="updated_from", description=f"last changed (task_update) at or after this time: {_TIME}"
)
UPDATED_TO = Time(name="updated_to", description=f"last changed before this time: {_TIME}")
#: a list's terms beside status and type (service.selection.Selection)
SELECTION = (LIST_NAME, CREATED_FROM, CREATED_TO, UPDATED_FROM, UPDATED_TO)


def selection(request: web.Request) -> Selection:
    """The request's name prefix and created / updated ranges; an empty range (its start
    not before its end) is a 400 naming both."""
    name_text = LIST_NAME.text(request)
    found = Selection(
        name=None if name_text is None else LIST_NAME.parse(name_text),
        created_from=CREATED_FROM.get(request),
        created_to=CREATED_TO.get(request),
        updated_from=UPDATED_FROM.get(request),
        updated_to=UPDATED_TO.get(request),
    )
    for low, high, start, end in (
        (CREATED_FROM, CREATED_TO, found.created_from, found.created_to),
        (UPDATED_FROM, UPDATED_TO, found.updated_from, found.updated_to),
    ):
        if start is not None and end is not None and start >= end:
            raise BadRequest(
                f"The parameter '{low.name}' ({start}) must be before '{high.name}' ({end})"
            )
    return found


LIST_TASKS = (LIST_STATUS, LIST_TYPE, *SELECTION, ORDER, LIMIT, IDS, PAGE)

#: GET …/tasks/{id}/logs
LOGS_AFTER = Integer(
    name="after",
    minimum=0,
    default=0,
    description="lines after this line id (the last id of the previous page); 0: from the first",
)
LOGS_LIMIT = Integer(
    name="limit", minimum=1, maximum=10_000, default=1000, description="lines at most"
)
LOGS_LEVEL = Choice(
    name="level",
    values=LOG_LEVELS,
    default="debug",
    message="Invalid level '{text}', valid levels are: {values}",
    description="lines of this level or above",
)
LOGS = (LOGS_AFTER, LOGS_LIMIT, LOGS_LEVEL)

FORCE = Boolean(name="force", description="delete an incomplete task too")
TYPE_ACTION = Choice(
    name="action",
    required=True,
    values=("pause", "resume"),
    message="Not support action '{text}' on a job type; one of {values}",
)

#: POST …/tasks/bulk: the action, and the list's terms for the tasks it takes
BULK_ACTION = Choice(
    name="action",
    required=True,
    values=BULK_ACTIONS,
    message="Not support bulk action '{text}', valid actions are: {values}",
    description="what to do to every task the filter matches (as PUT …/tasks/{id}?action= "
    "and DELETE …/tasks/{id} do to one)",
)
BULK_FORCE = Boolean(
    name="force", description="with action=delete: delete incomplete tasks too (their jobs run on)"
)
BULK_ALL = Boolean(
    name="all",
    description="act on every task of the graph: needed when no other term is given, so a "
    "request that lost its filter does not take everything",
)
BULK = (BULK_ACTION, LIST_STATUS, LIST_TYPE, *SELECTION, BULK_FORCE, BULK_ALL)
ACTION = Choice(
    name="action",
    required=True,
    values=tuple(a.value for a in (Action.CANCEL, Action.PAUSE, Action.RESUME, Action.RETRY)),
    message="Not support action '{text}'",
)


# --- submissions (SPEC 5) ---

MAX_NAME_BYTES = 256
MAX_IDEMPOTENCY_KEY = 255


def _name(text: str) -> str:
    if len(text.encode()) > MAX_NAME_BYTES:
        raise BadRequest(f"The parameter 'name' must be at most {MAX_NAME_BYTES} UTF-8 bytes")
    return text


def _idempotency_key(text: str) -> str:
    if not text or len(text) > MAX_IDEMPOTENCY_KEY:
        raise BadRequest(
            f"The Idempotency-Key header must be 1 to {MAX_IDEMPOTENCY_KEY} characters"
        )
    return text


NAME = Text(
    name="name",
    schema_={"type": "string", "maxLength": MAX_NAME_BYTES},
    description=f"the task's name (default: its type); at most {MAX_NAME_BYTES} UTF-8 bytes",
    check=_name,
)
PRIORITY = Integer(
    name="priority", minimum=-(2**31), maximum=2**31, description="higher runs first (default 0)"
)
MAX_RETRIES = Integer(
    name="max_retries",
    minimum=0,
    maximum=1000,
    description="re-runs after a failure or an interruption",
)
TIMEOUT = Number(
    name="timeout", exclusive=True, description="seconds the job may run before it fails"
)
DELAY = Number(
    name="delay", maximum=10 * 365 * 24 * 3600, description="seconds before it may start"
)
#: the earliest epoch milliseconds run_at takes as a number (1973-03-03): a smaller one is
#: epoch seconds given by mistake, which would make the task due at once
MIN_RUN_AT_MS = 10**11


def _run_at(text: str) -> int:
    """`run_at`: an ISO-8601 time with its offset (2026-12-01T09:00:00+01:00, …Z) or epoch
    milliseconds, as task_run_at and the list's times are written; as epoch ms. A time past
    is due at once."""
    stripped = text.strip()
    if params.is_integer(stripped):
        ms = int(stripped)
        if ms < MIN_RUN_AT_MS:
            raise BadRequest(
                f"The parameter 'run_at' takes epoch milliseconds, but got '{text}' "
                f"(before 1973: epoch seconds? then {stripped}000)"
                if ms >= 0
                else f"The parameter 'run_at' must be a time from 1973 on, but got '{text}'"
            )
        if ms > MAX_INT:
            raise BadRequest(f"The parameter 'run_at' is out of range, got '{text}'")
        return ms
    try:
        when = datetime.fromisoformat(stripped)
    except ValueError:
        shown = text if len(text) <= 80 else text[:80] + "…"
        raise BadRequest(
            "The parameter 'run_at' must be an ISO-8601 time with an offset (such as "
            "2026-12-01T09:00:00+01:00 or 2026-12-01T08:00:00Z) or epoch milliseconds, but "
            f"got '{shown}'"
        ) from None
    if when.tzinfo is None:
        raise BadRequest(
            f"The parameter 'run_at' needs an offset or Z (whose 09:00 is it?), but got '{text}'"
        )
    return math.floor(when.timestamp() * 1000)


RUN_AT = Text(
    name="run_at",
    schema_={
        "oneOf": [
            {"type": "integer", "minimum": MIN_RUN_AT_MS, "maximum": MAX_INT},
            {"type": "string", "format": "date-time"},
        ]
    },
    description="when it may start: an ISO-8601 time with an offset (2026-12-01T09:00:00+01:00, "
    "…Z) or epoch milliseconds; a time past is due at once; not with delay",
    check=_run_at,
)
IDEMPOTENCY_KEY = Text(
    name="Idempotency-Key",
    where="header",
    schema_={"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY},
    description="one task per key and graph: the same request again returns the first "
    "task's id (201, Idempotent-Replayed: true); another body, other options or another "
    "job type with the key is a 422",
    check=_idempotency_key,
)
TRACEPARENT = Text(
    name="traceparent",
    where="header",
    schema_={"type": "string"},
    description="the W3C trace context the task is submitted under (task_traceparent): its "
    "spans and its job continue that trace; a malformed one is ignored, as the W3C "
    "specification says, and the task is submitted without it",
    check=tracing.parse_traceparent,
)
TRACESTATE = Text(
    name="tracestate",
    where="header",
    schema_={"type": "string"},
    description="vendor data of the trace (task_tracestate); kept only with a valid "
    f"traceparent, and dropped when malformed or over {tracing.MAX_TRACESTATE_CHARS} characters",
    check=lambda text: tracing.parse_tracestate([text]),
)
MAX_CALLBACK_CHARS = 2048


def _callback(text: str) -> str:
    """The URL's shape; what it resolves to is checked by the handler (service.webhooks)."""
    if not text or len(text) > MAX_CALLBACK_CHARS:
        raise BadRequest(
            f"The parameter 'callback' must be a URL of 1 to {MAX_CALLBACK_CHARS} characters"
        )
    if not text.lower().startswith(("http://", "https://")):
        raise BadRequest(
            f"The parameter 'callback' must be an http:// or https:// URL, but got '{text}'"
        )
    return text


CALLBACK = Text(
    name="callback",
    schema_={"type": "string", "format": "uri", "maxLength": MAX_CALLBACK_CHARS},
    description="a URL sidetask POSTs the task to (signed with callback_secret) when it "
    "reaches one of callback_statuses (default: success, failed, cancelled); a target the "
    "allow-list refuses (webhook_allow, webhook_schemes), or callbacks not configured, is a 400",
    check=_callback,
)
#: each option and the keyword of Supervisor.submit it is
SUBMIT_OPTIONS: tuple[tuple[Integer | Number | Text, str], ...] = (
    (NAME, "name"),
    (PRIORITY, "priority"),
    (MAX_RETRIES, "max_retries"),
    (TIMEOUT, "timeout"),
    (DELAY, "delay"),
    (RUN_AT, "run_at"),
    (IDEMPOTENCY_KEY, "idempotency_key"),
    (TRACEPARENT, "traceparent"),
    (TRACESTATE, "tracestate"),
    (CALLBACK, "callback"),
)
DEPENDENCIES = Integers(
    name="dependencies",
    items=Integer(name="dependencies", minimum=1),
    description="ids of tasks of the graph this one waits for (HugeGraph's task_dependencies): "
    "repeat the parameter or separate them by commas; it runs once every one succeeded, and "
    "ends failed or cancelled when one does",
)
JOB_TYPE = Text(
    name="type", where="path", schema_={"type": "string"}, description="a registered job type"
)


def submit_options(request: web.Request) -> dict[str, Any]:
    """Submission options from the query string and headers, each checked."""
    options: dict[str, Any] = {}
    for declared, keyword in SUBMIT_OPTIONS:
        text = declared.text(request)
        if text is not None:
            options[keyword] = declared.parse(text)
    if "delay" in options and "run_at" in options:
        raise BadRequest("The parameters 'delay' and 'run_at' can't be given together")
    texts = [part for text in DEPENDENCIES.texts(request) for part in text.split(",")]
    if texts:
        ids = DEPENDENCIES.parse([part.strip() for part in texts])
        if len(set(ids)) > MAX_DEPENDENCIES:
            raise BadRequest(
                f"The parameter 'dependencies' names {len(set(ids))} tasks; at most "
                f"{MAX_DEPENDENCIES} may be named"
            )
        options["dependencies"] = ids
    return options


#: PUT …/schedules/{name}
SCHEDULE_ACTION = Choice(
    name="action",
    required=True,
    values=("pause", "resume"),
    message="Not support action '{text}' of a schedule, valid actions are: {values}",
)
SCHEDULE_NAME = Text(
    name="name", where="path", schema_={"type": "string"}, description="the schedule's name"
)


def _gremlin(value: Any) -> str:
    if value is None:
        raise BadRequest("The gremlin parameter can't be null")
    if not isinstance(value, str):
        raise BadRequest("The gremlin parameter must be a string")
    return value


def _bindings(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest("The gremlin bindings must be a JSON object")
    return value


def _language(value: Any) -> str:
    if value is None:
        raise BadRequest("The language parameter can't be null")
    if not isinstance(value, str):
        raise BadRequest("The gremlin language must be a string")
    return value


def _aliases(value: Any) -> None:
    if value is not None and not isinstance(value, dict):
        raise BadRequest("The gremlin aliases must be a JSON object (an empty one)")
    if value:
        raise BadRequest("There is no need to pass gremlin aliases")


GREMLIN = Field(name="gremlin", schema_={"type": "string"}, required=True, check=_gremlin)
BINDINGS = Field(name="bindings", schema_={"type": ["object", "null"]}, check=_bindings)
LANGUAGE = Field(
    name="language", schema_={"type": "string"}, default="gremlin-groovy", check=_language
)
ALIASES = Field(
    name="aliases", schema_={"type": ["object", "null"], "maxProperties": 0}, check=_aliases
)
#: the body of HugeGraph's gremlin job
GREMLIN_JOB = (GREMLIN, BINDINGS, LANGUAGE, ALIASES)


# --- event streams (SPEC 7) ---

LAST_EVENT_ID_HEADER = EventId(
    name="Last-Event-ID",
    where="header",
    description="replay every stored event after this id, then follow live ones; an id "
    "past the last stored event starts from now, and a task stream resumed after its task's "
    "end ends after the replay",
)
LAST_EVENT_ID_QUERY = EventId(
    name="last_event_id",
    source=" (the query parameter last_event_id)",
    description="the same, for clients that cannot set headers (the header wins when both are given)",
)
EVENT_STREAM = (LAST_EVENT_ID_HEADER, LAST_EVENT_ID_QUERY)
STREAM_STATUS = Text(
    name="status",
    schema_={"type": "string", "pattern": STATUS_PATTERN},
    description="only events whose task has this status (any case)",
    check=params.status,
)
STREAM_TYPE = TypeFilter(name="type", description="only events of tasks of this type")


# --- external workers (README, "External workers") ---

LEASE_HEADER = "X-Lease"
#: a worker's name: what task_server shows
WORKER_NAME_PATTERN = "[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}"


def _lease(text: str) -> str:
    token = text.strip()
    if not token:
        raise BadRequest(f"The {LEASE_HEADER} header is required: the lease the claim returned")
    return token


_WORKER_NAME = re.compile(WORKER_NAME_PATTERN)


def _worker_name(text: str) -> str:
    if not _WORKER_NAME.fullmatch(text):
        raise BadRequest(
            f"Invalid worker name '{text}': 1 to 128 letters, digits and . _ : @ + -, "
            "starting with a letter or digit"
        )
    return text


WORKER = Text(
    name="worker",
    where="path",
    schema_={"type": "string", "pattern": f"^{WORKER_NAME_PATTERN}$"},
    description="the worker's name, shown as task_server",
    check=_worker_name,
)
CLAIM_TYPES = Text(
    name="types",
    schema_={"type": "string"},
    description="comma-separated external job types (default: all)",
)
CLAIM_WAIT = Number(
    name="wait",
    maximum=MAX_CLAIM_WAIT,
    default=0,
    description="seconds to wait for a task (long poll)",
)
LEASE = Text(
    name=LEASE_HEADER,
    where="header",
    required=True,
    schema_={"type": "string", "pattern": "\\S"},
    description="the lease the claim returned",
    check=_lease,
)


def _progress(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 7.0 is the integer 7, as JSON Schema reads it
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > MAX_INT:
        raise BadRequest(f"The field 'progress' must be an integer, but got {value!r}")
    return value


def _error(value: Any) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"The field 'error' must be a string, but got {type(value).__name__}")
    return value


def _retry(value: Any) -> bool:
    if not isinstance(value, bool):
        raise BadRequest(f"The field 'retry' must be true or false, but got {value!r}")
    return value


_PROGRESS_SCHEMA = {"type": ["integer", "null"], "minimum": -MAX_INT, "maximum": MAX_INT}
HEARTBEAT = Field(
    name="progress", schema_=_PROGRESS_SCHEMA, description="absent: a heartbeat", check=_progress
)
PROGRESS = Field(name="progress", schema_=_PROGRESS_SCHEMA, check=_progress)
RESULT = Field(name="result", schema_={}, description="any JSON value; stored as task_result")
ERROR = Field(
    name="error",
    schema_={"type": "string"},
    description="stored as task_result",
    default="The worker reported a failure",
    shows_default=False,
    check=_error,
)
RETRY = Field(
    name="retry",
    schema_={"type": "boolean"},
    description="false: no retry can mend it",
    default=True,
    check=_retry,
)
CHECKPOINT = Field(
    name="checkpoint",
    schema_={},
    description="where the job has got to (any JSON value but null, at most "
    "max_checkpoint_bytes): stored with the attempt, and given back in the claim of the "
    "task's next attempt (a retry, or a claim after this worker's lease expired)",
)
PROGRESS_REPORT = (HEARTBEAT, CHECKPOINT)
COMPLETION = (RESULT, PROGRESS)
FAILURE = (ERROR, RETRY, PROGRESS, CHECKPOINT)
