"""The application's one middleware: every request's id, checks, error body, log line and metrics.

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
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ..logs import REQUEST_ID, info_lines, wants_fields
from ..metrics import Metrics
from .auth import Authenticator, auth_refusal, guards
from .errors import error_answer
from .limits import limits_refusal
from .origin import PagePolicy, page_refusal

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


def edge_middleware(
    policy: PagePolicy, authenticator: Authenticator, metrics: Metrics
) -> Middleware:
    """The one middleware of the application: in this order, the request's id, the Host
    and Origin check (service.web.origin: a foreign page's request is refused before
    anything else looks at it, its body unread and its credentials unchecked), the limits
    (service.web.limits: a body that cannot be taken is refused unread, credentials or
    not), authentication (service.web.auth), the route; whatever any of them raises is
    rendered by service.web.errors; last the metrics and the access line, which see the
    status that rendering chose and time everything. One middleware rather than a chain
    of five: each link costs a coroutine and its frames on every request."""

    http = metrics.http

    @web.middleware
    async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = request_id_of(request)
        request[REQUEST_ID_KEY] = request_id
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 500
        try:
            try:
                response: web.StreamResponse | None = page_refusal(policy, request)
                if response is None:
                    response = limits_refusal(request)
                if response is None and guards(authenticator, request):
                    response = await auth_refusal(authenticator, request)
                if response is None:
                    response = await handler(request)
            except Exception as exc:  # redirects are raised again, and pass through
                response = error_answer(request, exc)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = CLIENT_CLOSED
            raise
        finally:
            elapsed = time.perf_counter() - started
            route = route_of(request)
            http.observe(request.method, route, status, elapsed)
            if access_log.isEnabledFor(logging.INFO):
                method, path, remote = request.method, request.path_qs, request.remote
                message = f'{remote} "{method} {path}" {status} {elapsed * 1000:.1f} ms'
                if wants_fields(access_log):
                    fields: dict[str, Any] = {
                        "request_id": request_id,
                        "method": method,
                        "path": path,
                        "route": route,
                        "status_code": status,
                        "duration_ms": round(elapsed * 1000, 3),
                        "remote": remote,
                        "user_agent": request.headers.get("User-Agent"),
                    }
                else:  # a text line shows the request id only
                    fields = {"request_id": request_id}
                info_lines(access_log, ((message, fields),))
            REQUEST_ID.reset(token)

    return edge


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the id goes out with the headers, event streams included."""
    request_id = request.get(REQUEST_ID_KEY)
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id
