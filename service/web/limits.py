"""Limits and bad input at the edge: request bodies, headers, encodings and content types,
and the requests aiohttp refuses before any route or middleware sees them.

Two layers:

- `limits_refusal` runs for every routed request, before authentication: a body whose
  declared length is over `max_body_bytes` (413, at once, without reading it), a
  Content-Encoding that cannot be decoded or a Content-Type that is not JSON (415), header
  values or a query string that are not UTF-8 (400). Each answer is the JSON error body.
- `JsonErrorRunner` serves the app with a request handler whose `handle_error` writes the
  same JSON error body. aiohttp calls it for what its HTTP parser refuses — a malformed
  request line, bad chunked encoding, a header over `max_header_bytes`, too many headers, a
  Content-Encoding it has no decoder for — which otherwise gets a text/plain 400.

The same handler guards the connections themselves (README, "Access and limits"):

- past `max_connections` open ones, a new connection is answered at once — a 503 with the
  JSON error body and `Retry-After`, written before its request is read — and closed
  (after the client's end, or a second), so a flood of connections cannot use up the
  process's descriptors;
- a connection has `header_timeout` seconds to send a request's line and headers, counted
  from its start and, on a kept-alive connection, from the next request's first byte; then
  it gets a 408 and is closed (a slowloris client holds nothing for long). aiohttp has no
  such timer; a kept-alive connection that sends nothing is closed after its
  keepalive_timeout, as before.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from .responses import JSON_CONTENT_TYPE, error_body, error_response

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
#: what a connection refused past max_connections is told to wait, in seconds
CONNECTION_RETRY_AFTER = 1
#: how long a refused connection is kept, its answer sent, for the client to close first
#: (closing with its request unread could reset the connection before the answer is read)
REFUSED_LINGER = 1.0
#: at most one log line per this many seconds about refused or timed-out connections
CONNECTION_LOG_INTERVAL = 10.0


class Occasional:
    """One of many alike log lines per `interval` seconds: a flood of connections must not
    become a flood of log lines. `due()` says whether to log now, and how many were not."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._next = float("-inf")
        self._unlogged = 0

    def due(self) -> int | None:
        """None: do not log (counted); else the number of lines left out since the last."""
        now = self._clock()
        if now < self._next:
            self._unlogged += 1
            return None
        unlogged, self._unlogged = self._unlogged, 0
        self._next = now + self.interval
        return unlogged


def _more(unlogged: int) -> str:
    return f" ({unlogged} more since the last such line)" if unlogged else ""


def _refuse(status: int, kind: str, message: str) -> web.Response:
    response = error_response(status, kind, message)
    # The body (or the rest of the request) is unread: the connection cannot be reused.
    response.force_close()
    return response


#: the methods whose bodies the routes read
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _declares_body(request: web.Request) -> bool:
    return request.body_exists or "Transfer-Encoding" in request.headers


def _undecodable_header(request: web.Request) -> str | None:
    for name, value in request.headers.items():
        if _UNDECODABLE.search(name) or _UNDECODABLE.search(value):
            shown = name.encode("utf-8", "backslashreplace").decode()
            return f"The header '{shown}' is not valid UTF-8"
    return None


def check_headers(request: web.Request) -> str | None:
    """What is wrong with the headers or the query string as text, if anything."""
    # Nearly every request's headers are ASCII: one check in C of all their bytes at once
    if not b"".join(itertools.chain.from_iterable(request.raw_headers)).isascii():
        problem = _undecodable_header(request)
        if problem is not None:
            return problem
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


def limits_refusal(request: web.Request) -> web.Response | None:
    """The answer to a request whose headers, query or declared body cannot be taken, or
    None when it may go on (run by service.web.access's middleware, before authentication)."""
    problem = check_headers(request)
    if problem is not None:
        return _refuse(400, "IllegalArgumentException", problem)
    if _declares_body(request):
        refused = check_body_headers(request)
        if refused is not None:
            return _refuse(*refused)
    return None


# --- what aiohttp refuses before routing ---


def describe(status: int, exc: BaseException | None, message: str | None) -> tuple[int, str, str]:
    """(status, kind, message) of the JSON answer to a request aiohttp could not handle."""
    if status >= 500 or not isinstance(exc, HttpProcessingError):
        if status == 504:
            return 500, "ServerError", "Internal server error: the request timed out"
        return 500, "ServerError", "Internal server error"
    detail = _one_line(exc.message or message or "")
    if isinstance(exc, ContentEncodingError):
        return (
            415,
            "NotSupportedException",
            f"The request's Content-Encoding can't be decoded: {detail}",
        )
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


