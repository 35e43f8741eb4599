"""Creating tasks (SPEC 5): HugeGraph's gremlin job and every registered job type, over HTTP."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from service.config import Settings
from tests.conftest import get_task, make_settings, submit, wait_for, wait_status
from tests.sup_util import Start
from tests.web.test_tasks_api import LATER, assert_error, ids_of, list_tasks, ok_json

GREMLIN = "hugegraph.traversal().V()"


@pytest.fixture
def settings(tmp_path: Path, any_db: Path | str) -> Settings:
    """On both stores: every test of the job routes runs on SQLite and on PostgreSQL."""
    return make_settings(tmp_path, any_db)


async def post_gremlin(
    client: TestClient, base: str, body: Any = None, *, data: Any = None, **query: Any
) -> Any:
    if data is None and body is not None:
        data = orjson.dumps(body)
    return await client.post(f"{base}/jobs/gremlin", data=data, params=query)


# --- the gremlin job ---


async def test_gremlin_job_stores_hugegraphs_input(client: TestClient, base: str) -> None:
    body = {"gremlin": GREMLIN, "bindings": {}, "language": "gremlin-groovy", "aliases": {}}
    created = await ok_json(await post_gremlin(client, base, body), 201)
    assert list(created) == ["task_id"] and isinstance(created["task_id"], int)

    task = await get_task(client, base, created["task_id"])
    assert task["task_type"] == "gremlin"
    assert task["task_callable"] == "service.jobs.gremlin.run"
    assert task["task_name"] == GREMLIN
    # the body with the graph aliased, in HugeGraph's key order
    assert task["task_input"] == (
        '{"gremlin":"hugegraph.traversal().V()","bindings":{},"language":"gremlin-groovy",'
        '"aliases":{"hugegraph":"graph"}}'
    )


async def test_gremlin_job_fills_in_defaults_and_keeps_bindings(client: TestClient) -> None:
    base = "/graphspaces/gs1/graphs/other"
    created = await ok_json(
        await post_gremlin(client, base, {"bindings": {"n": 3}, "gremlin": "g.V().limit(n)"}), 201
    )
    task = await get_task(client, base, created["task_id"])
    assert orjson.loads(task["task_input"]) == {
        "gremlin": "g.V().limit(n)",
        "bindings": {"n": 3},
        "language": "gremlin-groovy",
        "aliases": {"other": "graph"},
    }
    assert list(orjson.loads(task["task_input"])) == ["gremlin", "bindings", "language", "aliases"]


@pytest.mark.parametrize(
    "script, name",
    [
        ("g.V()\ng.E()", "g.V()"),
        ("g.V()\r\ng.E()", "g.V()"),
        ("g.V()\rg.E()", "g.V()"),
        ("  g.V() // first\n g.E()", "  g.V() // first"),
        ("\ng.V()", ""),
        ("g.V()\x0bstill the first line\ng.E()", "g.V()\x0bstill the first line"),
        ("x" * 300, "x" * 256),
        # 1 + 2 * 200 bytes, cut at 256: the half of the 128th 'é' is left out, not mangled
        ("a" + "é" * 200 + "\nnext", "a" + "é" * 127),
        ("€" * 100, "€" * 85),
    ],
    ids=[
        "lf",
        "crlf",
        "cr",
        "leading-space",
        "empty-first-line",
        "vertical-tab",
        "ascii-cut",
        "two-byte-cut",
        "three-byte-cut",
    ],
)
async def test_gremlin_task_name_is_the_first_line_in_at_most_256_bytes(
    client: TestClient, base: str, script: str, name: str
) -> None:
    created = await ok_json(await post_gremlin(client, base, {"gremlin": script}), 201)
    task = await get_task(client, base, created["task_id"])
    assert task["task_name"] == name
    assert len(task["task_name"].encode()) <= 256
    assert orjson.loads(task["task_input"])["gremlin"] == script


async def test_gremlin_job_takes_a_name_option(client: TestClient, base: str) -> None:
    created = await ok_json(
        await post_gremlin(client, base, {"gremlin": GREMLIN}, name="count"), 201
    )
    assert (await get_task(client, base, created["task_id"]))["task_name"] == "count"


@pytest.mark.parametrize("data", [b"", b"   ", b"null"], ids=["empty", "blank", "json-null"])
async def test_gremlin_job_refuses_an_empty_body(
    client: TestClient, base: str, data: bytes
) -> None:
    await assert_error(
        await post_gremlin(client, base, data=data), 400, "The request body can't be empty"
    )


@pytest.mark.parametrize(
    "body", [{}, {"gremlin": None}, {"bindings": {}, "language": "gremlin-groovy"}]
)
async def test_gremlin_job_refuses_a_missing_script(
    client: TestClient, base: str, body: Any
) -> None:
    await assert_error(
        await post_gremlin(client, base, body), 400, "The gremlin parameter can't be null"
    )


async def test_gremlin_job_refuses_a_null_language(client: TestClient, base: str) -> None:
    await assert_error(
        await post_gremlin(client, base, {"gremlin": GREMLIN, "language": None}),
        400,
        "The language parameter can't be null",
    )


@pytest.mark.parametrize("aliases", [{"hugegraph": "graph"}, {"g": "__g_hugegraph"}])
async def test_gremlin_job_refuses_aliases(client: TestClient, base: str, aliases: Any) -> None:
    await assert_error(
        await post_gremlin(client, base, {"gremlin": GREMLIN, "aliases": aliases}),
        400,
        "There is no need to pass gremlin aliases",
    )
    assert ids_of(await list_tasks(client, base, limit=-1)) == []


@pytest.mark.parametrize(
    "data, words",
    [
        (b"[1, 2]", "JSON object"),
        (b'"g.V()"', "JSON object"),
        (b"{", "JSON"),
        (b'{"gremlin": 5}', "gremlin"),
        (b'{"gremlin": "g.V()", "bindings": [1]}', "bindings"),
        (b'{"gremlin": "g.V()", "language": 7}', "language"),
    ],
)
async def test_gremlin_job_refuses_a_malformed_body(
    client: TestClient, base: str, data: bytes, words: str
) -> None:
    message = await assert_error(await post_gremlin(client, base, data=data), 400)
    assert words in message
    assert ids_of(await list_tasks(client, base, limit=-1)) == []


async def test_gremlin_job_without_an_endpoint_fails_and_says_why(
    client: TestClient, base: str
) -> None:
    created = await ok_json(await post_gremlin(client, base, {"gremlin": GREMLIN}), 201)
    task = await wait_status(client, base, created["task_id"], "failed")
    assert "gremlin_url" in task["task_result"]


# --- any registered type ---


async def test_a_job_of_a_registered_type(client: TestClient, base: str) -> None:
    response = await client.post(f"{base}/jobs/echo", json={"b": 1, "a": [True, None]})
    created = await ok_json(response, 201)
    assert list(created) == ["task_id"]
    task = await wait_status(client, base, created["task_id"], "success")
    assert task["task_name"] == "echo"
    assert task["task_type"] == "echo"
    assert task["task_input"] == '{"b":1,"a":[true,null]}'
    assert task["task_result"] == '{"b":1,"a":[true,null]}'


async def test_a_job_without_a_body_has_no_input(client: TestClient, base: str) -> None:
    created = await ok_json(await client.post(f"{base}/jobs/echo"), 201)
    task = await wait_status(client, base, created["task_id"], "success")
    assert "task_input" not in task
    assert task["task_result"] == "null"


async def test_submission_options(client: TestClient, base: str) -> None:
    task_id = await submit(
        client,
        base,
        "echo",
        {},
        name="nightly import",
        priority=7,
        max_retries=2,
        timeout=1.5,
        delay=LATER,
    )
    task = await get_task(client, base, task_id)
    assert task["task_name"] == "nightly import"
    assert task["task_priority"] == 7
    assert task["task_max_retries"] == 2
    assert task["task_timeout"] == 1.5
    assert task["task_status"] == "new"  # delayed: not started


async def test_timeout_fails_a_job_that_runs_too_long(client: TestClient, base: str) -> None:
    task_id = await submit(client, base, "sleep", {"steps": 1, "interval": 30}, timeout=0.05)
    task = await wait_status(client, base, task_id, "failed")
    assert "timed out" in task["task_result"]


async def test_max_retries_reruns_a_failing_job(client: TestClient, base: str) -> None:
    task_id = await submit(client, base, "fail", {"message": "flaky"}, max_retries=2)

    async def failed_for_good() -> bool:
        task = await get_task(client, base, task_id)
        return task["task_status"] == "failed" and task["task_retries"] == 2

    await wait_for(failed_for_good, what="the task to use its retries")
    assert "flaky" in (await get_task(client, base, task_id))["task_result"]


async def test_an_unknown_type_is_refused(client: TestClient, base: str) -> None:
    message = await assert_error(await client.post(f"{base}/jobs/reindex", json={}), 400)
    assert "'reindex'" in message
    for name in ("echo", "fail", "gremlin", "sleep"):
        assert name in message
    assert ids_of(await list_tasks(client, base, limit=-1)) == []


@pytest.mark.parametrize(
    "option, value",
    [
        ("priority", "high"),
        ("priority", "1.5"),
        ("priority", str(2**40)),
        ("max_retries", "-1"),
        ("max_retries", "x"),
        ("max_retries", "1001"),
        ("timeout", "0"),
        ("timeout", "-5"),
        ("timeout", "soon"),
        ("timeout", "inf"),
        ("timeout", "nan"),
        ("delay", "-1"),
        ("delay", "later"),
        ("delay", "1e400"),
        ("delay", "1_0"),
        ("name", "n" * 257),
        ("name", "é" * 129),
    ],
)
async def test_a_bad_option_is_refused(
    client: TestClient, base: str, option: str, value: str
) -> None:
    response = await client.post(f"{base}/jobs/echo", json={}, params={option: value})
    message = await assert_error(response, 400)
    assert f"'{option}'" in message
    assert ids_of(await list_tasks(client, base, limit=-1)) == []


@pytest.mark.parametrize("key", ["", "k" * 256])
async def test_a_bad_idempotency_key_is_refused(client: TestClient, base: str, key: str) -> None:
    response = await client.post(f"{base}/jobs/echo", json={}, headers={"Idempotency-Key": key})
    message = await assert_error(response, 400)
    assert "Idempotency-Key" in message


@pytest.mark.parametrize(
    "data, words",
    [
        (b"[1]", "JSON object"),
        (b"3", "JSON object"),
        (b'"text"', "JSON object"),
        (b"{nope", "JSON"),
        (b"\xff\xfe", "JSON"),
    ],
    ids=["array", "number", "string", "invalid", "not-utf8"],
)
async def test_a_body_that_is_not_a_json_object_is_refused(
    client: TestClient, base: str, data: bytes, words: str
) -> None:
    message = await assert_error(await client.post(f"{base}/jobs/echo", data=data), 400)
    assert words in message
    assert ids_of(await list_tasks(client, base, limit=-1)) == []


async def test_idempotency_key_returns_the_first_task(client: TestClient, base: str) -> None:
    headers = {"Idempotency-Key": "import-2026-11-21"}
    query = {"delay": LATER, "priority": "5"}
    response = await client.post(
        f"{base}/jobs/echo", json={"n": 1, "m": 2}, headers=headers, params=query
    )
    first = await ok_json(response, 201)
    assert "Idempotent-Replayed" not in response.headers
    # the same request (an object's members in another order are the same input): a replay
    again = await client.post(
        f"{base}/jobs/echo", data=b'{"m": 2, "n": 1}', headers=headers, params=query
    )
    assert await ok_json(again, 201) == first
    assert again.headers["Idempotent-Replayed"] == "true"
    assert ids_of(await list_tasks(client, base, limit=-1)) == [first["task_id"]]
    assert (await get_task(client, base, first["task_id"]))["task_input"] == '{"n":1,"m":2}'

    # another key, or no key, is another task
    other = await ok_json(
        await client.post(f"{base}/jobs/echo", json={}, headers={"Idempotency-Key": "other"}), 201
    )
    plain = await ok_json(await client.post(f"{base}/jobs/echo", json={}), 201)
    assert len({first["task_id"], other["task_id"], plain["task_id"]}) == 3


async def test_idempotency_key_is_per_graph(client: TestClient) -> None:
    headers = {"Idempotency-Key": "same"}
    here = await ok_json(
        await client.post("/graphs/hugegraph/jobs/echo", json={}, headers=headers), 201
    )
    there = await ok_json(
        await client.post("/graphspaces/gs1/graphs/hugegraph/jobs/echo", json={}, headers=headers),
        201,
    )
    assert here != there
    # the two address shapes of DEFAULT are one graph: the key matches
    same = await ok_json(
        await client.post(
            "/graphspaces/DEFAULT/graphs/hugegraph/jobs/echo", json={}, headers=headers
        ),
        201,
    )
    assert same == here


@pytest.mark.parametrize(
    ("path", "body", "query"),
    [
        ("echo", {"n": 2}, {}),
        ("echo", None, {}),
        ("echo", {"n": 1}, {"name": "another"}),
        ("echo", {"n": 1}, {"priority": "1"}),
        ("echo", {"n": 1}, {"max_retries": "3"}),
        ("echo", {"n": 1}, {"timeout": "30"}),
        ("echo", {"n": 1}, {"delay": "3601"}),
        ("sleep", {"n": 1}, {}),
    ],
    ids=["body", "no-body", "name", "priority", "max_retries", "timeout", "delay", "job-type"],
)
async def test_idempotency_key_used_with_another_request_is_a_422(
    client: TestClient, base: str, path: str, body: Any, query: dict[str, str]
) -> None:
    headers = {"Idempotency-Key": "k"}
    first = await ok_json(
        await client.post(
            f"{base}/jobs/echo", json={"n": 1}, headers=headers, params={"delay": LATER}
        ),
        201,
    )
    response = await client.post(
        f"{base}/jobs/{path}", json=body, headers=headers, params={"delay": LATER, **query}
    )
    assert response.status == 422, await response.text()
    error = await response.json()
    assert error["exception"] == "UnprocessableEntityException"
    assert (
        error["message"]
        == f"Idempotency-Key 'k' was used with a different request for task {first['task_id']}"
    )
    assert ids_of(await list_tasks(client, base, limit=-1)) == [first["task_id"]]


async def test_idempotency_key_holds_for_concurrent_submissions(
    client: TestClient, base: str
) -> None:
    headers = {"Idempotency-Key": "at-once"}
    responses = await asyncio.gather(
        *(
            client.post(
                f"{base}/jobs/echo", json={"i": 1}, headers=headers, params={"delay": LATER}
            )
            for _ in range(10)
        )
    )
    bodies = [await ok_json(response, 201) for response in responses]
    assert len({body["task_id"] for body in bodies}) == 1
    assert sum(1 for r in responses if "Idempotent-Replayed" not in r.headers) == 1
    assert len(ids_of(await list_tasks(client, base, limit=-1))) == 1
    # different requests at once under one key: the first one stored wins, the others are 422
    headers = {"Idempotency-Key": "raced"}
    responses = await asyncio.gather(
        *(
            client.post(
                f"{base}/jobs/echo", json={"i": i}, headers=headers, params={"delay": LATER}
            )
            for i in range(10)
        )
    )
    assert sorted(r.status for r in responses) == [201] + [422] * 9


async def test_idempotency_key_works_for_gremlin_jobs(client: TestClient, base: str) -> None:
    headers = {"Idempotency-Key": "g1"}
    body = orjson.dumps({"gremlin": GREMLIN})
    first = await ok_json(
        await client.post(f"{base}/jobs/gremlin", data=body, headers=headers), 201
    )
    second = await ok_json(
        await client.post(f"{base}/jobs/gremlin", data=body, headers=headers), 201
    )
    assert first == second


def nested(depth: int) -> bytes:
    """A JSON object `depth` levels deep: {"a": [[…]]}."""
    return b'{"a":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


async def test_an_input_nested_as_deep_as_can_be_stored_is_taken(
    client: TestClient, base: str
) -> None:
    task_id = (
        await ok_json(
            await client.post(f"{base}/jobs/echo", data=nested(254), params={"delay": LATER}), 201
        )
    )["task_id"]
    assert (await get_task(client, base, task_id))["task_input"] == nested(254).decode()


TOO_DEEP = "nested too deeply; at most 254 levels are allowed"


async def test_a_body_nested_beyond_the_parser_says_the_same(client: TestClient, base: str) -> None:
    body = b"[" * 5000 + b"]" * 5000
    message = await assert_error(await client.post(f"{base}/jobs/echo", data=body), 400)
    assert message == f"The request body is {TOO_DEEP}"


async def test_a_job_result_nested_too_deeply_fails_the_task_saying_so(start: Start) -> None:
    """The same bound for what a job returns: the task ends failed with the same words (a
    value that contains itself too), never a stuck task."""
    client = await start()
    base = "/graphs/hugegraph"
    fits = await submit(client, base, "deep", {"depth": 254})
    beyond = await submit(client, base, "deep", {"depth": 255})
    endless = await submit(client, base, "deep", {"cycle": True})
    task = await wait_status(client, base, fits, "success", "failed")
    assert task["task_result"] == "[" * 254 + "]" * 254
    for task_id in (beyond, endless):
        task = await wait_status(client, base, task_id, "success", "failed")
        assert (task["task_status"], task["task_result"]) == (
            "failed",
            f"The job's result is {TOO_DEEP}",
        )


@pytest.mark.parametrize("job", ["echo", "gremlin"])
async def test_an_input_nested_too_deeply_is_refused(
    client: TestClient, base: str, job: str
) -> None:
    body = (
        nested(300) if job == "echo" else b'{"gremlin": "g.V()", "bindings": ' + nested(300) + b"}"
    )
    message = await assert_error(await client.post(f"{base}/jobs/{job}", data=body), 400)
    assert message == f"The request body is {TOO_DEEP}"
    assert ids_of(await list_tasks(client, base, limit=-1)) == []


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_that_cannot_be_decoded_is_refused(
    client: TestClient, base: str, encoding: str
) -> None:
    response = await client.post(
        f"{base}/jobs/echo", data=b"not compressed", headers={"Content-Encoding": encoding}
    )
    message = await assert_error(response, 400)
    assert encoding in message
    assert response.headers["Connection"] == "close"  # the rest of the body was not read
    assert ids_of(await list_tasks(client, base, limit=-1)) == []


async def test_a_compressed_body_is_read(client: TestClient, base: str) -> None:
    data = gzip.compress(b'{"zipped": true}')
    response = await client.post(
        f"{base}/jobs/echo",
        data=data,
        headers={"Content-Encoding": "gzip"},
        params={"delay": LATER},
    )
    task_id = (await ok_json(response, 201))["task_id"]
    assert (await get_task(client, base, task_id))["task_input"] == '{"zipped":true}'
