"""The Task API (SPEC 4): list, get, delete, and the PUT actions."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator

import orjson
from aiohttp import web

from .. import bulk
from ..errors import BadRequest, NotFound
from ..model import LOG_LEVEL_INDEX, Status, Task
from . import declared, params
from .keys import REGISTRY, SETTINGS, STORE, SUPERVISOR
from .responses import JSON_CONTENT_TYPE, json_response

#: bytes of a list's answer past which it is written as it is read, in pieces of PIECE
#: bytes, each once the client has taken the ones before (a smaller one goes out whole)
STREAM_ABOVE = 256 * 1024
PIECE = 64 * 1024


class _ListAnswer:
    """A list's JSON answer, byte for byte what `json_response` would send. While it is
    small it is kept and sent whole; past STREAM_ABOVE bytes it goes out chunked as it is
    read, and each write waits for the client to take what it was sent: a slow reader of a
    list of large tasks holds a piece, not the list."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.parts: list[bytes | memoryview] = [b'{"tasks":[']
        self.size = 0
        self.count = 0
        self.response: web.StreamResponse | None = None
        self.gone = False  # the client left: nothing more is read or written

    async def add(self, tasks: list[Task]) -> None:
        # one orjson call for the lot, as json_response made; the array's brackets left out
        data = memoryview(orjson.dumps([task.to_api() for task in tasks]))[1:-1]
        if self.count:
            self.parts.append(b",")
        self.parts.append(data)
        self.count += len(tasks)
        self.size += len(data)
        if self.size > STREAM_ABOVE:
            await self._flush()

    async def _flush(self) -> None:
        parts, self.parts, self.size = self.parts, [], 0
        if self.response is None:
            self.response = web.StreamResponse(headers={"Content-Type": JSON_CONTENT_TYPE})
            self.response.enable_chunked_encoding()
            await self.response.prepare(self.request)
        try:
            for piece in _pieces(parts):
                await self.response.write(piece)  # waits while the socket's buffer is full
        except ConnectionError:
            self.gone = True

    async def finish(self, tail: bytes) -> web.StreamResponse:
        """Ends the answer with `tail`: the tasks array's end and what follows it."""
        self.parts.append(tail)
        if self.response is None:
            response = web.Response(body=b"".join(self.parts))
            response.headers["Content-Type"] = JSON_CONTENT_TYPE
            return response
        if not self.gone:
            await self._flush()
        if not self.gone:
            with contextlib.suppress(ConnectionError):
                await self.response.write_eof()
        return self.response


def _pieces(parts: list[bytes | memoryview]) -> list[bytes | memoryview]:
    """`parts` as writes of about PIECE bytes: small ones joined, a large one split."""
    out: list[bytes | memoryview] = []
    pending: list[bytes | memoryview] = []
    size = 0
    for part in parts:
        if len(part) >= PIECE:
            if pending:
                out.append(b"".join(pending))
                pending, size = [], 0
            view = memoryview(part)
            out.extend(view[i : i + PIECE] for i in range(0, len(part), PIECE))
            continue
        pending.append(part)
        size += len(part)
        if size >= PIECE:
            out.append(b"".join(pending))
            pending, size = [], 0
    if pending:
        out.append(b"".join(pending))
    return out


async def _answer(
    request: web.Request,
    tasks: AsyncGenerator[list[Task], None],
    limit: int | None,
    paged: bool,
    descending: bool,
) -> web.StreamResponse:
    """The list's answer: `{"tasks": [...]}`, and with `paged` the next page's token (one
    task more than `limit` was asked for: it tells whether another page follows)."""
    answer = _ListAnswer(request)
    last_id = 0
    more = False
    async with contextlib.aclosing(tasks):
        async for batch in tasks:
            if limit is not None and answer.count + len(batch) > limit:
                batch = batch[: limit - answer.count]
                more = True
            if batch:
                await answer.add(batch)
                last_id = batch[-1].id
            if more or answer.gone:
                break
    if not paged:
        return await answer.finish(b"]}")
    next_page = params.encode_page(last_id, descending) if more and answer.count else None
    return await answer.finish(b'],"page":' + orjson.dumps(next_page) + b"}")


async def list_tasks(request: web.Request) -> web.StreamResponse:
    graph = params.graph_of(request)
    ids = declared.IDS.texts(request)
    status_text = declared.LIST_STATUS.text(request)
    page = declared.PAGE.text(request)
    order_text = declared.ORDER.text(request)
    type_texts = declared.LIST_TYPE.texts(request)
    # checked in every form of the query, though a query by ids returns them all
    limit = declared.LIMIT.get(request)
    if limit == -1:
        limit = None
    descending = declared.ORDER.get(request) == "desc"
    if ids:
        if status_text is not None:
            raise BadRequest(
                f"Not support status when query task by ids, but got status='{status_text}'"
            )
        if page is not None:
            raise BadRequest(f"Not support page when query task by ids, but got page='{page}'")
        if order_text is not None:
            raise BadRequest(
                f"Not support order when query task by ids, but got order='{order_text}'"
            )
        if type_texts:
            raise BadRequest(
                f"Not support type when query task by ids, but got type='{type_texts[0]}'"
            )
        for term in declared.SELECTION:
            text = term.text(request)
            if text is not None:
                raise BadRequest(
                    f"Not support {term.name} when query task by ids, but got {term.name}='{text}'"
                )
        task_ids = declared.IDS.parse(ids)
        return await _answer(
            request, request.app[STORE].iter_ids(graph, task_ids), None, False, False
        )

    status = None if status_text is None else declared.LIST_STATUS.parse(status_text)
    task_type = declared.LIST_TYPE.get(request, request.app[REGISTRY].names())
    selection = declared.selection(request)
    store = request.app[STORE]
    if page is None:
        tasks = store.iter_tasks(
            graph,
            status,
            limit,
            0,
            task_type=task_type,
            descending=descending,
            selection=selection,
        )
        return await _answer(request, tasks, limit, False, descending)

    after = params.decode_page(page, descending)
    if limit == 0:
        # an empty page has no last id to go on from: its "page" would claim the end
        raise BadRequest("The parameter 'limit' must be >= 1 or -1 when paging, but got '0'")
    # one more than asked tells whether another page follows
    tasks = store.iter_tasks(
        graph,
        status,
        None if limit is None else limit + 1,
        after,
        task_type=task_type,
        descending=descending,
        selection=selection,
    )
    return await _answer(request, tasks, limit, True, descending)