def raw_response(
    status: int, reason: str, kind: str, message: str, headers: dict[str, str] | None = None
) -> bytes:
    """A whole HTTP/1.1 answer with the JSON error body, closing the connection, as bytes
    for a transport that has no request to answer through aiohttp."""
    body = orjson.dumps(error_body(kind, message))
    lines = [
        f"HTTP/1.1 {status} {reason}",
        f"Content-Type: {JSON_CONTENT_TYPE}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class JsonErrorHandler(RequestHandler):
    """aiohttp's request handler, answering what it refuses with the JSON error body, and
    refusing connections past the cap and requests whose headers come too slowly."""

    #: a connection past max_connections: answered and closed, never served
    _refused = False
    #: counted in the server's open connections
    _counted = False
    #: when the request's line and headers must be in (loop time); None: none awaited
    _headers_deadline: float | None = None
    #: the timer checking it, due at or before it: a request whose headers arrive leaves
    #: it running and the next one moves the deadline, so a kept-alive connection sets a
    #: timer once per header_timeout rather than once per request
    _headers_due: asyncio.TimerHandle | None = None
    _linger: asyncio.TimerHandle | None = None
    _refused_transport: asyncio.Transport

    def __init__(self, manager: _JsonErrorServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        # aiohttp drops its own reference (_manager) when the connection is lost
        self._server = manager

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = self._server
        if server.max_connections and server.open >= server.max_connections:
            self._refuse_connection(transport)  # type: ignore[arg-type]
            return
        server.open += 1
        self._counted = True
        super().connection_made(transport)
        self._arm_header_timer()

    def _refuse_connection(self, transport: asyncio.Transport) -> None:
        self._refused = True
        unlogged = self._server.refusals.due()
        if unlogged is not None:
            log.warning(
                "%s: connection refused: %d connections are open (max_connections)%s",
                _peer(transport),
                self._server.open,
                _more(unlogged),
            )
        transport.write(
            raw_response(
                503,
                "Service Unavailable",
                "ServiceUnavailableException",
                f"Too many connections: {self._server.max_connections} are open (max_connections); "
                "retry after Retry-After seconds",
                {"Retry-After": str(CONNECTION_RETRY_AFTER)},
            )
        )
        if transport.can_write_eof():
            transport.write_eof()
        self._linger = self._loop.call_later(REFUSED_LINGER, transport.abort)
        self._refused_transport = transport

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # the request is not read: its answer went out already
        if self._headers_deadline is None and self._awaiting_request():
            self._arm_header_timer()  # the first byte of the next request on a kept-alive connection
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:  # a request's headers are in (or a refusal of them)
            self._disarm_header_timer()

    def eof_received(self) -> None:
        if self._refused:
            self._refused_transport.close()  # the client has closed its end: its answer is read
            return
        super().eof_received()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            if self._linger is not None:
                self._linger.cancel()
            return
        if self._counted:
            self._counted = False
            self._server.open -= 1
        self._headers_deadline = None
        if self._headers_due is not None:
            self._headers_due.cancel()
            self._headers_due = None
        super().connection_lost(exc)

    def _awaiting_request(self) -> bool:
        """Whether the connection is idle between requests (aiohttp waits for the next)."""
        waiter = self._waiter
        return waiter is not None and not waiter.done() and not self._messages

    def _arm_header_timer(self) -> None:
        timeout = self._server.header_timeout
        if timeout > 0:
            self._headers_deadline = deadline = self._loop.time() + timeout
            if self._headers_due is None:
                self._headers_due = self._loop.call_at(deadline, self._check_headers)

    def _disarm_header_timer(self) -> None:
        self._headers_deadline = None  # the timer finds no deadline, or a later one

    def _check_headers(self) -> None:
        self._headers_due = None
        deadline = self._headers_deadline
        if deadline is None:
            return
        if self._loop.time() < deadline:  # a later request's: wait for that
            self._headers_due = self._loop.call_at(deadline, self._check_headers)
            return
        self._headers_deadline = None
        self._headers_too_slow()

    def _headers_too_slow(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        timeout = self._server.header_timeout
        unlogged = self._server.timeouts.due()
        if unlogged is not None:
            log.info(
                "%s: closed: the request's headers did not all arrive in %g s%s",
                _peer(transport),
                timeout,
                _more(unlogged),
            )
        transport.write(
            raw_response(
                408,
                "Request Timeout",
                "RequestTimeoutException",
                f"The request line and headers did not all arrive within {timeout:g} s (header_timeout)",
            )
        )
        self.force_close()

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


def _peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"


class _JsonErrorServer(Server):
    #: set by JsonErrorRunner; 0: no cap, no timer
    max_connections = 0
    header_timeout = 0.0
    #: connections served now (refused ones are not counted)
    open = 0
    refusals: Occasional
    timeouts: Occasional

    def __call__(self) -> RequestHandler:
        return JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorRunner(web.AppRunner):
    """An AppRunner whose connections use JsonErrorHandler, capped at `max_connections`
    (0: no cap) and given `header_timeout` seconds for a request's headers (0: no limit).
    aiohttp has no argument for the handler's class; the server it builds is given this
    subclass, which only changes the class of the handler each new connection gets."""

    def __init__(
        self,
        app: web.Application,
        *,
        max_connections: int = 0,
        header_timeout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self.max_connections = max_connections
        self.header_timeout = header_timeout

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer
        assert isinstance(server, _JsonErrorServer)
        server.max_connections = self.max_connections
        server.header_timeout = self.header_timeout
        server.refusals = Occasional(CONNECTION_LOG_INTERVAL)
        server.timeouts = Occasional(CONNECTION_LOG_INTERVAL)
        return server
