"""The external workers' routes: claim work, report progress, complete or fail (README,
"External workers"). The lease a claim returns is shown back in the `X-Lease` header."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from .. import jsontext
from ..errors import BadRequest, PayloadTooLarge
from ..policy import wants_cancel
from ..store import Lease
from . import declared, params
from .declared import LEASE_HEADER
from .keys import LEASE_HUB, SETTINGS
from .responses import json_response

MAX_ERROR_CHARS = 64 * 1024


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _claim_body(request: web.Request, lease: Lease, checkpoint: Any) -> dict[str, Any]:
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
        # where the attempts before this one got to: their last checkpoint and progress
        "checkpoint": checkpoint,
        "progress": task.progress,
        "progress_total": task.progress_total,
        "task_url": f"/graphspaces/{graph.graphspace}/graphs/{graph.graph}/tasks/{task.id}",
        "lease": lease.token,
        "lease_expires": lease.expires_ms,
        "lease_duration": request.app[LEASE_HUB].settings.lease_duration,
        "task": task.to_api(),
    }


async def claim(request: web.Request) -> web.StreamResponse:
    """POST /workers/{worker}/claim?types=a,b&wait=30: a task and its lease, or 204."""
    worker = declared.WORKER.parse(request.match_info["worker"])
    hub = request.app[LEASE_HUB]
    texts = declared.CLAIM_TYPES.texts(request)
    requested = [t.strip() for t in ",".join(texts).split(",") if t.strip()]
    types = hub.check_types(requested)
    wait = declared.CLAIM_WAIT.get(request) or 0.0
    lease = await hub.claim(worker, types, wait, lambda: _gone(request))
    if lease is None:
        return web.Response(status=204)
    if _gone(request):  # nobody will read the answer: the task waits for another claim
        await hub.give_back(lease)
        return web.Response(status=204)
    checkpoint = await hub.last_checkpoint(lease.task)
    return json_response(
        _claim_body(request, lease, checkpoint), headers={LEASE_HEADER: lease.token}
    )


def _lease_of(request: web.Request) -> str:
    return str(declared.LEASE.parse(declared.LEASE.text(request) or ""))


async def _object_body(request: web.Request) -> dict[str, Any]:
    body = await params.json_body(request, empty={})
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object")
    return body


async def report_progress(request: web.Request) -> web.Response:
    """PUT {base}/tasks/{id}/progress: progress (or a heartbeat), and whether to stop."""
    graph = params.graph_of(request)
    task_id = declared.TASK_ID.get(request)
    token = _lease_of(request)
    body = await _object_body(request)
    lease = await request.app[LEASE_HUB].report(
        graph, task_id, token, declared.HEARTBEAT.get(body), declared.CHECKPOINT.get(body)
    )
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
    task_id = declared.TASK_ID.get(request)
    token = _lease_of(request)
    body = await _object_body(request)
    try:
        result = jsontext.dumps(declared.RESULT.get(body), "The job's result").decode()
    except jsontext.TooDeep as exc:
        raise BadRequest(str(exc)) from None
    limit = request.app[SETTINGS].max_result_bytes
    if len(result.encode()) > limit:
        raise PayloadTooLarge(
            f"The result is {len(result.encode())} bytes of JSON; the limit is {limit} bytes "
            "(max_result_bytes)"
        )
    progress = declared.PROGRESS.get(body)
    task = await request.app[LEASE_HUB].complete(graph, task_id, token, result, progress)
    return json_response(task.to_api())


async def fail(request: web.Request) -> web.Response:
    """POST {base}/tasks/{id}/fail {"error": "…", "retry": true}: the task failed."""
    graph = params.graph_of(request)
    task_id = declared.TASK_ID.get(request)
    token = _lease_of(request)
    body = await _object_body(request)
    error = declared.ERROR.get(body)
    retry = declared.RETRY.get(body)
    task = await request.app[LEASE_HUB].fail(
        graph,
        task_id,
        token,
        error[:MAX_ERROR_CHARS],
        retry,
        declared.PROGRESS.get(body),
        declared.CHECKPOINT.get(body),
    )
    return json_response(task.to_api())
