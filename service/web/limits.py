"""Limits and bad input at the edge: request bodies, headers, encodings and content types,
and the requests aiohttp refuses before any route or middleware sees them.

Two layers:

- `limits_middleware` runs for every routed request, before authentication: a body whose
  declared length is over `max_body_bytes` (413, at once, without reading it), a
  Content-Encoding that cannot be decoded or a Content-Type that is not JSON (415), header
  values or a query string that are not UTF-8 (400). Each answer is the JSON error body.
- `JsonErrorRunner` serves the app with a request handler whose `handle_error` writes the
  same JSON error body. aiohttp calls it for what its HTTP parser refuses — a malformed
  request line, bad chunked encoding, a header over `max_header_bytes`, too many headers, a
  Content-Encoding it has no decoder for — which otherwise gets a text/plain 400.
"""

from __future__ import annotations

import logging
import re
import urllib.parse

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError, LineTooLong
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from .responses import error_response

log = logging.getLogger("sidetask.access")

#: the codings aiohttp decodes for us; any other Content-Encoding reaches the handler raw
DECODED_ENCODINGS = frozenset({"", "identity", "gzip", "x-gzip", "deflate", "br", "zstd"})
#: media types a JSON body may arrive as. Besides JSON itself: what clients send when told
#: nothing (curl -d: form-urlencoded; aiohttp and requests with bytes: octet-stream; fetch
#: with a string: text/plain); the body is read as JSON all the same
BODY_TYPES = frozenset(
    {
        "application/json",
        "text/json",
        "text/plain",
        "application/octet-stream",
        "application/x-www-form-urlencoded",
    }
)
#: text that aiohttp decoded with surrogateescape: the bytes were not UTF-8
_UNDECODABLE = re.compile("[\udc80-\udcff]")
#: how much of aiohttp's description of a refused request is repeated in the answer
MAX_DETAIL = 300


def _refuse(status: int, kind: str, message: str) -> web.Response:
    response = error_response(status, kind, message)
    # The body (or the rest of the request) is unread: the connection cannot be reused.
    response.force_close()
    return response


#: the methods whose bodies the routes read
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _declares_body(request: web.Request) -> bool:
    return request.body_exists or "Transfer-Encoding" in request.headers


def check_headers(request: web.Request) -> str | None:
    """What is wrong with the headers or the query string as text, if anything."""
    for name, value in request.headers.items():
        if _UNDECODABLE.search(name) or _UNDECODABLE.search(value):
            shown = name.encode("utf-8", "backslashreplace").decode()
            return f"The header '{shown}' is not valid UTF-8"
    raw_query = request.rel_url.raw_query_string
    if "%" in raw_query:
        for part in raw_query.split("&"):
            name, _, value = part.partition("=")
            for text in (name, value):
                try:
                    urllib.parse.unquote_to_bytes(text.replace("+", " ")).decode()
                except UnicodeDecodeError:
                    return f"The query parameter '{urllib.parse.unquote(name)}' is not valid UTF-8 once percent-decoded"
    return None


def check_body_headers(request: web.Request) -> tuple[int, str, str] | None:
    """(status, kind, message) when the declared body cannot be taken, else None."""
    length = request.content_length
    if length is not None and length > request.client_max_size:
        return (
            413,
            "PayloadTooLargeException",
            f"The request body is {length} bytes; the limit is {request.client_max_size} bytes",
        )
    if request.method not in BODY_METHODS:
        return None  # a body no route reads is not looked at
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in DECODED_ENCODINGS:
        return (
            415,
            "NotSupportedException",
            f"The Content-Encoding '{encoding}' is not supported; send gzip, deflate or none",
        )
    content_type = request.headers.get("Content-Type")
    if content_type is not None:
        media = request.content_type.lower()
        charset = request.charset
        if media not in BODY_TYPES and not media.endswith("+json"):
            return (
                415,
                "NotSupportedException",
                f"The Content-Type '{media}' is not supported; the body is JSON (application/json)",
            )
        if charset is not None and charset.lower().replace("_", "-") not in {"utf-8", "utf8"}:
            return (
                415,
                "NotSupportedException",
                f"The charset '{charset}' is not supported; JSON bodies are UTF-8",
            )
    return None


@web.middleware
async def limits_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    problem = check_headers(request)
    if problem is not None:
        return _refuse(400, "IllegalArgumentException", problem)
    if _declares_body(request):
        refused = check_body_headers(request)
        if refused is not None:
            return _refuse(*refused)
    return await handler(request)


# --- what aiohttp refuses before routing ---


def describe(status: int, exc: BaseException | None, message: str | None) -> tuple[int, str, str]:
    """(status, kind, message) of the JSON answer to a request aiohttp could not handle."""
    if status >= 500 or not isinstance(exc, HttpProcessingError):
        if status == 504:
            return 500, "ServerError", "Internal server error: the request timed out"
        return 500, "ServerError", "Internal server error"
    detail = _one_line(exc.message or message or "")
    if isinstance(exc, ContentEncodingError):
        return 415, "NotSupportedException", f"The request's Content-Encoding can't be decoded: {detail}"
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else "the limit of"
        # aiohttp's parser hands the request line over as a bytearray, a header as bytes
        if isinstance(exc.args[0], bytearray):
            return 414, "UriTooLongException", f"The request line is longer than {limit} bytes"
        return 431, "HeaderTooLargeException", f"A header field is longer than {limit} bytes"
    if detail == "Too many headers received":
        return 431, "HeaderTooLargeException", "The request has too many header fields"
    return 400, "IllegalArgumentException", f"The request is not valid HTTP: {detail}"


def _one_line(text: str) -> str:
    """aiohttp's parser errors span lines and point with a caret: keep the words."""
    lines = [line.strip() for line in text.splitlines()]
    kept = " ".join(line for line in lines if line and set(line) != {"^"})
    return kept[:MAX_DETAIL]


class JsonErrorHandler(RequestHandler):
    """aiohttp's request handler, answering what it refuses with the JSON error body."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as aiohttp: a response is half-sent already
            raise ConnectionError("Response is sent already, cannot send another response")
        status, kind, text = describe(status, exc, message)
        if status >= 500:
            log.error("error handling a request from %s", request.remote, exc_info=exc)
        else:  # a client's mistake, not the service's: no traceback
            log.info("%s: refused before routing: %d %s", request.remote, status, text)
        return _refuse(status, kind, text)


class _JsonErrorServer(Server):
    def __call__(self) -> RequestHandler:
        return JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorRunner(web.AppRunner):
    """An AppRunner whose connections use JsonErrorHandler. aiohttp has no argument for the
    handler's class; the server it builds is given this subclass, which only changes the
    class of the handler each new connection gets."""

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer
        return server
