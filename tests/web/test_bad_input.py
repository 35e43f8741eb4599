"""Malformed input of every kind gets a 4xx with HugeGraph's JSON error body and a message
that says what was wrong; never a 5xx, never a partial write; the service serves on.

The requests are written byte by byte to a real server on loopback, run with the same
runner as `sidetask serve`, so what aiohttp's HTTP parser refuses before any route is seen
too (README, "Access and limits")."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from aiohttp import web

from service.config import Settings
from service.web import create_app
from service.web.limits import JsonErrorRunner
from tests.conftest import make_settings


@pytest.fixture
def db(any_db: Path | str) -> Path | str:
    """Every test here runs on both stores."""
    return any_db


JSON_TYPE = b"application/json;charset=UTF-8"
BASE = "/graphs/hugegraph"
LATER = "3600"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


class LiveServer:
    """The app served by JsonErrorRunner on a free loopback port, in this process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        self.runner = JsonErrorRunner(self.app, access_log=None, shutdown_timeout=2)
        self.port = 0

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def raw(self, data: bytes, within: float = 10) -> Answer:
        """Sends `data` as is and reads one answer (the server closes or it is complete)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(data)
            await writer.drain()
            async with asyncio.timeout(within):
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                status = int(lines[0].split()[1])
                headers = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                if "content-length" in headers:
                    body = await reader.readexactly(int(headers["content-length"]))
                elif headers.get("transfer-encoding") == "chunked":
                    body = await _read_chunked(reader)
                else:
                    body = await reader.read()
            return Answer(status, headers, body)
        finally:
            writer.close()
            await writer.wait_closed()

    async def request(
        self, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> Answer:
        lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
        given = {"Content-Length": str(len(body))} if body else {}
        given.update(headers or {})
        lines += [f"{name}: {value}" for name, value in given.items()]
        return await self.raw(
            "\r\n".join(lines).encode("utf-8", "surrogateescape") + b"\r\n\r\n" + body
        )

    async def task_count(self) -> int:
        total = 0
        for graph in self.settings.graph_refs():
            answer = await self.request(
                "GET", f"/graphspaces/{graph.graphspace}/graphs/{graph.graph}/tasks?limit=-1"
            )
            assert answer.status == 200
            total += len(answer.json["tasks"])
        return total

    async def stop(self) -> None:
        await self.runner.cleanup()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = b""
    while True:
        size = int((await reader.readline()).strip(), 16)
        if size == 0:
            await reader.readline()
            return body
        body += await reader.readexactly(size)
        await reader.readline()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[LiveServer]:
    live = LiveServer(make_settings(tmp_path, external_types=("remote",)))
    await live.start()
    yield live
    await live.stop()


def assert_error(answer: Answer, status: int, *fragments: str) -> str:
    assert answer.status == status, answer
    assert answer.headers["content-type"].encode() == JSON_TYPE, answer
    body = answer.json
    assert list(body) == ["exception", "message", "cause"], body
    message = str(body["message"])
    assert message, body
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# --- what aiohttp's parser refuses, before any route: the same JSON body ---

PROTOCOL_CASES = [
    ("a request line that is not HTTP", b"GARBAGE\r\n\r\n", 400, "not valid HTTP"),
    ("a method with a bad character", b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "not valid HTTP"),
    (
        "an HTTP version that does not exist",
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        400,
        "not valid HTTP",
    ),
    (
        "TLS sent to the plain port",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\r\n\r\n",
        400,
        "not valid HTTP",
    ),
    (
        "bytes that are not UTF-8 in the path",
        b"GET /graphs/\xff\xfe/tasks HTTP/1.1\r\nHost: x\r\n\r\n",
        400,
        "not valid HTTP",
    ),
    (
        "a NUL in a header",
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
        400,
        "not valid HTTP",
    ),
    (
        "a chunk size that is not hexadecimal",
        b"POST /graphs/hugegraph/jobs/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nabc\r\n0\r\n\r\n",
        400,
        "chunk",
    ),
    (
        "a Content-Length that is not a number",
        b"POST /graphs/hugegraph/jobs/echo HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
        400,
        "Content-Length",
    ),
    (
        "two Content-Lengths",
        b"POST /graphs/hugegraph/jobs/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        400,
        "Content-Length",
    ),
    (
        "Content-Length and chunked together",
        b"POST /graphs/hugegraph/jobs/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
        400,
        "Transfer-Encoding",
    ),
    (
        "a header longer than max_header_bytes",
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
        431,
        "A header field is longer than 8190 bytes",
    ),
    (
        "a request line longer than max_header_bytes",
        b"GET /health?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        414,
        "The request line is longer than 8190 bytes",
    ),
    (
        "too many headers",
        b"GET /health HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-H%d: 1\r\n" % i for i in range(200))
        + b"\r\n",
        431,
        "too many header fields",
    ),
    (
        "a Content-Encoding aiohttp cannot decode here (brotli is not installed)",
        b"POST /graphs/hugegraph/jobs/echo HTTP/1.1\r\nHost: x\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\n{}",
        415,
        "Content-Encoding can't be decoded",
    ),
]


@pytest.mark.parametrize(
    ("data", "status", "fragment"),
    [c[1:] for c in PROTOCOL_CASES],
    ids=[c[0] for c in PROTOCOL_CASES],
)
async def test_what_the_http_parser_refuses_gets_the_json_error_body(
    server: LiveServer, data: bytes, status: int, fragment: str
) -> None:
    answer = await server.raw(data)
    assert_error(answer, status, fragment)
    assert await server.task_count() == 0
    assert (await server.request("GET", "/health")).status == 200


# --- what the routes refuse ---

GREMLIN = f"{BASE}/jobs/gremlin"
ECHO = f"{BASE}/jobs/echo"

#: (what is wrong, method, target, body, headers, status, a fragment of the message)
ROUTE_CASES: list[tuple[str, str, str, bytes, dict[str, str], int, str]] = [
    # bodies
    ("JSON that does not parse", "POST", ECHO, b'{"a": ', {}, 400, "not valid JSON"),
    ("JSON with trailing content", "POST", ECHO, b'{"a": 1} {', {}, 400, "not valid JSON"),
    ("NaN, which JSON does not have", "POST", ECHO, b'{"a": NaN}', {}, 400, "not valid JSON"),
    ("a number beyond a double", "POST", ECHO, b'{"a": 1e999}', {}, 400, "infinity"),
    (
        "an integer beyond 64 bits",
        "POST",
        ECHO,
        b'{"a": 100000000000000000000000000}',
        {},
        400,
        "beyond 64 bits",
    ),
    (
        "a negative integer beyond 64 bits",
        "POST",
        GREMLIN,
        b'{"gremlin": "g", "bindings": {"x": -9223372036854775809}}',
        {},
        400,
        "beyond 64 bits",
    ),
    ("a lone surrogate escape", "POST", ECHO, b'{"a": "\\ud800"}', {}, 400, "surrogate"),
    ("bytes that are not UTF-8 in the body", "POST", ECHO, b'{"a": "\xff\xfe"}', {}, 400, "UTF-8"),
    ("a body that is an array", "POST", ECHO, b"[1, 2]", {}, 400, "must be a JSON object"),
    ("a body that is a string", "POST", ECHO, b'"text"', {}, 400, "must be a JSON object"),
    ("a gremlin body that is a number", "POST", GREMLIN, b"42", {}, 400, "must be a JSON object"),
    (
        "a gremlin script that is a number",
        "POST",
        GREMLIN,
        b'{"gremlin": 42}',
        {},
        400,
        "must be a string",
    ),
    (
        "gremlin bindings that are a list",
        "POST",
        GREMLIN,
        b'{"gremlin": "g", "bindings": [1]}',
        {},
        400,
        "bindings",
    ),
    (
        "gremlin bindings that are an empty list",
        "POST",
        GREMLIN,
        b'{"gremlin": "g", "bindings": []}',
        {},
        400,
        "bindings must be a JSON object",
    ),
    (
        "gremlin aliases that are false",
        "POST",
        GREMLIN,
        b'{"gremlin": "g", "aliases": false}',
        {},
        400,
        "aliases must be a JSON object",
    ),
    (
        "an empty status filter on a stream",
        "GET",
        f"{BASE}/events?status=",
        b"",
        {},
        400,
        "Invalid status ''",
    ),
    (
        "a gremlin language that is a number",
        "POST",
        GREMLIN,
        b'{"gremlin": "g", "language": 3}',
        {},
        400,
        "language",
    ),
    ("an empty gremlin body", "POST", GREMLIN, b"", {}, 400, "can't be empty"),
    (
        "a body nested too deeply",
        "POST",
        ECHO,
        b'{"a": ' + b"[" * 300 + b"]" * 300 + b"}",
        {},
        400,
        "nested too deeply",
    ),
    (
        "a body nested beyond the parser",
        "POST",
        ECHO,
        b"[" * 5000 + b"]" * 5000,
        {},
        400,
        "nested too deeply; at most 254",
    ),
    # content types and encodings
    (
        "a Content-Type that is not JSON",
        "POST",
        ECHO,
        b"{}",
        {"Content-Type": "text/html"},
        415,
        "Content-Type 'text/html'",
    ),
    (
        "a multipart form",
        "POST",
        ECHO,
        b"--x--",
        {"Content-Type": "multipart/form-data; boundary=x"},
        415,
        "multipart/form-data",
    ),
    (
        "a charset that is not UTF-8",
        "POST",
        ECHO,
        b"{}",
        {"Content-Type": "application/json; charset=latin-1"},
        415,
        "charset",
    ),
    (
        "an unknown Content-Encoding",
        "POST",
        ECHO,
        b"{}",
        {"Content-Encoding": "zzz"},
        415,
        "Content-Encoding 'zzz'",
    ),
    (
        "gzip that is not gzip",
        "POST",
        ECHO,
        b"not gzip",
        {"Content-Encoding": "gzip"},
        400,
        "can't be read",
    ),
    (
        "a Content-Length far over the limit",
        "POST",
        ECHO,
        b"",
        {"Content-Length": "99999999999"},
        413,
        "the limit is",
    ),
    # headers and query strings that are not UTF-8
    (
        "an Idempotency-Key that is not UTF-8",
        "POST",
        ECHO,
        b"{}",
        {"Idempotency-Key": "k\udcff"},
        400,
        "'Idempotency-Key' is not valid UTF-8",
    ),
    (
        "a User-Agent that is not UTF-8",
        "GET",
        f"{BASE}/tasks",
        b"",
        {"User-Agent": "\udcff\udcfe"},
        400,
        "'User-Agent' is not valid UTF-8",
    ),
    (
        "a query value that is not UTF-8",
        "POST",
        f"{ECHO}?name=%ff",
        b"{}",
        {},
        400,
        "'name' is not valid UTF-8",
    ),
    (
        "a Last-Event-ID that is not UTF-8",
        "GET",
        f"{BASE}/events",
        b"",
        {"Last-Event-ID": "\udcff"},
        400,
        "not valid UTF-8",
    ),
    # numbers and options
    ("a limit below -1", "GET", f"{BASE}/tasks?limit=-2", b"", {}, 400, "'limit' must be >= -1"),
    (
        "a limit that is a fraction",
        "GET",
        f"{BASE}/tasks?limit=1.5",
        b"",
        {},
        400,
        "'limit' must be an integer",
    ),
    (
        "an absurd limit",
        "GET",
        f"{BASE}/tasks?limit=99999999999999999999999",
        b"",
        {},
        400,
        "out of range",
    ),
    (
        "a limit in other digits",
        "GET",
        f"{BASE}/tasks?limit=%D9%A3",
        b"",
        {},
        400,
        "'limit' must be an integer",
    ),
    (
        "a limit of 0 while paging",
        "GET",
        f"{BASE}/tasks?limit=0&page=",
        b"",
        {},
        400,
        "'limit' must be >= 1 or -1",
    ),
    (
        "a status that does not exist",
        "GET",
        f"{BASE}/tasks?status=done",
        b"",
        {},
        400,
        "Invalid status 'done'",
    ),
    ("an id of 0", "GET", f"{BASE}/tasks?ids=0", b"", {}, 400, "'ids' must be >= 1"),
    (
        "an id that is a word",
        "GET",
        f"{BASE}/tasks?ids=seven",
        b"",
        {},
        400,
        "'ids' must be an integer",
    ),
    (
        "a page token that is garbage",
        "GET",
        f"{BASE}/tasks?page=%%%",
        b"",
        {},
        400,
        "Invalid page token",
    ),
    (
        "a task id beyond any id",
        "GET",
        f"{BASE}/tasks/99999999999999999999",
        b"",
        {},
        400,
        "Invalid task id",
    ),
    ("a negative task id", "GET", f"{BASE}/tasks/-1", b"", {}, 400, "Invalid task id"),
    ("a task id with a NUL", "GET", f"{BASE}/tasks/1%00", b"", {}, 400, "Invalid task id"),
    (
        "a priority beyond 32 bits",
        "POST",
        f"{ECHO}?priority=99999999999",
        b"{}",
        {},
        400,
        "'priority' must be <=",
    ),
    (
        "max_retries below 0",
        "POST",
        f"{ECHO}?max_retries=-1",
        b"{}",
        {},
        400,
        "'max_retries' must be >= 0",
    ),
    (
        "a timeout of infinity",
        "POST",
        f"{ECHO}?timeout=inf",
        b"{}",
        {},
        400,
        "'timeout' must be a number",
    ),
    ("a timeout of 0", "POST", f"{ECHO}?timeout=0", b"{}", {}, 400, "'timeout' must be > 0"),
    (
        "a delay beyond ten years",
        "POST",
        f"{ECHO}?delay=1e12",
        b"{}",
        {},
        400,
        "'delay' must be a finite number <=",
    ),
    ("a negative delay", "POST", f"{ECHO}?delay=-1", b"{}", {}, 400, "'delay' must be >= 0"),
    (
        "a name over 256 bytes",
        "POST",
        f"{ECHO}?name={quote('é' * 200)}",
        b"{}",
        {},
        400,
        "'name' must be at most 256",
    ),
    (
        "an Idempotency-Key over 255 characters",
        "POST",
        ECHO,
        b"{}",
        {"Idempotency-Key": "k" * 300},
        400,
        "Idempotency-Key",
    ),
    (
        "a Last-Event-ID in other digits",
        "GET",
        f"{BASE}/events",
        b"",
        {"Last-Event-ID": "\u0663"},
        400,
        "Invalid Last-Event-ID",
    ),
    (
        "a Last-Event-ID beyond any id",
        "GET",
        f"{BASE}/events",
        b"",
        {"Last-Event-ID": "9" * 40},
        400,
        "Invalid Last-Event-ID",
    ),
    (
        "a negative Last-Event-ID",
        "GET",
        f"{BASE}/events?last_event_id=-5",
        b"",
        {},
        400,
        "Invalid Last-Event-ID",
    ),
    (
        "a bad last_event_id beside a good header",
        "GET",
        f"{BASE}/events?last_event_id=x",
        b"",
        {"Last-Event-ID": "0"},
        400,
        "Invalid Last-Event-ID 'x'",
    ),
    (
        "a method the route does not have",
        "DELETE",
        f"{BASE}/tasks/counts",
        b"",
        {},
        405,
        "Method DELETE is not allowed for /graphs/hugegraph/tasks/counts; allowed: GET",
    ),
    (
        "force that is not a boolean",
        "DELETE",
        f"{BASE}/tasks/1?force=perhaps",
        b"",
        {},
        400,
        "'force' must be true or false",
    ),
    (
        "an action that does not exist",
        "PUT",
        f"{BASE}/tasks/1?action=explode",
        b"",
        {},
        400,
        "Not support action 'explode'",
    ),
    (
        "a job type that does not exist",
        "POST",
        f"{BASE}/jobs/nope",
        b"{}",
        {},
        400,
        "Job type 'nope' is not registered",
    ),
    (
        "a worker name with a slash in it",
        "POST",
        "/workers/a%2Fb/claim",
        b"",
        {},
        400,
        "Invalid worker name",
    ),
    (
        "a claim wait beyond 60 s",
        "POST",
        "/workers/w/claim?wait=61",
        b"",
        {},
        400,
        "'wait' must be a finite number <=",
    ),
    (
        "a progress that is not an integer",
        "PUT",
        f"{BASE}/tasks/1/progress",
        b'{"progress": "half"}',
        {"X-Lease": "x"},
        400,
        "'progress' must be an integer",
    ),
    (
        "a progress beyond 64 bits",
        "PUT",
        f"{BASE}/tasks/1/progress",
        b'{"progress": 1e300}',
        {"X-Lease": "x"},
        400,
        "'progress' must be an integer",
    ),
]


@pytest.mark.parametrize(
    ("method", "target", "body", "headers", "status", "fragment"),
    [c[1:] for c in ROUTE_CASES],
    ids=[c[0] for c in ROUTE_CASES],
)
async def test_bad_input_is_a_4xx_that_says_what_was_wrong(
    server: LiveServer,
    method: str,
    target: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    fragment: str,
) -> None:
    answer = await server.request(method, target, body, headers)
    assert_error(answer, status, fragment)
    assert await server.task_count() == 0, "a refused request wrote something"


async def test_the_service_serves_on_after_every_kind_of_bad_input(server: LiveServer) -> None:
    for _, data, _, _ in PROTOCOL_CASES:
        assert 400 <= (await server.raw(data)).status < 500
    for _, method, target, body, headers, _, _ in ROUTE_CASES:
        assert 400 <= (await server.request(method, target, body, headers)).status < 500
    answer = await server.request("POST", f"{ECHO}?delay={LATER}", b'{"still": "here"}')
    assert answer.status == 201, answer
    assert await server.task_count() == 1


@pytest.mark.parametrize(
    "content_type",
    [None, "application/json", "application/json; charset=utf-8", "application/vnd.api+json",
     "text/plain", "application/octet-stream", "application/x-www-form-urlencoded"],
)  # fmt: skip
async def test_json_is_read_from_the_content_types_clients_send_by_default(
    server: LiveServer, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    answer = await server.request("POST", f"{ECHO}?delay={LATER}", b'{"n": 1}', headers)
    assert answer.status == 201, answer


async def test_a_gzip_body_is_still_read(server: LiveServer) -> None:
    body = gzip.compress(b'{"zipped": true}')
    answer = await server.request(
        "POST", f"{ECHO}?delay={LATER}", body, {"Content-Encoding": "gzip"}
    )
    assert answer.status == 201, answer


async def test_a_large_integer_within_64_bits_and_long_digit_strings_are_kept(
    server: LiveServer,
) -> None:
    body = b'{"big": 9223372036854775807, "small": -9223372036854775808, "digits": "12345678901234567890123"}'
    answer = await server.request("POST", f"{ECHO}?delay={LATER}", body)
    assert answer.status == 201, answer
    task_id = answer.json["task_id"]
    task = (await server.request("GET", f"{BASE}/tasks/{task_id}")).json
    assert orjson.loads(task["task_input"]) == {
        "big": 9223372036854775807,
        "small": -9223372036854775808,
        "digits": "12345678901234567890123",
    }


async def test_text_that_is_not_utf8_in_a_request_does_not_break_json_logs(tmp_path: Path) -> None:
    """The access line quotes the path and the User-Agent; JSON logs must still be written."""
    import io

    from service import logs

    stream = io.StringIO()
    logs.configure("INFO", "json", stream)
    try:
        live = LiveServer(make_settings(tmp_path, log_format="json"))
        await live.start()
        try:
            answer = await live.request(
                "GET", f"{BASE}/tasks", headers={"User-Agent": "bad \udcff agent"}
            )
            assert_error(answer, 400, "'User-Agent' is not valid UTF-8")
            assert (await live.request("GET", "/health")).status == 200
        finally:
            await live.stop()
    finally:
        logs.configure("WARNING", "text")
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("status_code") == 400]
    assert access and access[0]["user_agent"] == "bad ? agent"
