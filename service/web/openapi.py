"""The OpenAPI 3 description of every route, served at /openapi.json."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ..model import Action, Status

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref("Error")}}}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _query(name: str, schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description, **extra}


def _path(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


#: the largest integer a parameter takes (service.web.params.MAX_INT)
MAX_INT = 2**53
#: a status name in any case (`SUCCESS`, `success`, `Success`), as a pattern
STATUS_PATTERN = "^(" + "|".join(
    "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in s.value) for s in Status
) + ")$"
STATUS_SCHEMA = {"type": "string", "pattern": STATUS_PATTERN}
#: one status or several, comma-separated
STATUS_LIST_PATTERN = f"^{STATUS_PATTERN[1:-1]}(,{STATUS_PATTERN[1:-1]})*$"
ACTION_SCHEMA = {"type": "string", "enum": [a.value for a in Action]}
#: event kinds on the streams (service.model.EventKind)
EVENT_KINDS = ["task.created", "task.status", "task.progress", "task.deleted"]

GRAPH_PARAMS = {
    "graphspace": _path("graphspace", {"type": "string"}, "a declared graphspace"),
    "graph": _path("graph", {"type": "string"}, "a declared graph"),
}
TASK_ID = _path("id", {"type": "integer", "minimum": 1, "maximum": MAX_INT}, "the task's id")
NOT_FOUND = _error("the graph or the task does not exist")
BAD_REQUEST = _error("a parameter or the body is wrong; the message says what")
UNAVAILABLE = _error("the store cannot read or write now (full disk, locked database, shutting down); retry later")

SUBMIT_OPTIONS = [
    _query("name", {"type": "string", "maxLength": 256}, "the task's name (default: its type)"),
    _query("priority", {"type": "integer", "minimum": -(2**31), "maximum": 2**31}, "higher runs first (default 0)"),
    _query("max_retries", {"type": "integer", "minimum": 0, "maximum": 1000}, "re-runs after a failure or an interruption"),
    _query("timeout", {"type": "number", "exclusiveMinimum": 0, "maximum": 10**9}, "seconds the job may run before it fails"),
    _query("delay", {"type": "number", "minimum": 0, "maximum": 10 * 365 * 24 * 3600}, "seconds before it may start"),
    {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        "description": "one task per key and graph: the same request again returns the first "
        "task's id (201, Idempotent-Replayed: true); another body, other options or another "
        "job type with the key is a 422",
    },
]
CREATED = {
    **_json("the task is committed (or, with an Idempotency-Key, was)", _ref("Created")),
    "headers": {
        "Idempotent-Replayed": {
            "description": "`true` when an Idempotency-Key replay answers with the task it made",
            "schema": {"type": "string", "enum": ["true"]},
        }
    },
}
#: an Idempotency-Key reused for a different request (the IETF Idempotency-Key draft's choice)
IDEMPOTENCY_CONFLICT = _error(
    "the Idempotency-Key was used in this graph with a different request (body, options or "
    "job type); the message names the key and its task"
)
EVENT_STREAM_PARAMS = [
    {
        "name": "Last-Event-ID",
        "in": "header",
        "required": False,
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_INT},
        "description": "replay every stored event after this id, then follow live ones; an id "
        "past the last stored event starts from now, and a task stream resumed after its task's "
        "end ends after the replay",
    },
    _query(
        "last_event_id",
        {"type": "integer", "minimum": 0, "maximum": MAX_INT},
        "the same, for clients that cannot set headers (the header wins when both are given)",
    ),
]
EVENT_STREAM = {
    "description": "Server-Sent Events: `id:` the event id, `event:` task.created, task.status, "
    "task.progress or task.deleted, `data:` the task as GET returns it (for task.deleted, {\"id\": N}); "
    "task_input only in task.created and a task stream's first event. 503 (with Retry-After) past max_streams",
    "content": {
        "text/event-stream": {
            # OpenAPI 3.1: the schema of a stream's media type describes each of its events
            "schema": {
                "type": "object",
                "properties": {
                    "id": {"type": "string", "pattern": "^[0-9]+$"},
                    "event": {"type": "string", "enum": EVENT_KINDS},
                    "data": {"type": "string", "contentMediaType": "application/json"},
                },
            }
        }
    },
}


def _graph_operations() -> dict[str, dict[str, Any]]:
    tasks = {
        "get": {
            "operationId": "listTasks",
            "summary": "List a graph's tasks in id order (ascending unless order=desc)",
            "parameters": [
                _query(
                    "status",
                    {"type": "string", "pattern": STATUS_LIST_PATTERN},
                    "a status name, case-insensitive, or several separated by commas "
                    "(`new,queued`: tasks in any of them); not with ids",
                ),
                _query(
                    "type",
                    {"type": "string"},
                    "tasks of this registered job type only (one type); not with ids; "
                    "another value is a 400 that lists the registered types",
                ),
                _query(
                    "order",
                    {"type": "string", "enum": ["asc", "desc"], "default": "asc"},
                    "asc: oldest first (HugeGraph's); desc: newest first. A page token goes on "
                    "in the order it was made in (with the other, a 400); not with ids",
                ),
                _query("limit", {"type": "integer", "minimum": -1, "maximum": MAX_INT, "default": 100}, "-1: no limit; with page, -1 or at least 1"),
                _query(
                    "ids",
                    {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": MAX_INT}},
                    "these tasks only (repeat the parameter); not with status, type, order or page",
                    style="form",
                    explode=True,
                ),
                _query("page", {"type": "string", "pattern": "^[A-Za-z0-9_-]*$"}, "page token (as a previous answer gave it); empty for the first page"),
            ],
            "responses": {
                "200": _json("the tasks; with `page`, also the next page's token", _ref("TaskList")),
                "400": BAD_REQUEST,
                "404": NOT_FOUND,
                "503": UNAVAILABLE,
            },
        }
    }
    task = {
        "get": {
            "operationId": "getTask",
            "summary": "One task",
            "parameters": [TASK_ID],
            "responses": {
                "200": _json("the task", _ref("Task")),
                "400": BAD_REQUEST,
                "404": NOT_FOUND,
                "503": UNAVAILABLE,
            },
        },
        "delete": {
            "operationId": "deleteTask",
            "summary": "Delete a task's record (not the work itself)",
            "parameters": [
                TASK_ID,
                _query("force", {"type": "boolean", "default": False}, "delete an incomplete task too"),
            ],
            "responses": {
                "204": {"description": "deleted"},
                "400": _error("the task is incomplete and force is not true"),
                "404": NOT_FOUND,
                "503": UNAVAILABLE,
            },
        },
        "put": {
            "operationId": "updateTask",
            "summary": "cancel, pause, resume or retry a task",
            "parameters": [
                TASK_ID,
                {
                    "name": "action",
                    "in": "query",
                    "required": True,
                    "schema": {"type": "string", "enum": ["cancel", "pause", "resume", "retry"]},
                },
            ],
            "responses": {
                "202": _json("the task after the action, and `cancelled`", _ref("ActionResult")),
                "400": _error("an unknown action, or one the task's status does not allow"),
                "404": NOT_FOUND,
                "503": UNAVAILABLE,
            },
        },
    }
    gremlin = {
        "post": {
            "operationId": "createGremlinJob",
            "summary": "HugeGraph's gremlin job",
            "parameters": SUBMIT_OPTIONS,
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": _ref("GremlinJob")}},
            },
            "responses": {
                "201": CREATED,
                "400": BAD_REQUEST,
                "404": NOT_FOUND,
                "422": IDEMPOTENCY_CONFLICT,
                "503": UNAVAILABLE,
            },
        }
    }
    job = {
        "post": {
            "operationId": "createJob",
            "summary": "A job of any registered type; the body is its input",
            "parameters": [_path("type", {"type": "string"}, "a registered job type"), *SUBMIT_OPTIONS],
            "requestBody": {
                "required": False,
                "content": {
                    JSON: {
                        "schema": {
                            "type": ["object", "null"],
                            "additionalProperties": True,
                            "description": "the job's input; null, or no body: none",
                        }
                    }
                },
            },
            "responses": {
                "201": CREATED,
                "400": BAD_REQUEST,
                "404": NOT_FOUND,
                "422": IDEMPOTENCY_CONFLICT,
                "503": UNAVAILABLE,
            },
        }
    }
    task_events = {
        "get": {
            "operationId": "taskEvents",
            "summary": "A task's events: its current state, then every change; ends after a completed status or its deletion",
            "parameters": [TASK_ID, *EVENT_STREAM_PARAMS],
            "responses": {
                "200": EVENT_STREAM,
                "204": {
                    "description": "resumed after the task's end (or with its events purged): "
                    "nothing more will come, and an EventSource stops reconnecting"
                },
                "400": BAD_REQUEST,
                "404": NOT_FOUND,
                "503": UNAVAILABLE,
            },
        }
    }
    graph_events = {
        "get": {
            "operationId": "graphEvents",
            "summary": "Every event of the graph's tasks, optionally by status and type",
            "parameters": [
                _query("status", STATUS_SCHEMA, "only events whose task has this status (any case)"),
                _query("type", {"type": "string"}, "only events of tasks of this type"),
                *EVENT_STREAM_PARAMS,
            ],
            "responses": {"200": EVENT_STREAM, "400": BAD_REQUEST, "404": NOT_FOUND, "503": UNAVAILABLE},
        }
    }
    counts = {
        "get": {
            "operationId": "countTasks",
            "summary": "The graph's tasks per status (every status, zeros too) and their total",
            "responses": {
                "200": _json("the counts", _ref("TaskCounts")),
                "404": NOT_FOUND,
                "503": UNAVAILABLE,
            },
        }
    }
    return {
        "/tasks": tasks,
        "/tasks/counts": counts,
        "/tasks/{id}": task,
        "/jobs/gremlin": gremlin,
        "/jobs/{type}": job,
        "/tasks/{id}/events": task_events,
        "/events": graph_events,
        **_worker_task_operations(),
    }


LEASE = {
    "name": "X-Lease",
    "in": "header",
    "required": True,
    "schema": {"type": "string", "pattern": "\\S"},
    "description": "the lease the claim returned",
}
NOT_HELD = _error(
    "the lease does not hold the task (another worker's, expired, or the task moved on: "
    "paused, deleted, completed); the worker stops working on it"
)


def _worker_task_operations() -> dict[str, dict[str, Any]]:
    """An external worker's reports on the task it holds (README, "External workers")."""

    def report(operation_id: str, summary: str, body: str, answer: dict[str, Any]) -> dict[str, Any]:
        return {
            "operationId": operation_id,
            "summary": summary,
            "parameters": [TASK_ID, LEASE],
            "requestBody": {"required": False, "content": {JSON: {"schema": _ref(body)}}},
            "responses": {
                "200": answer,
                "400": BAD_REQUEST,
                "404": NOT_FOUND,
                "409": NOT_HELD,
                "503": UNAVAILABLE,
            },
        }

    return {
        "/tasks/{id}/progress": {
            "put": report(
                "reportProgress",
                "A worker's progress (or a heartbeat): the first report starts the task, each "
                "one extends the lease; the answer says whether a cancel was requested",
                "ProgressReport",
                _json("recorded; `cancel` true: stop, then report fail or complete", _ref("ProgressAnswer")),
            )
        },
        "/tasks/{id}/complete": {
            "post": report(
                "completeTask",
                "The worker's task succeeded (it ends cancelled if a cancel was requested)",
                "Completion",
                _json("the task after it", _ref("Task")),
            )
        },
        "/tasks/{id}/fail": {
            "post": report(
                "failTask",
                "The worker's task failed: retried while retries are left, else failed "
                "(it ends cancelled if a cancel was requested)",
                "Failure",
                _json("the task after it", _ref("Task")),
            )
        },
    }


