"""Every request's id, log line and metrics: the outermost middleware.

The request id is the caller's `X-Request-Id` when it is a sane token (so an id made by a
proxy or the calling application follows the request through), else a new one; it goes
back in the response's `X-Request-Id` header, every log line written while serving the
request carries it, and so does the access line. Metrics are labelled with the route
template (`/graphs/{graph}/tasks/{id}`), never the raw path, so their number stays bounded.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
import uuid

from aiohttp import web
from aiohttp.typedefs import Handler

from ..logs import REQUEST_ID, info_lines
from .keys import METRICS

access_log = logging.getLogger("sidetask.access")

REQUEST_ID_HEADER = "X-Request-Id"
#: what an incoming request id may look like; anything else is replaced by a fresh one
_SANE_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
#: the route label of a request no route matched
UNMATCHED = "unmatched"
#: the status recorded for a request whose client went away before the answer
CLIENT_CLOSED = 499

REQUEST_ID_KEY = web.RequestKey("request_id", str)
_ID_PREFIX = uuid.uuid4().hex[:12] + "-"
_ID_COUNTER = itertools.count(1)


def request_id_of(request: web.Request) -> str:
    """The request's id: the caller's X-Request-Id when sane, else a new one."""
    given = request.headers.get(REQUEST_ID_HEADER)
    if given is not None and _SANE_ID.fullmatch(given):
        return given
    # unique per process start and request; cheaper than a uuid4 per request
    return f"{_ID_PREFIX}{next(_ID_COUNTER):x}"


def route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return UNMATCHED if resource is None else resource.canonical


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request_id_of(request)
    request[REQUEST_ID_KEY] = request_id
    token = REQUEST_ID.set(request_id)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # redirects and the like pass through the error middleware
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = CLIENT_CLOSED
        raise
    finally:
        elapsed = time.perf_counter() - started
        route = route_of(request)
        metrics = request.app.get(METRICS)
        if metrics is not None:
            metrics.http_requests.labels(request.method, route, str(status)).inc()
            metrics.http_seconds.labels(request.method, route).observe(elapsed)
        info_lines(
            access_log,
            [
                (
                    f'{request.remote} "{request.method} {request.path_qs}" {status} {elapsed * 1000:.1f} ms',
                    {
                        "request_id": request_id,
                        "method": request.method,
                        "path": request.path_qs,
                        "route": route,
                        "status_code": status,
                        "duration_ms": round(elapsed * 1000, 3),
                        "remote": request.remote,
                        "user_agent": request.headers.get("User-Agent"),
                    },
                )
            ],
        )
        REQUEST_ID.reset(token)


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the id goes out with the headers, event streams included."""
    request_id = request.get(REQUEST_ID_KEY)
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id
