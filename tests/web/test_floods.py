"""Floods (README, "Access and limits"): the bound on credential checks and the throttle of
addresses that fail too often, the connection cap, the timeout on slow request headers, and
one log line per interval when accept runs out of descriptors."""

from __future__ import annotations

import asyncio
import base64
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from service import auth
from service.config import Settings
from service.web import create_app
from service.web.limits import JsonErrorRunner
from tests.conftest import ROOT, free_port, make_settings, wait_for

PASSWORD = "flood-proof"
JSON_TYPE = "application/json;charset=UTF-8"


def basic(password: str, padding: int = 0) -> dict[str, str]:
    """Basic credentials of the user `u`; `padding` spaces make a header the server has not
    seen (and so has not remembered) with the same credentials."""
    encoded = base64.b64encode(f"u:{password}".encode()).decode()
    return {"Authorization": "Basic " + " " * padding + encoded}


class Served:
    """The app served by JsonErrorRunner on a free loopback port, in this process, as
    `sidetask serve` serves it (its connection cap and header timeout included)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runner = JsonErrorRunner(
            create_app(settings),
            access_log=None,
            shutdown_timeout=2,
            max_connections=settings.max_connections,
            header_timeout=settings.header_timeout,
        )
        self.url = ""
        self.port = 0
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{self.port}"

    def session(self, address: str = "127.0.0.1") -> aiohttp.ClientSession:
        """A client whose connections come from `address` (any of 127.0.0.0/8)."""
        if address not in self._sessions:
            connector = aiohttp.TCPConnector(limit=0, local_addr=(address, 0), force_close=True)
            self._sessions[address] = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=30)
            )
        return self._sessions[address]

    async def get(
        self, headers: dict[str, str], address: str = "127.0.0.1"
    ) -> tuple[int, dict[str, str], Any]:
        async with self.session(address).get(self.url + "/graphs", headers=headers) as response:
            body = await response.read()
            return response.status, dict(response.headers), orjson.loads(body)

    async def stop(self) -> None:
        for session in self._sessions.values():
            await session.close()
        await self.runner.cleanup()


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[Served] = []

    async def start(iterations: int = 1000, **overrides: Any) -> Served:
        users = {"u": auth.hash_password(PASSWORD, iterations)} if iterations else {}
        served = Served(make_settings(tmp_path, users=users, **overrides))
        await served.start()
        started.append(served)
        return served

    yield start
    for served in started:
        await served.stop()


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The password checks the service runs, as they run (the real check, counted)."""
    seen: list[str] = []
    real = auth.verify

    def counted(secret: str, stored: auth.ParsedHash) -> bool:
        seen.append(secret)
        return real(secret, stored)

    monkeypatch.setattr(auth, "verify", counted)
    return seen


def assert_refusal(status: int, headers: dict[str, str], body: Any, expected: int) -> int:
    assert status == expected, body
    assert headers["Content-Type"] == JSON_TYPE
    assert set(body) == {"exception", "message", "cause"}
    retry_after = int(headers["Retry-After"])
    assert retry_after >= 1
    return retry_after


# --- the throttle ---


async def test_an_address_that_failed_too_often_gets_429_without_a_check(
    serve: Callable[..., Any], checks: list[str]
) -> None:
    served = await serve(auth_max_failures=3, auth_failure_window=600)
    cached = basic(PASSWORD)
    assert (await served.get(cached))[0] == 200  # remembered from now on
    for attempt in range(3):
        assert (await served.get(basic(f"wrong {attempt}")))[0] == 401
    checked = len(checks)

    status, headers, body = await served.get(basic("wrong again"))
    assert assert_refusal(status, headers, body, 429) <= 600
    assert body["exception"] == "TooManyRequestsException"
    assert "Too many failed logins from this address" in body["message"]
    # A correct password the service has not seen is refused too, unchecked: a guess that
    # is right must not be told apart from a wrong one.
    assert (await served.get(basic(PASSWORD, padding=1)))[0] == 429
    assert len(checks) == checked
    # The header this address verified before is still served, and at once.
    assert (await served.get(cached))[0] == 200
    # Another address is not concerned.
    assert (await served.get(basic(PASSWORD, padding=2), "127.0.0.2"))[0] == 200


