"""The schedules API (`{base}/schedules`): create, list, get, pause, resume, delete."""

from __future__ import annotations

from aiohttp import web

from ..errors import BadRequest, NotFound, PayloadTooLarge
from ..schedules import check_name, parse_definition
from . import declared, params
from .keys import REGISTRY, SCHEDULER, SETTINGS
from .responses import json_response


def _name_of(request: web.Request) -> str:
    name = request.match_info["name"]
    try:
        return check_name(name)
    except ValueError:
        raise NotFound(f"Can't find schedule with name '{name}'") from None


async def list_schedules(request: web.Request) -> web.Response:
    graph = params.graph_of(request)
    schedules = await request.app[SCHEDULER].store.schedules(graph)
    return json_response({"schedules": [s.to_api() for s in schedules]})


async def get_schedule(request: web.Request) -> web.Response:
    graph = params.graph_of(request)
    name = _name_of(request)
    schedule = await request.app[SCHEDULER].store.schedule(graph, name)
    if schedule is None:
        raise NotFound(f"Can't find schedule with name '{name}'")
    return json_response(schedule.to_api())


async def create_schedule(request: web.Request) -> web.Response:
    graph = params.graph_of(request)
    body = await params.json_body(request)
    if not isinstance(body, dict):
        raise BadRequest(
            f"The request body must be a JSON object (the schedule), but got {type(body).__name__}"
        )
    fields = dict(body)
    try:
        name = check_name(fields.pop("name", None))
        paused = fields.pop("paused", False)
        if not isinstance(paused, bool):
            raise ValueError(f"'paused' must be true or false, got {paused!r}")
        if "graph" in fields:
            raise ValueError("'graph' is the path's: a schedule is made in the graph it names")
        definition = parse_definition(fields)
    except ValueError as exc:
        raise BadRequest(f"Invalid schedule: {exc}") from None
    limit = request.app[SETTINGS].max_input_bytes
    if definition.input is not None and len(definition.input.encode()) > limit:
        raise PayloadTooLarge(
            f"The schedule's input is {len(definition.input.encode())} bytes of JSON; the "
            f"limit is {limit} bytes (max_input_bytes)"
        )
    registry = request.app[REGISTRY]
    if registry.get(definition.type) is None:
        raise BadRequest(
            f"Job type '{definition.type}' is not registered; registered types: "
            + ", ".join(registry.names())
        )
    schedule = await request.app[SCHEDULER].create(graph, name, definition, paused)
    return json_response(schedule.to_api(), status=201)


async def update_schedule(request: web.Request) -> web.Response:
    graph = params.graph_of(request)
    name = _name_of(request)
    action = declared.SCHEDULE_ACTION.get(request)
    scheduler = request.app[SCHEDULER]
    if action == "pause":
        schedule = await scheduler.pause(graph, name)
    else:
        schedule = await scheduler.resume(graph, name)
    return json_response(schedule.to_api())


async def delete_schedule(request: web.Request) -> web.Response:
    graph = params.graph_of(request)
    await request.app[SCHEDULER].store.delete_schedule(graph, _name_of(request))
    return web.Response(status=204)