async def bulk_tasks(request: web.Request) -> web.Response:
    """`POST {base}/tasks/bulk?action=…&<the list's terms>`: the action on every task the
    terms match, answered with what changed and what was refused and why (service.bulk)."""
    graph = params.graph_of(request)
    action = declared.BULK_ACTION.get(request)
    status_text = declared.LIST_STATUS.text(request)
    matching = bulk.Filter(
        status=None if status_text is None else declared.LIST_STATUS.parse(status_text),
        task_type=declared.LIST_TYPE.get(request, request.app[REGISTRY].names()),
        selection=declared.selection(request),
    )
    force = declared.BULK_FORCE.get(request)
    every = declared.BULK_ALL.get(request)
    if force and action != "delete":
        raise BadRequest(f"The parameter 'force' goes with action=delete only, not {action}")
    if matching.empty and not every:
        terms = ", ".join(p.name for p in (declared.LIST_STATUS, declared.LIST_TYPE))
        raise BadRequest(
            f"A bulk {action} needs a filter ({terms}, "
            + ", ".join(p.name for p in declared.SELECTION)
            + "), or all=true for every task of the graph"
        )
    if every and not matching.empty:
        raise BadRequest("The parameter 'all' can't be given with a filter")
    outcome = await bulk.run(
        request.app[SUPERVISOR],
        graph,
        action,
        matching,
        force=force,
        batch=request.app[SETTINGS].bulk_batch,
    )
    return json_response(outcome.to_api())


async def get_task(request: web.Request) -> web.Response:
    graph = params.graph_of(request)
    task_id = declared.TASK_ID.get(request)
    task = await request.app[STORE].get(graph, task_id)
    if task is None:
        raise NotFound(f"Can't find task with id '{task_id}'")
    return json_response(task.to_api())


async def task_logs(request: web.Request) -> web.Response:
    """`{"id": N, "lines": [...], "last": id}`: a page of the task's log lines, after the
    line id `after=`, of `level=` or above; `last` is the id to page on from (the
    request's `after` when no line came)."""
    graph = params.graph_of(request)
    task_id = declared.TASK_ID.get(request)
    after = declared.LOGS_AFTER.get(request) or 0
    limit = declared.LOGS_LIMIT.get(request) or 1
    level = LOG_LEVEL_INDEX[declared.LOGS_LEVEL.get(request)]
    store = request.app[STORE]
    task = await store.get(graph, task_id)
    if task is None:
        raise NotFound(f"Can't find task with id '{task_id}'")
    lines = await store.logs(task_id, after, limit, level)
    last = lines[-1].id if lines else after
    return json_response({"id": task_id, "lines": [ln.to_api() for ln in lines], "last": last})


async def task_attempts(request: web.Request) -> web.Response:
    """`{"id": N, "attempts": [...]}`: each run of the task, in the order they started."""
    graph = params.graph_of(request)
    task_id = declared.TASK_ID.get(request)
    store = request.app[STORE]
    task = await store.get(graph, task_id)
    if task is None:
        raise NotFound(f"Can't find task with id '{task_id}'")
    attempts = await store.attempts(task_id)
    return json_response({"id": task_id, "attempts": [a.to_api() for a in attempts]})


async def task_deliveries(request: web.Request) -> web.Response:
    """`{"id": N, "deliveries": [...]}`: each webhook delivery the task's status changes
    wrote (README, "Webhooks"), in the order they were written, with every answer."""
    graph = params.graph_of(request)
    task_id = declared.TASK_ID.get(request)
    store = request.app[STORE]
    task = await store.get(graph, task_id)
    if task is None:
        raise NotFound(f"Can't find task with id '{task_id}'")
    deliveries = await store.deliveries(task_id)
    return json_response({"id": task_id, "deliveries": [d.to_api() for d in deliveries]})


async def delete_task(request: web.Request) -> web.Response:
    graph = params.graph_of(request)
    task_id = declared.TASK_ID.get(request)
    force = declared.FORCE.get(request)
    await request.app[SUPERVISOR].delete(graph, task_id, force)
    return web.Response(status=204)


async def update_task(request: web.Request) -> web.Response:
    graph = params.graph_of(request)
    task_id = declared.TASK_ID.get(request)
    action = declared.ACTION.get(request)
    supervisor = request.app[SUPERVISOR]
    actions = {
        "cancel": supervisor.cancel,
        "pause": supervisor.pause,
        "resume": supervisor.resume,
        "retry": supervisor.retry,
    }
    task = await actions[str(action)](graph, task_id)
    body = task.to_api()
    # The seeds' clients read {"cancelled": true}; HugeGraph 1.7's read the task: both get theirs.
    body["cancelled"] = task.status in (Status.CANCELLING, Status.CANCELLED)
    return json_response(body, status=202)