async def test_a_throttled_address_cannot_try_guesses_against_remembered_headers(
    serve: Callable[..., Any],
) -> None:
    served = await serve(auth_max_failures=2, auth_failure_window=600)
    theirs = basic(PASSWORD)
    assert (await served.get(theirs, "127.0.0.1"))[0] == 200  # remembered, from 127.0.0.1
    for attempt in range(2):
        assert (await served.get(basic(f"guess {attempt}"), "127.0.0.2"))[0] == 401
    # 127.0.0.2 is throttled: the remembered header, which it never verified, is a 429
    # there, as a wrong guess is (else a hit would tell it the password, for free)
    assert (await served.get(theirs, "127.0.0.2"))[0] == 429
    assert (await served.get(basic("guess 3"), "127.0.0.2"))[0] == 429
    assert (await served.get(theirs, "127.0.0.1"))[0] == 200


async def test_failures_are_forgotten_when_the_window_ends(serve: Callable[..., Any]) -> None:
    served = await serve(auth_max_failures=1, auth_failure_window=0.2)
    assert (await served.get(basic("wrong")))[0] == 401
    # the window may have ended already on a slow machine: then this is a 401 again
    assert (await served.get(basic("wrong")))[0] in (401, 429)

    async def admitted() -> bool:
        return (await served.get(basic(PASSWORD, padding=3)))[0] == 200

    await wait_for(admitted, 10, "the window to end")


# --- the bound on checks ---


async def flood(
    served: Served, count: int, address: str
) -> list[asyncio.Task[tuple[int, dict[str, str], Any]]]:
    return [asyncio.create_task(served.get(basic(f"wrong {i}"), address)) for i in range(count)]


async def first_503(tasks: list[asyncio.Task[tuple[int, dict[str, str], Any]]]) -> None:
    for next_done in asyncio.as_completed(tasks, timeout=30):
        if (await next_done)[0] == 503:
            return
    raise AssertionError("no check of the flood was refused with 503")


async def test_checks_past_the_queue_get_503_and_a_remembered_login_is_served_meanwhile(
    serve: Callable[..., Any],
) -> None:
    # the shipped iterations: each check takes long enough for the flood to queue
    served = await serve(
        iterations=auth.DEFAULT_ITERATIONS, auth_threads=1, auth_queue=2, auth_max_failures=0
    )
    cached = basic(PASSWORD)
    assert (await served.get(cached))[0] == 200
    tasks = await flood(served, 12, "127.0.0.2")
    await first_503(tasks)
    assert (await served.get(cached))[0] == 200  # no wait behind the queue
    answers = await asyncio.gather(*tasks)
    statuses = sorted(status for status, _, _ in answers)
    assert set(statuses) == {401, 503}, statuses
    refused = next(a for a in answers if a[0] == 503)
    assert_refusal(*refused, 503)
    assert refused[2]["exception"] == "ServiceUnavailableException"
    assert "Too many credential checks are waiting" in refused[2]["message"]


async def test_a_new_login_from_a_quiet_address_goes_ahead_of_a_flood(
    serve: Callable[..., Any],
) -> None:
    served = await serve(
        iterations=auth.DEFAULT_ITERATIONS, auth_threads=1, auth_queue=2, auth_max_failures=0
    )
    tasks = await flood(served, 12, "127.0.0.2")
    await first_503(tasks)  # the queue is full of the flood's checks
    status, _, body = await served.get(basic(PASSWORD), "127.0.0.3")
    assert status == 200, body
    await asyncio.gather(*tasks)


# --- connections ---


