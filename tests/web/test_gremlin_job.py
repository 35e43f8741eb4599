"""The gremlin job against a Gremlin HTTP endpoint.

No Gremlin server can be installed here, so these tests run a small aiohttp endpoint of
their own on loopback that answers `POST /gremlin` in HugeGraph's request and response
shape ({"requestId", "status": {"message", "code", "attributes"}, "result": {"data",
"meta"}}, and HugeGraph's error body for a failing script). It checks what the job sends,
not what a real graph would compute.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from service.web import create_app
from tests.conftest import make_settings, wait_status

BASE = "/graphs/hugegraph"


@dataclass
class Endpoint:
    """What the stand-in endpoint saw."""

    server: TestServer
    requests: list[dict[str, Any]] = field(default_factory=list)
    #: set when a request arrives for the script "hold"
    holding: asyncio.Event = field(default_factory=asyncio.Event)
    #: set when the client of a held request disconnected
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return str(self.server.make_url("/gremlin"))


def hugegraph_answer(data: list[Any]) -> dict[str, Any]:
    return {
        "requestId": str(uuid.uuid4()),
        "status": {"message": "", "code": 200, "attributes": {}},
        "result": {"data": data, "meta": {}},
    }


@pytest.fixture
async def endpoint(aiohttp_server: Any) -> Endpoint:
    seen = Endpoint(server=None)  # type: ignore[arg-type]

    async def gremlin(request: web.Request) -> web.Response:
        body = await request.json()
        seen.requests.append(body)
        script = body["gremlin"]
        if script == "hold":
            seen.holding.set()
            try:
                await asyncio.sleep(60)  # until the client goes away (the handler is cancelled)
            except asyncio.CancelledError:
                seen.disconnected.set()
                raise
        if script.startswith("broken"):
            error = {
                "exception": "groovy.lang.MissingPropertyException",
                "message": "No such property: broken for class: Script1",
                "cause": "",
            }
            return web.json_response(error, status=400)
        if script == "g.V().count()":
            return web.json_response(hugegraph_answer([8]))
        return web.json_response(
            hugegraph_answer([{"script": script, "bindings": body["bindings"]}])
        )

    app = web.Application()
    app.router.add_post("/gremlin", gremlin)
    # (the test server cancels the handler of a client that disconnects: the test sees it)
    seen.server = await aiohttp_server(app)
    return seen


async def start(aiohttp_client: Any, tmp_path: Path, **overrides: Any) -> TestClient:
    settings = make_settings(tmp_path, **overrides)
    return await aiohttp_client(create_app(settings))  # type: ignore[no-any-return]


async def post_gremlin(client: TestClient, base: str, body: dict[str, Any], **query: Any) -> int:
    response = await client.post(
        f"{base}/jobs/gremlin", json=body, params={k: str(v) for k, v in query.items()}
    )
    assert response.status == 201, await response.text()
    return int((await response.json())["task_id"])


async def test_the_script_goes_to_the_endpoint_and_result_data_is_stored(
    aiohttp_client: Any, tmp_path: Path, endpoint: Endpoint
) -> None:
    client = await start(aiohttp_client, tmp_path, gremlin_url=endpoint.url)
    task_id = await post_gremlin(client, BASE, {"gremlin": "g.V().count()"})
    task = await wait_status(client, BASE, task_id, "success")
    assert task["task_result"] == "[8]"
    assert (task["task_type"], task["task_name"]) == ("gremlin", "g.V().count()")
    assert task["task_callable"] == "service.jobs.gremlin.run"
    assert endpoint.requests == [
        {
            "gremlin": "g.V().count()",
            "bindings": {},
            "language": "gremlin-groovy",
            "aliases": {"graph": "hugegraph", "g": "__g_hugegraph"},
        }
    ]


async def test_bindings_and_language_are_passed_on(
    aiohttp_client: Any, tmp_path: Path, endpoint: Endpoint
) -> None:
    client = await start(aiohttp_client, tmp_path, gremlin_url=endpoint.url)
    task_id = await post_gremlin(
        client,
        BASE,
        {
            "gremlin": "g.V(id)\n.limit(2)",
            "bindings": {"id": "1:marko"},
            "language": "gremlin-groovy",
        },
    )
    task = await wait_status(client, BASE, task_id, "success")
    assert orjson.loads(task["task_result"]) == [
        {"script": "g.V(id)\n.limit(2)", "bindings": {"id": "1:marko"}}
    ]
    assert task["task_name"] == "g.V(id)"


async def test_a_graph_of_another_graphspace_is_addressed_with_its_graphspace(
    aiohttp_client: Any, tmp_path: Path, endpoint: Endpoint
) -> None:
    """HugeGraph 1.7 names a graph of a graphspace `{graphspace}-{graph}` in Gremlin; gs1's
    `hugegraph` must not run against DEFAULT's graph of the same name."""
    client = await start(aiohttp_client, tmp_path, gremlin_url=endpoint.url)
    base = "/graphspaces/gs1/graphs/hugegraph"
    task_id = await post_gremlin(client, base, {"gremlin": "g.V().count()"})
    await wait_status(client, base, task_id, "success")
    assert endpoint.requests[-1]["aliases"] == {"graph": "gs1-hugegraph", "g": "__g_gs1-hugegraph"}


