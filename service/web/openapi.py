"""The OpenAPI 3 description of every route, served at /openapi.json."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ..bulk import BULK_ACTIONS
from ..errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    SidetaskError,
    TooManyRequests,
    Unauthorized,
    Unprocessable,
)
from ..model import LOG_LEVELS, Action, AttemptOutcome, EventKind, Status
from . import declared
from .auth import OPEN_PATHS
from .declared import Param

JSON = "application/json"
#: the answers that come from no error class of the service: aiohttp's (414, 431, 415) and
#: the Host check's (service.web.origin)
MISDIRECTED_STATUS = 421
URI_TOO_LONG_STATUS = 414
HEADER_TOO_LARGE_STATUS = 431
UNSUPPORTED_STATUS = 415


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref("Error")}}}


def _refusal(error: type[SidetaskError] | int, description: str, **extra: Any) -> dict[str, Any]:
    """The answer of an error class (its status), as a `responses` entry."""
    status = error if isinstance(error, int) else error.status
    return {str(status): {**_error(description), **extra}}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _params(*declarations: Param) -> list[dict[str, Any]]:
    return [d.openapi() for d in declarations]


ACTION_SCHEMA = {"type": "string", "enum": [a.value for a in Action]}

GRAPH_PARAMS = {
    "graphspace": declared.GRAPHSPACE.openapi(),
    "graph": declared.GRAPH.openapi(),
}
TASK_ID = declared.TASK_ID.openapi()
NOT_FOUND = _refusal(NotFound, "the graph or the task does not exist")
BAD_REQUEST = _refusal(BadRequest, "a parameter or the body is wrong; the message says what")
UNAVAILABLE = _refusal(
    ServiceUnavailable,
    "the store cannot read or write now (full disk, locked database, shutting down); retry later",
)

SUBMIT_OPTIONS = _params(*(option for option, _ in declared.SUBMIT_OPTIONS), declared.DEPENDENCIES)
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
IDEMPOTENCY_CONFLICT = _refusal(
    Unprocessable,
    "the Idempotency-Key was used in this graph with a different request (body, options or "
    "job type); the message names the key and its task",
)
EVENT_STREAM_PARAMS = _params(*declared.EVENT_STREAM)
_KINDS = [kind.value for kind in EventKind]
EVENT_STREAM = {
    "description": "Server-Sent Events: `id:` the event id, `event:` "
    f"{', '.join(_KINDS[:-1])} or {_KINDS[-1]}, "
    f'`data:` the task as GET returns it (for {EventKind.DELETED.value}, {{"id": N}}); '
    "task_input only in task.created and a task stream's first event. 503 (with Retry-After) past max_streams",
    "content": {
        "text/event-stream": {
            # OpenAPI 3.1: the schema of a stream's media type describes each of its events
            "schema": {
                "type": "object",
                "properties": {
                    "id": {"type": "string", "pattern": "^[0-9]+$"},
                    "event": {"type": "string", "enum": _KINDS},
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
            "parameters": _params(*declared.LIST_TASKS),
            "responses": {
                "200": _json(
                    "the tasks; with `page`, also the next page's token", _ref("TaskList")
                ),
                **BAD_REQUEST,
                **NOT_FOUND,
                **UNAVAILABLE,
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
                **BAD_REQUEST,
                **NOT_FOUND,
                **UNAVAILABLE,
            },
        },
        "delete": {
            "operationId": "deleteTask",
            "summary": "Delete a task's record (not the work itself)",
            "parameters": [
                TASK_ID,
                declared.FORCE.openapi(),
            ],
            "responses": {
                "204": {"description": "deleted"},
                **_refusal(BadRequest, "the task is incomplete and force is not true"),
                **NOT_FOUND,
                **UNAVAILABLE,
            },
        },
        "put": {
            "operationId": "updateTask",
            "summary": "cancel, pause, resume or retry a task",
            "parameters": [
                TASK_ID,
                declared.ACTION.openapi(),
            ],
            "responses": {
                "202": _json("the task after the action, and `cancelled`", _ref("ActionResult")),
                **_refusal(
                    BadRequest, "an unknown action, or one the task's status does not allow"
                ),
                **NOT_FOUND,
                **UNAVAILABLE,
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
                **BAD_REQUEST,
                **NOT_FOUND,
                **IDEMPOTENCY_CONFLICT,
                **UNAVAILABLE,
            },
        }
    }
    job = {
        "post": {
            "operationId": "createJob",
            "summary": "A job of any registered type; the body is its input",
            "parameters": [declared.JOB_TYPE.openapi(), *SUBMIT_OPTIONS],
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
                **BAD_REQUEST,
                **NOT_FOUND,
                **IDEMPOTENCY_CONFLICT,
                **UNAVAILABLE,
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
                **BAD_REQUEST,
                **NOT_FOUND,
                **UNAVAILABLE,
            },
        }
    }
    graph_events = {
        "get": {
            "operationId": "graphEvents",
            "summary": "Every event of the graph's tasks, optionally by status and type",
            "parameters": [
                *_params(declared.STREAM_STATUS, declared.STREAM_TYPE),
                *EVENT_STREAM_PARAMS,
            ],
            "responses": {"200": EVENT_STREAM, **BAD_REQUEST, **NOT_FOUND, **UNAVAILABLE},
        }
    }
    attempts = {
        "get": {
            "operationId": "taskAttempts",
            "summary": "Each run of a task (an attempt), in the order they started: where it "
            "ran, when, how it ended, and a failure's error with its traceback",
            "parameters": [TASK_ID],
            "responses": {
                "200": _json("the task's attempts", _ref("Attempts")),
                **BAD_REQUEST,
                **NOT_FOUND,
                **UNAVAILABLE,
            },
        }
    }
    logs = {
        "get": {
            "operationId": "taskLogs",
            "summary": "A page of the task's log lines (ctx.log, the job's logging and print, "
            "a command's output), oldest first; a marker line says how many of the oldest "
            "were dropped past max_log_lines",
            "parameters": [TASK_ID, *_params(*declared.LOGS)],
            "responses": {
                "200": _json("the task's log lines", _ref("LogLines")),
                **BAD_REQUEST,
                **NOT_FOUND,
                **UNAVAILABLE,
            },
        }
    }
    deliveries = {
        "get": {
            "operationId": "taskDeliveries",
            "summary": 'The task\'s webhook deliveries (README, "Webhooks"): each configured '
            "hook or callback a status change of it matched, its state (pending, delivered, "
            "failed), its attempts with each answer, and its next try",
            "parameters": [TASK_ID],
            "responses": {
                "200": _json("the task's deliveries", _ref("Deliveries")),
                **BAD_REQUEST,
                **NOT_FOUND,
                **UNAVAILABLE,
            },
        }
    }
    bulk = {
        "post": {
            "operationId": "bulkTasks",
            "summary": "cancel, pause, resume, retry or delete every task a filter matches (the "
            "list's terms), in batches of bulk_batch; tasks submitted meanwhile are left alone",
            "parameters": _params(*declared.BULK),
            "requestBody": {
                "required": False,
                "description": "none: the action and the filter are query parameters",
                "content": {JSON: {"schema": {"type": ["object", "null"], "maxProperties": 0}}},
            },
            "responses": {
                "200": _json(
                    "how many tasks matched, how many changed, and the others by the reason "
                    "each was refused (the single action's message without the id)",
                    _ref("BulkResult"),
                ),
                **_refusal(
                    BadRequest,
                    "an unknown action, a bad filter value, no filter without all=true, or "
                    "force without action=delete",
                ),
                **NOT_FOUND,
                **UNAVAILABLE,
            },
        }
    }
    counts = {
        "get": {
            "operationId": "countTasks",
            "summary": "The graph's tasks per status (every status, zeros too) and their total",
            "responses": {
                "200": _json("the counts", _ref("TaskCounts")),
                **NOT_FOUND,
                **UNAVAILABLE,
            },
        }
    }
    return {
        "/tasks": tasks,
        "/tasks/counts": counts,
        "/tasks/bulk": bulk,
        "/tasks/{id}": task,
        "/jobs/gremlin": gremlin,
        "/jobs/{type}": job,
        "/tasks/{id}/events": task_events,
        "/tasks/{id}/attempts": attempts,
        "/tasks/{id}/logs": logs,
        "/tasks/{id}/deliveries": deliveries,
        "/events": graph_events,
        **_worker_task_operations(),
        **_schedule_operations(),
    }


def _schedule_operations() -> dict[str, dict[str, Any]]:
    """Schedules (README, "Schedules"): a cron expression or an interval that submits a
    job at each fire time."""
    name = declared.SCHEDULE_NAME.openapi()
    missing = _refusal(NotFound, "the graph or the schedule does not exist")
    return {
        "/schedules": {
            "get": {
                "operationId": "listSchedules",
                "summary": "The graph's schedules by name, each with its next fire time",
                "responses": {
                    "200": _json("the schedules", _ref("ScheduleList")),
                    **NOT_FOUND,
                    **UNAVAILABLE,
                },
            },
            "post": {
                "operationId": "createSchedule",
                "summary": "A new schedule: a job type, its input and submission options, at "
                "the times of a cron expression (in a time zone) or every so many seconds",
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _ref("ScheduleCreate")}},
                },
                "responses": {
                    "201": _json("the schedule", _ref("Schedule")),
                    **BAD_REQUEST,
                    **NOT_FOUND,
                    **_refusal(Conflict, "a schedule of that name is in the graph"),
                    **UNAVAILABLE,
                },
            },
        },
        "/schedules/{name}": {
            "get": {
                "operationId": "getSchedule",
                "summary": "One schedule",
                "parameters": [name],
                "responses": {
                    "200": _json("the schedule", _ref("Schedule")),
                    **missing,
                    **UNAVAILABLE,
                },
            },
            "put": {
                "operationId": "updateSchedule",
                "summary": "Pause a schedule (it fires nothing) or resume it (from its next "
                "fire time after now)",
                "parameters": [name, declared.SCHEDULE_ACTION.openapi()],
                "responses": {
                    "200": _json("the schedule", _ref("Schedule")),
                    **BAD_REQUEST,
                    **missing,
                    **UNAVAILABLE,
                },
            },
            "delete": {
                "operationId": "deleteSchedule",
                "summary": "Remove a schedule (the tasks it submitted stay)",
                "parameters": [name],
                "responses": {
                    "204": {"description": "removed"},
                    **missing,
                    **UNAVAILABLE,
                },
            },
        },
    }


def _schedule_schemas() -> dict[str, Any]:
    definition: dict[str, Any] = {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"},
        "type": {"type": "string", "description": "the job type it submits"},
        "cron": {
            "type": "string",
            "description": "five fields (minute hour day month weekday) or @hourly, @daily, "
            "@weekly, @monthly, @yearly; not with every",
        },
        "timezone": {"type": "string", "description": "of cron: an IANA name (default UTC)"},
        "every": {
            "type": "number",
            "minimum": 1,
            "description": "seconds between fire times, from its creation; not with cron",
        },
        "input": {"type": ["object", "null"], "description": "the job's input"},
        "task_name": {"type": "string", "description": "its tasks' name (default: its name)"},
        "priority": {"type": "integer"},
        "max_retries": {"type": ["integer", "null"], "minimum": 0, "maximum": 1000},
        "timeout": {"type": ["number", "null"], "exclusiveMinimum": 0},
        "missed": {
            "type": "string",
            "enum": ["once", "skip"],
            "description": "what fire times older than schedule_grace get (the service was "
            "down): one task for them all (the latest), or none",
        },
    }
    return {
        "ScheduleCreate": {
            "type": "object",
            "properties": {**definition, "paused": {"type": "boolean", "default": False}},
            "required": ["name", "type"],
        },
        "Schedule": {
            "type": "object",
            "properties": {
                **definition,
                "paused": {"type": "boolean"},
                "next_fire": {
                    "type": ["integer", "null"],
                    "description": "epoch ms of the next fire time; null while paused",
                },
                "last_fire": {"type": ["integer", "null"], "description": "epoch ms"},
                "last_task_id": {"type": ["integer", "null"]},
                "source": {"type": "string", "enum": ["config", "api"]},
                "create": {"type": "integer", "description": "epoch ms"},
                "update": {"type": "integer", "description": "epoch ms"},
                "graphspace": {"type": "string"},
                "graph": {"type": "string"},
            },
            "required": ["name", "type", "paused", "next_fire", "missed", "source"],
        },
        "ScheduleList": {
            "type": "object",
            "properties": {"schedules": {"type": "array", "items": _ref("Schedule")}},
            "required": ["schedules"],
        },
    }


LEASE = declared.LEASE.openapi()
NOT_HELD = _refusal(
    Conflict,
    "the lease does not hold the task (another worker's, expired, or the task moved on: "
    "paused, deleted, completed); the worker stops working on it",
)


def _worker_task_operations() -> dict[str, dict[str, Any]]:
    """An external worker's reports on the task it holds (README, "External workers")."""

    def report(
        operation_id: str, summary: str, body: str, answer: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "operationId": operation_id,
            "summary": summary,
            "parameters": [TASK_ID, LEASE],
            "requestBody": {"required": False, "content": {JSON: {"schema": _ref(body)}}},
            "responses": {
                "200": answer,
                **BAD_REQUEST,
                **NOT_FOUND,
                **NOT_HELD,
                **UNAVAILABLE,
            },
        }

    return {
        "/tasks/{id}/progress": {
            "put": report(
                "reportProgress",
                "A worker's progress (or a heartbeat): the first report starts the task, each "
                "one extends the lease; the answer says whether a cancel was requested",
                "ProgressReport",
                _json(
                    "recorded; `cancel` true: stop, then report fail or complete",
                    _ref("ProgressAnswer"),
                ),
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
                "parameters": _params(declared.WORKER, declared.CLAIM_TYPES, declared.CLAIM_WAIT),
                "requestBody": {
                    "required": False,
                    "content": {JSON: {"schema": {"description": "ignored"}}},
                },
                "responses": {
                    "200": {
                        **_json("a task and its lease (also in the X-Lease header)", _ref("Claim"))
                    },
                    "204": {
                        "description": "no task came within `wait`, or the service is stopping"
                    },
                    **_refusal(
                        BadRequest,
                        "a bad worker name or wait, or a type external workers do not serve",
                    ),
                    **UNAVAILABLE,
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
                "responses": {
                    "200": _json(
                        "their names", {"type": "object", "properties": {"graphspaces": names}}
                    )
                },
            }
        },
        "/graphspaces/{graphspace}/graphs": {
            "get": {
                "operationId": "listGraphspaceGraphs",
                "summary": "The declared graphs of a graphspace (HugeGraph 1.7 and later)",
                "parameters": [GRAPH_PARAMS["graphspace"]],
                "responses": {
                    "200": _json(
                        "their names", {"type": "object", "properties": {"graphs": names}}
                    ),
                    **_refusal(NotFound, "no declared graph is in that graphspace"),
                },
            }
        },
        "/graphs": {
            "get": {
                "operationId": "listGraphs",
                "summary": "The declared graphs of graphspace DEFAULT (HugeGraph up to 1.5)",
                "responses": {
                    "200": _json("their names", {"type": "object", "properties": {"graphs": names}})
                },
            }
        },
        "/types": {
            "get": {
                "operationId": "listTypes",
                "summary": "The registered job types, each a valid {type} of POST …/jobs/{type}, "
                "and the paused ones",
                "responses": {
                    "200": _json(
                        "their names; `paused`: each paused type and since when (epoch ms)",
                        {
                            "type": "object",
                            "properties": {
                                "types": names,
                                "paused": {
                                    "type": "object",
                                    "additionalProperties": {"type": "integer"},
                                },
                                "concurrency": {
                                    "type": "object",
                                    "description": "type_concurrency: jobs of a type at once",
                                    "additionalProperties": {"type": "integer"},
                                },
                                "rate_limits": {
                                    "type": "object",
                                    "description": "type_rate_limits: starts of a type, "
                                    '"N/s" or "N/min", across replicas',
                                    "additionalProperties": {"type": "string"},
                                },
                            },
                        },
                    ),
                    **UNAVAILABLE,
                },
            }
        },
        "/types/{type}": {
            "put": {
                "operationId": "updateType",
                "summary": "Pauses a job type as a whole (nothing new of it starts, in any "
                "graph, on any replica, nor through an external worker; its running jobs "
                "finish) or resumes it",
                "parameters": _params(declared.JOB_TYPE, declared.TYPE_ACTION),
                "responses": {
                    "200": _json("the type as it is now", _ref("JobType")),
                    **_refusal(BadRequest, "an action other than pause or resume"),
                    **_refusal(NotFound, "the job type is not registered"),
                    **UNAVAILABLE,
                },
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
                "parameters": [declared.UI_ASSET.openapi()],
                "responses": {
                    "200": {
                        "description": "the file",
                        "content": {
                            "text/javascript": {"schema": {"type": "string"}},
                            "text/css": {"schema": {"type": "string"}},
                            "image/svg+xml": {"schema": {"type": "string"}},
                        },
                    },
                    **_refusal(NotFound, "the dashboard has no such file"),
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
                "parameters": [declared.DOCS_ASSET.openapi()],
                "responses": {
                    "200": {
                        "description": "the file",
                        "content": {
                            "text/javascript": {"schema": {"type": "string"}},
                            "text/css": {"schema": {"type": "string"}},
                        },
                    },
                    **_refusal(NotFound, "the page has no such file"),
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
                "responses": {
                    "200": _json("ready", {"type": "object"}),
                    **_refusal(ServiceUnavailable, "not ready"),
                },
            }
        },
        "/events": {
            "get": {
                "operationId": "serviceEvents",
                "summary": "Every event of the service",
                "parameters": EVENT_STREAM_PARAMS,
                "responses": {"200": EVENT_STREAM, **BAD_REQUEST, **UNAVAILABLE},
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
        "task_dependencies": {
            "type": "array",
            "items": {"type": "integer"},
            "description": "the tasks this one waits for (HugeGraph's key; the submission "
            "option dependencies); absent when there are none",
        },
        "task_dependencies_left": {
            "type": "integer",
            "minimum": 1,
            "description": "how many of task_dependencies have not succeeded yet: the task "
            "is not started until none is left; only while it has not started",
        },
        "task_priority": {"type": "integer"},
        "task_max_retries": {"type": "integer"},
        "task_timeout": {"type": "number"},
        "task_server": {"type": "string"},
        "task_description": {"type": "string"},
        "task_graphspace": {"type": "string"},
        "task_graph": {"type": "string"},
        "task_schedule": {
            "type": "string",
            "description": "the schedule that submitted it (its name, in the task's graph)",
        },
        "task_schedule_fire": {
            "type": "integer",
            "description": "epoch ms: the fire time of the schedule it was submitted for",
        },
        "task_run_at": {
            "type": "integer",
            "description": "epoch milliseconds when a task waiting for its delay or a retry's "
            "backoff becomes due; only while it waits (status new or restoring)",
        },
        "task_traceparent": {
            "type": "string",
            "description": "the W3C trace context the task was submitted under (its "
            "traceparent header, as version 00); absent when none was given",
        },
        "task_tracestate": {
            "type": "string",
            "description": "the tracestate header submitted with the traceparent",
        },
    }
    required = [
        "task_name", "task_progress", "task_create", "task_status", "task_update",
        "task_retries", "id", "task_type", "task_callable",
    ]  # fmt: skip
    task = {"type": "object", "properties": task_properties, "required": required}
    return {
        **_schedule_schemas(),
        "Task": task,
        "ActionResult": {
            "type": "object",
            "properties": {**task_properties, "cancelled": {"type": "boolean"}},
            "required": [*required, "cancelled"],
        },
        "BulkResult": {
            "type": "object",
            "properties": {
                "action": {"type": "string", "enum": list(BULK_ACTIONS)},
                "matched": {"type": "integer", "minimum": 0},
                "changed": {"type": "integer", "minimum": 0},
                "refused": {
                    "type": "object",
                    "additionalProperties": {"type": "integer", "minimum": 1},
                    "description": "reason -> how many tasks were refused for it",
                },
                "batches": {"type": "integer", "minimum": 0},
            },
            "required": ["action", "matched", "changed", "refused", "batches"],
        },
        "TaskList": {
            "type": "object",
            "properties": {
                "tasks": {"type": "array", "items": _ref("Task")},
                "page": {"type": ["string", "null"]},
            },
            "required": ["tasks"],
        },
        "Deliveries": {
            "type": "object",
            "properties": {
                "id": {"type": "integer", "description": "the task's id"},
                "deliveries": {"type": "array", "items": _ref("Delivery")},
            },
            "required": ["id", "deliveries"],
        },
        "Delivery": {
            "type": "object",
            "properties": {
                "delivery": {
                    "type": "string",
                    "description": "the delivery id: the Sidetask-Delivery header of every try",
                },
                "hook": {
                    "type": "string",
                    "description": "the configured hook's name, or callback (the task's own URL)",
                },
                "url": {"type": "string"},
                "event": {"type": "string", "enum": ["task.status"]},
                "status": {"type": "string", "description": "the status the change wrote"},
                "state": {"type": "string", "enum": ["pending", "delivered", "failed"]},
                "attempts": {"type": "integer", "minimum": 0},
                "created": {"type": "integer", "description": "epoch ms of the change"},
                "next_try": {
                    "type": ["integer", "null"],
                    "description": "epoch ms of the next try (pending only)",
                },
                "last_answer": {"oneOf": [_ref("DeliveryAnswer"), {"type": "null"}]},
                "answers": {"type": "array", "items": _ref("DeliveryAnswer")},
            },
            "required": [
                "delivery",
                "hook",
                "url",
                "event",
                "status",
                "state",
                "attempts",
                "created",
                "next_try",
                "last_answer",
                "answers",
            ],
        },
        "DeliveryAnswer": {
            "type": "object",
            "properties": {
                "time": {"type": "integer", "description": "epoch ms the try ended"},
                "code": {"type": ["integer", "null"], "description": "the HTTP status"},
                "error": {
                    "type": ["string", "null"],
                    "description": "what stood for an answer: a timeout, no connection, a "
                    "target refused by the allow-list (refused: …)",
                },
                "duration_ms": {"type": "integer", "minimum": 0},
            },
            "required": ["time", "code", "error", "duration_ms"],
        },
        "Attempts": {
            "type": "object",
            "properties": {
                "id": {"type": "integer", "description": "the task's id"},
                "attempts": {"type": "array", "items": _ref("Attempt")},
            },
            "required": ["id", "attempts"],
        },
        "Attempt": {
            "type": "object",
            "properties": {
                "attempt": {"type": "integer", "minimum": 1, "description": "1, 2, … in order"},
                "server": {
                    "type": ["string", "null"],
                    "description": "the task_server it ran under (server_name, or the "
                    "external worker's name)",
                },
                "replica": {
                    "type": ["string", "null"],
                    "description": "the sidetask process that started it, as host:pid",
                },
                "start": {"type": "integer", "description": "epoch milliseconds"},
                "end": {"type": ["integer", "null"], "description": "null while it runs"},
                "outcome": {
                    "type": "string",
                    "enum": ["running", *(o.value for o in AttemptOutcome)],
                },
                "error": {
                    "type": "object",
                    "description": "how a failed run failed (absent otherwise)",
                    "properties": {
                        "type": {"type": ["string", "null"]},
                        "message": {"type": ["string", "null"]},
                        "traceback": {
                            "type": ["string", "null"],
                            "description": "its last max_traceback_chars characters",
                        },
                    },
                },
                "checkpointed": {
                    "type": "boolean",
                    "description": "whether the job stored a checkpoint in this run",
                },
            },
            "required": ["attempt", "server", "replica", "start", "end", "outcome", "checkpointed"],
        },
        "LogLines": {
            "type": "object",
            "properties": {
                "id": {"type": "integer", "description": "the task's id"},
                "lines": {"type": "array", "items": _ref("LogLine")},
                "last": {"type": "integer", "description": "the after= of the next page"},
            },
            "required": ["id", "lines", "last"],
        },
        "LogLine": {
            "type": "object",
            "properties": {
                "id": {"type": "integer", "description": "increasing within the task"},
                "time": {"type": "integer", "description": "epoch milliseconds"},
                "level": {"type": "string", "enum": list(LOG_LEVELS)},
                "attempt": {"type": ["integer", "null"], "description": "the run that wrote it"},
                "text": {"type": "string", "description": "at most max_log_line_chars"},
            },
            "required": ["id", "time", "level", "attempt", "text"],
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
                    "properties": {
                        s.value: {"type": "array", "items": ACTION_SCHEMA} for s in Status
                    },
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
        "GremlinJob": declared.body_schema(declared.GREMLIN_JOB),
        "Versions": {
            "type": "object",
            "properties": {
                "versions": {
                    "type": "object",
                    "properties": {
                        k: {"type": "string"}
                        for k in ("version", "core", "gremlin", "api", "sidetask")
                    },
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
                "checkpoint": {
                    "description": "the last checkpoint an earlier attempt stored (a report's or "
                    "a failure's `checkpoint`, or an in-process job's); null: none"
                },
                "progress": {
                    "type": "integer",
                    "description": "the task's progress when claimed: where earlier attempts got to",
                },
                "progress_total": {"type": ["integer", "null"]},
                "task_url": {"type": "string", "description": "the task's path, for the reports"},
                "lease": {"type": "string", "description": "send it back as X-Lease"},
                "lease_expires": {"type": "integer", "description": "epoch milliseconds"},
                "lease_duration": {"type": "number", "description": "seconds each report adds"},
                "task": _ref("Task"),
            },
            "required": ["id", "type", "input", "task_url", "lease", "lease_expires"],
        },
        "ProgressReport": declared.body_schema(declared.PROGRESS_REPORT),
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
        "Completion": declared.body_schema(declared.COMPLETION),
        "Failure": declared.body_schema(declared.FAILURE),
        "JobType": {
            "type": "object",
            "properties": {
                "type": {"type": "string"},
                "paused": {"type": "boolean"},
                "paused_since": {
                    "type": ["integer", "null"],
                    "description": "when it was paused (epoch ms); null when it is not",
                },
            },
            "required": ["type", "paused", "paused_since"],
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
RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
TOO_LARGE = _refusal(
    PayloadTooLarge,
    "the body is over max_body_bytes, a task's input over max_input_bytes, or a result over max_result_bytes",
)
UNSUPPORTED = _refusal(
    UNSUPPORTED_STATUS,
    "the body's Content-Type is not JSON, or its Content-Encoding can't be decoded",
)
TOO_MANY = _refusal(
    TooManyRequests,
    "max_waiting tasks are waiting to run already; retry after Retry-After seconds",
    headers=RETRY_AFTER,
)
UNAUTHORIZED = _refusal(
    Unauthorized,
    'no credentials, or wrong ones (README, "Access and limits")',
    headers={
        "WWW-Authenticate": {"schema": {"type": "string"}, "description": "the schemes accepted"}
    },
)
#: what the password checks answer under a flood (service.web.auth)
LOGIN_THROTTLED = _refusal(
    TooManyRequests,
    "the caller's address failed to log in auth_max_failures times within "
    "auth_failure_window seconds; retry after Retry-After seconds",
    headers=RETRY_AFTER,
)
CHECKS_BUSY = _refusal(
    ServiceUnavailable,
    "too many credential checks are waiting (auth_queue); retry after Retry-After seconds",
    headers=RETRY_AFTER,
)
URI_TOO_LONG = _refusal(URI_TOO_LONG_STATUS, "the request line is longer than max_header_bytes")
HEADER_TOO_LARGE = _refusal(
    HEADER_TOO_LARGE_STATUS, "a header field is longer than max_header_bytes"
)
FORBIDDEN = "the caller's grants name some graphs only, and a claim takes tasks of every graph"
FORBIDDEN_TYPE = (
    "the caller's grants name some graphs only, and pausing a job type does so in every graph"
)
#: what every route answers to a request from a web page it does not serve (service.web.origin)
MISDIRECTED = _refusal(
    MISDIRECTED_STATUS,
    "the Host header names neither loopback, nor the bound address, nor an entry of "
    'allowed_hosts (README, "Access and limits")',
)
FOREIGN_PAGE = (
    "the request comes from a page of another origin: its Origin is neither the service's "
    "own nor in allowed_origins, or a state change says Sec-Fetch-Site: cross-site or same-site"
)


def _name_the_types(
    paths: dict[str, Any], job_types: Sequence[str], external_types: Sequence[str]
) -> None:
    """`{type}` of POST …/jobs/{type} is a registered type (gremlin has its own operation),
    as the task list's and the graph stream's `type` are; a claim's `types` a
    comma-separated list of external types."""
    types = sorted(t for t in job_types if t != "gremlin")
    for path, item in paths.items():
        if path.endswith(("/tasks", "/events")) and job_types:
            operation = item["get"]
            operation["parameters"] = [
                {**p, "schema": {"type": "string", "enum": sorted(job_types)}}
                if p["name"] == "type"
                else p
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
    open_paths = _open(OPEN_PATHS | ({"/metrics"} if metrics_public else set()), paths)
    for path, item in paths.items():
        for method, operation in item.items():
            if method not in {"get", "put", "post", "delete"}:
                continue
            responses = operation["responses"]
            _add(responses, MISDIRECTED)
            responses.update(_refusal(Forbidden, FOREIGN_PAGE))
            places = {
                p["in"] for p in [*item.get("parameters", []), *operation.get("parameters", [])]
            }
            if places & {"path", "query"}:  # what makes the request line long
                _add(responses, URI_TOO_LONG)
            if "header" in places:
                _add(responses, HEADER_TOO_LARGE)
            if "requestBody" in operation:
                _add(responses, TOO_LARGE)
                _add(responses, UNSUPPORTED)
            if operation["operationId"].rsplit("_", 1)[0] in SUBMISSIONS:
                _add(responses, TOO_MANY)
            if not auth:
                continue
            if path in open_paths:
                operation["security"] = []
            else:
                _add(responses, UNAUTHORIZED)
                _also(responses, LOGIN_THROTTLED)
                _also(responses, CHECKS_BUSY)
                if grants and path == "/workers/{worker}/claim":
                    responses.update(_refusal(Forbidden, f"{FORBIDDEN}; or {FOREIGN_PAGE}"))
                if grants and path == "/types/{type}":
                    responses.update(_refusal(Forbidden, f"{FORBIDDEN_TYPE}; or {FOREIGN_PAGE}"))


def _open(open_paths: frozenset[str], paths: dict[str, Any]) -> set[str]:
    """The documented paths that answer without credentials: service.web.auth.OPEN_PATHS
    names each file of the documentation page, the document `/docs/{asset}` for them all."""
    found = set()
    for path in paths:
        template = re.compile(
            "".join(
                "[^/]+" if part.startswith("{") else re.escape(part)
                for part in re.split(r"(\{\w+\})", path)
            )
        )
        if path in open_paths or any(template.fullmatch(p) for p in open_paths):
            found.add(path)
    return found


def _add(responses: dict[str, Any], refusal: dict[str, Any]) -> None:
    """Adds an answer an operation does not give already."""
    for status, answer in refusal.items():
        responses.setdefault(status, answer)


def _also(responses: dict[str, Any], refusal: dict[str, Any]) -> None:
    """Adds a reason to an answer an operation may already give for another one."""
    ((status, answer),) = refusal.items()
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
            schemes["basic"] = {
                "type": "http",
                "scheme": "basic",
                "description": "a user of `users`",
            }
        if bearer:
            schemes["bearer"] = {
                "type": "http",
                "scheme": "bearer",
                "description": "a token of `tokens`",
            }
        document["components"]["securitySchemes"] = schemes
        document["security"] = [{name: []} for name in schemes]
    return document