async def read_all(reader: asyncio.StreamReader, within: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection."""
    async with asyncio.timeout(within):
        return await reader.read()


def parse(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    return int(lines[0].split()[1]), headers, orjson.loads(body)


async def test_connections_past_max_connections_get_a_quick_503_and_are_closed(
    serve: Callable[..., Any],
) -> None:
    served = await serve(iterations=0, max_connections=3, header_timeout=0)
    held = [await asyncio.open_connection("127.0.0.1", served.port) for _ in range(3)]
    try:

        async def refused() -> tuple[int, dict[str, str], Any] | None:
            reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
            writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = parse(await read_all(reader))  # and the server closed it
            writer.close()
            return answer if answer[0] == 503 else None

        status, headers, body = await wait_for(refused, 10, "a connection past the cap")
        assert_refusal(status, headers, body, 503)
        assert headers["Connection"] == "close"
        assert "max_connections" in body["message"]
    finally:
        for _, writer in held:
            writer.close()

    async def served_again() -> bool:
        async with (
            aiohttp.ClientSession() as session,
            session.get(served.url + "/health") as response,
        ):
            return response.status == 200

    await wait_for(served_again, 10, "a connection to be served once the held ones closed")


async def test_a_connection_whose_request_line_stalls_is_closed(serve: Callable[..., Any]) -> None:
    served = await serve(iterations=0, header_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(b"GET /hea")  # and nothing more
    status, _, body = parse(await read_all(reader))
    writer.close()
    assert status == 408
    assert body["exception"] == "RequestTimeoutException"
    assert "header_timeout" in body["message"]


async def test_a_kept_alive_connection_has_the_same_time_for_its_next_request(
    serve: Callable[..., Any],
) -> None:
    served = await serve(iterations=0, header_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
    assert head.startswith(b"HTTP/1.1 200")
    writer.write(b"GET /health HTTP/1.1\r\nHost:")  # the next one stalls in its headers
    status, _, _ = parse(await read_all(reader))
    writer.close()
    assert status == 408


# --- out of descriptors ---

#: a server with 64 descriptors, reporting an exhausted resource at most every second
LOW_LIMIT_SERVER = (
    "import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)); "
    "import service.server as server; server.RESOURCE_LOG_INTERVAL = 1.0; "
    "from service.cli import main; sys.exit(main(sys.argv[1:]))"
)


def start_low_limit_server(tmp_path: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    config = tmp_path / "low.toml"
    config.write_text("max_connections = 0\n")  # no cap: the descriptors run out first
    argv = ["serve", "--port", str(port), "--db", str(tmp_path / "db"), "--config", str(config)]
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", LOW_LIMIT_SERVER, *argv],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_running_out_of_descriptors_at_accept_is_logged_once_per_interval(
    tmp_path: Path,
) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    proc = start_low_limit_server(tmp_path, port, log)
    held: list[socket.socket] = []
    try:

        async def ready() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"http://127.0.0.1:{port}/ready") as r,
                ):
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for(ready, 20, "the server to be ready")
        for _ in range(100):  # more than it has descriptors for; the kernel queues the rest
            held.append(socket.create_connection(("127.0.0.1", port), timeout=5))

        async def second_report() -> bool:
            return "more since the last report" in log.read_text()

        await wait_for(second_report, 20, "a second report of the exhausted descriptors")
        text = log.read_text()
        lines = [line for line in text.splitlines() if "out of system resource" in line]
        assert "Too many open files" in lines[0]
        assert "Traceback" not in text
        # far more failed accepts than lines: each report after the first counts the others
        unlogged = sum(int(line.split(" more since")[0].rsplit("(", 1)[1]) for line in lines[1:])
        assert unlogged > len(lines)
    finally:
        for sock in held:
            sock.close()
    try:
        await wait_for(ready, 20, "the server to serve again once the connections closed")
    finally:
        proc.terminate()
        proc.wait(30)
