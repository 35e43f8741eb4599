"""The Task API (SPEC 4): list, get, delete, and the PUT actions."""

from __future__ import annotations

from aiohttp import web

from ..errors import BadRequest, NotFound
from ..model import Status
from . import params
from .keys import REGISTRY, STORE, SUPERVISOR
from .responses import json_response


async def list_tasks(request: web.Request) -> web.Response:
    graph = params.graph_of(request)
    query = request.query
    ids = query.getall("ids", [])
    status_text = query.get("status")
    page = query.get("page")
    order_text = query.get("order")
    type_texts = query.getall("type", [])
    # checked in every form of the query, though a query by ids returns them all
    limit = params.list_limit(query.get("limit"))
    descending = params.order(order_text)
    if ids:
        if status_text is not None:
            raise BadRequest(
                f"Not support status when query task by ids, but got status='{status_text}'"
            )
        if page is not None:
            raise BadRequest(f"Not support page when query task by ids, but got page='{page}'")
        if order_text is not None:
            raise BadRequest(f"Not support order when query task by ids, but got order='{order_text}'")
        if type_texts:
            raise BadRequest(f"Not support type when query task by ids, but got type='{type_texts[0]}'")
        task_ids = [params.integer("ids", text, minimum=1) for text in ids]
        tasks = await request.app[STORE].list_ids(graph, task_ids)
        return json_response({"tasks": [t.to_api() for t in tasks]})

    status = None if status_text is None else params.statuses(status_text)
    task_type = params.task_type(type_texts, request.app[REGISTRY].names())
    store = request.app[STORE]
    if page is None:
        tasks = await store.list_tasks(
            graph, status, limit, 0, task_type=task_type, descending=descending
        )
        return json_response({"tasks": [t.to_api() for t in tasks]})

    after = params.decode_page(page, descending)
    if limit == 0:
        # an empty page has no last id to go on from: its "page" would claim the end
        raise BadRequest("The parameter 'limit' must be >= 1 or -1 when paging, but got '0'")
    # one more than asked tells whether another page follows
    tasks = await store.list_tasks(
        graph,
        status,
        None if limit is None else limit + 1,
        after,
        task_type=task_type,
        descending=descending,
    )
    next_page = None
    if limit is not None and len(tasks) > limit:
        tasks = tasks[:limit]
        next_page = params.encode_page(tasks[-1].id, descending) if tasks else None
    return json_response({"tasks": [t.to_api() for t in tasks], "page": next_page})


async def get_task(request: web.Request) -> web.Response:
    graph = params.graph_of(request)
    task_id = params.task_id_of(request)
    task = await request.app[STORE].get(graph, task_id)
    if task is None:
        raise NotFound(f"Can't find task with id '{task_id}'")
    return json_response(task.to_api())


async def delete_task(request: web.Request) -> web.Response:
    graph = params.graph_of(request)
    task_id = params.task_id_of(request)
    force = params.boolean("force", request.query.get("force", "false"))
    await request.app[SUPERVISOR].delete(graph, task_id, force)
    return web.Response(status=204)


async def update_task(request: web.Request) -> web.Response:
    graph = params.graph_of(request)
    task_id = params.task_id_of(request)
    action = request.query.get("action")
    supervisor = request.app[SUPERVISOR]
    actions = {
        "cancel": supervisor.cancel,
        "pause": supervisor.pause,
        "resume": supervisor.resume,
        "retry": supervisor.retry,
    }
    if action not in actions:
        raise BadRequest(f"Not support action '{action if action is not None else ''}'")
    task = await actions[action](graph, task_id)
    body = task.to_api()
    # The seeds' clients read {"cancelled": true}; HugeGraph 1.7's read the task: both get theirs.
    body["cancelled"] = task.status in (Status.CANCELLING, Status.CANCELLED)
    return json_response(body, status=202)
