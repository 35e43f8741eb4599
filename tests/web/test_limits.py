"""Limits: request bodies, task inputs and results, tasks waiting to run (429); and jobs that
raise anything or return what cannot be stored end `failed` while the service serves on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient

from service.jobs import JobContext
from service.web import create_app
from tests.conftest import make_settings, wait_for, wait_status
from tests.web.test_bad_input import LiveServer, assert_error

BASE = "/graphs/hugegraph"
LATER = "3600"

# --- jobs that misbehave, registered through the `jobs` setting ---


class Loud(BaseException):
    """Not an Exception: what a careless job could raise."""


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message for you")


async def raise_base(ctx: JobContext) -> Any:
    raise Loud("from a BaseException")


async def raise_system_exit(ctx: JobContext) -> Any:
    raise SystemExit(3)


async def raise_keyboard_interrupt(ctx: JobContext) -> Any:
    raise KeyboardInterrupt


async def raise_generator_exit(ctx: JobContext) -> Any:
    raise GeneratorExit("closed")


async def raise_unprintable(ctx: JobContext) -> Any:
    raise Unprintable()


async def raise_not_utf8(ctx: JobContext) -> Any:
    raise ValueError("bad \udcff bytes")


async def raise_huge(ctx: JobContext) -> Any:
    raise ValueError("x" * 10_000_000)


def plain_system_exit(ctx: JobContext) -> Any:
    raise SystemExit("from a thread")


async def return_object(ctx: JobContext) -> Any:
    return object()


async def return_big_integer(ctx: JobContext) -> Any:
    return 2**80


async def return_surrogate(ctx: JobContext) -> Any:
    return "\ud800"


async def absurd_progress(ctx: JobContext) -> Any:
    ctx.progress(10**30)
    await asyncio.sleep(0)
    ctx.progress(-(10**30))
    return "done"


JOBS = {
    name: f"tests.web.test_limits:{name}"
    for name in (
        "raise_base", "raise_system_exit", "raise_keyboard_interrupt", "raise_generator_exit",
        "raise_unprintable", "raise_not_utf8", "raise_huge", "plain_system_exit",
        "return_object", "return_big_integer", "return_surrogate", "absurd_progress",
    )
}  # fmt: skip


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path, any_db: Path | str) -> TestClient:
    """On both stores: what a job returns or a caller sends over a limit is refused the same
    way on each."""
    settings = make_settings(
        tmp_path,
        any_db,
        jobs=JOBS,
        max_result_bytes=1000,
        max_input_bytes=2000,
        max_body_bytes=4096,
    )
    return await aiohttp_client(create_app(settings))


async def submit(client: TestClient, job: str, body: Any = None, **query: str) -> int:
    response = await client.post(f"{BASE}/jobs/{job}", data=orjson.dumps(body or {}), params=query)
    assert response.status == 201, await response.text()
    return int((await response.json())["task_id"])


async def task_ids(client: TestClient) -> list[int]:
    response = await client.get(f"{BASE}/tasks", params={"limit": "-1"})
    return [t["id"] for t in (await response.json())["tasks"]]


async def error_message(response: Any, status: int) -> str:
    assert response.status == status, await response.text()
    body = await response.json()
    assert set(body) == {"exception", "message", "cause"}
    return str(body["message"])


# --- bodies and inputs ---


async def test_a_body_over_the_limit_is_a_413_and_nothing_is_stored(client: TestClient) -> None:
    body = orjson.dumps({"pad": "x" * 5000})
    message = await error_message(await client.post(f"{BASE}/jobs/echo", data=body), 413)
    assert message == f"The request body is {len(body)} bytes; the limit is 4096 bytes"
    assert await task_ids(client) == []


async def test_a_chunked_body_over_the_limit_is_a_413(client: TestClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"pad": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    response = await client.post(f"{BASE}/jobs/echo", data=chunks())
    assert "the limit is 4096 bytes" in await error_message(response, 413)
    assert await task_ids(client) == []


async def test_an_input_over_the_limit_is_a_413(client: TestClient) -> None:
    body = {"pad": "x" * 3000}  # under the body limit, over the input limit
    message = await error_message(
        await client.post(f"{BASE}/jobs/echo", data=orjson.dumps(body)), 413
    )
    assert (
        message
        == f"The task input is {len(orjson.dumps(body))} bytes of JSON; the limit is 2000 bytes (max_input_bytes)"
    )
    gremlin = {"gremlin": "g.V()", "bindings": {"pad": "x" * 3000}}
    response = await client.post(f"{BASE}/jobs/gremlin", data=orjson.dumps(gremlin))
    assert "max_input_bytes" in await error_message(response, 413)
    assert await task_ids(client) == []


async def test_an_input_at_the_limit_is_taken(client: TestClient) -> None:
    pad = 2000 - len(orjson.dumps({"pad": ""}))
    task_id = await submit(client, "echo", {"pad": "x" * pad}, delay=LATER)
    assert await task_ids(client) == [task_id]


# --- results and failures ---


async def test_a_result_over_the_limit_fails_the_task_saying_so(client: TestClient) -> None:
    task_id = await submit(client, "echo", {"pad": "x" * 1500})
    task = await wait_status(client, BASE, task_id, "failed")
    expected = len(orjson.dumps({"pad": "x" * 1500}))
    assert (
        task["task_result"]
        == f"The job's result is {expected} bytes of JSON, over the limit of 1000 bytes (max_result_bytes)"
    )


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        ("raise_base", "Loud: from a BaseException"),
        ("raise_system_exit", "SystemExit: 3"),
        ("raise_keyboard_interrupt", "KeyboardInterrupt: "),
        ("raise_generator_exit", "GeneratorExit: closed"),
        ("raise_unprintable", "Unprintable: (its message could not be read)"),
        ("raise_not_utf8", "ValueError: bad ? bytes"),
        ("plain_system_exit", "SystemExit: from a thread"),
        (
            "return_object",
            "The job's result is not JSON-serialisable: Type is not JSON serializable: object",
        ),
        (
            "return_big_integer",
            "The job's result is not JSON-serialisable: Integer exceeds 64-bit range",
        ),
        (
            "return_surrogate",
            "The job's result is not JSON-serialisable: str is not valid UTF-8: surrogates not allowed",
        ),
    ],
)
async def test_a_job_that_raises_anything_or_returns_what_cannot_be_stored_fails_clearly(
    client: TestClient, job: str, expected: str
) -> None:
    task_id = await submit(client, job)
    task = await wait_status(client, BASE, task_id, "failed")
    assert task["task_result"] == expected
    # the service serves on and runs the next task
    after = await submit(client, "echo", {"next": True})
    assert (await wait_status(client, BASE, after, "success"))["task_result"] == '{"next":true}'


async def test_an_error_message_of_megabytes_is_cut(client: TestClient) -> None:
    task_id = await submit(client, "raise_huge")
    result = (await wait_status(client, BASE, task_id, "failed"))["task_result"]
    assert result.startswith("ValueError: xxx")
    assert result.endswith(" …(cut)")
    assert len(result) < 2000  # within max_result_bytes, with the marker


async def test_absurd_progress_is_kept_within_64_bits(client: TestClient) -> None:
    task_id = await submit(client, "absurd_progress")
    task = await wait_status(client, BASE, task_id, "success")
    assert task["task_progress"] == -(2**63)


# --- tasks waiting to run ---


async def test_past_max_waiting_a_submission_is_a_429_with_retry_after(
    aiohttp_client: Any, tmp_path: Path, any_db: Path | str
) -> None:
    client = await aiohttp_client(create_app(make_settings(tmp_path, any_db, max_waiting=3)))
    accepted = []
    for _ in range(3):
        accepted.append(await submit(client, "echo", delay=LATER))
    response = await client.post(f"{BASE}/jobs/echo", data=b"{}", params={"delay": LATER})
    message = await error_message(response, 429)
    assert message == "3 tasks are waiting to run, the limit is 3 (max_waiting); retry later"
    assert response.headers["Retry-After"] == "1"
    assert (await response.json())["exception"] == "TooManyRequestsException"
    # the gremlin route is admitted the same way
    response = await client.post(f"{BASE}/jobs/gremlin", data=b'{"gremlin": "g"}')
    await error_message(response, 429)
    assert await task_ids(client) == accepted

    # a waiting task that goes (cancelled, paused) makes room for one more
    assert (
        await client.put(f"{BASE}/tasks/{accepted[0]}", params={"action": "cancel"})
    ).status == 202

    async def admitted() -> int | None:
        response = await client.post(f"{BASE}/jobs/echo", data=b"{}", params={"delay": LATER})
        return int((await response.json())["task_id"]) if response.status == 201 else None

    fourth = await wait_for(admitted, 10, "a submission to be admitted again")
    assert await task_ids(client) == [*accepted, fourth]


async def test_a_burst_of_submissions_does_not_slip_past_max_waiting(
    server_factory: Any, tmp_path: Path, http: ClientSession, any_db: Path | str
) -> None:
    config_file = tmp_path / "limited.toml"
    config_file.write_text(
        (Path(__file__).parents[2] / "config" / "test.toml").read_text() + "\nmax_waiting = 20\n"
    )
    server = server_factory(any_db, config_file=config_file)
    await server.wait_ready()

    async def one() -> int:
        async with http.post(
            f"{server.url}{BASE}/jobs/echo", data=b"{}", params={"delay": LATER}
        ) as response:
            return response.status

    statuses = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(60))), 60)
    assert set(statuses) == {201, 429}
    assert statuses.count(201) <= 20
    async with http.get(f"{server.url}{BASE}/tasks", params={"limit": "-1"}) as response:
        assert len((await response.json())["tasks"]) == statuses.count(201)


async def test_max_waiting_0_admits_everything(
    aiohttp_client: Any, tmp_path: Path, any_db: Path | str
) -> None:
    client = await aiohttp_client(create_app(make_settings(tmp_path, any_db, max_waiting=0)))
    for _ in range(5):
        await submit(client, "echo", delay=LATER)
    assert len(await task_ids(client)) == 5


# --- headers, on a real server ---


async def test_max_header_bytes_is_the_limit_of_a_header(tmp_path: Path) -> None:
    server = LiveServer(make_settings(tmp_path, max_header_bytes=2048))
    await server.start()
    try:
        fits = await server.request("GET", "/health", headers={"X-Note": "a" * 1900})
        assert fits.status == 200
        answer = await server.request("GET", "/health", headers={"X-Note": "a" * 3000})
        assert_error(answer, 431, "A header field is longer than 2048 bytes")
    finally:
        await server.stop()


async def test_the_document_lists_413_414_415_429_and_431_where_they_can_happen(
    client: TestClient,
) -> None:
    from tests.web.test_openapi import operations

    document = await (await client.get("/openapi.json")).json()
    for (method, path), operation in operations(document).items():
        codes = set(operation["responses"])
        if "requestBody" in operation:
            assert {"413", "415"} <= codes, f"{method} {path}"
        if path.endswith(("/jobs/{type}", "/jobs/gremlin")):
            assert "429" in codes, f"{method} {path}"
            assert "Retry-After" in operation["responses"]["429"]["headers"]
        places = {p["in"] for p in operation["parameters"]}
        if places & {"query", "path"}:
            assert "414" in codes, f"{method} {path}"
        if "header" in places:
            assert "431" in codes, f"{method} {path}"


# --- event streams that end by themselves ---


async def test_a_live_stream_ends_after_sse_max_seconds_and_resumes_without_a_gap(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    from tests.sse import SSEReader

    client = await aiohttp_client(create_app(make_settings(tmp_path, sse_max_seconds=0.2)))
    stream = await client.get(f"{BASE}/events")
    first = await SSEReader(stream).collect(timeout=10)  # returns once the server ends it
    assert first == []
    task_id = await submit(client, "echo", delay=LATER)
    again = await client.get(f"{BASE}/events", headers={"Last-Event-ID": "0"})
    events = await SSEReader(again).collect(timeout=10)
    assert [(e.event, e.json["id"]) for e in events] == [("task.created", task_id)]


async def test_an_external_workers_result_over_the_limit_is_a_413_and_the_task_stays_its(
    aiohttp_client: Any, tmp_path: Path, any_db: Path | str
) -> None:
    settings = make_settings(tmp_path, any_db, external_types=("remote",), max_result_bytes=100)
    client = await aiohttp_client(create_app(settings))
    task_id = await submit(client, "remote")
    claimed = await client.post("/workers/w1/claim", params={"wait": "5"})
    assert claimed.status == 200, await claimed.text()
    lease = (await claimed.json())["lease"]
    url = f"{BASE}/tasks/{task_id}/complete"
    response = await client.post(
        url, data=orjson.dumps({"result": "x" * 200}), headers={"X-Lease": lease}
    )
    message = await error_message(response, 413)
    assert message == "The result is 202 bytes of JSON; the limit is 100 bytes (max_result_bytes)"
    # the lease still holds: a result within the limit completes the task
    response = await client.post(
        url, data=orjson.dumps({"result": "ok"}), headers={"X-Lease": lease}
    )
    assert response.status == 200, await response.text()
    assert (await response.json())["task_result"] == '"ok"'
