"""The one place errors become responses: every error of every route is HugeGraph's JSON body."""

from __future__ import annotations

import logging

from aiohttp import web

from ..errors import ServiceUnavailable, SidetaskError, TooManyRequests
from .responses import error_response

log = logging.getLogger("sidetask.web")

_HTTP_KINDS = {
    400: "IllegalArgumentException",
    401: "NotAuthorizedException",
    403: "ForbiddenException",
    404: "NotFoundException",
    405: "NotAllowedException",
    413: "PayloadTooLargeException",
    415: "NotSupportedException",
}


def error_answer(request: web.Request, error: Exception) -> web.Response:
    """The JSON error answer to what serving `request` raised (service.web.access's
    middleware calls it); an HTTPException below 400 (a redirect) is raised again."""
    try:
        raise error
    except (TooManyRequests, ServiceUnavailable) as exc:
        headers = None if exc.retry_after is None else {"Retry-After": str(exc.retry_after)}
        return error_response(exc.status, exc.kind, exc.message, exc.cause, headers=headers)
    except SidetaskError as exc:
        return error_response(exc.status, exc.kind, exc.message, exc.cause)
    except web.RequestPayloadError as exc:
        # The body broke in transit (bad chunking, a Content-Encoding it is not in): the
        # request is malformed, not the service.
        reason = getattr(exc.__cause__, "message", None) or str(exc)
        message = f"The request body can't be read: {' '.join(str(reason).split())}"
        response = error_response(400, _HTTP_KINDS[400], message)
        # The rest of the body is unread: say the connection ends, so no client reuses it.
        response.force_close()
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 404:
            message = f"No route for {request.method} {request.path}"
        elif exc.status == 405:
            allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ()) or ()))
            message = (
                f"Method {request.method} is not allowed for {request.path}; allowed: {allowed}"
            )
        elif exc.status == 413:
            message = f"The request body is too large; the limit is {request.client_max_size} bytes"
        else:
            message = exc.text or exc.reason
        headers = {
            k: v
            for k, v in exc.headers.items()
            if k.lower() in {"allow", "www-authenticate", "retry-after"}
        }
        return error_response(
            exc.status, _HTTP_KINDS.get(exc.status, "HttpException"), message, headers=headers
        )
    except Exception as exc:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "ServerError", "Internal server error", type(exc).__name__)