async def test_a_cancel_aborts_the_request(
    aiohttp_client: Any, tmp_path: Path, endpoint: Endpoint
) -> None:
    client = await start(aiohttp_client, tmp_path, gremlin_url=endpoint.url)
    task_id = await post_gremlin(client, BASE, {"gremlin": "hold"})
    await asyncio.wait_for(endpoint.holding.wait(), 10)
    response = await client.put(f"{BASE}/tasks/{task_id}", params={"action": "cancel"})
    assert response.status == 202
    await wait_status(client, BASE, task_id, "cancelled")
    await asyncio.wait_for(endpoint.disconnected.wait(), 10)


async def test_without_an_endpoint_the_task_fails_saying_so(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, tmp_path)
    task_id = await post_gremlin(client, BASE, {"gremlin": "g.V()"}, max_retries=3)
    task = await wait_status(client, BASE, task_id, "failed")
    assert "No Gremlin endpoint is configured" in task["task_result"]
    assert task["task_retries"] == 0  # retrying cannot help


async def test_an_error_of_the_endpoint_fails_the_task_with_its_message(
    aiohttp_client: Any, tmp_path: Path, endpoint: Endpoint
) -> None:
    client = await start(aiohttp_client, tmp_path, gremlin_url=endpoint.url)
    task_id = await post_gremlin(client, BASE, {"gremlin": "broken.V()"}, max_retries=1)
    task = await wait_status(client, BASE, task_id, "failed")
    assert "No such property: broken" in task["task_result"]
    assert task["task_retries"] == 1
    assert len(endpoint.requests) == 2


async def test_an_endpoint_that_does_not_answer_in_time_fails_the_task_saying_so(
    aiohttp_client: Any, tmp_path: Path, endpoint: Endpoint
) -> None:
    client = await start(aiohttp_client, tmp_path, gremlin_url=endpoint.url, gremlin_timeout=0.2)
    task_id = await post_gremlin(client, BASE, {"gremlin": "hold"})
    task = await wait_status(client, BASE, task_id, "failed")
    assert endpoint.url in task["task_result"]
    assert "0.2" in task["task_result"]


async def test_an_endpoint_that_cannot_be_reached_fails_the_task_saying_where(
    aiohttp_client: Any, tmp_path: Path, endpoint: Endpoint
) -> None:
    url = endpoint.url
    await endpoint.server.close()
    client = await start(aiohttp_client, tmp_path, gremlin_url=url)
    task_id = await post_gremlin(client, BASE, {"gremlin": "g.V()"})
    task = await wait_status(client, BASE, task_id, "failed")
    assert url in task["task_result"]
