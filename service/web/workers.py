"""The external workers' routes: claim work, report progress, complete or fail (README,
"External workers"). The lease a claim returns is shown back in the `X-Lease` header."""

from __future__ import annotations

import re
from typing import Any

import orjson
from aiohttp import web

from .. import jsontext
from ..errors import BadRequest, PayloadTooLarge
from ..policy import wants_cancel
from ..store import Lease
from ..workers import MAX_CLAIM_WAIT
from . import params
from .keys import SETTINGS, WORKERS
from .responses import json_response

LEASE_HEADER = "X-Lease"
#: a worker's name: what task_server shows
WORKER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}")
MAX_ERROR_CHARS = 64 * 1024


def _worker_of(request: web.Request) -> str:
    name = request.match_info["worker"]
    if not WORKER_NAME.fullmatch(name):
        raise BadRequest(
            f"Invalid worker name '{name}': 1 to 128 letters, digits and . _ : @ + -, "
            "starting with a letter or digit"
        )
    return name


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _claim_body(request: web.Request, lease: Lease) -> dict[str, Any]:
    task = lease.task
    graph = task.graph
    return {
        "id": task.id,
        "type": task.type,
        # the stored text as it is: decoded and written again, an input nested as deep as
        # can be stored would be one level too deep inside this answer
        "input": None if task.input is None else orjson.Fragment(task.input),
        "graphspace": graph.graphspace,
        "graph": graph.graph,
        "retries": task.retries,
        "task_url": f"/graphspaces/{graph.graphspace}/graphs/{graph.graph}/tasks/{task.id}",
        "lease": lease.token,
        "lease_expires": lease.expires_ms,
        "lease_duration": request.app[WORKERS].settings.lease_duration,
        "task": task.to_api(),
    }


async def claim(request: web.Request) -> web.StreamResponse:
    """POST /workers/{worker}/claim?types=a,b&wait=30: a task and its lease, or 204."""
    worker = _worker_of(request)
    hub = request.app[WORKERS]
    query = request.query
    requested = [t.strip() for t in ",".join(query.getall("types", [])).split(",") if t.strip()]
    types = hub.check_types(requested)
    wait = 0.0
    if "wait" in query:
        wait = params.number("wait", query["wait"], maximum=MAX_CLAIM_WAIT)
    lease = await hub.claim(worker, types, wait, lambda: _gone(request))
    if lease is None:
        return web.Response(status=204)
    if _gone(request):  # nobody will read the answer: the task waits for another claim
        await hub.give_back(lease)
        return web.Response(status=204)
    return json_response(_claim_body(request, lease), headers={LEASE_HEADER: lease.token})


def _lease_of(request: web.Request) -> str:
    token = request.headers.get(LEASE_HEADER, "").strip()
    if not token:
        raise BadRequest(f"The {LEASE_HEADER} header is required: the lease the claim returned")
    return token


def _progress_of(body: dict[str, Any]) -> int | None:
    value = body.get("progress")
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 7.0 is the integer 7, as JSON Schema reads it
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > params.MAX_INT:
        raise BadRequest(f"The field 'progress' must be an integer, but got {value!r}")
    return value


async def _object_body(request: web.Request) -> dict[str, Any]:
    body = await params.json_body(request, empty={})
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object")
    return body


async def report_progress(request: web.Request) -> web.Response:
    """PUT {base}/tasks/{id}/progress: progress (or a heartbeat), and whether to stop."""
    graph = params.graph_of(request)
    task_id = params.task_id_of(request)
    token = _lease_of(request)
    body = await _object_body(request)
    lease = await request.app[WORKERS].report(graph, task_id, token, _progress_of(body))
    task = lease.task
    return json_response(
        {
            "id": task.id,
            "task_status": task.status.value,
            "task_progress": task.progress,
            "cancel": wants_cancel(task),
            "lease_expires": lease.expires_ms,
        }
    )


async def complete(request: web.Request) -> web.Response:
    """POST {base}/tasks/{id}/complete {"result": …}: the task succeeded."""
    graph = params.graph_of(request)
    task_id = params.task_id_of(request)
    token = _lease_of(request)
    body = await _object_body(request)
    try:
        result = jsontext.dumps(body.get("result"), "The job's result").decode()
    except jsontext.TooDeep as exc:
        raise BadRequest(str(exc)) from None
    limit = request.app[SETTINGS].max_result_bytes
    if len(result.encode()) > limit:
        raise PayloadTooLarge(
            f"The result is {len(result.encode())} bytes of JSON; the limit is {limit} bytes "
            "(max_result_bytes)"
        )
    task = await request.app[WORKERS].complete(graph, task_id, token, result, _progress_of(body))
    return json_response(task.to_api())


async def fail(request: web.Request) -> web.Response:
    """POST {base}/tasks/{id}/fail {"error": "…", "retry": true}: the task failed."""
    graph = params.graph_of(request)
    task_id = params.task_id_of(request)
    token = _lease_of(request)
    body = await _object_body(request)
    error = body.get("error", "The worker reported a failure")
    if not isinstance(error, str):
        raise BadRequest(f"The field 'error' must be a string, but got {type(error).__name__}")
    retry = body.get("retry", True)
    if not isinstance(retry, bool):
        raise BadRequest(f"The field 'retry' must be true or false, but got {retry!r}")
    task = await request.app[WORKERS].fail(
        graph, task_id, token, error[:MAX_ERROR_CHARS], retry, _progress_of(body)
    )
    return json_response(task.to_api())