def _worker_claim_operation() -> dict[str, dict[str, Any]]:
    return {
        "/workers/{worker}/claim": {
            "post": {
                "operationId": "claimTask",
                "summary": "An external worker claims the next due task of its types, under a "
                "lease; waits up to `wait` seconds for one",
                "parameters": [
                    _path("worker", {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$"},
                          "the worker's name, shown as task_server"),
                    _query("types", {"type": "string"}, "comma-separated external job types (default: all)"),
                    _query("wait", {"type": "number", "minimum": 0, "maximum": 60, "default": 0},
                           "seconds to wait for a task (long poll)"),
                ],
                "requestBody": {
                    "required": False,
                    "content": {JSON: {"schema": {"description": "ignored"}}},
                },
                "responses": {
                    "200": {**_json("a task and its lease (also in the X-Lease header)", _ref("Claim"))},
                    "204": {"description": "no task came within `wait`, or the service is stopping"},
                    "400": _error("a bad worker name or wait, or a type external workers do not serve"),
                    "503": UNAVAILABLE,
                },
            }
        }
    }


def _overview_operations() -> dict[str, dict[str, Any]]:
    """What the dashboard reads besides the task API: graphs (as HugeGraph lists them), types."""
    names = {"type": "array", "items": {"type": "string"}}
    return {
        "/graphspaces": {
            "get": {
                "operationId": "listGraphspaces",
                "summary": "The graphspaces of the declared graphs, and DEFAULT",
                "responses": {"200": _json("their names", {"type": "object", "properties": {"graphspaces": names}})},
            }
        },
        "/graphspaces/{graphspace}/graphs": {
            "get": {
                "operationId": "listGraphspaceGraphs",
                "summary": "The declared graphs of a graphspace (HugeGraph 1.7 and later)",
                "parameters": [GRAPH_PARAMS["graphspace"]],
                "responses": {
                    "200": _json("their names", {"type": "object", "properties": {"graphs": names}}),
                    "404": _error("no declared graph is in that graphspace"),
                },
            }
        },
        "/graphs": {
            "get": {
                "operationId": "listGraphs",
                "summary": "The declared graphs of graphspace DEFAULT (HugeGraph up to 1.5)",
                "responses": {"200": _json("their names", {"type": "object", "properties": {"graphs": names}})},
            }
        },
        "/types": {
            "get": {
                "operationId": "listTypes",
                "summary": "The registered job types, each a valid {type} of POST …/jobs/{type}",
                "responses": {"200": _json("their names", {"type": "object", "properties": {"types": names}})},
            }
        },
        "/actions": {
            "get": {
                "operationId": "listActions",
                "summary": "The actions a task in each status allows (any other is refused with a 400), "
                "and the request each action is",
                "responses": {"200": _json("per status, its actions", _ref("Actions"))},
            }
        },
    }


HTML = {"text/html": {"schema": {"type": "string"}}}


def _dashboard_operations() -> dict[str, dict[str, Any]]:
    """The dashboard's page and the files it loads (README, "Dashboard")."""
    return {
        "/": {
            "get": {
                "operationId": "root",
                "summary": "Leads to the dashboard",
                "responses": {"302": {"description": "to `ui`, the dashboard"}},
            }
        },
        "/ui": {
            "get": {
                "operationId": "dashboard",
                "summary": "The dashboard: a graph's tasks, live, with their actions and a form to submit jobs",
                "responses": {"200": {"description": "the page", "content": HTML}},
            }
        },
        "/ui/{asset}": {
            "get": {
                "operationId": "dashboardAsset",
                "summary": "A file the dashboard loads (its scripts, styles, icon)",
                "parameters": [_path("asset", {"type": "string"}, "the file's name, e.g. app.js")],
                "responses": {
                    "200": {
                        "description": "the file",
                        "content": {
                            "text/javascript": {"schema": {"type": "string"}},
                            "text/css": {"schema": {"type": "string"}},
                            "image/svg+xml": {"schema": {"type": "string"}},
                        },
                    },
                    "404": _error("the dashboard has no such file"),
                },
            }
        },
        "/docs": {
            "get": {
                "operationId": "apiDocs",
                "summary": "This document, rendered by Swagger UI (served by the service, no CDN)",
                "responses": {"200": {"description": "the page", "content": HTML}},
            }
        },
        "/docs/{asset}": {
            "get": {
                "operationId": "apiDocsAsset",
                "summary": "A file the documentation page loads (Swagger UI's script and styles)",
                "parameters": [
                    _path("asset", {"type": "string"}, "the file's name, e.g. swagger-ui.css")
                ],
                "responses": {
                    "200": {
                        "description": "the file",
                        "content": {
                            "text/javascript": {"schema": {"type": "string"}},
                            "text/css": {"schema": {"type": "string"}},
                        },
                    },
                    "404": _error("the page has no such file"),
                },
            }
        },
    }


def _service_operations() -> dict[str, dict[str, Any]]:
    return {
        **_worker_claim_operation(),
        **_overview_operations(),
        **_dashboard_operations(),
        "/versions": {
            "get": {
                "operationId": "versions",
                "summary": "HugeGraph's version document, and sidetask's version",
                "responses": {"200": _json("versions", _ref("Versions"))},
            }
        },
        "/health": {
            "get": {
                "operationId": "health",
                "summary": "alive",
                "responses": {"200": _json("alive", {"type": "object"})},
            }
        },
        "/ready": {
            "get": {
                "operationId": "ready",
                "summary": "the store is open and the supervisor is running",
                "responses": {"200": _json("ready", {"type": "object"}), "503": _error("not ready")},
            }
        },
        "/events": {
            "get": {
                "operationId": "serviceEvents",
                "summary": "Every event of the service",
                "parameters": EVENT_STREAM_PARAMS,
                "responses": {"200": EVENT_STREAM, "400": BAD_REQUEST, "503": UNAVAILABLE},
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "this document",
                "responses": {"200": _json("the OpenAPI document", {"type": "object"})},
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics: tasks by status and type, submissions, completions, "
                "run times, queue depth, oldest waiting task, retries, event streams, HTTP requests",
                "responses": {
                    "200": {
                        "description": "the metrics in Prometheus' text exposition format 0.0.4",
                        "content": {"text/plain; version=0.0.4": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }


def _schemas() -> dict[str, Any]:
    task_properties: dict[str, Any] = {
        "task_name": {"type": "string"},
        "task_progress": {"type": "integer"},
        "task_progress_total": {
            "type": "integer",
            "minimum": 1,
            "description": "the task_progress value that means done, when the job declared one "
            "(so a client shows N of M); absent when not known",
        },
        "task_create": {"type": "integer", "description": "epoch milliseconds"},
        "task_status": {"type": "string", "enum": [s.value for s in Status]},
        "task_update": {"type": "integer", "description": "epoch milliseconds"},
        "task_result": {"type": "string", "description": "JSON text of the result, or the error"},
        "task_retries": {"type": "integer"},
        "id": {"type": "integer"},
        "task_type": {"type": "string"},
        "task_callable": {"type": "string"},
        "task_input": {"type": "string", "description": "JSON text of the input"},
        "task_priority": {"type": "integer"},
        "task_max_retries": {"type": "integer"},
        "task_timeout": {"type": "number"},
        "task_server": {"type": "string"},
        "task_description": {"type": "string"},
        "task_graphspace": {"type": "string"},
        "task_graph": {"type": "string"},
        "task_run_at": {
            "type": "integer",
            "description": "epoch milliseconds when a task waiting for its delay or a retry's "
            "backoff becomes due; only while it waits (status new or restoring)",
        },
    }
    required = [
        "task_name", "task_progress", "task_create", "task_status", "task_update",
        "task_retries", "id", "task_type", "task_callable",
    ]  # fmt: skip
    task = {"type": "object", "properties": task_properties, "required": required}
    return {
        "Task": task,
        "ActionResult": {
            "type": "object",
            "properties": {**task_properties, "cancelled": {"type": "boolean"}},
            "required": [*required, "cancelled"],
        },
        "TaskList": {
            "type": "object",
            "properties": {
                "tasks": {"type": "array", "items": _ref("Task")},
                "page": {"type": ["string", "null"]},
            },
            "required": ["tasks"],
        },
        "TaskCounts": {
            "type": "object",
            "properties": {
                "counts": {
                    "type": "object",
                    "description": "status -> number of the graph's tasks in it; every status is present",
                    "properties": {s.value: {"type": "integer", "minimum": 0} for s in Status},
                    "required": [s.value for s in Status],
                },
                "total": {"type": "integer", "minimum": 0},
            },
            "required": ["counts", "total"],
        },
        "Actions": {
            "type": "object",
            "properties": {
                "actions": {
                    "type": "object",
                    "description": "status -> the actions a task in it allows; every status is present",
                    "properties": {s.value: {"type": "array", "items": ACTION_SCHEMA} for s in Status},
                    "required": [s.value for s in Status],
                },
                "requests": {
                    "type": "object",
                    "description": "action -> its request; {base} is a graph's prefix, {id} the task's id",
                    "properties": {a.value: {"type": "string"} for a in Action},
                    "required": [a.value for a in Action],
                },
            },
            "required": ["actions", "requests"],
        },
        "Created": {
            "type": "object",
            "properties": {"task_id": {"type": "integer"}},
            "required": ["task_id"],
        },
        "GremlinJob": {
            "type": "object",
            "properties": {
                "gremlin": {"type": "string"},
                "bindings": {"type": "object"},
                "language": {"type": "string", "default": "gremlin-groovy"},
                "aliases": {"type": "object", "maxProperties": 0},
            },
            "required": ["gremlin"],
        },
        "Versions": {
            "type": "object",
            "properties": {
                "versions": {
                    "type": "object",
                    "properties": {k: {"type": "string"} for k in ("version", "core", "gremlin", "api", "sidetask")},
                }
            },
        },
        "Claim": {
            "type": "object",
            "properties": {
                "id": {"type": "integer"},
                "type": {"type": "string"},
                "input": {"description": "the task's input, decoded (null when it has none)"},
                "graphspace": {"type": "string"},
                "graph": {"type": "string"},
                "retries": {"type": "integer"},
                "task_url": {"type": "string", "description": "the task's path, for the reports"},
                "lease": {"type": "string", "description": "send it back as X-Lease"},
                "lease_expires": {"type": "integer", "description": "epoch milliseconds"},
                "lease_duration": {"type": "number", "description": "seconds each report adds"},
                "task": _ref("Task"),
            },
            "required": ["id", "type", "input", "task_url", "lease", "lease_expires"],
        },
        "ProgressReport": {
            "type": "object",
            "properties": {"progress": {"type": "integer", "minimum": -MAX_INT, "maximum": MAX_INT, "description": "absent: a heartbeat"}},
        },
        "ProgressAnswer": {
            "type": "object",
            "properties": {
                "id": {"type": "integer"},
                "task_status": {"type": "string"},
                "task_progress": {"type": "integer"},
                "cancel": {"type": "boolean", "description": "a cancel was requested: stop"},
                "lease_expires": {"type": "integer", "description": "epoch milliseconds"},
            },
            "required": ["id", "task_status", "task_progress", "cancel", "lease_expires"],
        },
        "Completion": {
            "type": "object",
            "properties": {
                "result": {"description": "any JSON value; stored as task_result"},
                "progress": {"type": "integer", "minimum": -MAX_INT, "maximum": MAX_INT},
            },
        },
        "Failure": {
            "type": "object",
            "properties": {
                "error": {"type": "string", "description": "stored as task_result"},
                "retry": {"type": "boolean", "default": True, "description": "false: no retry can mend it"},
                "progress": {"type": "integer", "minimum": -MAX_INT, "maximum": MAX_INT},
            },
        },
        "Error": {
            "type": "object",
            "properties": {
                "exception": {"type": "string"},
                "message": {"type": "string"},
                "cause": {"type": "string"},
            },
            "required": ["exception", "message", "cause"],
        },
    }


PREFIX_PARAMETERS = {
    "/graphspaces/{graphspace}/graphs/{graph}": [GRAPH_PARAMS["graphspace"], GRAPH_PARAMS["graph"]],
    "/graphs/{graph}": [GRAPH_PARAMS["graph"]],
}


#: operations that take a task's input, and are admitted against max_waiting
SUBMISSIONS = {"createJob", "createGremlinJob"}
#: paths that answer without credentials (service.web.auth.OPEN_PATHS; /docs/{asset} is
#: every file of the documentation page)
OPEN_PATHS = {"/versions", "/health", "/ready", "/openapi.json", "/docs", "/docs/{asset}"}
TOO_LARGE = _error("the body is over max_body_bytes, a task's input over max_input_bytes, or a result over max_result_bytes")
UNSUPPORTED = _error("the body's Content-Type is not JSON, or its Content-Encoding can't be decoded")
TOO_MANY = {
    **_error("max_waiting tasks are waiting to run already; retry after Retry-After seconds"),
    "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
}
UNAUTHORIZED = {
    **_error("no credentials, or wrong ones (README, \"Access and limits\")"),
    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "the schemes accepted"}},
}
#: what the password checks answer under a flood (service.web.auth)
LOGIN_THROTTLED = {
    **_error(
        "the caller's address failed to log in auth_max_failures times within "
        "auth_failure_window seconds; retry after Retry-After seconds"
    ),
    "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
}
CHECKS_BUSY = {
    **_error("too many credential checks are waiting (auth_queue); retry after Retry-After seconds"),
    "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
}
URI_TOO_LONG = _error("the request line is longer than max_header_bytes")
HEADER_TOO_LARGE = _error("a header field is longer than max_header_bytes")
FORBIDDEN = _error("the caller's grants name some graphs only, and a claim takes tasks of every graph")
#: what every route answers to a request from a web page it does not serve (service.web.origin)
MISDIRECTED = _error(
    "the Host header names neither loopback, nor the bound address, nor an entry of "
    'allowed_hosts (README, "Access and limits")'
)
FOREIGN_PAGE = (
    "the request comes from a page of another origin: its Origin is neither the service's "
    "own nor in allowed_origins, or a state change says Sec-Fetch-Site: cross-site or same-site"
)


def _name_the_types(paths: dict[str, Any], job_types: Sequence[str], external_types: Sequence[str]) -> None:
    """`{type}` of POST …/jobs/{type} is a registered type (gremlin has its own operation),
    as the task list's and the graph stream's `type` are; a claim's `types` a
    comma-separated list of external types."""
    types = sorted(t for t in job_types if t != "gremlin")
    for path, item in paths.items():
        if path.endswith(("/tasks", "/events")) and job_types:
            operation = item["get"]
            operation["parameters"] = [
                {**p, "schema": {"type": "string", "enum": sorted(job_types)}} if p["name"] == "type" else p
                for p in operation["parameters"]
            ]
        if path.endswith("/jobs/{type}") and types:
            operation = item["post"]
            operation["parameters"] = [
                {**p, "schema": {"type": "string", "enum": types}} if p["name"] == "type" else p
                for p in operation["parameters"]
            ]
    claim = paths["/workers/{worker}/claim"]["post"]
    if external_types:
        name = "(" + "|".join(re.escape(t) for t in external_types) + ")"
        pattern = rf"^\s*({name}\s*)?(,\s*({name}\s*)?)*$"
        claim["parameters"] = [
            {**p, "schema": {"type": "string", "pattern": pattern}} if p["name"] == "types" else p
            for p in claim["parameters"]
        ]


def _add_limits_and_access(
    paths: dict[str, Any], auth: bool, metrics_public: bool, grants: bool
) -> None:
    """The answers every route may give beside its own: a request from a web page it does
    not serve (421 for its Host, 403 for its Origin), bodies over the limits or not JSON
    (413, 415), submissions past max_waiting (429), and with authentication on, 401 (and
    403 for a claim by a caller with grants)."""
    open_paths = OPEN_PATHS | ({"/metrics"} if metrics_public else set())
    for path, item in paths.items():
        for method, operation in item.items():
            if method not in {"get", "put", "post", "delete"}:
                continue
            responses = operation["responses"]
            responses.setdefault("421", MISDIRECTED)
            responses["403"] = _error(FOREIGN_PAGE)
            places = {p["in"] for p in [*item.get("parameters", []), *operation.get("parameters", [])]}
            if places & {"path", "query"}:  # what makes the request line long
                responses.setdefault("414", URI_TOO_LONG)
            if "header" in places:
                responses.setdefault("431", HEADER_TOO_LARGE)
            if "requestBody" in operation:
                responses.setdefault("413", TOO_LARGE)
                responses.setdefault("415", UNSUPPORTED)
            if operation["operationId"].rsplit("_", 1)[0] in SUBMISSIONS:
                responses.setdefault("429", TOO_MANY)
            if not auth:
                continue
            if path in open_paths:
                operation["security"] = []
            else:
                responses.setdefault("401", UNAUTHORIZED)
                _also(responses, "429", LOGIN_THROTTLED)
                _also(responses, "503", CHECKS_BUSY)
                if grants and path == "/workers/{worker}/claim":
                    responses["403"] = _error(f"{FORBIDDEN['description']}; or {FOREIGN_PAGE}")


def _also(responses: dict[str, Any], status: str, answer: dict[str, Any]) -> None:
    """Adds a reason to an answer an operation may already give for another one."""
    given = responses.get(status)
    if given is None:
        responses[status] = answer
    else:
        responses[status] = {
            **answer,
            **given,
            "description": f"{given['description']}; or {answer['description']}",
        }


def openapi_document(
    version: str,
    *,
    basic: bool = False,
    bearer: bool = False,
    metrics_public: bool = False,
    grants: bool = False,
    job_types: Sequence[str] = (),
    external_types: Sequence[str] = (),
) -> dict[str, Any]:
    """The document of a service with these job types and access settings: what a route
    can answer depends on them (a 401 only when there are credentials to check, a job type
    that is not registered is a 400)."""
    paths: dict[str, Any] = {}
    for prefix, prefix_params in PREFIX_PARAMETERS.items():
        for suffix, operations in _graph_operations().items():
            item: dict[str, Any] = {"parameters": prefix_params}
            for method, operation in operations.items():
                tag = "graphspace" if "graphspace" in prefix else "graph"
                item[method] = {**operation, "operationId": f"{operation['operationId']}_{tag}"}
            paths[prefix + suffix] = item
    paths.update(_service_operations())
    _name_the_types(paths, job_types, external_types)
    auth = basic or bearer
    _add_limits_and_access(paths, auth, metrics_public, grants)
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "sidetask",
            "version": version,
            "description": "An async task service compatible with Apache HugeGraph's Task API.",
        },
        "paths": paths,
        "components": {"schemas": _schemas()},
    }
    if auth:
        schemes = {}
        if basic:
            schemes["basic"] = {"type": "http", "scheme": "basic", "description": "a user of `users`"}
        if bearer:
            schemes["bearer"] = {"type": "http", "scheme": "bearer", "description": "a token of `tokens`"}
        document["components"]["securitySchemes"] = schemes
        document["security"] = [{name: []} for name in schemes]
    return document
