"""Creating tasks (SPEC 5): HugeGraph's gremlin job and every registered job type."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from .. import jsontext
from ..errors import BadRequest, PayloadTooLarge
from ..model import GraphRef
from . import declared, params
from .declared import MAX_NAME_BYTES
from .keys import SETTINGS, SUPERVISOR, WEBHOOKS
from .responses import json_response

#: the line breaks HugeGraph splits a script's first line at (not str.splitlines()'s dozen)
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def first_line(script: str, limit: int = MAX_NAME_BYTES) -> str:
    """A gremlin task's name as HugeGraph gives it: the script's first line, as written
    (blank, indented), cut to `limit` UTF-8 bytes without splitting a character."""
    line = _LINE_BREAK.split(script, maxsplit=1)[0]
    return line.encode()[:limit].decode(errors="ignore")


async def create_gremlin_job(request: web.Request) -> web.Response:
    graph = params.graph_of(request)
    body = await params.json_body(request)
    if body is None:  # HugeGraph reads a JSON null as no body at all
        raise BadRequest("The request body can't be empty")
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object")
    # in HugeGraph's order: the script, the aliases, the bindings, the language
    script = declared.GREMLIN.get(body)
    declared.ALIASES.get(body)
    bindings = declared.BINDINGS.get(body)
    language = declared.LANGUAGE.get(body)
    # Stored as HugeGraph stores it: the graph aliased to `graph`, keys in HugeGraph's order.
    job_input = {
        "gremlin": script,
        "bindings": bindings,
        "language": language,
        "aliases": {graph.graph: "graph"},
    }
    options = declared.submit_options(request)
    options.setdefault("name", first_line(script))
    return await _submit(request, graph, "gremlin", job_input, options)


async def create_job(request: web.Request) -> web.Response:
    graph = params.graph_of(request)
    type_name = request.match_info["type"]
    body = await params.json_body(request, empty=None)
    if body is not None and not isinstance(body, dict):
        raise BadRequest(
            f"The request body must be a JSON object (the job's input), but got {type(body).__name__}"
        )
    return await _submit(request, graph, type_name, body, declared.submit_options(request))


async def _submit(
    request: web.Request, graph: GraphRef, type_name: str, job_input: Any, options: dict[str, Any]
) -> web.Response:
    try:
        input_json = (
            None if job_input is None else jsontext.dumps(job_input, "The request body").decode()
        )
    except jsontext.TooDeep as exc:
        raise BadRequest(str(exc)) from None
    limit = request.app[SETTINGS].max_input_bytes
    if input_json is not None and len(input_json.encode()) > limit:
        raise PayloadTooLarge(
            f"The task input is {len(input_json.encode())} bytes of JSON; the limit is "
            f"{limit} bytes (max_input_bytes)"
        )
    callback = options.get("callback")
    if callback is not None:  # resolved and checked against the allow-list: 400 if refused
        await request.app[WEBHOOKS].check_callback(callback)
    task, created = await request.app[SUPERVISOR].submit(graph, type_name, input_json, **options)
    # 201 means committed (SPEC 9); an Idempotency-Key replay answers as the first call did,
    # and says so in a header.
    headers = None if created else {"Idempotent-Replayed": "true"}
    return json_response({"task_id": task.id}, status=201, headers=headers)
